#!/usr/bin/env python3
"""Golden fixture for int8/int4 block quantization of the weights: `tiny-sd-heavy`.

Builds a tiny random-weight StableDiffusionPipeline with the SD1.x/RoentGen
architecture whose widths are multiples of 32 (so 32-weight quantization blocks line
up with rows), with heavy-tailed weights that have outlier input channels, as trained
SD weights do; saves it as a diffusers folder (fp32 safetensors, RoentGen-era
vocab.json + merges.txt tokenizer) at tests/fixtures/tiny-sd-heavy/, and writes
tests/fixtures/golden/tiny-sd-heavy.safetensors: the f32 pipeline outputs and the
same outputs with the weights fake-quantized (quantized, then dequantized, computed
in float32) by the engine's int8 and int4 schemes (src/quant.rs, described in
QUANT_SCHEME below and in tools/README.md).

Run through tools/make_quant_fixture.sh (pinned venv, PYTHONHASHSEED=0). Reuses
tools/make_fixtures.py's helpers; does not touch the other fixtures.
"""

import copy
import json
import math
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_fixtures as mf  # noqa: E402  (sets torch threads and library log levels)
from make_fixtures import (  # noqa: E402
    FIX, GOLD, PROMPT, SCHEDULER_CFG, log, rel,
    build_tokenizer, check_saved_weights, check_tokenizer, clip_vocab_and_merges,
    goldens, load_fp32, redraw, save_pipeline, save_safetensors,
)

import diffusers  # noqa: E402
import transformers  # noqa: E402
from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel  # noqa: E402
from transformers import CLIPTextConfig, CLIPTextModel  # noqa: E402

diffusers.utils.logging.disable_progress_bar()
transformers.utils.logging.disable_progress_bar()

NAME = "tiny-sd-heavy"
SEED = 1004  # weights generator (tiny-sd 1001, -bin 1002, -alt 1003)

SPEC = dict(
    name=NAME,
    seed=SEED - 1000,
    # widths multiples of 32: every quantized matrix's K (Linear in-features, conv
    # KH*KW*Cin) is a multiple of 32, so a block lies in one row
    text=dict(vocab_size=49408, hidden_size=32, intermediate_size=64,
              num_hidden_layers=2, num_attention_heads=4,
              max_position_embeddings=77, hidden_act="quick_gelu"),
    unet=mf._unet((32, 32, 64, 64), cross_attention_dim=32, attention_head_dim=8,
                  norm_num_groups=16),
    vae=mf._vae((16, 16, 32, 32), layers_per_block=2, norm_num_groups=16),
    # save_pipeline/load_fp32/goldens options: as tiny-sd
    dtype=torch.float32, safe=True, variant=None, tok_layout="legacy",
    vocab_json="pretty", te_prefix=True, vae_legacy_attn=False,
    vae_latent_hw=(8, 12),
)

# --------------------------------------------------------------------------
# Heavy-tailed weights with outlier input channels
# --------------------------------------------------------------------------

T_DF = 3               # Student-t degrees of freedom
OUTLIER_FRAC = 0.03    # fraction of input channels (dim 1 of the PyTorch weight), >= 1
OUTLIER_MUL = 6.0
# Gains: lower than tiny-sd's (text 1.0, UNet 1.3, conv_out 1.5). A random UNet at 1.3
# makes the 10-step sampler chaotic: with these heavier weights it turned the int8 weight
# error (1 %) into 44 % on the final latents (25 dB images), and would blow up f32 rounding
# differences between engines the same way. At 0.7/0.6/1.0 the images are as
# non-degenerate (std 0.13, 0.2 % saturated), another prompt still moves the image by
# ~30 dB, and int8/int4 land at ~52/~32 dB (seeds 1004, 5, 6 alike).
TEXT_GAIN = 0.7
UNET_GAIN = 0.6
UNET_OUT_GAIN = 1.0
VAE_DEC_OUT_GAIN = mf.VAE_DEC_OUT_GAIN  # VAE exactly as tiny-sd's


