#!/usr/bin/env python3
"""Golden fixtures for the diffusion schedulers (src/schedulers/, tests/schedulers.rs).

Run with the reference venv (tools/requirements-ref.txt; made by tools/make_fixtures.sh):

    .venv-ref/bin/python tools/make_scheduler_fixtures.py

Made with diffusers 0.42.1, torch 2.15.0 (CPU, AVX-512 kernels), numpy 2.4.6,
safetensors 0.8.0 (the pins of tools/requirements-ref.txt; nothing new is pinned).

Every scheduler is built the way a diffusers user switches schedulers: the checkpoint's
own `scheduler/scheduler_config.json` (tests/fixtures/tiny-sd: the RoentGen PNDM config)
is loaded into PNDMScheduler, and the scheduler under test is made with
`<Class>.from_config(pndm.config, **overrides)`. A fixed sample (1,4,8,8) and a fixed
sequence of random "model outputs" (one per UNet call) are then run through
`scale_model_input` and `step` exactly as StableDiffusionPipeline's denoising loop does,
with the sample multiplied by `init_noise_sigma` first.

Output: tests/fixtures/schedulers.safetensors (deterministic bytes; < 1 MB):

    sample                  F32 (1,4,8,8)     the starting noise, before init_noise_sigma
    model_outputs           F32 (N,1,4,8,8)   call k of every run uses model_outputs[k]
    schedule.<name>         F32 (1000,)       alphas_cumprod of a beta schedule
    <run>.spec              U8  JSON          {"kind", "steps", "config"}: the config dict
                                              from_config received, overrides merged in
    <run>.timesteps         I64 (calls,)      F32 for Euler ancestral (its timesteps are float)
    <run>.init_noise_sigma  F32 (1,)
    <run>.outputs           F32 (calls,1,4,8,8)  step k's prev_sample
    <run>.scaled            F32 (calls,1,4,8,8)  scale_model_input's output (Euler a only;
                                                 the others return the sample unchanged)
    <run>.noise             F32 (calls,1,4,8,8)  the noise step k drew (Euler a only)

Euler ancestral draws its noise inside `step` from `generator`; here that is
`torch.Generator("cpu").manual_seed(NOISE_SEED)`, and the same draws are replayed from a
second generator with the same seed and saved, so the Rust test passes them in.
"""

import copy
import json
import os
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

import diffusers
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    PNDMScheduler,
)
from diffusers.utils.torch_utils import randn_tensor

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "tests" / "fixtures" / "tiny-sd" / "scheduler" / "scheduler_config.json"
OUT = ROOT / "tests" / "fixtures" / "schedulers.safetensors"

SHAPE = (1, 4, 8, 8)
MAX_CALLS = 80
SAMPLE_SEED, OUTPUTS_SEED, NOISE_SEED = 0, 1, 1234

diffusers.logging.set_verbosity_error()
torch.set_num_threads(1)

CLASSES = {
    "pndm": PNDMScheduler,
    "ddim": DDIMScheduler,
    "dpm++2m": DPMSolverMultistepScheduler,
    "euler-a": EulerAncestralDiscreteScheduler,
}

