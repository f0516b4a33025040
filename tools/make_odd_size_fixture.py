"""One UNet call of the `tiny-sd` fixture at an odd latent size (9x13), where the UNet
cannot simply double on the way up: diffusers then upsamples each level to its skip
connection's size (`upsample_size`, PyTorch nearest with a float scale). Writes
tests/fixtures/golden/tiny-sd-odd.safetensors. Run with the venv of
tools/requirements-ref.txt (torch 2.15.0, diffusers 0.42.1):

    .venv-ref/bin/python tools/make_odd_size_fixture.py
"""
import pathlib

import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import load_file, save_file

root = pathlib.Path(__file__).resolve().parent.parent
fixtures = root / "tests" / "fixtures"
unet = UNet2DConditionModel.from_pretrained(fixtures / "tiny-sd" / "unet").eval()
golden = load_file(fixtures / "golden" / "tiny-sd.safetensors")
g = torch.Generator("cpu").manual_seed(7)
sample = torch.randn((2, 4, 9, 13), generator=g)
t = torch.tensor([801])
ehs = golden["text.last_hidden_state"].flip(0)  # rows [uncond, cond] as the UNet golden
with torch.no_grad():
    out = unet(sample, t, encoder_hidden_states=ehs).sample
print("out", tuple(out.shape), "std", float(out.std()))
assert torch.isfinite(out).all() and out.std() > 0.05
save_file(
    {"unet.sample": sample.contiguous(), "unet.timestep": t, "unet.encoder_hidden_states": ehs.contiguous(), "unet.out": out.contiguous()},
    str(fixtures / "golden" / "tiny-sd-odd.safetensors"),
    metadata={"generator": "tools/make_odd_size_fixture.py", "torch": torch.__version__},
)