def heavy_weight(shape, fan_in, gain, gen):
    """Student-t(3) scaled to variance gain^2/fan_in, then ~3 % of the input channels
    (dim 1, at least one, chosen at random) multiplied by 6.

    t = Z / sqrt(chi2_df / df) from torch.randn only (torch's StudentT/Gamma samplers
    take no generator); Var t(df) = df / (df - 2)."""
    z = torch.randn(shape, generator=gen)
    chi2 = torch.randn((T_DF, *shape), generator=gen).square().sum(0)
    t = z / torch.sqrt(chi2 / T_DF)
    w = t * (gain / math.sqrt(fan_in) / math.sqrt(T_DF / (T_DF - 2)))
    n_in = shape[1]
    k = max(1, round(OUTLIER_FRAC * n_in))
    idx = torch.randperm(n_in, generator=gen)[:k]
    w[:, idx] *= OUTLIER_MUL
    return w


def build_heavy_pipeline(tokenizer):
    gen = torch.Generator("cpu").manual_seed(SEED)
    text_encoder = CLIPTextModel(CLIPTextConfig(**SPEC["text"])).eval()
    unet = UNet2DConditionModel(**SPEC["unet"]).eval()
    vae = AutoencoderKL(**SPEC["vae"]).eval()
    n_t = redraw(text_encoder, gen, gain=TEXT_GAIN, emb_std=0.1, weight_init=heavy_weight)
    n_u = redraw(unet, gen, gain=UNET_GAIN, special={"conv_out": UNET_OUT_GAIN},
                 weight_init=heavy_weight)
    # the VAE as tiny-sd's: Gaussian weights
    n_v = redraw(vae, gen, gain=1.0, special={"decoder.conv_out": VAE_DEC_OUT_GAIN})
    log(f"  re-drew {n_t} text-encoder, {n_u} UNet, {n_v} VAE parameter tensors")
    counts = {k: sum(p.numel() for p in m.parameters())
              for k, m in (("text", text_encoder), ("unet", unet), ("vae", vae))}
    log("  parameter counts: " + "  ".join(f"{k} {v:,}" for k, v in counts.items()))
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
        scheduler=PNDMScheduler(**SCHEDULER_CFG), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False,
    )
    return pipe, counts


# --------------------------------------------------------------------------
# The quantization scheme (src/quant.rs, SCHEME_VERSION 1), as fake quantization
# --------------------------------------------------------------------------

BLOCK = 32
# sanity bounds on the dequantized weights' relative L2 error vs f32 (measured: int8
# 1.02 % over all quantized weights, worst tensor 1.22 %; int4 11.0 %, worst 14.6 %)
INT8_TENSOR_REL_MAX = 0.015
INT8_TOTAL_REL_MAX = 0.011
INT4_TOTAL_REL_MAX = 0.12
QUANT_SCHEME = (
    "blocks of 32 consecutive weights of the flattened weight (linear [N,K] row-major; "
    "conv [O,I,KH,KW] permuted to [O,KH,KW,I] first; last block may be short). "
    "int8: scale=f16(amax/127), q=clamp(round(x/scale),-127,127), x'=q*scale. "
    "int4: scale=f16((max-min)/15), mn=f16(min), q=clamp(round((x-mn)/scale),0,15), "
    "x'=q*scale+mn. round = half away from zero (f32::round), f16 = nearest-even, "
    "arithmetic in f32, scale 0 => q=0. Quantized: UNet ndim>=2 except conv_in.weight, "
    "conv_out.weight, time_embedding.*; text encoder ndim>=2 except "
    "text_model.embeddings.*. Those exceptions and every VAE ndim>=2 tensor: f16-rounded. "
    "1-D tensors: f32 as stored."
)


def f16r(x):
    """f32 -> f16 (round to nearest even) -> f32."""
    return x.half().float()


def round_half_away(v):
    """sign(v) * floor(|v| + 0.5), exactly (as Rust's f32::round): evaluated in f64, where
    |v| + 0.5 is exact for every f32 v of this size. (In f32, |v| + 0.5 rounds for
    v = 0.49999997, giving 1, where f32::round gives 0.)"""
    d = v.double()
    return (torch.sign(d) * torch.floor(d.abs() + 0.5)).float()


def to_rows(w):
    """The flat order of the engine: conv [O,I,KH,KW] -> [O,KH,KW,I]; linear as is."""
    return w.permute(0, 2, 3, 1) if w.ndim == 4 else w


def from_rows(flat, w):
    if w.ndim == 4:
        o, i, kh, kw = w.shape
        return flat.reshape(o, kh, kw, i).permute(0, 3, 1, 2).contiguous()
    return flat.reshape(w.shape).contiguous()


