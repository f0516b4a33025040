#!/usr/bin/env python3
"""PyTorch's time for the UNet call `roentgen bench --stages unet` times: SD 1.4's
UNet2DConditionModel (RoentGen v1's architecture) with random weights, one guided call
(batch 2: unconditional and conditional), float32 on the CPU, warm.

    .venv-ref/bin/python tools/bench_torch_unet.py [--width-scale 0.5] [--latent 32] [--reps 3]

--width-scale and --latent mean what `roentgen bench --unet-width-scale` and `--latent`
mean (block widths scaled and rounded as it does; 77 context tokens of 768).
Prints the warm-up and each rep, then the median. Compare side by side (the same
machine, one after the other): BENCHMARKS.md says how it was run.
"""

import argparse
import os
import statistics
import time

import torch
from diffusers import UNet2DConditionModel


def build_unet(width_scale, seed=0):
    """SD 1.4's UNet with block widths scaled and rounded as `roentgen bench
    --unet-width-scale` does, random weights from torch.manual_seed(seed); also the model
    tools/ort-web/export_unet_onnx.py exports. Returns (unet, widths)."""
    torch.manual_seed(seed)
    widths = [int(round(c * width_scale)) for c in (320, 640, 1280, 1280)]  # as roentgen bench
    if any(w % 32 for w in widths):
        raise SystemExit(f"widths {widths}: GroupNorm(32) needs multiples of 32 "
                         "(width scales 0.1, 0.2, 0.25, 0.5, 1.0 work)")
    unet = UNet2DConditionModel(
        sample_size=64, in_channels=4, out_channels=4, block_out_channels=widths,
        down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
        up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
        layers_per_block=2, cross_attention_dim=768, attention_head_dim=8,
        norm_num_groups=32).eval()
    return unet, widths


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--width-scale", type=float, default=1.0)
    ap.add_argument("--latent", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    unet, widths = build_unet(a.width_scale)
    x = torch.randn(2, 4, a.latent, a.latent)
    ctx = torch.randn(2, 77, 768)
    t = torch.tensor(801)
    times = []
    with torch.inference_mode():
        for i in range(a.reps + 1):
            t0 = time.perf_counter()
            unet(x, t, encoder_hidden_states=ctx)
            dt = time.perf_counter() - t0
            print(f"{'warm-up' if i == 0 else f'rep {i}'}: {dt:.3f} s", flush=True)
            if i:
                times.append(dt)
    print(f"torch {torch.__version__}, {a.threads} threads, widths {widths}, latent {a.latent}: "
          f"median {statistics.median(times):.3f} s")


if __name__ == "__main__":
    main()
