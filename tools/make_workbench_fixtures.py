#!/usr/bin/env python3
"""Golden fixtures for the radiology workbench (issue 11): image-to-image, inpainting
and per-word attention maps, computed by diffusers on the committed tiny-sd pipeline.

Writes tests/fixtures/workbench/ (init.png, mask.png) and
tests/fixtures/golden/workbench.safetensors. Reads tests/fixtures/tiny-sd/ (made by
make_fixtures.py) and never rewrites it. Run through tools/make_workbench_fixtures.sh
(the pinned venv); tests only read the outputs.

What is computed (float32, CPU, seed 0, prompt PROMPT, negative "", guidance 4, 10 steps,
a non-square 128x96 image so that a height/width mix-up shows):
- img2img.<sched>.*  StableDiffusionImg2ImgPipeline, strength 0.6, for PNDM (the
  checkpoint's), DPM-Solver++ 2M, DDIM and Euler ancestral: final latents, image, the
  timesteps run, the latents after the first step.
- inpaint.<sched>.*  StableDiffusionInpaintPipeline with the ordinary 4-channel UNet:
  PNDM at strength 1.0 (the default) and Euler ancestral at 0.75 (its noise comes from
  the same generator after the init image's and masked image's latent samples, so the
  order of draws is checked too).
- daam.*  per-word attention maps of the text-to-image PNDM run: for every cross-attention
  layer (attn2), every head and every UNet call, the conditional half's softmax
  probabilities over the prompt's tokens (BOS/EOS/padding left out), each layer's
  [h_l, w_l] map resized to the latent grid with F.interpolate(mode="bilinear",
  align_corners=False), summed. Computed by an attention processor that returns
  exactly what diffusers' default processor returns (checked: the run's latents equal
  those of a run without it).
"""

import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

import diffusers
import transformers
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
)
from diffusers.models.attention_processor import AttnProcessor2_0

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_fixtures import save_safetensors, nondegenerate, rel  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "tests" / "fixtures"
MODEL = FIX / "tiny-sd"
OUT = FIX / "workbench"
GOLD = FIX / "golden" / "workbench.safetensors"

PROMPT = "Small right-sided pleural effusion."
W, H = 128, 96
STEPS = 10
GUIDANCE = 4.0
STRENGTH = 0.6

torch.set_num_threads(max(1, os.cpu_count() or 1))
transformers.logging.set_verbosity_error()
diffusers.logging.set_verbosity_error()


def log(*a):
    print(*a, flush=True)


def init_image():
    """A smooth synthetic 'radiograph' (8-bit gray): two dark lung fields in a bright
    body, a bright mediastinum. Deterministic, no randomness."""
    y, x = np.mgrid[0:H, 0:W].astype(np.float64)
    cx, cy = W / 2, H / 2
    body = 0.75 - 0.25 * (((x - cx) / (0.55 * W)) ** 2 + ((y - cy) / (0.6 * H)) ** 2)
    lung = np.exp(-(((x - 0.3 * W) / (0.15 * W)) ** 2 + ((y - 0.5 * H) / (0.3 * H)) ** 2))
    lung += np.exp(-(((x - 0.7 * W) / (0.15 * W)) ** 2 + ((y - 0.5 * H) / (0.3 * H)) ** 2))
    v = body - 0.5 * lung + 0.05 * np.sin(x / 3.0) * np.cos(y / 5.0)
    return Image.fromarray(np.clip(np.round(v * 255), 0, 255).astype(np.uint8), mode="L")


def mask_image():
    """White = repaint: the lower left field, edges off the 8-pixel latent grid (so that
    the nearest-neighbour resize to the latent grid is exercised)."""
    m = np.zeros((H, W), np.uint8)
    m[45:90, 13:62] = 255
    # a grey ramp on its right edge: 127 keeps, 128 repaints (the binarisation)
    m[45:90, 62:66] = [127, 128, 200, 60]
    return Image.fromarray(m, mode="L")


