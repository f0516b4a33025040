#!/usr/bin/env python3
"""Generate the golden reference fixtures for roentgen-web.

Builds three tiny random-weight StableDiffusionPipelines with the RoentGen
(Stable Diffusion 1.x) architecture, saves them as diffusers folders under
tests/fixtures/, and saves golden tensors computed with diffusers/transformers
in float32 on the CPU. Everything is deterministic (fixed seeds).

Run through tools/make_fixtures.sh (which pins the versions). Tests never run
this script: they only read its committed outputs.
"""

import gzip
import re
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

import diffusers
import transformers
import safetensors
import open_clip
from open_clip.tokenizer import SimpleTokenizer, bytes_to_unicode
from safetensors.torch import save_file, load_file
from diffusers import (
    AutoencoderKL,
    DPMSolverMultistepScheduler,
    PNDMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "tests" / "fixtures"
GOLD = FIX / "golden"

PROMPT = "Small right-sided pleural effusion."
CHECK_TEXT = "Small left pleural effusion."
CHECK_IDS = [49406, 2442, 1823, 926, 33948, 1490, 9364, 269, 49407]
BOS, EOS = 49406, 49407

torch.set_num_threads(max(1, os.cpu_count() or 1))
transformers.logging.set_verbosity_error()
diffusers.logging.set_verbosity_error()


def log(*a):
    print(*a, flush=True)


def rel(p):
    return os.path.relpath(p, ROOT)


_ST_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.int64: "I64"}


def save_safetensors(tensors, path, metadata=None):
    """Write a .safetensors file byte-for-byte reproducibly.

    safetensors.torch.save_file keeps `__metadata__` in a hash map, so its key order
    (and the file's bytes) change from run to run. Here: metadata keys sorted, tensors
    in sorted-name order, packed contiguously, header padded with spaces to 8 bytes.
    Read back with safetensors and compared.
    """
    header, offset, blobs = {}, 0, []
    if metadata:
        header["__metadata__"] = {k: metadata[k] for k in sorted(metadata)}
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        b = t.numpy().tobytes()  # little-endian on every machine we run
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
        assert back[k].dtype == v.dtype and torch.equal(back[k], v.cpu()), k


# --------------------------------------------------------------------------
# Tokenizer: the real CLIP BPE vocabulary, from open_clip's bpe file
# --------------------------------------------------------------------------

def clip_vocab_and_merges():
    """Exactly how openai/CLIP (and HF's vocab.json/merges.txt) build it."""
    bpe = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    lines = gzip.open(bpe).read().decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]
    merges = [tuple(m.split()) for m in merges]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    for m in merges:
        vocab.append("".join(m))
    vocab.extend(["<|startoftext|>", "<|endoftext|>"])
    assert len(vocab) == 49408 and len(merges) == 48894, (len(vocab), len(merges))
    encoder = {t: i for i, t in enumerate(vocab)}
    assert len(encoder) == 49408
    return encoder, merges


def _added(content):
    return {"__type": "AddedToken", "content": content, "lstrip": False,
            "normalized": True, "rstrip": False, "single_word": False}