def _quant_blocks(x, fmt):
    """x: [B, n] float32 blocks (n <= 32). Returns (dequantized, q, scale, v = pre-round)."""
    if fmt == "int8":
        amax = x.abs().amax(1, keepdim=True)
        scale = f16r(amax / 127.0)
        safe = torch.where(scale == 0, torch.ones_like(scale), scale)
        v = x / safe
        q = torch.where(scale == 0, torch.zeros_like(x), round_half_away(v).clamp(-127.0, 127.0))
        deq = q * scale
    elif fmt == "int4":
        lo = x.amin(1, keepdim=True)
        hi = x.amax(1, keepdim=True)
        scale = f16r((hi - lo) / 15.0)
        mn = f16r(lo)
        safe = torch.where(scale == 0, torch.ones_like(scale), scale)
        v = (x - mn) / safe
        q = torch.where(scale == 0, torch.zeros_like(x), round_half_away(v).clamp(0.0, 15.0))
        deq = q * scale  # an f32 multiply, then an f32 add (no FMA), as src/quant.rs
        deq = deq + mn
    else:
        raise ValueError(fmt)
    return deq, q, scale.reshape(-1), v


def fake_quant(w, fmt):
    """Quantize and dequantize one weight tensor (float32). Returns (w', info)."""
    assert w.dtype == torch.float32 and w.ndim in (2, 4), (w.dtype, w.shape)
    flat = to_rows(w).contiguous().reshape(-1)
    n = flat.numel()
    full = (n // BLOCK) * BLOCK
    parts = [flat[:full].reshape(-1, BLOCK)] if full else []
    if n > full:
        parts.append(flat[full:].reshape(1, -1))  # the short last block
    res = [_quant_blocks(x, fmt) for x in parts]
    cat = lambda i: torch.cat([r[i].reshape(-1) for r in res])
    info = dict(q=cat(1), scales=cat(2), v=cat(3), n=n, nb=-(-n // BLOCK))
    return from_rows(cat(0), w), info


def fake_quant_numpy(w, fmt):
    """A second, block-by-block implementation in numpy (float32 scalars throughout),
    to cross-check fake_quant bit for bit."""
    x = to_rows(w).contiguous().reshape(-1).numpy().astype(np.float32)
    out = np.empty_like(x)
    f32, f16 = np.float32, np.float16
    rnd = lambda v: np.float32(math.copysign(math.floor(abs(float(v)) + 0.5), float(v)))
    for b in range(0, x.size, BLOCK):
        blk = x[b:b + BLOCK]
        if fmt == "int8":
            scale = f32(f16(f32(np.abs(blk).max()) / f32(127.0)))
            if scale == 0:
                out[b:b + BLOCK] = 0
                continue
            q = np.array([min(max(rnd(f32(v) / scale), -127.0), 127.0) for v in blk], dtype=np.float32)
            out[b:b + BLOCK] = q * scale
        else:
            lo, hi = f32(blk.min()), f32(blk.max())
            scale = f32(f16(f32(hi - lo) / f32(15.0)))
            mn = f32(f16(lo))
            if scale == 0:
                out[b:b + BLOCK] = mn
                continue
            q = np.array([min(max(rnd(f32(f32(v) - mn) / scale), 0.0), 15.0) for v in blk], dtype=np.float32)
            out[b:b + BLOCK] = (q * scale).astype(np.float32) + mn
    return from_rows(torch.from_numpy(out), w)


def selftest():
    """fake_quant against fake_quant_numpy on awkward shapes, exact .5 ties, a zero block."""
    gen = torch.Generator("cpu").manual_seed(7)
    for shape in ((5, 37), (3, 5, 3, 3), (2, 16), (1, 7)):
        w = heavy_weight(shape, shape[1], 1.0, gen)
        for fmt in ("int8", "int4"):
            deq, info = fake_quant(w, fmt)
            assert deq.shape == w.shape and info["scales"].numel() == info["nb"]
            assert torch.equal(deq, fake_quant_numpy(w, fmt)), (shape, fmt)
    # int8 ties: scale = 2^-6 exactly (amax 127 * 2^-6); 2.5 -> 3, -0.5 -> -1 (torch.round: 2, -0)
    x = torch.tensor([127.0, 2.5, -2.5, 0.5, -0.5, 1.5, 0.0] + [0.25] * 25) * 2.0 ** -6
    deq, info = fake_quant(x.reshape(1, 32), "int8")
    assert info["q"][:7].tolist() == [127, 3, -3, 1, -1, 2, 0], info["q"][:7]
    assert torch.equal(deq.reshape(-1)[:7], torch.tensor([127, 3, -3, 1, -1, 2, 0.0]) * 2.0 ** -6)
    # int4 ties: lo 0, hi 15 * 2^-4: (x - 0) / 2^-4 = 0.5 -> 1, 7.5 -> 8
    x = torch.tensor([0.0, 15.0, 0.5, 7.5] + [3.0] * 28) * 2.0 ** -4
    deq, info = fake_quant(x.reshape(1, 32), "int4")
    assert info["q"][:4].tolist() == [0, 15, 1, 8], info["q"][:4]
    # conv order: a block is 32 input channels at one (kh, kw): scale per [o, kh, kw]
    w = torch.zeros(2, 32, 3, 3)
    w[1, :, 2, 1] = torch.tensor([127.0] + list(range(-15, 16)))  # scale 1: exact
    deq, info = fake_quant(w, "int8")
    assert info["scales"].tolist() == [0.0] * 16 + [1.0, 0.0] and torch.equal(deq, w)
    log("  fake_quant self-test ok (short blocks, ties, conv order, zero blocks; numpy agrees)")


def treatment(component, name, p):
    """'quant', 'f16' or 'f32' for a parameter, per the scheme's rules."""
    if p.ndim < 2:
        return "f32"
    if component == "vae":
        return "f16"
    if component == "unet":
        if name in ("conv_in.weight", "conv_out.weight") or name.startswith("time_embedding."):
            return "f16"
        return "quant"
    if component == "text_encoder":
        # transformers 5.x names the parameters without the `text_model.` prefix the
        # file has; the rule is about the file's `text_model.embeddings.*`
        full = name if name.startswith("text_model.") else "text_model." + name
        return "f16" if full.startswith("text_model.embeddings.") else "quant"
    raise ValueError(component)


@torch.no_grad()
def fake_quantize_pipeline(pipe, fmt, crosscheck):
    """Apply the scheme to a copy of the f32 pipeline; returns it and a report."""
    qp = copy.deepcopy(pipe)
    rep = dict(quant=0, f16=0, f32=0, quant_numel=0, worst_rel=0.0, worst_name="",
               se=0.0, ss=0.0, exact_ties=0, near_ties=0, checked_numpy=0)
    for comp in ("text_encoder", "unet", "vae"):
        src = dict(getattr(pipe, comp).named_parameters())
        for name, p in getattr(qp, comp).named_parameters():
            w = src[name].detach()
            assert w.dtype == torch.float32
            how = treatment(comp, name, w)
            rep[how] += 1
            if how == "f32":
                continue
            if how == "f16":
                p.copy_(f16r(w))
                continue
            deq, info = fake_quant(w, fmt)
            q, scales = info["q"], info["scales"]
            # sanity: the q grid is full, per block (the last, short block too)
            qb = torch.nn.functional.pad(q, (0, info["nb"] * BLOCK - info["n"]), value=float("nan"))
            qb = qb.reshape(info["nb"], BLOCK)
            pos = scales > 0
            assert pos.all(), f"{comp}.{name}: a block with scale 0"
            if fmt == "int8":
                assert torch.equal(qb.abs().nan_to_num(-1).amax(1)[pos], torch.full((int(pos.sum()),), 127.0)), name
            else:
                assert torch.equal(qb.nan_to_num(-1).amax(1)[pos], torch.full((int(pos.sum()),), 15.0)), name
                assert torch.equal(qb.nan_to_num(99).amin(1)[pos], torch.zeros(int(pos.sum()))), name
            # x/scale (or (x-mn)/scale) exactly at k + 0.5 (where half-to-even rounding,
            # torch.round or WGSL round(), would differ) and within one f32 ulp of it (where
            # x * (1/scale) instead of x / scale could flip q): reported only
            v = info["v"].double().abs()
            d = (v - torch.floor(v) - 0.5).abs()
            rep["exact_ties"] += int((d == 0).sum())
            rep["near_ties"] += int(((d > 0) & (d <= v * 2.0 ** -23)).sum())
            if crosscheck(comp, name):
                assert torch.equal(fake_quant_numpy(w, fmt), deq), f"numpy cross-check {comp}.{name}"
                rep["checked_numpy"] += 1
            e = (deq - w).double()
            r = (e.norm() / w.double().norm()).item()
            if r > rep["worst_rel"]:
                rep["worst_rel"], rep["worst_name"] = r, f"{comp}.{name}"
            rep["se"] += e.square().sum().item()
            rep["ss"] += w.double().square().sum().item()
            rep["quant_numel"] += w.numel()
            # every weight within half a step of its value (f16 rounding of the scale
            # and of int4's minimum can move the grid by ~2^-11 of a block's range)
            err = (to_rows(deq) - to_rows(w)).contiguous().reshape(-1).abs()
            step = scales.repeat_interleave(BLOCK)[: info["n"]]
            tol = 0.5 * step * (1 + 2.0 ** -8) + (0 if fmt == "int8" else 2.0 ** -10 * to_rows(w).abs().max())
            assert (err <= tol).all(), f"{fmt} {comp}.{name}: an error above half a step"
            if fmt == "int8":
                # ~1.0 % with these weights: an x6 outlier channel sits in almost every
                # block (blocks run along the input channels), so not < 1 % everywhere
                assert r < INT8_TENSOR_REL_MAX, f"int8 {comp}.{name}: relative error {r:.4f}"
            p.copy_(deq)
    rep["rel"] = math.sqrt(rep["se"] / rep["ss"])
    if fmt == "int8":
        assert rep["rel"] < INT8_TOTAL_REL_MAX, rep["rel"]
    else:
        assert rep["rel"] < INT4_TOTAL_REL_MAX, rep["rel"]
    return qp, rep


# --------------------------------------------------------------------------

def psnr(a, b):
    mse = (a.double() - b.double()).square().mean().item()
    return 10.0 * math.log10(1.0 / mse) if mse > 0 else float("inf")


def rel_l2(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def main():
    log(f"torch {torch.__version__}, diffusers {diffusers.__version__}, transformers "
        f"{transformers.__version__}, numpy {np.__version__}")
    torch.manual_seed(0)
    selftest()
    encoder, merges = clip_vocab_and_merges()
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = build_tokenizer(Path(tmp) / "tok", encoder, merges)

    log(f"\n=== {NAME}")
    pipe_mem, counts = build_heavy_pipeline(tokenizer)
    folder = save_pipeline(pipe_mem, SPEC, encoder, merges)
    pipe = load_fp32(folder, SPEC)
    check_saved_weights(pipe_mem, pipe, SPEC)
    check_tokenizer(pipe.tokenizer, f"{NAME}/tokenizer reloaded")
    for f in sorted(folder.rglob("*")):
        if f.is_file():
            log(f"  wrote {rel(f)}  ({f.stat().st_size:,} bytes)")
    # the weights really are heavy-tailed
    kurt = {}
    for comp in ("text_encoder", "unet"):
        ws = [p.detach().reshape(-1) for n, p in getattr(pipe, comp).named_parameters()
              if p.ndim >= 2 and "embedding" not in n]
        # excess kurtosis per tensor, averaged (t(3) has infinite kurtosis: large and noisy)
        ks = [((w - w.mean()) ** 4).mean().item() / w.var().item() ** 2 - 3 for w in ws]
        kurt[comp] = float(np.mean(ks))
    log("  mean excess kurtosis of the Linear/Conv weights: "
        + ", ".join(f"{k} {v:.1f}" for k, v in kurt.items()))

    # ---- f32 goldens (goldens() runs and checks everything; keep the pipeline part)
    KEEP = [f"pipe.{s}.{k}" for s in ("pndm", "dpmpp2m") for k in ("latents", "image", "timesteps")]
    g_all, st, sched_cfgs = goldens(pipe, SPEC)
    g = {k: g_all[k] for k in KEEP}
    stats = {k: v for k, v in st.items()}
    log("  f32 stats: " + ", ".join(f"{k}={v:.4f}" for k, v in stats.items()))

    # ---- fake-quantized pipelines
    table = []
    for fmt in ("int8", "int4"):
        # numpy cross-check (slow, scalar): a sample of tensor kinds, both components
        cross = lambda comp, name: name in (
            "encoder.layers.0.self_attn.q_proj.weight", "encoder.layers.1.mlp.fc2.weight",
            "down_blocks.0.resnets.0.conv1.weight", "down_blocks.2.attentions.0.proj_in.weight",
            "mid_block.attentions.0.transformer_blocks.0.ff.net.0.proj.weight",
            "up_blocks.1.resnets.0.conv_shortcut.weight", "down_blocks.0.downsamplers.0.conv.weight")
        qp, rep = fake_quantize_pipeline(pipe, fmt, cross)
        log(f"  {fmt}: {rep['quant']} tensors quantized ({rep['quant_numel']:,} weights), "
            f"{rep['f16']} f16-rounded, {rep['f32']} 1-D kept f32; weight rel L2 {rep['rel']:.5f} "
            f"(worst {rep['worst_rel']:.5f} {rep['worst_name']}); numpy cross-check "
            f"{rep['checked_numpy']} tensors bit-equal; x/scale at exactly k+.5: {rep['exact_ties']}, within 1 ulp of it: {rep['near_ties']}")
        assert rep["checked_numpy"] == 7, rep["checked_numpy"]
        gq, stq, _ = goldens(qp, SPEC)
        for s in ("pndm", "dpmpp2m"):
            assert torch.equal(gq[f"pipe.{s}.timesteps"], g[f"pipe.{s}.timesteps"])
            for k in ("latents", "image"):
                g[f"pipe.{fmt}.{s}.{k}"] = gq[f"pipe.{s}.{k}"]
            p_ = psnr(gq[f"pipe.{s}.image"], g[f"pipe.{s}.image"])
            r_ = rel_l2(gq[f"pipe.{s}.latents"], g[f"pipe.{s}.latents"])
            stats[f"{fmt}_{s}_image_psnr_db"] = p_
            stats[f"{fmt}_{s}_latents_rel_l2"] = r_
            stats[f"{fmt}_{s}_image_saturated_pct"] = stq[f"{s}_image_saturated_pct"]
            stats[f"{fmt}_{s}_image_std"] = stq[f"{s}_image_std"]
            table.append((fmt, s, p_, r_))
        stats[f"{fmt}_exact_half_ties"] = rep["exact_ties"]
        stats[f"{fmt}_near_half_ties"] = rep["near_ties"]
        stats[f"{fmt}_weights_rel_l2"] = rep["rel"]
        stats[f"{fmt}_weights_worst_rel_l2"] = rep["worst_rel"]
        stats[f"{fmt}_unet_out_rel_l2"] = rel_l2(gq["unet.out"], g_all["unet.out"])
        stats[f"{fmt}_text_last_hidden_state_rel_l2"] = rel_l2(
            gq["text.last_hidden_state"], g_all["text.last_hidden_state"])
    stats["text_weights_mean_excess_kurtosis"] = kurt["text_encoder"]
    stats["unet_weights_mean_excess_kurtosis"] = kurt["unet"]

    # ---- write
    GOLD.mkdir(parents=True, exist_ok=True)
    path = GOLD / f"{NAME}.safetensors"
    meta = {
        "fixture": NAME,
        "generator": "tools/make_quant_fixture.py",
        "prompt": PROMPT,
        "negative_prompt": "",
        "guidance_scale": "4.0",
        "num_inference_steps": "10",
        "height": "128",
        "width": "128",
        "seed": "0",
        "weights_dtype_on_disk": "float32",
        "computed_in": "float32, CPU, weights loaded from the saved folder; "
                       "pipe.int8.*/pipe.int4.*: with the fake-quantized (dequantized) weights",
        "quant_scheme": QUANT_SCHEME,
        "quant_block": str(BLOCK),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "scheduler.pndm": json.dumps(sched_cfgs["pndm"], sort_keys=True, default=str),
        "scheduler.dpmpp2m": json.dumps(sched_cfgs["dpmpp2m"], sort_keys=True, default=str),
        "parameter_counts": json.dumps(counts, sort_keys=True),
        "stats": json.dumps(stats, sort_keys=True),
    }
    save_safetensors(g, path, metadata=meta)
    log(f"  wrote {rel(path)}  ({path.stat().st_size:,} bytes, {len(g)} tensors)")
    for k in sorted(g):
        log(f"    {k:28s} {str(g[k].dtype).replace('torch.', ''):7s} {tuple(g[k].shape)}")

    log("\n=== fake quantization vs f32")
    log(f"{'format':6s} {'scheduler':9s} {'image PSNR dB':>13s} {'latents rel L2':>15s}")
    for fmt, s, p_, r_ in table:
        log(f"{fmt:6s} {s:9s} {p_:13.2f} {r_:15.5f}")
    low = [(f, s, p_) for f, s, p_, _ in table if p_ < {"int8": 45.0, "int4": 30.0}[f]]
    for f, s, p_ in low:
        log(f"WARNING: {f} {s} PSNR {p_:.2f} dB is below the expected "
            f"{ {'int8': 45, 'int4': 30}[f] } dB")
    total = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) + path.stat().st_size
    log(f"{NAME} folder + golden: {total:,} bytes")


if __name__ == "__main__":
    main()
