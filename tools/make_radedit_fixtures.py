#!/usr/bin/env python3
"""Golden fixtures for RadEdit (issue 22): a tiny RadEdit-architecture pipeline with
random weights, its BERT text encoder in both layouts, and what diffusers, transformers
and the edit-friendly DDPM inversion reference compute on it.

RadEdit (microsoft/radedit) is assembled by diffusers as a StableDiffusionPipeline: an
SD-1.x-style UNet, SDXL's VAE (scaling_factor 0.13025), BioViL-T's CXR-BERT as the text
encoder (its last hidden states, no attention mask, [B, 128, D]), BioViL-T's WordPiece
tokenizer at model_max_length 128, and
DDIMScheduler(beta_schedule="linear", clip_sample=False, prediction_type="epsilon",
timestep_spacing="trailing", steps_offset=1). This script builds the same assembly at toy
sizes and writes:

- tests/fixtures/tiny-radedit/: the pipeline folder, its text encoder saved as
  CXR-BERT/BioViL-T ships it (pytorch_model.bin with `bert.*`, `cls.*` and
  `cls_projection_head.*` keys, config `architectures ["CXRBertModel"]`,
  `model_type "cxr-bert"`), its tokenizer as vocab.txt + tokenizer_config.json (the
  vocabulary: tests/fixtures/wordpiece/vocab.txt, BioViL-T's special-token order);
- tests/fixtures/bert-plain/: the same BERT as diffusers' save_pretrained writes it
  (a plain BertModel, model.safetensors, no prefix);
- tests/fixtures/golden/tiny-radedit.safetensors:
  - text.*: input ids at 128 and the encoder's embeddings output, first layer and last
    hidden state (transformers' BertModel);
  - pipe.ddim.*: text to image with the recipe's settings (DDIM, 100 steps, guidance
    7.5, negative prompt "") at 128x128, seed 0: final latents and image;
  - edit.*, edit_keep.*: RadEdit's edit with an edit mask (keep mask = its
    complement; or tests/fixtures/radedit/keep_mask.png, leaving a region in neither) on a
    synthetic 128x128 radiograph (tests/fixtures/radedit/): edit-friendly DDPM
    inversion (Huberman-Spiegelglas et al., CVPR 2024) with inbarhub/DDPM_inversion's
    own `inversion_forward_process` and `reverse_step` (imported from a checkout of
    that repository at the commit below, never copied here), η = 1, inversion prompt
    "", 20 steps, skip ratio 0.3, guidance 7.5, `torch.manual_seed(0)` before the
    inversion. The two-mask reverse loop is ours (RadEdit's pipeline.py is not public
    outside the Hub): see docs/WORKBENCH.md, "RadEdit's edit", for each choice.

Run through tools/make_radedit_fixtures.sh (the pinned venv and the reference checkout).
Tests only read the outputs.
"""

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

import diffusers
import transformers
from diffusers import (AutoencoderKL, DDIMScheduler, StableDiffusionPipeline,
                       UNet2DConditionModel)
from transformers import BertConfig, BertForMaskedLM, BertModel, BertTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_fixtures import nondegenerate, redraw, rel, save_safetensors  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "tests" / "fixtures"
MODEL = FIX / "tiny-radedit"
PLAIN = FIX / "bert-plain"
IMAGES = FIX / "radedit"
GOLD = FIX / "golden" / "tiny-radedit.safetensors"
VOCAB = FIX / "wordpiece" / "vocab.txt"

# inbarhub/DDPM_inversion, the reference implementation of edit-friendly DDPM inversion
DDPM_INVERSION_COMMIT = "58fc881772d34f0c24be9e34725d213731aa009d"

PROMPT = "Small right-sided pleural effusion."
EDIT_PROMPT = "Large left pleural effusion."
SIZE = 128
STEPS = 100          # RadEdit's recipe
GUIDANCE = 7.5       # RadEdit's recipe
EDIT_STEPS = 20      # the edit golden: fewer steps, to keep the test fast
SKIP_RATIO = 0.3
ETA = 1.0