def write_legacy_tokenizer(folder, encoder, merges, vocab_json="pretty"):
    """RoentGen/SD1.4-era layout: vocab.json + merges.txt + configs (no tokenizer.json).

    vocab_json "pretty": as transformers' (slow) CLIPTokenizer.save_vocabulary writes it
    (indent 2, sorted keys); "compact": one line in id order, as the Hub's
    openai/clip-vit-large-patch14 vocab.json is (and 0.2 MB smaller)."""
    folder = Path(folder)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    with open(folder / "vocab.json", "w", encoding="utf-8") as f:
        if vocab_json == "pretty":
            f.write(json.dumps(encoder, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
        else:
            assert vocab_json == "compact", vocab_json
            f.write(json.dumps(encoder, separators=(",", ":"), ensure_ascii=False))
    with open(folder / "merges.txt", "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        for a, b in merges:
            f.write(f"{a} {b}\n")
    # modelled on CompVis/stable-diffusion-v1-4 tokenizer/*.json
    cfg = {
        "add_prefix_space": False,
        "bos_token": _added("<|startoftext|>"),
        "do_lower_case": True,
        "eos_token": _added("<|endoftext|>"),
        "errors": "replace",
        "model_max_length": 77,
        "name_or_path": "openai/clip-vit-large-patch14",
        "pad_token": "<|endoftext|>",
        "special_tokens_map_file": "./special_tokens_map.json",
        "tokenizer_class": "CLIPTokenizer",
        "unk_token": _added("<|endoftext|>"),
    }
    with open(folder / "tokenizer_config.json", "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    stm = {k: ({kk: vv for kk, vv in v.items() if kk != "__type"} if isinstance(v, dict) else v)
           for k, v in cfg.items() if k in ("bos_token", "eos_token", "pad_token", "unk_token")}
    with open(folder / "special_tokens_map.json", "w") as f:
        json.dump(stm, f, indent=2)
        f.write("\n")


def check_tokenizer(tok, label):
    ids = tok(CHECK_TEXT).input_ids
    assert list(ids) == CHECK_IDS, f"{label}: {CHECK_TEXT!r} -> {ids}, want {CHECK_IDS}"
    assert len(tok) == 49408, (label, len(tok))
    assert tok.model_max_length == 77, (label, tok.model_max_length)
    assert tok.pad_token_id == EOS, (label, tok.pad_token_id)
    log(f"  tokenizer check ok [{label}]: {CHECK_TEXT!r} -> {ids}")


def build_tokenizer(tmpdir, encoder, merges):
    """Build transformers' CLIPTokenizer the way a RoentGen folder is read:
    from_pretrained on a vocab.json + merges.txt folder."""
    write_legacy_tokenizer(tmpdir, encoder, merges)
    tok = CLIPTokenizer.from_pretrained(tmpdir)
    check_tokenizer(tok, "CLIPTokenizer.from_pretrained(vocab.json+merges.txt)")
    # same thing built in memory (positional/new keyword names, not vocab_file=)
    tok2 = CLIPTokenizer(vocab=dict(encoder), merges=list(merges), model_max_length=77)
    check_tokenizer(tok2, "CLIPTokenizer(vocab=, merges=)")
    return tok


# --------------------------------------------------------------------------
# Model configs
# --------------------------------------------------------------------------

SCHEDULER_CFG = dict(
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    num_train_timesteps=1000,
    skip_prk_steps=True,
    steps_offset=1,
    set_alpha_to_one=False,
)


def _unet(boc, layers_per_block=2, **kw):
    """SD1.x/RoentGen UNet layout: 3 x CrossAttnDown + Down / Up + 3 x CrossAttnUp,
    4 levels, 16x16 latents (the pipeline's 128x128)."""
    return dict(
        sample_size=16, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        block_out_channels=boc, layers_per_block=layers_per_block, **kw)


def _vae(boc, **kw):
    """SD1.x VAE layout: 4 levels, 8x down/up, 4 latent channels, scaling 0.18215."""
    return dict(
        in_channels=3, out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=boc, latent_channels=4, sample_size=128,
        scaling_factor=0.18215, **kw)


def fixture_specs():
    # Sizes: the folder is committed, so everything is as narrow as the tests allow.
    # The 49,408-token embedding table dominates every text encoder (tiny-sd: 6.3 MB
    # in fp32 at width 32), so the other two fixtures use 8- and 12-wide text encoders.
    main_text = dict(vocab_size=49408, hidden_size=32, intermediate_size=64,
                     num_hidden_layers=2, num_attention_heads=4,
                     max_position_embeddings=77, hidden_act="quick_gelu")
    # SD1.x layout and attention_head_dim 8 (= 8 heads), conv proj_in/out; the width
    # changes inside the cross-attention levels (16 -> 32 at down.2, as SD's 320 -> 640):
    # conv_shortcut in resnets, transformers of two widths. norm_num_groups 16, not SD's
    # 32, because 32 does not divide 16 (1-4 channels per group, skip concatenations included).
    main_unet = _unet((16, 16, 32, 32), cross_attention_dim=32, attention_head_dim=8,
                      norm_num_groups=16)
    main_vae = _vae((16, 16, 32, 32), layers_per_block=2, norm_num_groups=16)
    # tiny-sd-bin tests file formats; its architecture differs from tiny-sd's where
    # that is free: width change at the last level (DownBlock2D/UpBlock2D, and the mid
    # block at the new width), 4 heads, 8-wide text with 2 heads of 4.
    bin_text = dict(vocab_size=49408, hidden_size=8, intermediate_size=32,
                    num_hidden_layers=2, num_attention_heads=2,
                    max_position_embeddings=77, hidden_act="quick_gelu")
    bin_unet = _unet((16, 16, 16, 32), cross_attention_dim=8, attention_head_dim=4,
                     norm_num_groups=16)
    bin_vae = _vae((16, 16, 16, 32), layers_per_block=2, norm_num_groups=16)
    # tiny-sd-alt: non-default values everywhere.
    alt_text = dict(vocab_size=49408, hidden_size=12, intermediate_size=24,
                    num_hidden_layers=3, num_attention_heads=3,
                    max_position_embeddings=77, hidden_act="gelu")
    alt_unet = _unet((16, 24, 32, 32), layers_per_block=1, cross_attention_dim=12,
                     attention_head_dim=[2, 4, 4, 8], use_linear_projection=True,
                     norm_num_groups=8)
    alt_vae = _vae((16, 16, 24, 32), layers_per_block=1, norm_num_groups=8)
    return [
        dict(name="tiny-sd", seed=1, text=main_text, unet=main_unet, vae=main_vae,
             dtype=torch.float32, safe=True, variant=None, tok_layout="legacy",
             vocab_json="pretty", te_prefix=True, vae_legacy_attn=False,
             vae_latent_hw=(8, 12)),
        dict(name="tiny-sd-bin", seed=2, text=bin_text, unet=bin_unet, vae=bin_vae,
             dtype=torch.float16, safe=False, variant=None, tok_layout="tokenizer.json",
             te_prefix=True, vae_legacy_attn=True, vae_latent_hw=(6, 4)),
        dict(name="tiny-sd-alt", seed=3, text=alt_text, unet=alt_unet, vae=alt_vae,
             dtype=torch.float16, safe=True, variant="fp16", tok_layout="legacy",
             vocab_json="compact", te_prefix=False, vae_legacy_attn=False,
             vae_latent_hw=(4, 6)),
    ]


# --------------------------------------------------------------------------
# Random weights: re-draw EVERY parameter
# --------------------------------------------------------------------------

# gains chosen so that UNet outputs and the decoded images are non-degenerate
UNET_GAIN = 1.3          # all UNet conv/linear weights
UNET_OUT_GAIN = 1.5      # UNet conv_out (noise prediction std ~ 1)
VAE_DEC_OUT_GAIN = 0.5   # VAE decoder conv_out (image std ~ 0.17 after /2+0.5)


def normal_weight(shape, fan_in, gain, gen):
    """The default Linear/Conv weight draw: N(0, gain^2/fan_in)."""
    return torch.randn(shape, generator=gen) * (gain / fan_in ** 0.5)


def redraw(model, gen, gain=1.0, emb_std=0.05, special=None, weight_init=normal_weight):
    """Re-draw every parameter of `model` from `gen`.

    Linear/Conv weights ~ N(0, gain^2/fan_in) (or `weight_init(shape, fan_in, gain, gen)`);
    biases 0.1 N; Group/LayerNorm weights 1 + 0.1 N, biases 0.1 N; Embedding N(0, emb_std^2).
    `special` maps a module name to a gain overriding `gain`.
    """
    special = special or {}
    done = set()
    with torch.no_grad():
        for mname, m in model.named_modules():
            own = dict(m.named_parameters(recurse=False))
            if not own:
                continue
            g = special.get(mname, gain)
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                w = m.weight
                fan_in = w[0].numel()
                w.copy_(weight_init(w.shape, fan_in, g, gen))
                if m.bias is not None:
                    m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))
            elif isinstance(m, (nn.GroupNorm, nn.LayerNorm)):
                if m.weight is not None:
                    m.weight.copy_(1.0 + 0.1 * torch.randn(m.weight.shape, generator=gen))
                if m.bias is not None:
                    m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))
            elif isinstance(m, nn.Embedding):
                m.weight.copy_(emb_std * torch.randn(m.weight.shape, generator=gen))
            else:
                raise TypeError(f"don't know how to re-draw {mname}: {type(m)} {list(own)}")
            for pn in own:
                done.add(f"{mname}.{pn}" if mname else pn)
    allp = {n for n, _ in model.named_parameters()}
    missing = allp - done
    assert not missing, f"parameters not re-drawn: {sorted(missing)[:10]}"
    return len(allp)