# A legacy-style config, as checkpoints written by old diffusers ship it:
# CompVis/stable-diffusion-v1-4's scheduler_config.json (diffusers 0.7) without its
# `"clip_sample": false`, so that DDIM's own default (true) is exercised. No
# `timestep_spacing`, no `prediction_type`: diffusers marks such keys as "defaults used",
# so from_config gives the *target* class's defaults ("linspace" for DPM-Solver and
# Euler a, not PNDM's "leading").
LEGACY = {
    "_class_name": "PNDMScheduler",
    "_diffusers_version": "0.7.0.dev0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}

ZSNR = {"rescale_betas_zero_snr": True, "timestep_spacing": "trailing",
        "prediction_type": "v_prediction"}
VT = {"prediction_type": "v_prediction", "timestep_spacing": "trailing"}

# (run name, kind, inference steps, overrides, base config: "roentgen" | "legacy")
RUNS = [
    ("pndm_10", "pndm", 10, {}, "roentgen"),
    ("pndm_75", "pndm", 75, {}, "roentgen"),
    ("pndm_10_vpred_trailing", "pndm", 10, VT, "roentgen"),
    ("pndm_7_linspace", "pndm", 7, {"timestep_spacing": "linspace"}, "roentgen"),
    ("pndm_prk_10", "pndm", 10, {"skip_prk_steps": False}, "roentgen"),
    ("ddim_10", "ddim", 10, {}, "roentgen"),
    ("ddim_20", "ddim", 20, {}, "roentgen"),
    ("ddim_20_vpred_trailing", "ddim", 20, VT, "roentgen"),
    ("ddim_7_noclip_linspace", "ddim", 7,
     {"clip_sample": False, "timestep_spacing": "linspace", "set_alpha_to_one": True}, "roentgen"),
    ("ddim_10_zsnr", "ddim", 10, dict(ZSNR, clip_sample=False), "roentgen"),
    ("ddim_12_sample_linear", "ddim", 12,
     {"prediction_type": "sample", "beta_schedule": "linear", "beta_start": 0.0001,
      "beta_end": 0.02}, "roentgen"),
    ("dpm_10", "dpm++2m", 10, {}, "roentgen"),
    ("dpm_20", "dpm++2m", 20, {}, "roentgen"),
    ("dpm_20_vpred_trailing", "dpm++2m", 20, VT, "roentgen"),
    ("dpm_10_order3_linspace", "dpm++2m", 10,
     {"solver_order": 3, "timestep_spacing": "linspace"}, "roentgen"),
    ("dpm_16_order3", "dpm++2m", 16, {"solver_order": 3}, "roentgen"),
    ("dpm_12_heun_sigmamin", "dpm++2m", 12,
     {"solver_type": "heun", "final_sigmas_type": "sigma_min"}, "roentgen"),
    ("dpm_10_dpmsolver", "dpm++2m", 10,
     {"algorithm_type": "dpmsolver", "final_sigmas_type": "sigma_min"}, "roentgen"),
    ("dpm_10_zsnr", "dpm++2m", 10, ZSNR, "roentgen"),
    ("dpm_10_lambda_clipped", "dpm++2m", 10,
     {"lambda_min_clipped": -2.5, "timestep_spacing": "linspace"}, "roentgen"),
    ("dpm_10_sample_cosine", "dpm++2m", 10,
     {"prediction_type": "sample", "beta_schedule": "squaredcos_cap_v2"}, "roentgen"),
    ("euler_a_10", "euler-a", 10, {}, "roentgen"),
    ("euler_a_20", "euler-a", 20, {}, "roentgen"),
    ("euler_a_20_vpred_trailing", "euler-a", 20, VT, "roentgen"),
    ("euler_a_15_linspace", "euler-a", 15, {"timestep_spacing": "linspace"}, "roentgen"),
    ("euler_a_10_zsnr", "euler-a", 10, ZSNR, "roentgen"),
    ("legacy_pndm_10", "pndm", 10, {}, "legacy"),
    ("legacy_ddim_10", "ddim", 10, {}, "legacy"),
    ("legacy_dpm_10", "dpm++2m", 10, {}, "legacy"),
    ("legacy_euler_a_10", "euler-a", 10, {}, "legacy"),
]

# alphas_cumprod of each beta schedule, checked bit for bit (the torch.linspace and
# torch.cumprod details live here).
SCHEDULES = {
    "scaled_linear": {},
    "linear": {"beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02},
    "squaredcos_cap_v2": {"beta_schedule": "squaredcos_cap_v2"},
    "scaled_linear_zsnr": {"rescale_betas_zero_snr": True},
}


def base_config(which):
    if which == "roentgen":
        return json.loads(CONFIG.read_text())
    return copy.deepcopy(LEGACY)


def make(kind, which, overrides):
    """PNDM from the checkpoint's config, then the target class from PNDM's config."""
    pndm = PNDMScheduler.from_config(base_config(which))
    return CLASSES[kind].from_config(pndm.config, **overrides)


def run(name, kind, steps, overrides, which, sample, model_outputs):
    sched = make(kind, which, overrides)
    sched.set_timesteps(steps)
    timesteps = sched.timesteps.clone()
    calls = len(timesteps)
    assert calls <= MAX_CALLS, (name, calls)
    ins = sched.init_noise_sigma
    ins = torch.tensor([float(ins)], dtype=torch.float32) if not torch.is_tensor(ins) \
        else ins.reshape(1).to(torch.float32)

    generator = torch.Generator("cpu").manual_seed(NOISE_SEED)
    x = sample * sched.init_noise_sigma  # what StableDiffusionPipeline.prepare_latents does
    outs, scaled = [], []
    for k, t in enumerate(timesteps):
        s = sched.scale_model_input(x, t)
        scaled.append(s.clone())
        kwargs = {"generator": generator} if kind == "euler-a" else {}
        x = sched.step(model_outputs[k], t, x, **kwargs).prev_sample
        outs.append(x.clone())
    assert all(torch.isfinite(o).all() for o in outs), name

    spec_config = base_config(which)
    spec_config.update(overrides)
    spec = {"kind": kind, "steps": steps, "config": spec_config}
    tensors = {
        f"{name}.spec": torch.tensor(list(json.dumps(spec, sort_keys=True).encode()),
                                     dtype=torch.uint8),
        f"{name}.timesteps": timesteps.to(torch.float32 if kind == "euler-a" else torch.int64),
        f"{name}.init_noise_sigma": ins,
        f"{name}.outputs": torch.stack(outs),
    }
    if kind == "euler-a":
        assert timesteps.dtype == torch.float32
        tensors[f"{name}.scaled"] = torch.stack(scaled)
        # Replay the draws `step` made: same seed, same calls.
        replay = torch.Generator("cpu").manual_seed(NOISE_SEED)
        noise = [randn_tensor(SHAPE, generator=replay, dtype=torch.float32) for _ in range(calls)]
        assert torch.equal(replay.get_state(), generator.get_state()), name
        tensors[f"{name}.noise"] = torch.stack(noise)
    else:
        assert timesteps.dtype == torch.int64
        for k in range(calls):
            s_in = sample * sched.init_noise_sigma if k == 0 else outs[k - 1]
            assert torch.equal(scaled[k], s_in), f"{name}: scale_model_input is not the identity"
    print(f"{name:28s} {calls:3d} calls  init_noise_sigma {ins.item():.6f}  "
          f"timesteps {timesteps[:4].tolist()}...{timesteps[-2:].tolist()}")
    return tensors


_ST_DTYPES = {torch.float32: "F32", torch.int64: "I64", torch.uint8: "U8"}


def save_safetensors(tensors, path):
    """Tensors in sorted-name order, header padded to 8 bytes: byte-reproducible."""
    header, offset, blobs = {}, 0, []
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        b = t.numpy().tobytes()
        header[name] = {"dtype": _ST_DTYPES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(b)]}
        offset += len(b)
        blobs.append(b)
    h = json.dumps(header, separators=(",", ":"), ensure_ascii=True).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little"))
        f.write(h)
        for b in blobs:
            f.write(b)
    back = load_file(str(path))
    assert back.keys() == tensors.keys()
    for k, v in tensors.items():
        assert back[k].dtype == v.dtype and torch.equal(back[k], v), k


def main():
    sample = torch.randn(SHAPE, generator=torch.Generator("cpu").manual_seed(SAMPLE_SEED))
    model_outputs = torch.randn((MAX_CALLS,) + SHAPE,
                                generator=torch.Generator("cpu").manual_seed(OUTPUTS_SEED))
    tensors = {"sample": sample, "model_outputs": model_outputs}
    for name, overrides in SCHEDULES.items():
        sched = DDIMScheduler.from_config(PNDMScheduler.from_config(base_config("roentgen")).config,
                                          **overrides)
        tensors[f"schedule.{name}"] = sched.alphas_cumprod.to(torch.float32)
    for name, kind, steps, overrides, which in RUNS:
        tensors.update(run(name, kind, steps, overrides, which, sample, model_outputs))
    save_safetensors(tensors, OUT)
    print(f"wrote {os.path.relpath(OUT, ROOT)}: {OUT.stat().st_size:,} bytes, {len(tensors)} tensors")
    assert OUT.stat().st_size < 1_000_000


if __name__ == "__main__":
    main()