def schedulers(base):
    return {
        "pndm": base,
        "dpmpp2m": DPMSolverMultistepScheduler.from_config(
            base.config, algorithm_type="dpmsolver++", solver_order=2),
        "ddim": DDIMScheduler.from_config(base.config),
        "euler_a": EulerAncestralDiscreteScheduler.from_config(base.config),
    }


def run(pipe, label, g, keep_image=True, **kw):
    steps = []

    def cb(_p, i, t, k):
        steps.append((float(t), k["latents"].detach().float().clone()))
        return k

    common = dict(prompt=PROMPT, negative_prompt="", guidance_scale=GUIDANCE,
                  num_inference_steps=STEPS, **kw)
    lat = pipe(**common, output_type="latent", generator=torch.Generator("cpu").manual_seed(0),
               callback_on_step_end=cb).images
    img = pipe(**common, output_type="np", generator=torch.Generator("cpu").manual_seed(0)).images
    img = torch.from_numpy(np.ascontiguousarray(img)).float()
    assert lat.shape == (1, 4, H // 8, W // 8), lat.shape
    assert img.shape == (1, H, W, 3), img.shape
    g[f"{label}.latents"] = lat.float()
    if keep_image:  # (the decode is checked elsewhere; images are the big goldens)
        g[f"{label}.image"] = img
    g[f"{label}.timesteps"] = torch.tensor([t for t, _ in steps], dtype=torch.float32)
    g[f"{label}.latents_step0"] = steps[0][1]
    nondegenerate(f"{label}.image", img, 0.02)
    log(f"  {label}: {len(steps)} calls, timesteps {[round(t, 2) for t, _ in steps]}")
    return lat


class MapProcessor:
    """attn2: diffusers' default output, and the conditional half's attention
    probabilities summed over heads, resized to the latent grid, accumulated."""

    def __init__(self, acc, n_tokens, lat_hw):
        self.acc, self.n, self.lat_hw = acc, n_tokens, lat_hw
        self.inner = AttnProcessor2_0()

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                 temb=None, **kw):
        out = self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kw)
        b, seq, _ = hidden_states.shape
        q = attn.head_to_batch_dim(attn.to_q(hidden_states))
        k = attn.head_to_batch_dim(attn.to_k(encoder_hidden_states))
        probs = attn.get_attention_scores(q, k, None)  # [b * heads, seq, 77]
        probs = probs.view(b, attn.heads, seq, -1)[b // 2:]  # the conditional half
        per_token = probs.sum(dim=1)[0, :, 1:1 + self.n]  # [seq, n]: heads summed
        h, w = self.lat_hw
        while h * w > seq:  # the UNet halves with ceil (conv stride 2, padding 1)
            h, w = (h + 1) // 2, (w + 1) // 2
        assert h * w == seq, (h, w, seq)
        m = per_token.T.reshape(1, self.n, h, w)
        m = F.interpolate(m, size=self.lat_hw, mode="bilinear", align_corners=False)
        self.acc += m[0]
        return out


def daam(pipe, g):
    tok = pipe.tokenizer
    ids = tok(PROMPT).input_ids
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    words = ids[1:-1]
    n = len(words)
    lat_hw = (H // 8, W // 8)
    acc = torch.zeros((n, *lat_hw))
    procs = {}
    for name in pipe.unet.attn_processors:
        procs[name] = (MapProcessor(acc, n, lat_hw) if name.endswith("attn2.processor")
                       else AttnProcessor2_0())
    common = dict(prompt=PROMPT, negative_prompt="", guidance_scale=GUIDANCE,
                  num_inference_steps=STEPS, height=H, width=W, output_type="latent")
    plain = pipe(**common, generator=torch.Generator("cpu").manual_seed(0)).images
    n_layers = sum(1 for k in procs if k.endswith("attn2.processor"))
    pipe.unet.set_attn_processor(procs)  # (pops the dict's entries)
    lat = pipe(**common, generator=torch.Generator("cpu").manual_seed(0)).images
    pipe.unet.set_attn_processor(AttnProcessor2_0())
    assert torch.equal(lat, plain), "the map processor changed the result"
    g["daam.pndm.maps"] = acc.clone()
    g["daam.pndm.token_ids"] = torch.tensor(words, dtype=torch.int64)
    g["daam.pndm.latents"] = lat.float()
    nondegenerate("daam.pndm.maps", acc, 1e-4)
    # sanity: with 11 UNet calls and n_layers layers, each position's map over all 77
    # tokens would sum to heads * layers * calls; over our n tokens it is less
    log(f"  daam: {n} tokens {[tok.decode([i]) for i in words]}, {n_layers} attn2 layers, "
        f"map sums {[round(v, 2) for v in acc.sum(dim=(1, 2)).tolist()]}")
    return n_layers


@torch.no_grad()
def main():
    log(f"torch {torch.__version__}, diffusers {diffusers.__version__}")
    OUT.mkdir(parents=True, exist_ok=True)
    init, mask = init_image(), mask_image()
    init.save(OUT / "init.png", optimize=False)
    mask.save(OUT / "mask.png", optimize=False)
    # the PNGs read back are exactly what we pass (what the engine will decode)
    init = Image.open(OUT / "init.png").convert("RGB")
    mask = Image.open(OUT / "mask.png")
    assert mask.mode == "L"

    kw = dict(dtype=torch.float32, safety_checker=None, requires_safety_checker=False)
    t2i = StableDiffusionPipeline.from_pretrained(MODEL, **kw)
    t2i.set_progress_bar_config(disable=True)
    i2i = StableDiffusionImg2ImgPipeline(**t2i.components)
    inp = StableDiffusionInpaintPipeline(**t2i.components)
    for p in (i2i, inp):
        p.set_progress_bar_config(disable=True)
    base = t2i.scheduler
    g = {}

    log("== image-to-image, strength 0.6")
    for label, sched in schedulers(base).items():
        i2i.scheduler = sched
        run(i2i, f"img2img.{label}", g, keep_image=label in ("pndm", "dpmpp2m"), image=init,
            strength=STRENGTH)
        n = len(g[f"img2img.{label}.timesteps"])
        want = int(STEPS * STRENGTH) + (1 if label == "pndm" else 0)
        assert n == want, (label, n, want)
    i2i.scheduler = base

    log("== inpainting (4-channel UNet)")
    scheds = schedulers(base)
    for label, strength in (("pndm", 1.0), ("euler_a", 0.75)):
        inp.scheduler = scheds[label]
        run(inp, f"inpaint.{label}", g, keep_image=label == "pndm", image=init, mask_image=mask, strength=strength,
            height=H, width=W)
        g[f"inpaint.{label}.strength"] = torch.tensor([strength], dtype=torch.float32)
    inp.scheduler = base
    # the mask on the latent grid, as the pipeline's mask processor + nearest resize give it
    mp = inp.mask_processor.preprocess(mask, height=H, width=W)
    g["inpaint.mask_latent"] = F.interpolate(mp, size=(H // 8, W // 8))[0, 0].float()

    log("== attention maps (text-to-image, PNDM)")
    t2i.scheduler = base
    layers = daam(t2i, g)

    for k, v in g.items():
        assert torch.isfinite(v.float()).all(), k
    meta = {
        "prompt": PROMPT, "negative_prompt": "", "guidance_scale": str(GUIDANCE),
        "num_inference_steps": str(STEPS), "width": str(W), "height": str(H), "seed": "0",
        "img2img_strength": str(STRENGTH), "attn2_layers": str(layers),
        "torch": torch.__version__, "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "computed_in": "float32, CPU, tiny-sd loaded from its folder",
    }
    save_safetensors(g, GOLD, metadata=meta)
    log(f"wrote {rel(GOLD)} ({GOLD.stat().st_size / 1e3:.1f} KB, {len(g)} tensors), "
        f"{rel(OUT / 'init.png')}, {rel(OUT / 'mask.png')}")
    for k, v in g.items():
        log(f"  {k:34s} {str(v.dtype).replace('torch.', ''):7s} {tuple(v.shape)}")


if __name__ == "__main__":
    main()