def build_pipeline(spec, tokenizer):
    gen = torch.Generator("cpu").manual_seed(1000 + spec["seed"])
    text_encoder = CLIPTextModel(CLIPTextConfig(**spec["text"])).eval()
    unet = UNet2DConditionModel(**spec["unet"]).eval()
    vae = AutoencoderKL(**spec["vae"]).eval()
    n_t = redraw(text_encoder, gen, gain=1.0, emb_std=0.1)
    n_u = redraw(unet, gen, gain=UNET_GAIN, special={"conv_out": UNET_OUT_GAIN})
    n_v = redraw(vae, gen, gain=1.0, special={"decoder.conv_out": VAE_DEC_OUT_GAIN})
    log(f"  re-drew {n_t} text-encoder, {n_u} UNet, {n_v} VAE parameter tensors")
    log(f"  parameter counts: text {sum(p.numel() for p in text_encoder.parameters()):,}"
        f"  unet {sum(p.numel() for p in unet.parameters()):,}"
        f"  vae {sum(p.numel() for p in vae.parameters()):,}")
    scheduler = PNDMScheduler(**SCHEDULER_CFG)
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
        scheduler=scheduler, safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )
    return pipe


def save_pipeline(pipe, spec, encoder, merges):
    out = FIX / spec["name"]
    if out.exists():
        shutil.rmtree(out)
    pipe = pipe.to(spec["dtype"])
    pipe.save_pretrained(out, safe_serialization=spec["safe"], variant=spec["variant"])

    te_dir = out / "text_encoder"
    te_sd = {k: v.detach().contiguous() for k, v in pipe.text_encoder.state_dict().items()}
    if spec["te_prefix"]:
        # transformers 5.x saves CLIPTextModel keys without the `text_model.` prefix
        # (`embeddings.token_embedding.weight`); every real SD1.x/2.x/RoentGen
        # checkpoint has `text_model.embeddings.token_embedding.weight`: write that.
        te_sd = {(k if k.startswith("text_model.") else "text_model." + k): v for k, v in te_sd.items()}
    if spec["safe"]:
        fname = "model.fp16.safetensors" if spec["variant"] == "fp16" else "model.safetensors"
        assert (te_dir / fname).exists(), sorted(os.listdir(te_dir))
        save_file(te_sd, str(te_dir / fname), metadata={"format": "pt"})
    else:
        # transformers 5.x save_pretrained only writes safetensors: write the
        # RoentGen-era PyTorch pickle ourselves, with the `position_ids` int64
        # buffer that transformers < 4.31 stored in every CLIP checkpoint.
        te_sd["text_model.embeddings.position_ids"] = torch.arange(77, dtype=torch.int64)[None]
        for f in te_dir.glob("*.safetensors"):
            f.unlink()
        torch.save(te_sd, te_dir / "pytorch_model.bin")
        log("  wrote text_encoder/pytorch_model.bin with torch.save (transformers 5.x "
            "has no safe_serialization=False), incl. text_model.embeddings.position_ids (int64)")
    if spec["vae_legacy_attn"]:
        # diffusers < 0.14 (RoentGen era) named the VAE mid-block attention
        # query/key/value/proj_attn; diffusers still renames them on load.
        vf = out / "vae" / "diffusion_pytorch_model.bin"
        sd = torch.load(vf, map_location="cpu", weights_only=True)
        ren = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
        new = {}
        for k, v in sd.items():
            m = re.match(r"^((?:en|de)coder\.mid_block\.attentions\.0)\.(to_q|to_k|to_v|to_out\.0)\.(weight|bias)$", k)
            new[f"{m.group(1)}.{ren[m.group(2)]}.{m.group(3)}" if m else k] = v
        n = sum(1 for k in new if k not in sd)
        assert n == 16, n
        torch.save(new, vf)
        log(f"  renamed {n} VAE attention tensors to the legacy query/key/value/proj_attn names")

    tok_dir = out / "tokenizer"
    if spec["tok_layout"] == "legacy":
        write_legacy_tokenizer(tok_dir, encoder, merges, spec["vocab_json"])
    else:
        # transformers 5.x writes tokenizer.json (+ tokenizer_config.json); keep only
        # that newer layout
        for f in tok_dir.iterdir():
            if f.name not in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
                f.unlink()
        # tokenizers' save() pretty-prints (indent 2: 3.5 MB, one line per merge
        # half); rewrite it compact with the library's own serialiser (`to_str(pretty=False)`,
        # 1.7 MB). Same JSON value: checked here, and make_tokenizer_ids checks the ids.
        from tokenizers import Tokenizer
        tj = tok_dir / "tokenizer.json"
        raw = Tokenizer.from_file(str(tj))
        pretty = json.loads(tj.read_text(encoding="utf-8"))
        tj.write_text(raw.to_str(pretty=False), encoding="utf-8")
        assert json.loads(tj.read_text(encoding="utf-8")) == pretty
        assert Tokenizer.from_file(str(tj)).to_str() == raw.to_str()
    return out