SCHEDULER = dict(beta_schedule="linear", clip_sample=False, prediction_type="epsilon",
                 timestep_spacing="trailing", steps_offset=1)
BERT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=512, type_vocab_size=2, layer_norm_eps=1e-12,
            hidden_act="gelu")

torch.set_num_threads(max(1, os.cpu_count() or 1))
transformers.logging.set_verbosity_error()
diffusers.logging.set_verbosity_error()


def log(*a):
    print(*a, flush=True)


def reference():
    """inbarhub/DDPM_inversion's inversion_utils, from a checkout at the pinned commit."""
    d = os.environ.get("DDPM_INVERSION_DIR")
    if not d or not (Path(d) / "ddm_inversion" / "inversion_utils.py").exists():
        sys.exit("set DDPM_INVERSION_DIR to a checkout of github.com/inbarhub/DDPM_inversion "
                 f"at {DDPM_INVERSION_COMMIT} (tools/make_radedit_fixtures.sh does)")
    sys.path.insert(0, d)
    from ddm_inversion import inversion_utils  # noqa: E402
    return inversion_utils


def radiograph():
    """A smooth synthetic 8-bit 'radiograph', square (the reference's noise maps are
    unet.sample_size squared)."""
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    c = SIZE / 2
    body = 0.75 - 0.25 * (((x - c) / (0.55 * SIZE)) ** 2 + ((y - c) / (0.6 * SIZE)) ** 2)
    lung = np.exp(-(((x - 0.3 * SIZE) / (0.15 * SIZE)) ** 2 + ((y - 0.5 * SIZE) / (0.3 * SIZE)) ** 2))
    lung += np.exp(-(((x - 0.7 * SIZE) / (0.15 * SIZE)) ** 2 + ((y - 0.5 * SIZE) / (0.3 * SIZE)) ** 2))
    v = body - 0.5 * lung + 0.05 * np.sin(x / 3.0) * np.cos(y / 5.0)
    return Image.fromarray(np.clip(np.round(v * 255), 0, 255).astype(np.uint8), mode="L")


def edit_mask():
    """White = edit: the lower right field (the patient's left), edges off the 8-pixel
    grid; a grey ramp on its left edge: 127 is not in the mask, 128 is (`> 0` after
    the image processor's [-1, 1] normalisation)."""
    m = np.zeros((SIZE, SIZE), np.uint8)
    m[61:118, 70:115] = 255
    m[61:118, 66:70] = [127, 128, 200, 60]
    return Image.fromarray(m, mode="L")


def keep_mask():
    """White = keep: the image's left part (the patient's right) and the top rows, so
    that a region in neither mask remains between it and the edit mask."""
    m = np.zeros((SIZE, SIZE), np.uint8)
    m[:, :50] = 255
    m[:20, :] = 255
    return Image.fromarray(m, mode="L")


