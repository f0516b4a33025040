#!/usr/bin/env python3
"""Writes the tiny weight files that tests/weights.rs reads.

Run from the repository root:  .venv-ref/bin/python tests/data/make_weight_files.py
Made with torch 2.15.0 (+cu132 wheel; the CPU path is what matters), safetensors 0.8.0,
numpy 2.4.6, Python 3.11; the script prints the versions it ran with and records them in
weights_manifest.json. Re-running with another torch may change the .bin byte layout
(zip padding, pickle memo numbering) but not the tensors.

Files (all in tests/data/, < 50 KB together):
- weights.safetensors        every tensor below, written by safetensors.torch.save_file
- weights.bin                the same state dict written by torch.save (zip format, the
                             format diffusers `save_pretrained(safe_serialization=False)`
                             writes), including a module state_dict's `_metadata`, an
                             nn.Parameter, views sharing one storage at an offset, and a
                             uint16 tensor (torch pickles these with _rebuild_tensor_v3)
- weights_expected_f32.safetensors  `t.float()` of every floating tensor: what a loader
                             converting to f32 must produce, bit for bit
- noncontig.bin              a transposed (non-contiguous) tensor: the loader must refuse it
- legacy.bin                 the pre-1.6 non-zip torch.save format: must be refused clearly
- deflated.bin               weights.bin re-zipped with deflate: must be refused clearly
- weights_manifest.json      versions, names/dtypes/shapes, and what torch's pickle holds
"""
import collections
import io
import json
import os
import pickletools
import platform
import sys
import zipfile

import numpy
import safetensors
import torch
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))


def build_state_dict():
    g = torch.Generator().manual_seed(1234)

    # A real module's state_dict: an OrderedDict with `_metadata` (pickled via BUILD).
    module = torch.nn.Sequential(
        collections.OrderedDict(
            conv=torch.nn.Conv2d(3, 4, 3),  # 4-D weight (4, 3, 3, 3) + 1-D bias
            norm=torch.nn.GroupNorm(2, 4),
        )
    )
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    sd = module.state_dict()

    # f16 edge cases: zeros, extremes, the smallest normal and subnormals, inf, NaN.
    sd["half.special"] = torch.tensor(
        [0.0, -0.0, 1.0, -2.0, 65504.0, -65504.0, 2.0**-14, 2.0**-24, -(2.0**-24),
         3 * 2.0**-20, 1023 * 2.0**-24, float("inf"), float("-inf"), float("nan"),
         0.1, 1.0 / 3.0],
        dtype=torch.float16,
    )
    sd["half.matrix"] = torch.randn(5, 6, generator=g).to(torch.float16)
    sd["bf16.special"] = torch.tensor(
        [0.0, -0.0, 1.0, 3.0e38, -3.0e38, 1.0e-40, float("inf"), float("-inf"),
         float("nan"), 0.1, 1.0 / 3.0],
        dtype=torch.bfloat16,
    )
    sd["bf16.block"] = torch.randn(2, 3, 2, 2, generator=g).to(torch.bfloat16)
    sd["f64.vec"] = torch.tensor([1.0 / 3.0, -1e300, 1e-300], dtype=torch.float64)
    sd["scalar"] = torch.tensor(3.25)  # shape ()
    sd["ids"] = torch.tensor([0, -1, 2**40, 7], dtype=torch.int64)
    sd["flags"] = torch.tensor([True, False, True])
    sd["u16"] = torch.tensor([0, 1, 65535], dtype=torch.uint16)
    sd["empty"] = torch.zeros(0, 3)
    # nn.Parameter → torch._utils._rebuild_parameter
    sd["param"] = torch.nn.Parameter(torch.randn(3, generator=g), requires_grad=False)
    # Views sharing one storage: torch.save keeps the sharing, so these two tensors
    # point into the same `data/<key>` entry at different storage offsets.
    base = torch.arange(12, dtype=torch.float32)
    sd["shared.head"] = base[0:4]
    sd["shared.tail"] = base[8:12].view(2, 2)
    return sd


def pickle_facts(bin_bytes):
    z = zipfile.ZipFile(io.BytesIO(bin_bytes))
    pkl_name = next(n for n in z.namelist() if n.endswith("/data.pkl"))
    pkl = z.read(pkl_name)
    globals_, protocol = set(), None
    for op, arg, _ in pickletools.genops(pkl):
        if op.name == "PROTO":
            protocol = arg
        if op.name == "GLOBAL":
            globals_.add(arg.replace(" ", "."))
    return {
        "entries": [(i.filename, i.compress_type, i.file_size) for i in z.infolist()],
        "pickle_entry": pkl_name,
        "pickle_protocol": protocol,
        "pickle_globals": sorted(globals_),
    }


def main():
    versions = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "safetensors": safetensors.__version__,
        "numpy": numpy.__version__,
    }
    print("versions:", versions)
    sd = build_state_dict()

    # safetensors refuses shared storage: give it contiguous copies of the views.
    plain = {k: v.detach().clone().contiguous() for k, v in sd.items()}
    save_file(plain, os.path.join(HERE, "weights.safetensors"))
    torch.save(sd, os.path.join(HERE, "weights.bin"))

    expected = {k: v.float() for k, v in plain.items() if v.is_floating_point()}
    save_file(expected, os.path.join(HERE, "weights_expected_f32.safetensors"))

    torch.save({"ok": torch.ones(2), "transposed": torch.arange(6.0).view(2, 3).t()},
               os.path.join(HERE, "noncontig.bin"))
    torch.save({"w": torch.ones(2)}, os.path.join(HERE, "legacy.bin"),
               _use_new_zipfile_serialization=False)

    with open(os.path.join(HERE, "weights.bin"), "rb") as f:
        bin_bytes = f.read()
    src = zipfile.ZipFile(io.BytesIO(bin_bytes))
    with zipfile.ZipFile(os.path.join(HERE, "deflated.bin"), "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))

    manifest = {
        "versions": versions,
        "tensors": {
            k: {"dtype": str(v.dtype).removeprefix("torch."), "shape": list(v.shape)}
            for k, v in plain.items()
        },
        "torch_save": pickle_facts(bin_bytes),
    }
    with open(os.path.join(HERE, "weights_manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")

    total = 0
    for name in sorted(os.listdir(HERE)):
        if name.endswith((".bin", ".safetensors", ".json")):
            size = os.path.getsize(os.path.join(HERE, name))
            total += size
            print(f"{name}: {size} bytes")
    print(f"total {total} bytes; pickle protocol {manifest['torch_save']['pickle_protocol']}, "
          f"globals {manifest['torch_save']['pickle_globals']}")
    assert total < 50_000, total


if __name__ == "__main__":
    sys.exit(main())