def load_fp32(folder, spec):
    kw = dict(dtype=torch.float32, safety_checker=None, requires_safety_checker=False)
    if spec["variant"]:
        kw["variant"] = spec["variant"]
    pipe = StableDiffusionPipeline.from_pretrained(folder, **kw)
    pipe.set_progress_bar_config(disable=True)
    for m in (pipe.unet, pipe.vae, pipe.text_encoder):
        m.eval()
        for p in m.parameters():
            assert p.dtype == torch.float32
    return pipe


def check_saved_weights(pipe_mem, pipe_disk, spec):
    """The reloaded fp32 weights must equal the in-memory ones rounded to the saved dtype."""
    for name in ("unet", "vae", "text_encoder"):
        a = dict(getattr(pipe_mem, name).named_parameters())
        b = dict(getattr(pipe_disk, name).named_parameters())
        assert a.keys() == b.keys(), name
        for k in a:
            want = a[k].detach().to(spec["dtype"]).float()
            assert torch.equal(want, b[k].detach()), f"{name}.{k} differs after reload"


# --------------------------------------------------------------------------
# Goldens
# --------------------------------------------------------------------------

def _first(x):
    if isinstance(x, (tuple, list)):
        return x[0]
    if hasattr(x, "sample"):
        return x.sample
    return x


class Hooks:
    def __init__(self):
        self.out = {}
        self.handles = []

    def add(self, name, module):
        def hook(_m, _inp, output):
            self.out[name] = _first(output).detach().float().clone()
        self.handles.append(module.register_forward_hook(hook))

    def remove(self):
        for h in self.handles:
            h.remove()


def stat(t):
    t = t.float()
    return f"mean {t.mean().item():+.4f} std {t.std().item():.4f} min {t.min().item():+.3f} max {t.max().item():+.3f}"


def nondegenerate(name, t, min_std=1e-3):
    t = t.float()
    assert torch.isfinite(t).all(), f"{name} has NaN/inf"
    s = t.std().item()
    assert s > min_std, f"{name} is degenerate (std {s})"


