#!/usr/bin/env python3
"""Keeps a minimised fuzz corpus under a byte budget (scripts/fuzz.sh calls it).

usage: fuzz_trim.py CORPUS_DIR MAPS_DIR BUDGET_BYTES

MAPS_DIR holds one afl-showmap trace per corpus file (same names). The files under
4 KB are kept; then, while the budget lasts, the larger file adding the most new
tuples per byte; the rest are deleted. Prints how many tuples the kept files cover.
"""
import os
import sys

corpus, maps, budget = sys.argv[1], sys.argv[2], int(sys.argv[3])
tuples = {}
for name in os.listdir(corpus):
    path = os.path.join(maps, name)
    with open(path) if os.path.exists(path) else open(os.devnull) as f:
        tuples[name] = {line.split(":")[0] for line in f if line.strip()}
size = {n: os.path.getsize(os.path.join(corpus, n)) for n in tuples}
every = set().union(*tuples.values()) if tuples else set()
if sum(size.values()) <= budget:
    print(f"corpus within budget: {len(every)} tuples kept")
    sys.exit(0)
kept = [n for n in tuples if size[n] < 4096]
covered = set().union(*(tuples[n] for n in kept)) if kept else set()
left = budget - sum(size[n] for n in kept)
rest = [n for n in tuples if size[n] >= 4096]
while rest:
    best = max(rest, key=lambda n: len(tuples[n] - covered) / size[n])
    if not tuples[best] - covered or size[best] > left:
        break
    covered |= tuples[best]
    left -= size[best]
    kept.append(best)
    rest.remove(best)
for n in rest:
    os.remove(os.path.join(corpus, n))
print(f"trimmed to {len(kept)} files, {budget - left} bytes: {len(covered)} of {len(every)} tuples kept")