def build():
    gen = torch.Generator("cpu").manual_seed(3000)
    vocab = VOCAB.read_text(encoding="utf-8").splitlines()
    mlm = BertForMaskedLM(BertConfig(vocab_size=len(vocab), **BERT)).eval()
    n_t = redraw(mlm.bert, gen, gain=1.0, emb_std=0.1)
    # the masked-LM head (unused by generation, present in CXR-BERT's file)
    redraw(mlm.cls.predictions.transform, gen)
    mlm.cls.predictions.bias.copy_(0.1 * torch.randn(mlm.cls.predictions.bias.shape, generator=gen))
    spec = json.loads((FIX / "tiny-sd" / "unet" / "config.json").read_text())
    unet_cfg = {k: v for k, v in spec.items() if not k.startswith("_")}
    unet_cfg["cross_attention_dim"] = BERT["hidden_size"]
    unet = UNet2DConditionModel(**unet_cfg).eval()
    spec = json.loads((FIX / "tiny-sd" / "vae" / "config.json").read_text())
    vae_cfg = {k: v for k, v in spec.items() if not k.startswith("_")}
    vae_cfg["scaling_factor"] = 0.13025  # SDXL's VAE
    vae = AutoencoderKL(**vae_cfg).eval()
    from make_fixtures import UNET_GAIN, UNET_OUT_GAIN, VAE_DEC_OUT_GAIN
    n_u = redraw(unet, gen, gain=UNET_GAIN, special={"conv_out": UNET_OUT_GAIN})
    n_v = redraw(vae, gen, gain=1.0, special={"decoder.conv_out": VAE_DEC_OUT_GAIN})
    log(f"  re-drew {n_t} BERT, {n_u} UNet, {n_v} VAE parameter tensors")
    # (transformers 5: `vocab=`; `vocab_file=` is silently ignored, leaving 5 tokens)
    tok = BertTokenizer(vocab=str(VOCAB), do_lower_case=True, model_max_length=128)
    assert len(tok.get_vocab()) == len(vocab), len(tok.get_vocab())
    assert [tok.pad_token_id, tok.unk_token_id, tok.cls_token_id, tok.sep_token_id,
            tok.mask_token_id] == [0, 1, 2, 3, 4]
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=mlm.bert, tokenizer=tok, unet=unet,
        scheduler=DDIMScheduler(**SCHEDULER), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    s = pipe.scheduler.config
    assert (s.beta_start, s.beta_end, s.set_alpha_to_one) == (0.0001, 0.02, True), s
    return pipe, mlm


