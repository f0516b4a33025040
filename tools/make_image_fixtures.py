"""Makes the init-image fixtures of tests/image_in.rs: small JPEG, DICOM and mask files
written by the reference libraries, and what those libraries decode them to.

    tools/make_image_fixtures.sh

JPEGs are written and decoded by Pillow (libjpeg-turbo, the decoder behind diffusers'
`load_image`), DICOMs written by pydicom and windowed by pydicom's own
`apply_modality_lut` + `apply_voi_lut` (then normalised to [0, 1] and MONOCHROME1
inverted, as a viewer shows it), the mask converted as diffusers' mask processor does
(`convert("L")`, then >= 0.5). Everything lands in tests/fixtures/images/ with the
decoded values in expected.safetensors (float32, one tensor a file).
"""
import os

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from safetensors.numpy import save_file

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "images")
os.makedirs(OUT, exist_ok=True)
H, W = 24, 40
y, x = np.mgrid[0:H, 0:W].astype(np.float64)
# a smooth "chest": bright mediastinum, darker lungs, a brighter round opacity
base = 0.35 + 0.4 * np.exp(-((x - W / 2) ** 2) / 60.0) + 0.2 * np.exp(-((x - 28) ** 2 + (y - 14) ** 2) / 12.0)
base = np.clip(base, 0, 1)
expected = {}

# --- JPEG: gray, colour 4:2:0, progressive
gray8 = np.round(base * 255).astype(np.uint8)
rgb8 = np.stack([gray8, np.round(base * 200 + 30).astype(np.uint8), np.round((1 - base) * 255).astype(np.uint8)], -1)
for name, img, kw in [
    ("gray.jpg", Image.fromarray(gray8, "L"), dict(quality=90)),
    ("color420.jpg", Image.fromarray(rgb8, "RGB"), dict(quality=90, subsampling=2)),
    ("progressive.jpg", Image.fromarray(rgb8, "RGB"), dict(quality=85, progressive=True, subsampling=0)),
]:
    path = os.path.join(OUT, name)
    img.save(path, **kw)
    back = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
    expected[name] = back


def dicom(name, syntax, photometric, stored, signed, raw, extra):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[name])
    meta.TransferSyntaxUID = syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientName = "SYNTHETIC^FIXTURE"
    ds.Modality = "OT"
    ds.Rows, ds.Columns = H, W
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = stored
    ds.HighBit = stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    for k, v in extra.items():
        setattr(ds, k, v)
    ds.PixelData = raw.astype("<i2" if signed else "<u2").tobytes()
    path = os.path.join(OUT, name)
    ds.save_as(path, enforce_file_format=True)
    back = pydicom.dcmread(path)
    arr = back.pixel_array
    shown = apply_voi_lut(apply_modality_lut(arr, back), back).astype(np.float64)
    # apply_voi_lut's output range: the stored range ([0, 2^stored - 1] unsigned,
    # [-2^(stored-1), 2^(stored-1) - 1] signed) through the rescale; a viewer maps it to
    # black..white
    lo, hi = (-(2 ** (stored - 1)), 2 ** (stored - 1) - 1) if signed else (0, 2**stored - 1)
    slope, intercept = float(extra.get("RescaleSlope", 1)), float(extra.get("RescaleIntercept", 0))
    lo, hi = lo * slope + intercept, hi * slope + intercept
    shown = (shown - lo) / (hi - lo)
    if photometric == "MONOCHROME1":
        shown = 1.0 - shown
    expected[name] = np.repeat(shown.astype(np.float32)[..., None], 3, -1)


# 12 bits stored, a CT-like rescale, LINEAR window, MONOCHROME1 (white = low)
raw12 = np.round(base * 4095).astype(np.uint16)
dicom("mono1_12bit.dcm", ExplicitVRLittleEndian, "MONOCHROME1", 12, False, raw12,
      dict(RescaleSlope="2", RescaleIntercept="-1024", WindowCenter="2600", WindowWidth="5001"))
# signed 16 bits, implicit VR, SIGMOID window, two windows (the first is used)
raws = np.round(base * 3000 - 1500).astype(np.int16)
dicom("mono2_signed_sigmoid.dcm", ImplicitVRLittleEndian, "MONOCHROME2", 16, True, raws,
      dict(WindowCenter=["100", "40"], WindowWidth=["1800", "400"], VOILUTFunction="SIGMOID"))

# --- a mask drawn with a soft brush in colour: PIL's convert("L") then >= 0.5 (128 of 255)
soft = np.clip(1.6 - np.sqrt((x - 20) ** 2 + (y - 12) ** 2) / 6.0, 0, 1)
mask_rgb = np.stack([np.round(soft * 255), np.round(soft * 240), np.round(soft * 90)], -1).astype(np.uint8)
Image.fromarray(mask_rgb, "RGB").save(os.path.join(OUT, "soft_mask.png"))
lum = np.asarray(Image.open(os.path.join(OUT, "soft_mask.png")).convert("L"), dtype=np.float32) / 255.0
expected["soft_mask.png"] = (lum >= 0.5).astype(np.float32)

save_file({k: np.ascontiguousarray(v) for k, v in expected.items()}, os.path.join(OUT, "expected.safetensors"))
for k, v in expected.items():
    print(f"{k}: {v.shape} mean {v.mean():.4f}")
