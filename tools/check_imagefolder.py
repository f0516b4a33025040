"""Loads a folder made by `roentgen batch` and `roentgen batch --merge` the way researchers
load datasets, and checks what issue 20 (item 8) asks of it:

    python3 -m venv /tmp/venv-datasets
    /tmp/venv-datasets/bin/pip install -r tools/requirements-datasets.txt
    /tmp/venv-datasets/bin/python tools/check_imagefolder.py OUT

1. `datasets.load_dataset("imagefolder", data_dir=OUT)`: one row per line of
   metadata.jsonl, each with a picture in `image` (a PIL image of the row's width and
   height), the index within its prompt row in `image_index`, and the CheXpert label
   columns typed (integers 1/0/-1, or None for blank), one type per column.
2. chexgenbench.csv read as CheXGenBench's metrics/fid.py reads it (pandas.read_csv, then
   os.path.join(--synthetic_img_dir, img_savename)) with --synthetic_img_dir OUT/images:
   every file there, with the prompt of its metadata row.

Not in the test path (tests/batch.rs checks the same columns in Rust); exits 1 on the
first failed check.
"""
import json
import os
import sys

import datasets
import pandas
from PIL import Image

# CheXpert's 14 findings (src/findings.rs LABELS); a column is one of them when its name,
# lowercased with spaces as underscores, is one of these.
CHEXPERT = {
    n.lower().replace(" ", "_")
    for n in [
        "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity",
        "Lung Lesion", "Edema", "Consolidation", "Pneumonia", "Atelectasis",
        "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture", "Support Devices",
    ]
}


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        sys.exit(1)


out = sys.argv[1]
with open(os.path.join(out, "metadata.jsonl"), encoding="utf-8") as f:
    lines = [json.loads(line) for line in f if line.strip()]

print(f"datasets {datasets.__version__}, pandas {pandas.__version__}, Pillow {Image.__version__}")
ds = datasets.load_dataset("imagefolder", data_dir=out, split="train")
print(ds)
print("features:", {k: str(v) for k, v in ds.features.items()})

check(len(ds) == len(lines), f"{len(ds)} rows, one per line of metadata.jsonl ({len(lines)})")
check(isinstance(ds.features["image"], datasets.Image), "`image` is the picture column (datasets.Image)")
check("image_index" in ds.features, "`image_index` holds the index within the prompt row")
chexpert = [c for c in ds.features if c.lower().replace(" ", "_") in CHEXPERT]
check(len(chexpert) > 0, f"CheXpert label columns: {chexpert}")
for c in chexpert:
    dtype = getattr(ds.features[c], "dtype", None)
    check(dtype in ("int64", "int32", "float64"), f"`{c}` is typed {dtype}, a number column")

by_file = {m["file_name"]: m for m in lines}
for i, row in enumerate(ds):
    img = row["image"]
    check(
        isinstance(img, Image.Image) and img.size == (row["width"], row["height"]),
        f"row {i} ({row['id']}): a {img.size[0]}x{img.size[1]} {img.mode} picture, as its width and height say",
    )
    labels = {c: row[c] for c in chexpert}
    check(
        all(v is None or v in (1, 0, -1) for v in labels.values()),
        f"row {i} ({row['id']}): CheXpert labels {labels}",
    )
    want = by_file[f"images/{row['id']}.png"]
    check(
        row["image_index"] == want["image_index"] and row["prompt"] == want["prompt"],
        f"row {i} ({row['id']}): image_index {row['image_index']} and the prompt as metadata.jsonl has them",
    )

# CheXGenBench: metrics/fid.py --synthetic_csv OUT/chexgenbench.csv --synthetic_img_dir OUT/images
df = pandas.read_csv(os.path.join(out, "chexgenbench.csv"))
check(
    list(df.columns) == ["img_savename", "prompt", "annotated_prompt", "synthetic_filename"],
    f"chexgenbench.csv columns {list(df.columns)}",
)
paths = df["img_savename"].apply(lambda x: os.path.join(out, "images", x))
check(len(df) == len(lines) and all(os.path.isfile(p) for p in paths), f"chexgenbench.csv: {len(df)} images, all found under OUT/images")
prompts = {os.path.basename(m["file_name"]): m["prompt"] for m in lines}
check(
    all(prompts[n] == p == a for n, p, a in zip(df["img_savename"], df["prompt"], df["annotated_prompt"])),
    "chexgenbench.csv: each prompt is its metadata row's prompt",
)
print("all checks passed")
