#!/usr/bin/env python3
"""Writes tests/data/torch_rng_stream.safetensors, the extra goldens that tests/rng.rs reads
(tests/fixtures/torch_randn.safetensors, written by tools/make_fixtures.py, holds one draw per
fresh generator; this file holds what those cannot show).

Run from the repository root:  .venv-ref/bin/python tests/data/make_rng_goldens.py
Made with torch 2.15.0 (+cu132 wheel, CPU generator), safetensors 0.8.0, Python 3.11, on an
x86-64 CPU where torch reports capability AVX512 (normal_stub has no AVX512 kernel, so the
AVX2 kernel runs: float32 randn of >= 16 elements is the avx_mathfun Box-Muller). The script
records torch's version and CPU capability in the file's metadata and refuses to run on a
capability other than AVX2/AVX512: on DEFAULT (or ATEN_CPU_CAPABILITY=default) torch's float
path calls glibc logf/sincosf instead and differs in the last bit, which src/rng.rs does not
model.

Tensors (all float32, shape (n,)):
- stream.seed{S}.{i}.{n}   the i-th draw, n elements, from ONE generator seeded S, for the
                           sizes in STREAM: continuation across calls, the >=16 path's tail
                           re-draw, and the < 16 path's cached second Box-Muller value, which
                           survives an intervening >= 16 draw (normal_fill does not touch it)
- randn.seed{S}.{n}        torch.randn(n) from a fresh generator, for SIZES (tails of every
                           residue class mod 16 near the 16 boundary, and a few larger ones)
- randn.seed{S}.{n}        also for seeds >= 2**32 (torch's mt19937 keeps the low 32 bits)
- spot.seed{S}.16384.block{b}  block b (elements 16b..16b+16) of torch.randn(16384) from a
                           fresh generator. Chosen by mutation testing of src/rng.rs: each
                           triple of blocks is where one plausible last-bit mistake shows (the
                           last bit of the Cephes log constant p2; an unfused DP3 reduction
                           step; an unfused step of the cos or sin polynomial), which the
                           other goldens happen not to exercise.
The script also asserts that the values depend only on the element count, not the shape.
"""
import os
import platform
import sys

import safetensors
import torch
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "torch_rng_stream.safetensors")

STREAM = [16, 17, 4, 5, 16, 1, 3, 33, 2, 100, 7, 31, 1, 1]
STREAM_SEEDS = [0, 42, 1234]
SIZES = [1, 2, 3, 15, 18, 30, 31, 32, 47, 63, 257]
SIZE_SEEDS = [7]
BIG_SEEDS = [2**32 + 42, 2**64 - 1]  # == seeds 42 and 2**32 - 1
SPOT_N = 16384
SPOT = [(85, 411), (104, 349), (228, 714),  # log p2 = 0x3DEF251A, not 0x3DEF2519
        (376, 883), (1019, 1017), (2711, 148),  # x = fma(y, -DP3, x)
        (30, 1021), (37, 126), (301, 407),  # cos: fma(c0, z, c1)
        (4, 999), (8, 504), (13, 967),  # cos: fma(y, z, c2)
        (297, 59), (299, 993), (425, 598)]  # sin: fma(s0, z, s1)


def gen(seed):
    return torch.Generator("cpu").manual_seed(seed)


def main():
    cap = torch.backends.cpu.get_cpu_capability()
    if cap not in ("AVX2", "AVX512"):
        sys.exit(f"CPU capability {cap}: these goldens must come from torch's AVX2 kernel")
    out = {}
    for seed in STREAM_SEEDS:
        g = gen(seed)
        for i, n in enumerate(STREAM):
            out[f"stream.seed{seed}.{i}.{n}"] = torch.randn(n, generator=g, dtype=torch.float32)
    for seed in SIZE_SEEDS:
        for n in SIZES:
            out[f"randn.seed{seed}.{n}"] = torch.randn(n, generator=gen(seed), dtype=torch.float32)
    for seed in BIG_SEEDS:
        out[f"randn.seed{seed}.{40}"] = torch.randn(40, generator=gen(seed), dtype=torch.float32)
    for seed, block in SPOT:
        t = torch.randn(SPOT_N, generator=gen(seed), dtype=torch.float32)
        out[f"spot.seed{seed}.{SPOT_N}.block{block}"] = t[16 * block:16 * block + 16].clone()
    assert torch.equal(out[f"randn.seed{2**32 + 42}.40"], torch.randn(40, generator=gen(42)))
    assert torch.equal(out[f"randn.seed{2**64 - 1}.40"], torch.randn(40, generator=gen(2**32 - 1)))

    # Only the element count matters: torch fills the contiguous buffer in order.
    for shape in [(1, 4, 16, 16), (2, 4, 8, 8), (3, 7), (2, 3), (5, 1, 3)]:
        n = 1
        for d in shape:
            n *= d
        a = torch.randn(shape, generator=gen(3)).flatten()
        b = torch.randn(n, generator=gen(3))
        assert torch.equal(a, b), shape

    meta = {
        "torch": torch.__version__,
        "safetensors": safetensors.__version__,
        "python": platform.python_version(),
        "cpu_capability": cap,
        "how": 'torch.randn(n, generator=torch.Generator("cpu").manual_seed(seed), dtype=torch.float32)',
        "stream_sizes": ",".join(map(str, STREAM)),
    }
    save_file({k: v.contiguous() for k, v in out.items()}, OUT, metadata=meta)
    print(f"torch {torch.__version__} ({cap}), safetensors {safetensors.__version__}, "
          f"Python {platform.python_version()}")
    print(f"wrote {os.path.relpath(OUT)}: {len(out)} tensors, {os.path.getsize(OUT)} bytes")


if __name__ == "__main__":
    main()
