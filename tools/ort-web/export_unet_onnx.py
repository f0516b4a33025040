#!/usr/bin/env python3
"""Exports the UNet of tools/bench_torch_unet.py (SD 1.4's UNet2DConditionModel, widths
scaled by --width-scale and rounded as `roentgen bench` and the page's bench_unet do,
random weights from torch.manual_seed(--seed)) to ONNX for onnxruntime-web, with fixed
shapes: sample [2,4,L,L], timestep [1] (f32), encoder_hidden_states [2,77,768], all f32.

    .venv-ref/bin/python tools/ort-web/export_unet_onnx.py [--width-scale 0.5] [--latent 32]

Writes into tools/ort-web/model/ (git-ignored), named by width scale and latent:
  unet_w{S}_l{L}.onnx             the model (weights inside: one file while under
                                  protobuf's 2 GB; --external-data forces a .onnx.data file)
  unet_w{S}_l{L}.expected.bin     PyTorch's output (f32, little-endian) for the inputs below
  unet_w{S}_l{L}.json             manifest the page reads: files, shapes, inputs, versions

The inputs are deterministic and the same formulas bench_unet (src/web/mod.rs) feeds our
engine, here in NCHW order: sample[i] = (i*37 % 101)/50 - 1, context[i] = (i*13 % 97)/48 - 1,
timestep 801. The page (ort.js) builds them the same way and compares its output with
PyTorch's (relative L2), so a wrong export or a wrong kernel cannot pass as fast.
Needs onnx and onnxscript (tools/requirements-ort.txt) in the venv.
"""

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
PROTOBUF_LIMIT = 2 * 1024**3


class Wrapped(torch.nn.Module):
    """Positional inputs, one tensor out (the exporter wants no dataclass output)."""

    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep, encoder_hidden_states):
        return self.unet(sample, timestep, encoder_hidden_states=encoder_hidden_states,
                         return_dict=False)[0]


def build_unet(width_scale, seed):
    # Exactly tools/bench_torch_unet.py's model (imported from there).
    sys.path.insert(0, os.path.dirname(HERE))
    from bench_torch_unet import build_unet as build

    return build(width_scale, seed)


def inputs(latent):
    n = 2 * 4 * latent * latent
    sample = ((np.arange(n) * 37 % 101) / 50.0 - 1.0).astype(np.float32).reshape(2, 4, latent, latent)
    m = 2 * 77 * 768
    ctx = ((np.arange(m) * 13 % 97) / 48.0 - 1.0).astype(np.float32).reshape(2, 77, 768)
    t = np.array([801.0], dtype=np.float32)
    return torch.from_numpy(sample), torch.from_numpy(t), torch.from_numpy(ctx)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--width-scale", type=float, default=0.5)
    ap.add_argument("--latent", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--opset", type=int, default=18)
    ap.add_argument("--external-data", action="store_true",
                    help="weights in a separate .onnx.data file even under 2 GB")
    ap.add_argument("--out-dir", default=os.path.join(HERE, "model"))
    a = ap.parse_args()

    import onnx  # noqa: F401  (fail early, with the package's own message)
    import onnxscript

    os.makedirs(a.out_dir, exist_ok=True)
    stem = f"unet_w{a.width_scale:g}_l{a.latent}"
    onnx_path = os.path.join(a.out_dir, stem + ".onnx")
    data_path = onnx_path + ".data"
    unet, widths = build_unet(a.width_scale, a.seed)
    params = sum(p.numel() for p in unet.parameters())
    external = a.external_data or params * 4 > PROTOBUF_LIMIT - (64 << 20)
    model = Wrapped(unet).eval()
    x, t, ctx = inputs(a.latent)
    with torch.inference_mode():
        expected = model(x, t, ctx).numpy()
    assert np.isfinite(expected).all(), "PyTorch's own output is not finite"

    for p in (onnx_path, data_path):
        if os.path.exists(p):
            os.remove(p)
    t0 = time.time()
    prog = torch.onnx.export(
        model, (x, t, ctx), dynamo=True, opset_version=a.opset, optimize=True,
        input_names=["sample", "timestep", "encoder_hidden_states"], output_names=["out_sample"],
        external_data=external)
    prog.save(onnx_path, external_data=external)
    export_s = time.time() - t0

    # Check the file: fixed shapes, the opset asked for, every op in the default domain.
    m = onnx.load(onnx_path, load_external_data=False)
    shapes = {v.name: [d.dim_value if d.HasField("dim_value") else d.dim_param
                       for d in v.type.tensor_type.shape.dim] for v in list(m.graph.input) + list(m.graph.output)}
    want = {"sample": [2, 4, a.latent, a.latent], "timestep": [1],
            "encoder_hidden_states": [2, 77, 768], "out_sample": [2, 4, a.latent, a.latent]}
    assert shapes == want, f"graph shapes {shapes}, wanted {want}"
    ops = {}
    for n in m.graph.node:
        key = f"{n.domain}::{n.op_type}" if n.domain else n.op_type
        ops[key] = ops.get(key, 0) + 1
    opsets = {o.domain or "ai.onnx": o.version for o in m.opset_import}
    if m.functions:
        raise SystemExit(f"the graph still has {len(m.functions)} local functions: ORT would inline them; "
                         "check the exporter's optimize step")
    expected.astype("<f4").tofile(os.path.join(a.out_dir, stem + ".expected.bin"))
    manifest = {
        "model": os.path.basename(onnx_path),
        "external_data": os.path.basename(data_path) if external else None,
        "bytes": os.path.getsize(onnx_path) + (os.path.getsize(data_path) if external else 0),
        "width_scale": a.width_scale, "latent": a.latent, "widths": widths, "params": params,
        "seed": a.seed, "timestep": 801.0,
        "inputs": {"sample": want["sample"], "timestep": [1], "encoder_hidden_states": want["encoder_hidden_states"]},
        "output": {"name": "out_sample", "shape": want["out_sample"]},
        "expected": stem + ".expected.bin",
        "expected_rms": float(np.sqrt((expected.astype(np.float64) ** 2).mean())),
        "opsets": opsets, "ops": dict(sorted(ops.items())), "nodes": len(m.graph.node),
        "torch": torch.__version__, "onnx": onnx.__version__, "onnxscript": onnxscript.__version__,
    }
    with open(os.path.join(a.out_dir, stem + ".json"), "w") as f:
        json.dump(manifest, f, indent=1)
    print(json.dumps({k: manifest[k] for k in ("model", "external_data", "bytes", "widths", "params",
                                               "nodes", "opsets", "expected_rms")}))
    print(f"exported in {export_s:.0f} s; ops: {manifest['ops']}")


if __name__ == "__main__":
    main()