def save(pipe, mlm):
    for d in (MODEL, PLAIN):
        if d.exists():
            shutil.rmtree(d)
    pipe.save_pretrained(MODEL, safe_serialization=True)
    # diffusers' own save of the text encoder: a plain BertModel (no prefix)
    shutil.move(MODEL / "text_encoder", PLAIN)
    # the pipeline's text encoder as BioViL-T ships CXR-BERT
    te = MODEL / "text_encoder"
    te.mkdir()
    cfg = json.loads((PLAIN / "config.json").read_text())
    cfg.update(architectures=["CXRBertModel"], model_type="cxr-bert", projection_size=128,
               auto_map={"AutoConfig": "configuration_cxrbert.CXRBertConfig",
                         "AutoModel": "modeling_cxrbert.CXRBertModel"})
    (te / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    sd = {k: v.detach().clone().contiguous() for k, v in mlm.state_dict().items()}
    assert "bert.embeddings.word_embeddings.weight" in sd and any(k.startswith("cls.") for k in sd)
    g = torch.Generator("cpu").manual_seed(3001)
    h = BERT["hidden_size"]
    # CXRBertModel's projection head (unused by generation, present in the file)
    sd["cls_projection_head.dense_to_hidden.weight"] = torch.randn((h, h), generator=g)
    sd["cls_projection_head.dense_to_hidden.bias"] = torch.zeros(h)
    sd["cls_projection_head.dense_to_output.weight"] = torch.randn((128, h), generator=g)
    sd["cls_projection_head.dense_to_output.bias"] = torch.zeros(128)
    torch.save(dict(sorted(sd.items())), te / "pytorch_model.bin")
    # the tokenizer as BioViL-T's folder has it: vocab.txt + tokenizer_config.json
    tdir = MODEL / "tokenizer"
    for f in sorted(tdir.iterdir()):
        if f.name not in ("vocab.txt", "tokenizer_config.json"):
            f.unlink()
    shutil.copy(VOCAB, tdir / "vocab.txt")
    tc = json.loads((tdir / "tokenizer_config.json").read_text())
    assert tc.get("model_max_length") == 128, tc
    log(f"  wrote {rel(MODEL)} ({sorted(p.name for p in MODEL.iterdir())}), {rel(PLAIN)}")


def loads_back(mlm):
    """Both saved text encoders load back in transformers to the same model."""
    plain = BertModel.from_pretrained(PLAIN).eval()
    sd = torch.load(MODEL / "text_encoder" / "pytorch_model.bin", weights_only=True)
    ids = torch.tensor([[2, 40, 50, 3, 0, 0]])
    want = mlm.bert(ids)[0]
    assert torch.equal(plain(ids)[0], want)
    m2 = BertForMaskedLM(mlm.config).eval()
    missing, unexpected = m2.load_state_dict(sd, strict=False)
    assert not missing and all(k.startswith("cls_projection_head.") for k in unexpected), \
        (missing, unexpected)
    assert torch.equal(m2.bert(ids)[0], want)


def text_goldens(pipe, g):
    tok, bert = pipe.tokenizer, pipe.text_encoder
    ids = tok([PROMPT, ""], padding="max_length", max_length=128, truncation=True,
              return_tensors="pt").input_ids
    assert ids.shape == (2, 128) and ids[1, :3].tolist() == [2, 3, 0], ids[1, :4]
    out = bert(ids, output_hidden_states=True)
    g["text.input_ids"] = ids.to(torch.int64)
    g["text.embeddings"] = out.hidden_states[0].float()
    g["text.layer0"] = out.hidden_states[1].float()
    g["text.last_hidden_state"] = out[0].float()
    assert torch.equal(out.hidden_states[-1], out[0])
    nondegenerate("text.last_hidden_state", out[0], 0.1)
    log(f"  prompt ids {ids[0, :12].tolist()} ...")


def generation_goldens(pipe, g):
    common = dict(prompt=PROMPT, negative_prompt="", guidance_scale=GUIDANCE,
                  num_inference_steps=STEPS, height=SIZE, width=SIZE)
    lat = pipe(**common, output_type="latent",
               generator=torch.Generator("cpu").manual_seed(0)).images
    img = pipe(**common, output_type="np", generator=torch.Generator("cpu").manual_seed(0)).images
    g["pipe.ddim.latents"] = lat.float()
    g["pipe.ddim.image"] = torch.from_numpy(np.ascontiguousarray(img)).float()
    g["pipe.ddim.timesteps"] = pipe.scheduler.timesteps.float()
    nondegenerate("pipe.ddim.image", g["pipe.ddim.image"], 0.02)
    log(f"  text to image: {len(pipe.scheduler.timesteps)} DDIM calls, timesteps "
        f"{pipe.scheduler.timesteps[:3].tolist()} ... {pipe.scheduler.timesteps[-2:].tolist()}")


def on_latent_grid(mask_img):
    """The image processor's binarisation (`> 0` after [-1, 1]) and the nearest resize
    to the latent grid (F.interpolate's default)."""
    m = torch.from_numpy(np.asarray(mask_img, dtype=np.float32) / 255.0)[None, None]
    m = ((m * 2.0 - 1.0) > 0).float()
    return F.interpolate(m, size=(SIZE // 8, SIZE // 8))


def edit_goldens(pipe, g, inv, label, with_keep):
    """`label`.*: the edit with the default keep mask (the edit mask's complement), or
    with tests/fixtures/radedit/keep_mask.png."""
    IMAGES.mkdir(parents=True, exist_ok=True)
    radiograph().save(IMAGES / "init.png", optimize=False)
    edit_mask().save(IMAGES / "edit_mask.png", optimize=False)
    keep_mask().save(IMAGES / "keep_mask.png", optimize=False)
    init = Image.open(IMAGES / "init.png").convert("RGB")
    mask = Image.open(IMAGES / "edit_mask.png")
    n = EDIT_STEPS
    skip = int(n * SKIP_RATIO)
    pipe.scheduler.set_timesteps(n)
    timesteps = pipe.scheduler.timesteps
    x = pipe.image_processor.preprocess(init)
    # (.contiguous(): diffusers' VAE hands the mean back channels-last in memory here,
    # and randn_like follows the memory order; the engine draws in NCHW order, as
    # torch.randn(shape) does, so the reference gets x0 in that layout: the same numbers)
    x0 = (pipe.vae.encode(x).latent_dist.mean * pipe.vae.config.scaling_factor).contiguous()
    edit = on_latent_grid(mask)
    keep = on_latent_grid(Image.open(IMAGES / "keep_mask.png")) if with_keep else 1.0 - edit
    # the inversion: the reference's own forward process, with the global generator
    torch.manual_seed(0)
    _, zs, xts = inv.inversion_forward_process(pipe, x0, etas=ETA, prompt="",
                                               cfg_scale=GUIDANCE, num_inference_steps=n)
    zs, xts = zs[: n - skip], xts.clone()
    # the levels are the seed's draws (what the engine draws from its own generator)
    torch.manual_seed(0)
    drawn = inv.sample_xts_from_x0(pipe, x0, num_inference_steps=n)
    worst = max(((xts[i] - drawn[i]).norm() / drawn[i].norm()).item() for i in range(1, n + 1))
    assert worst < 1e-6, worst
    assert torch.isfinite(xts[1:]).all() and torch.isfinite(zs).all()
    # (xts[0] is NaN there: the last step's variance is 0, and its "correction" is 0 * inf)
    text = inv.encode_text(pipe, [EDIT_PROMPT])
    uncond = inv.encode_text(pipe, [""])
    xt = xts[n - skip][None]
    for j, t in enumerate(timesteps[skip:]):
        idx = n - skip - 1 - j
        e_u = pipe.unet(xt, t, encoder_hidden_states=uncond).sample
        e_c = pipe.unet(xt, t, encoder_hidden_states=text).sample
        eps = e_u + GUIDANCE * edit * (e_c - e_u)  # the prompt acts inside the edit mask
        xt = inv.reverse_step(pipe, eps, t, xt, eta=ETA, variance_noise=zs[idx][None])
        target = xts[idx][None] if idx > 0 else x0  # the inverted trajectory; x0 at the end
        xt = keep * target + (1.0 - keep) * xt
    assert torch.equal(xt * keep, x0 * keep)
    img = pipe.vae.decode(xt / pipe.vae.config.scaling_factor).sample
    img = (img / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1)
    g[f"{label}.init_latents"] = x0.float()
    g[f"{label}.mask_latent"] = edit[0, 0]
    g[f"{label}.keep_latent"] = keep[0, 0]
    g[f"{label}.xT"] = xts[n - skip][None].float()
    g[f"{label}.latents"] = xt.float()
    g[f"{label}.image"] = img.float()
    g[f"{label}.timesteps"] = timesteps.float()
    changed = ((xt - x0).abs() * edit).sum() / edit.sum() / 4
    log(f"  {label}: {n - skip} inversion + {n - skip} guided calls (skip {skip}), edit-mask "
        f"cells {int(edit.sum())}/{edit.numel()}, mean |change| inside {changed:.3f}")
    nondegenerate("edit.image", img, 0.02)


@torch.no_grad()
def main():
    log(f"torch {torch.__version__}, diffusers {diffusers.__version__}, "
        f"transformers {transformers.__version__}")
    inv = reference()
    pipe, mlm = build()
    save(pipe, mlm)
    loads_back(mlm)
    pipe = StableDiffusionPipeline(**pipe.components)  # as saved (same objects)
    pipe.set_progress_bar_config(disable=True)
    g = {}
    text_goldens(pipe, g)
    generation_goldens(pipe, g)
    edit_goldens(pipe, g, inv, "edit", with_keep=False)
    edit_goldens(pipe, g, inv, "edit_keep", with_keep=True)
    for k, v in g.items():
        assert torch.isfinite(v.float()).all(), k
    meta = {
        "prompt": PROMPT, "edit_prompt": EDIT_PROMPT, "negative_prompt": "",
        "guidance_scale": str(GUIDANCE), "num_inference_steps": str(STEPS),
        "edit_steps": str(EDIT_STEPS), "skip_ratio": str(SKIP_RATIO), "eta": str(ETA),
        "size": str(SIZE), "seed": "0", "ddpm_inversion_commit": DDPM_INVERSION_COMMIT,
        "torch": torch.__version__, "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "computed_in": "float32, CPU",
    }
    save_safetensors(g, GOLD, metadata=meta)
    log(f"wrote {rel(GOLD)} ({GOLD.stat().st_size / 1e3:.1f} KB, {len(g)} tensors)")
    for k, v in g.items():
        log(f"  {k:28s} {str(v.dtype).replace('torch.', ''):7s} {tuple(v.shape)}")


if __name__ == "__main__":
    main()