@torch.no_grad()
def goldens(pipe, spec):
    g = {}
    stats = {}
    tok, te, unet, vae = pipe.tokenizer, pipe.text_encoder, pipe.unet, pipe.vae

    # ---- text encoder
    ids = tok([PROMPT, ""], padding="max_length", max_length=tok.model_max_length,
              truncation=True, return_tensors="pt").input_ids
    assert ids.shape == (2, 77) and ids.dtype == torch.int64
    assert ids[0, 0] == BOS and ids[1, :2].tolist() == [BOS, EOS] and (ids[1, 2:] == EOS).all()
    h = Hooks()
    tm = getattr(te, "text_model", te)  # transformers 5.x flattened CLIPTextModel
    h.add("text.embeddings", tm.embeddings)
    h.add("text.layer0", tm.encoder.layers[0])
    last = te(ids).last_hidden_state
    h.remove()
    g["text.input_ids"] = ids
    g["text.embeddings"] = h.out["text.embeddings"]
    g["text.layer0"] = h.out["text.layer0"]
    g["text.last_hidden_state"] = last.float()
    # the pipeline's own encode_prompt must give the same conditioning
    pe, ne = pipe.encode_prompt(PROMPT, "cpu", 1, True, negative_prompt="")
    assert torch.equal(pe[0], last[0]) and torch.equal(ne[0], last[1])
    stats["text_embeddings_std"] = h.out["text.embeddings"].std().item()
    stats["text_emb_std"] = last.std().item()
    nondegenerate("text.last_hidden_state", last)

    # ---- UNet, one classifier-free-guidance call (batch 2: [uncond, cond])
    gen = torch.Generator("cpu").manual_seed(10)
    sample = torch.randn((2, 4, 16, 16), generator=gen)
    timestep = torch.tensor([801], dtype=torch.int64)
    ehs = torch.stack([last[1], last[0]]).contiguous()
    h = Hooks()
    h.add("unet.time_proj", unet.time_proj)
    h.add("unet.time_emb", unet.time_embedding)
    h.add("unet.conv_in", unet.conv_in)
    for i, b in enumerate(unet.down_blocks):
        h.add(f"unet.down.{i}", b)
    h.add("unet.mid", unet.mid_block)
    for i, b in enumerate(unet.up_blocks):
        h.add(f"unet.up.{i}", b)
    h.add("unet.conv_norm_out", unet.conv_norm_out)
    uout = unet(sample, timestep, encoder_hidden_states=ehs).sample
    h.remove()
    g["unet.sample"] = sample
    g["unet.timestep"] = timestep
    g["unet.encoder_hidden_states"] = ehs
    g.update(h.out)
    g["unet.out"] = uout.float()
    stats["unet_out_std"] = uout.std().item()
    stats["unet_cfg_diff_std"] = (uout[1] - uout[0]).std().item()
    nondegenerate("unet.out", uout)
    # guidance must matter: cond and uncond predictions differ
    nondegenerate("unet.out cond-uncond", uout[1] - uout[0], 1e-4)

    # ---- VAE decoder
    gen = torch.Generator("cpu").manual_seed(20)
    # VAE goldens at a small non-square size per fixture (spec["vae_latent_hw"]): the
    # full-resolution decoder maps are the biggest goldens. Non-square catches H/W mix-ups.
    lat_hw = tuple(spec["vae_latent_hw"])
    img_hw = (8 * lat_hw[0], 8 * lat_hw[1])
    z = torch.randn((1, 4, *lat_hw), generator=gen) / vae.config.scaling_factor
    h = Hooks()
    h.add("vae.post_quant_conv", vae.post_quant_conv)
    h.add("vae.decoder.mid", vae.decoder.mid_block)
    for i, b in enumerate(vae.decoder.up_blocks):
        h.add(f"vae.decoder.up.{i}", b)
    dec = vae.decode(z).sample
    h.remove()
    assert dec.shape == (1, 3, *img_hw), dec.shape
    assert len(vae.decoder.up_blocks) == 4 and all(f"vae.decoder.up.{i}" in h.out for i in range(4))
    g["vae.decode_in"] = z
    g.update(h.out)
    g["vae.decode_out"] = dec.float()
    nondegenerate("vae.decode_out", dec)

    # ---- VAE encoder
    gen = torch.Generator("cpu").manual_seed(30)
    x = torch.rand((1, 3, *img_hw), generator=gen) * 2 - 1
    moments = vae.encode(x).latent_dist.parameters
    assert moments.shape == (1, 8, *lat_hw), moments.shape
    assert torch.equal(moments, vae.quant_conv(vae.encoder(x)))
    g["vae.encode_in"] = x
    g["vae.encode_moments"] = moments.float()
    nondegenerate("vae.encode_moments", moments)

    # ---- whole pipeline
    sched_cfgs = {}
    pndm = pipe.scheduler
    dpm = DPMSolverMultistepScheduler.from_config(pndm.config, algorithm_type="dpmsolver++",
                                                  solver_order=2)
    for label, sched in (("pndm", pndm), ("dpmpp2m", dpm)):
        pipe.scheduler = sched
        steps = []

        def cb(_p, i, t, kw):
            steps.append((int(t), kw["latents"].detach().float().clone()))
            return kw

        common = dict(prompt=PROMPT, negative_prompt="", guidance_scale=4.0,
                      num_inference_steps=10, height=128, width=128)
        lat = pipe(**common, output_type="latent",
                   generator=torch.Generator("cpu").manual_seed(0),
                   callback_on_step_end=cb).images
        img = pipe(**common, output_type="np",
                   generator=torch.Generator("cpu").manual_seed(0)).images
        img = torch.from_numpy(np.ascontiguousarray(img)).float()
        assert lat.shape == (1, 4, 16, 16) and img.shape == (1, 128, 128, 3)
        g[f"pipe.{label}.latents"] = lat.float()
        g[f"pipe.{label}.image"] = img
        g[f"pipe.{label}.timesteps"] = torch.tensor([t for t, _ in steps], dtype=torch.int64)
        # debugging aids: the latents after the first three steps and the last one
        kept = sorted({0, 1, 2, len(steps) - 1})
        for i in kept:
            g[f"pipe.{label}.latents_step{i}"] = steps[i][1]
        # the latents the VAE decodes give the image
        dec_img = (vae.decode(lat / vae.config.scaling_factor).sample / 2 + 0.5).clamp(0, 1)
        assert torch.allclose(dec_img.permute(0, 2, 3, 1), img, atol=1e-5)
        sat = ((img <= 0.0) | (img >= 1.0)).float().mean().item() * 100
        stats[f"{label}_latents_std"] = lat.std().item()
        stats[f"{label}_image_mean"] = img.mean().item()
        stats[f"{label}_image_std"] = img.std().item()
        stats[f"{label}_image_saturated_pct"] = sat
        nondegenerate(f"pipe.{label}.image", img, 0.02)
        assert sat < 10.0, f"{label}: {sat:.1f}% saturated pixels"
        # (drop `_use_default_values`: a set, its order changes from run to run)
        sched_cfgs[label] = {k: v for k, v in sched.config.items() if k != "_use_default_values"}
    pipe.scheduler = pndm
    # initial noise the pipeline draws (seed 0, init_noise_sigma = 1 for both schedulers)
    g["pipe.init_latents"] = torch.randn((1, 4, 16, 16), generator=torch.Generator("cpu").manual_seed(0))
    lat2 = pipe(prompt=PROMPT, negative_prompt="", guidance_scale=4.0, num_inference_steps=10,
                height=128, width=128, output_type="latent", latents=g["pipe.init_latents"].clone()).images
    assert torch.equal(lat2, g["pipe.pndm.latents"]), "pipe.init_latents is not what the pipeline drew"

    for k, v in g.items():
        if k not in ("text.input_ids", "unet.timestep", "pipe.pndm.timesteps", "pipe.dpmpp2m.timesteps"):
            assert v.dtype == torch.float32, (k, v.dtype)
            assert torch.isfinite(v).all(), k
    return g, stats, sched_cfgs


