"""Reads a DICOM file written by `roentgen generate --output x.dcm` with pydicom (a real
DICOM reader, pinned in tools/requirements-ref.txt) and checks what issue 11 asks of it
against the PNG of the same generation:

    .venv-ref/bin/python tools/check_dicom.py x.dcm x.png [report.json]

(or a small venv with only pydicom, numpy and Pillow: tools/README.md, "The DICOM fixture")

Secondary Capture SOP class, Image Type DERIVED\\SECONDARY, Conversion Type SYN,
MONOCHROME2 8-bit, fresh 2.25 UIDs, no patient identity (Patient Identity Removed YES and
a De-identification Method that says why), Body Part Examined CHEST and so no Laterality,
a Study ID, the settings in Derivation Description and Image Comments, and the pixels
equal to the PNG's. Writes what pydicom read as JSON (the committed
tests/fixtures/dicom/pydicom.json came from this script). The IOD's rules themselves are
dicom3tools' `dciodvfy`'s job (tests/dicom.rs runs it on the committed file).
"""
import json
import sys

import numpy as np
import pydicom
from PIL import Image

dcm_path, png_path = sys.argv[1], sys.argv[2]
ds = pydicom.dcmread(dcm_path)  # strict enough: raises on a malformed file
png = np.array(Image.open(png_path))
checks = {
    "sop_class": ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7",
    "media_sop_class": ds.file_meta.MediaStorageSOPClassUID == ds.SOPClassUID,
    "media_instance": ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID,
    "transfer_syntax": ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1",
    "image_type": list(ds.ImageType) == ["DERIVED", "SECONDARY"],
    "conversion_type": ds.ConversionType == "SYN",
    "photometric": ds.PhotometricInterpretation == "MONOCHROME2",
    "bits": (ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation) == (8, 8, 7, 0),
    "uids_fresh_and_valid": all(
        u.startswith("2.25.") and len(u) <= 64 and pydicom.uid.UID(u).is_valid
        for u in (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    ) and len({ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID}) == 3,
    "patient_says_synthetic": "SYNTHETIC" in str(ds.PatientName) and ds.PatientID == "SYNTHETIC",
    "no_birth_date_or_sex": ds.PatientBirthDate == "" and ds.PatientSex == "",
    "identity_removed_says_why": ds.PatientIdentityRemoved == "YES"
    and "synthetic" in str(ds.get("DeidentificationMethod", "")).lower()
    and "DeidentificationMethodCodeSequence" not in ds,
    "chest_without_laterality": ds.get("BodyPartExamined") == "CHEST" and "Laterality" not in ds,
    "study_id": ds.StudyID == "SYNTHETIC",
    "settings_in_derivation": all(k in ds.DerivationDescription for k in ("prompt:", "seed:", "steps:", "guidance:", "scheduler:", "model:")),
    "settings_in_comments": "SYNTHETIC IMAGE" in ds.ImageComments and "prompt:" in ds.ImageComments,
    "size": (ds.Rows, ds.Columns) == png.shape[:2],
    "pixels_equal_png": np.array_equal(ds.pixel_array, png),
}
report = {
    "pydicom": pydicom.__version__,
    "checks": checks,
    "attributes": {e.keyword: str(e.value) for e in ds if e.keyword and e.keyword != "PixelData"},
}
print(json.dumps(checks, indent=1))
if len(sys.argv) > 3:
    json.dump(report, open(sys.argv[3], "w"), indent=1, ensure_ascii=False)
    open(sys.argv[3], "a").write("\n")
failed = [k for k, ok in checks.items() if not ok]
if failed:
    sys.exit(f"FAILED: {failed}")
print("all checks pass")
