#!/usr/bin/env python3
"""Checks the Hub stand-in (tests/common/hub_standin.rs) against the real client: pinned
huggingface_hub (tools/requirements-hub.txt) downloads tests/fixtures/tiny-sd through it,
public and gated (no token, a wrong token, the right one), and the files and the cache
layout are compared with the fixture. With --roentgen, also the other way round: a cache
filled by `roentgen download` is read by huggingface_hub offline.

Not part of the tests (it needs the pip packages); run once after changing the stand-in
or the client, and record its output in docs/MODELS.md:

    python3 -m venv /tmp/hubcheck && /tmp/hubcheck/bin/pip install -r tools/requirements-hub.txt
    cargo build --example hub_standin --bin roentgen
    /tmp/hubcheck/bin/python tools/check_hub_standin.py --roentgen target/debug/roentgen
"""
import argparse
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "tiny-sd"
TOKEN = "hf_check_standin_token"


def start(standin):
    p = subprocess.Popen(
        [standin, "--repo", f"org/tiny-sd={FIXTURE}", "--repo", f"org/gated-sd={FIXTURE}",
         "--gated", "org/gated-sd", "--token", TOKEN],
        stdout=subprocess.PIPE, text=True)
    line = p.stdout.readline().split()
    assert line and line[0] == "ready", f"stand-in did not start: {line}"
    return p, line[1]


def fixture_files():
    return sorted(str(p.relative_to(FIXTURE)) for p in FIXTURE.rglob("*") if p.is_file())


def check_snapshot(folder, cache, repo):
    folder = pathlib.Path(folder)
    for rel in fixture_files():
        got = folder / rel
        assert got.is_symlink(), f"{rel}: not a symlink into blobs/"
        assert got.read_bytes() == (FIXTURE / rel).read_bytes(), f"{rel}: bytes differ"
    repo_dir = pathlib.Path(cache) / ("models--" + repo.replace("/", "--"))
    ref = (repo_dir / "refs" / "main").read_text()
    assert folder.name == ref, f"refs/main {ref} != snapshot {folder.name}"
    blobs = sorted(p.name for p in (repo_dir / "blobs").iterdir())
    print(f"  {repo}: {len(fixture_files())} files identical; refs/main = {ref}; "
          f"{len(blobs)} blobs, e.g. {blobs[0]}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--standin", default=str(ROOT / "target/debug/examples/hub_standin"))
    ap.add_argument("--roentgen", help="also check a cache filled by `roentgen download`")
    args = ap.parse_args()
    os.environ["HF_HUB_DISABLE_XET"] = "1"
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    os.environ.pop("HF_TOKEN", None)
    proc, url = start(args.standin)
    os.environ["HF_ENDPOINT"] = url
    tmp = tempfile.mkdtemp(prefix="hubcheck-")
    os.environ["HF_HOME"] = tmp
    # huggingface_hub reads its constants at import: import after the environment is set.
    import huggingface_hub
    from huggingface_hub import snapshot_download, hf_hub_download, scan_cache_dir
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, EntryNotFoundError
    print(f"huggingface_hub {huggingface_hub.__version__} against the stand-in at {url}")
    cache = os.path.join(tmp, "hub")
    ok = True
    try:
        folder = snapshot_download("org/tiny-sd", cache_dir=cache)
        check_snapshot(folder, cache, "org/tiny-sd")
        for token, want in [(None, "401"), ("hf_wrong", "403")]:
            try:
                snapshot_download("org/gated-sd", cache_dir=cache, token=token or False)
                print(f"  gated, token {token}: downloaded, expected a refusal"); ok = False
            except GatedRepoError as e:
                print(f"  gated, token {token}: GatedRepoError ({want}: {str(e).splitlines()[0][:90]})")
        folder = snapshot_download("org/gated-sd", cache_dir=cache, token=TOKEN)
        check_snapshot(folder, cache, "org/gated-sd")
        for call, err in [(lambda: hf_hub_download("org/nope", "x.json", cache_dir=cache), RepositoryNotFoundError),
                          (lambda: hf_hub_download("org/tiny-sd", "nope.json", cache_dir=cache), EntryNotFoundError)]:
            try:
                call(); ok = False
            except err as e:
                print(f"  {err.__name__}: {str(e).splitlines()[0][:80]}")
        if args.roentgen:
            ours = os.path.join(tmp, "ours")
            env = dict(os.environ, HF_HOME=ours)
            r = subprocess.run([args.roentgen, "download", "org/tiny-sd"], env=env,
                               capture_output=True, text=True)
            assert r.returncode == 0, r.stderr
            proc.kill(); proc.wait()
            os.environ["HF_HUB_OFFLINE"] = "1"
            ours_cache = os.path.join(ours, "hub")
            info = scan_cache_dir(ours_cache)
            assert not info.warnings, info.warnings
            (repo,) = info.repos
            (rev,) = repo.revisions
            n = 0
            for f in rev.files:
                rel = str(f.file_path.relative_to(rev.snapshot_path))
                p = hf_hub_download("org/tiny-sd", rel, cache_dir=ours_cache, local_files_only=True)
                assert pathlib.Path(p).read_bytes() == (FIXTURE / rel).read_bytes(), rel
                n += 1
            print(f"  roentgen download's cache read offline by huggingface_hub: {n} files, "
                  f"scan_cache_dir: {repo.repo_id} {repo.size_on_disk} bytes, refs {sorted(rev.refs)}, no warnings")
    finally:
        if proc.poll() is None:
            proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