# every golden the Rust tests (tests/models.rs) or the pipeline checks read: none omitted
REQUIRED_GOLDENS = (
    ["text.input_ids", "text.embeddings", "text.layer0", "text.last_hidden_state",
     "unet.sample", "unet.timestep", "unet.encoder_hidden_states", "unet.time_proj",
     "unet.time_emb", "unet.conv_in", "unet.mid", "unet.conv_norm_out", "unet.out",
     "vae.decode_in", "vae.post_quant_conv", "vae.decoder.mid", "vae.decode_out",
     "vae.encode_in", "vae.encode_moments", "pipe.init_latents"]
    + [f"unet.{d}.{i}" for d in ("down", "up") for i in range(4)]
    + [f"vae.decoder.up.{i}" for i in range(4)]
    + [f"pipe.{s}.{k}" for s in ("pndm", "dpmpp2m") for k in ("latents", "image", "timesteps")]
)


def save_goldens(name, g, stats, sched_cfgs, spec):
    GOLD.mkdir(parents=True, exist_ok=True)
    missing = [k for k in REQUIRED_GOLDENS if k not in g]
    assert not missing, f"{name}: goldens missing: {missing}"
    path = GOLD / f"{name}.safetensors"
    meta = {
        "fixture": name,
        "prompt": PROMPT,
        "negative_prompt": "",
        "guidance_scale": "4.0",
        "num_inference_steps": "10",
        "height": "128",
        "width": "128",
        "seed": "0",
        "weights_dtype_on_disk": str(spec["dtype"]).replace("torch.", ""),
        "computed_in": "float32, CPU, weights loaded from the saved folder",
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "scheduler.pndm": json.dumps(sched_cfgs["pndm"], sort_keys=True, default=str),
        "scheduler.dpmpp2m": json.dumps(sched_cfgs["dpmpp2m"], sort_keys=True, default=str),
        "stats": json.dumps(stats, sort_keys=True),
        "vae_latent_hw": json.dumps(list(spec["vae_latent_hw"])),
        "pipe_latents_steps_kept": json.dumps(
            {lab: sorted(int(k.rsplit("step", 1)[1]) for k in g if k.startswith(f"pipe.{lab}.latents_step"))
             for lab in ("pndm", "dpmpp2m")}),
    }
    save_safetensors(g, path, metadata=meta)
    log(f"  wrote {rel(path)}  ({path.stat().st_size/1e6:.2f} MB, {len(g)} tensors)")
    for k, v in g.items():
        log(f"    {k:32s} {str(v.dtype).replace('torch.', ''):7s} {tuple(v.shape)}")


# --------------------------------------------------------------------------
# torch.randn reference
# --------------------------------------------------------------------------

def make_randn():
    out = {}
    for seed in (0, 42, 1234):
        for shape in ((5,), (16,), (17,), (1, 4, 16, 16), (2, 4, 64, 64)):
            t = torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed))
            out[f"randn.seed{seed}.{'x'.join(map(str, shape))}"] = t
    path = FIX / "torch_randn.safetensors"
    save_safetensors(out, path, metadata={"torch": torch.__version__,
                                         "how": 'torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed)), float32'})
    log(f"wrote {rel(path)} ({len(out)} tensors), e.g. randn.seed0.5 = {out['randn.seed0.5'].tolist()}")


# --------------------------------------------------------------------------
# Tokenizer id reference
# --------------------------------------------------------------------------

HAND_WRITTEN = [
    "No acute cardiopulmonary process.",
    "Small right-sided pleural effusion.",
    "Small left pleural effusion.",
    "Large right-sided pleural effusion. Cardiomegaly.",
    "Moderate pulmonary edema.",
    "Enlarged cardiac silhouette and interstitial pulmonary edema.",
    "Low lung volumes with patchy opacities most likely reflecting atelectasis.",
    "Right apical pneumothorax.",
    "AICD in correct position.",
    "",
    " ",
    "   No   acute\tcardiopulmonary\n\nprocess.   ",
    "NO ACUTE CARDIOPULMONARY PROCESS.",
    "no acute cardiopulmonary process",
    "1. No acute cardiopulmonary process. 2. Stable cardiomegaly.",
    "Endotracheal tube terminates 5 mm above the carina.",
    "Endotracheal tube tip is 4.5 cm above the carina.",
    "A 1.2 cm nodule in the right upper lobe, unchanged since 01/02/2019.",
    "Nasogastric tube courses below the diaphragm; tip not visualized.",
    "Right PICC line tip in the mid SVC.",
    "Left IJ central venous catheter terminates at the cavoatrial junction.",
    "Interval removal of the right chest tube. No pneumothorax.",
    "Status post median sternotomy and CABG.",
    "Dual-lead pacemaker/AICD device is unchanged in position.",
    "Mild pulmonary vascular congestion, no overt edema.",
    "Bibasilar atelectasis; cannot exclude superimposed pneumonia.",
    "Retrocardiac opacity may reflect atelectasis, aspiration, or pneumonia.",
    "Heart size is top-normal.",
    "Hyperinflated lungs, consistent with COPD/emphysema.",
    "Healed left 5th–7th rib fractures.",
    "Acute fracture of the right 6th rib — new since prior.",
    "Findings suggestive of “mild” pulmonary edema.",
    "Patient’s lungs are clear.",
    "Pleural effusion: small (≤ 5 mm).",
    "Opacité basale droite – probable atélectasie.",
    "Café-au-lait findings? Naïve résumé of the exam.",
    "Temperature 38.5°C; SpO2 92%.",
    "Compared to prior study (___), there is no significant interval change.",
    "Impression: ___ year old male with chest pain. No acute process.",
    "Lines/tubes: ETT 3.5cm above carina, OGT in stomach, R IJ CVC in SVC.",
    "Worsening multifocal consolidation, concerning for ARDS vs. multifocal pneumonia!!!",
    "Is there pneumonia?? Evaluate for pneumothorax...",
    "Lungs are hyperexpanded & clear; no effusion (or pneumothorax).",
    "50 year old White female. Normal chest radiograph.",
    "72 year old Black male. Large left pleural effusion with compressive atelectasis.",
    "The cardiomediastinal silhouette is within normal limits.",
    "Mediastinal widening ~ 8.5 cm; aortic knob calcifications.",
    "Tiny left apical pneumothorax, <5%.",
    "Subcutaneous emphysema along the right chest wall #2.",
    "Free air under the right hemidiaphragm @ upright view.",
    "Don't see any focal consolidation; it's likely atelectasis.",
    "Heart size normal. Lungs clear. Pulmonary vasculature normal. No pleural effusion. "
    "No pneumothorax. Osseous structures intact. Impression: No acute cardiopulmonary "
    "abnormality. Recommend follow-up radiograph in 6-8 weeks to document resolution of "
    "the right lower lobe opacity, which may represent pneumonia or atelectasis.",
    "Support devices: endotracheal tube, enteric tube, right internal jugular central "
    "venous catheter, left chest tube, mediastinal drains, epicardial pacing wires, "
    "sternal wires, and cardiac monitoring leads are all in appropriate position without "
    "evidence of complication. There is persistent moderate bilateral pleural effusion "
    "with adjacent atelectasis and mild pulmonary edema, slightly improved from prior.",
    "Emoji test 🫁 lung ❤️ heart.",
    "Tabs\tand\nnewlines\r\nmixed   with  spaces.",
    "x" * 100,
    "pneumothoraxpneumothoraxpneumothorax",
    "ＦＵＬＬＷＩＤＴＨ text and ½ fractions.",
    "<|startoftext|> literal special tokens <|endoftext|> in text.",
    "\"Quoted\" words and 'single quotes' and (parentheses) [brackets] {braces}.",
    "Numbers: 0 1 2 3 10 100 1000 12345 3.14159 -2 +7 1e-5 50%.",
]

SIZES = ["Tiny", "Small", "Small to moderate", "Moderate", "Moderate to large", "Large", "Trace"]
SIDES = ["right", "left", "bilateral", "right-sided", "left-sided"]
FINDINGS = ["pleural effusion", "pleural effusions", "pneumothorax", "consolidation",
            "atelectasis", "pulmonary edema", "opacity", "lung lesion", "pleural thickening"]
LOCS = ["upper lobe", "lower lobe", "middle lobe", "lung base", "apex", "lingula",
        "perihilar region", "costophrenic angle"]
CHEXPERT = ["Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion",
            "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax",
            "Pleural Effusion", "Pleural Other", "Fracture", "Support Devices", "No Finding"]
DEVICES = ["Endotracheal tube", "Nasogastric tube", "Right PICC", "Left subclavian catheter",
           "Swan-Ganz catheter", "Chest tube", "Dobhoff tube", "Pacemaker lead"]
CHANGES = ["unchanged", "improved", "worsened", "new", "increased", "decreased", "stable"]
AGES = [18, 25, 34, 47, 50, 63, 71, 88]
RACES = ["White", "Black", "Asian", "Hispanic", "Other"]
SEXES = ["male", "female"]


def make_sentences():
    rng = np.random.default_rng(12345)
    pick = lambda xs: xs[int(rng.integers(len(xs)))]
    sents = list(HAND_WRITTEN)
    for _ in range(80):
        sents.append(f"{pick(SIZES)} {pick(SIDES)} {pick(FINDINGS)}.")
    for _ in range(60):
        sents.append(f"{pick(CHANGES).capitalize()} {pick(FINDINGS)} in the {pick(SIDES)} {pick(LOCS)}.")
    for _ in range(30):
        n = int(rng.integers(1, 60))
        d = float(rng.integers(1, 99)) / 10
        sents.append(f"{pick(DEVICES)} tip {d} cm above the carina, {pick(CHANGES)}; "
                     f"nodule measures {n} mm.")
    for _ in range(30):
        sents.append(f"{pick(AGES)} year old {pick(RACES)} {pick(SEXES)}. "
                     f"{pick(SIZES)} {pick(SIDES)} {pick(FINDINGS)}.")
    for _ in range(20):
        labels = [pick(CHEXPERT) for _ in range(int(rng.integers(1, 5)))]
        sents.append(", ".join(labels))
    for _ in range(20):
        s = f"{pick(SIZES)} {pick(SIDES)} {pick(FINDINGS)}."
        variant = int(rng.integers(4))
        if variant == 0:
            s = s.upper()
        elif variant == 1:
            s = "  " + s.replace(" ", "   ") + "\n"
        elif variant == 2:
            s = s.replace("-", "–") + " “Compared with prior.”"
        else:
            s = s.replace("e", "é", 1)
        sents.append(s)
    for _ in range(10):  # long reports (> 77 tokens)
        parts = [f"{pick(CHANGES).capitalize()} {pick(SIZES).lower()} {pick(SIDES)} "
                 f"{pick(FINDINGS)} in the {pick(LOCS)}." for _ in range(int(rng.integers(8, 14)))]
        sents.append(" ".join(parts))
    # stable order, no duplicates
    seen, out = set(), []
    for s in sents:
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out


def make_tokenizer_ids(tok_legacy, tok_json_path):
    from tokenizers import Tokenizer
    raw = Tokenizer.from_file(str(tok_json_path))
    oc = SimpleTokenizer()
    sents = make_sentences()
    # every saved tokenizer folder, reloaded by transformers (tiny-sd: pretty vocab.json,
    # tiny-sd-alt: compact vocab.json, tiny-sd-bin: compact tokenizer.json only)
    # (and any other tiny-sd* fixture's, e.g. tiny-sd-heavy from make_quant_fixture.py)
    reloaded = {d.parent.name: CLIPTokenizer.from_pretrained(d)
                for d in sorted(FIX.glob("tiny-sd*/tokenizer"))}
    assert {s["name"] for s in fixture_specs()} <= reloaded.keys(), sorted(reloaded)
    rows, long_n, oc_diff = [], 0, []
    for s in sents:
        ids = tok_legacy(s, truncation=False).input_ids
        ids77 = tok_legacy(s, padding="max_length", max_length=77, truncation=True).input_ids
        assert len(ids77) == 77 and ids77[0] == BOS
        assert ids77[76] == EOS
        if len(ids) <= 77:
            assert ids77[: len(ids)] == ids and all(i == EOS for i in ids77[len(ids):])
        else:
            long_n += 1
            assert ids77[:76] == ids[:76]
        # the tokenizer.json layout (what the Rust `tokenizers` crate reads) agrees
        assert raw.encode(s).ids == ids, s
        for fname, t in reloaded.items():
            assert t(s, truncation=False).input_ids == ids, (fname, s)
            assert t(s, padding="max_length", max_length=77, truncation=True).input_ids == ids77, (fname, s)
        o = [BOS] + oc.encode(s) + [EOS]
        if o != ids:
            oc_diff.append(s)
        rows.append({"text": s, "ids": ids, "ids_77": ids77})
    path = FIX / "tokenizer_ids.json"
    with open(path, "w", encoding="utf-8") as f:
        # one sentence per line: readable, diff-friendly, still one JSON array
        f.write("[\n" + ",\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n]\n")
    log(f"wrote {rel(path)}: {len(rows)} sentences, {long_n} longer than 77 tokens; "
        f"tokenizer.json (tokenizers {__import__('tokenizers').__version__}) and the reloaded "
        f"{', '.join(reloaded)} tokenizers agree on all")
    log(f"  open_clip SimpleTokenizer (ftfy + html unescape) differs on {len(oc_diff)}:")
    for s in oc_diff:
        log(f"    {s!r}:\n      transformers {tok_legacy(s).input_ids[1:-1]}\n      open_clip    {oc.encode(s)}")


# --------------------------------------------------------------------------

def main():
    log(f"torch {torch.__version__}, diffusers {diffusers.__version__}, transformers "
        f"{transformers.__version__}, safetensors {safetensors.__version__}, "
        f"open_clip {open_clip.__version__}, numpy {np.__version__}")
    torch.manual_seed(0)
    FIX.mkdir(parents=True, exist_ok=True)
    encoder, merges = clip_vocab_and_merges()
    tmp = FIX / ".tok-tmp"
    tokenizer = build_tokenizer(tmp, encoder, merges)
    shutil.rmtree(tmp)

    all_stats = {}
    for spec in fixture_specs():
        name = spec["name"]
        log(f"\n=== {name}  (weights {spec['dtype']}, "
            f"{'safetensors' if spec['safe'] else 'PyTorch .bin'}"
            f"{', variant ' + spec['variant'] if spec['variant'] else ''}, "
            f"tokenizer layout {spec['tok_layout']})")
        pipe_mem = build_pipeline(spec, tokenizer)
        folder = save_pipeline(pipe_mem, spec, encoder, merges)
        pipe = load_fp32(folder, spec)
        check_saved_weights(pipe_mem, pipe, spec)
        check_tokenizer(pipe.tokenizer, f"{name}/tokenizer reloaded")
        log(f"  attention processor: {sorted({type(p).__name__ for p in pipe.unet.attn_processors.values()})}")
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                log(f"  wrote {rel(f)}  ({f.stat().st_size/1e6:.3f} MB)")
        g, stats, sched_cfgs = goldens(pipe, spec)
        save_goldens(name, g, stats, sched_cfgs, spec)
        all_stats[name] = stats
        log("  stats: " + ", ".join(f"{k}={v:.4f}" for k, v in stats.items()))
        if name == "tiny-sd-bin":
            tok_json = folder / "tokenizer" / "tokenizer.json"

    log("")
    make_randn()
    log("")
    make_tokenizer_ids(tokenizer, tok_json)

    log("\n=== summary")
    for name, st in all_stats.items():
        log(f"{name:12s} text_emb_std {st['text_emb_std']:.3f}  unet_out_std {st['unet_out_std']:.3f}  "
            f"pndm image std {st['pndm_image_std']:.3f} sat {st['pndm_image_saturated_pct']:.2f}%  "
            f"dpm++2m image std {st['dpmpp2m_image_std']:.3f} sat {st['dpmpp2m_image_saturated_pct']:.2f}%")
    total = sum(f.stat().st_size for f in FIX.rglob("*") if f.is_file())
    log(f"total size of {rel(FIX)}: {total/1e6:.2f} MB")


if __name__ == "__main__":
    main()
