#!/usr/bin/env python3
"""Write the WordPiece (BERT) tokenizer fixtures under tests/fixtures/wordpiece/.

RadEdit's text encoder (microsoft/BiomedVLP-BioViL-T, a CXR-BERT) takes its prompts from
transformers' `BertTokenizer(do_lower_case=True, model_max_length=128)`. This script runs
that tokenizer (transformers 5.24, a `tokenizers`-backed WordPiece) on the committed
stand-in vocabulary `tests/fixtures/wordpiece/vocab.txt` (tools/make_wordpiece_vocab.py,
BioViL-T's special-token order) and writes:

- `wordpiece/tokenizer_config.json`: what `save_pretrained` writes for it (transformers 5
  writes no `special_tokens_map.json` and no `vocab.txt`; the committed `vocab.txt` is
  the input);
- `wordpiece/fast/tokenizer.json` + `wordpiece/fast/tokenizer_config.json`: the same
  tokenizer as `save_pretrained` writes it (the `tokenizer.json` layout);
- `wordpiece/ids.json`: per sentence, `input_ids` (padded to 128 / truncated: what the
  text encoder sees), `ids` (untruncated, unpadded), `decode` (`tok.decode(ids,
  skip_special_tokens=True)`) and `decode_clean` (the same with
  `clean_up_tokenization_spaces=True`, which 4.x-era BERT configs set);
- `wordpiece/ids_options.json`: the normalizer's options (`do_lower_case`,
  `strip_accents`, `tokenize_chinese_chars`) set otherwise, per option set the `ids` and
  `decode` of the sentences they change the most (case, accents, CJK).

It asserts that both saved folders, reloaded with `BertTokenizer.from_pretrained`, give the
same ids and text for every sentence, and reports where transformers' old pure-Python
tokenizer (`BertTokenizerLegacy`) differs.

Run through tools/make_tokenizer_fixtures.sh (the pinned venv, tools/requirements-ref.txt).
Deterministic: no randomness. Tests never run this: they read the committed outputs.
"""

import json
import re
import shutil
import sys
import tempfile
from pathlib import Path

import tokenizers
import transformers
from transformers import BertTokenizer
from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "wordpiece"
VOCAB = OUT / "vocab.txt"
MAX_LENGTH = 128  # RadEdit's recipe
SPECIAL_IDS = {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4}  # BioViL-T's order

transformers.logging.set_verbosity_error()


def log(*a):
    print(*a, flush=True)


def rel(p):
    return Path(p).resolve().relative_to(ROOT)


def check_pins():
    """The installed transformers and tokenizers are the pins of requirements-ref.txt."""
    pins = {}
    for line in (ROOT / "tools" / "requirements-ref.txt").read_text().splitlines():
        m = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)==(\S+)\s*", line)
        if m:
            pins[m.group(1).lower()] = m.group(2)
    for name, have in (("transformers", transformers.__version__),
                       ("tokenizers", tokenizers.__version__)):
        if pins.get(name) != have:
            sys.exit(f"{name} {have} is installed but tools/requirements-ref.txt pins "
                     f"{pins.get(name)}: run tools/make_tokenizer_fixtures.sh")


REPORTS = [
    "Small right-sided pleural effusion.",
    "Small left pleural effusion.",
    "No acute cardiopulmonary process.",
    "Moderate pulmonary edema.",
    "Large left pleural effusion with adjacent atelectasis.",
    "Mild cardiomegaly without pulmonary vascular congestion.",
    "Right upper lobe consolidation concerning for pneumonia.",
    "Bibasilar atelectasis; cannot exclude superimposed infection.",
    "Interval improvement of the right basilar opacity.",
    "Endotracheal tube terminates 4.5 cm above the carina.",
    "Right PICC line tip projects over the mid SVC.",
    "Nasogastric tube tip is below the diaphragm.",
    "Status post median sternotomy with intact sternal wires.",
    "Stable small bilateral pleural effusions, unchanged since the prior study.",
    "Tiny left apical pneumothorax.",
    "Hyperinflated lungs, consistent with emphysema.",
    "Calcified granuloma in the left lower lobe.",
    "Blunting of the right costophrenic angle may represent a small effusion.",
    "Heart size is normal. Mediastinal and hilar contours are unchanged.",
    "Degenerative changes of the thoracic spine.",
    "Left-sided pacemaker with leads terminating in the right atrium and ventricle.",
    "Free air under the right hemidiaphragm.",
    "Healed fractures of the left lateral ribs.",
    "Portable AP upright view of the chest.",
    "Compared with the prior radiograph, the effusion has decreased in size.",
    "Findings are suggestive of moderate interstitial edema.",
    "Possible loculated fluid in the right lower hemithorax.",
    "Tortuous, calcified thoracic aorta.",
    "1. No pneumothorax. 2. Stable cardiomegaly.",
    "Impression: small-to-moderate right pleural effusion.",
    "50 year old White female. Normal chest radiograph.",
    "72 year old Black male. Large left pleural effusion.",
    "Patient with history of cough and fever; evaluate for pneumonia.",
    "Lungs are clear. No focal consolidation, effusion, or pneumothorax.",
    "Multifocal opacities, worse in the left lung base.",
    "Enlarged cardiac silhouette and interstitial pulmonary edema.",
]

CASE = [
    "NO ACUTE CARDIOPULMONARY PROCESS.",
    "SMALL RIGHT-SIDED PLEURAL EFFUSION",
    "Mixed CaSe PnEuMoThOrAx",
    "STRASSE Straße İstanbul ǅ",
]

ACCENTS = [
    "Café",
    "naïve résumé of the exam",
    "Ångström",
    "Zürich, São Paulo, Kraków, Ørsted, Łódź",
    "Opacité basale droite – probable atélectasie.",
    "e\u0301 combining acute, and precomposed é",
    "ﬁbrosis with a ligature",
    "ＦＵＬＬＷＩＤＴＨ letters and ｆｕｌｌ digits １２３",
    "α-1 antitrypsin deficiency, 5 μg, 37 °C",
    "Ελληνικά и кириллица",
]

PUNCTUATION = [
    "!!!",
    "...",
    "--",
    "(?)",
    "Effusion!!! Pneumothorax??? Edema...",
    "Large -- very large -- effusion (?) on the left.",
    "right/left, a&b, #3, @home, $5, 50%, ~2, a^2, `x`, a|b, a\\b, a_b, {x}, [y], <z>",
    "Healed left 5th–7th rib fractures — new since prior…",
    "Findings suggestive of “mild” pulmonary edema.",
    "Patient’s lungs are clear; don't worry, it's fine.",
    "« guillemets » and ‹ single › and ¿question? ¡exclamation!",
    "'quoted' \"double\" (paren) [bracket] {brace}",
    "a.b.c. e.g. i.e. vs. etc.",
    "***",
    "=> -> <- <= >= != ==",
    "Pleural effusion: small (≤ 5 mm), ≥5mm elsewhere → stable.",
]

NUMBERS = [
    "3.5 cm",
    "12mm",
    "1,200 mL",
    "5x5",
    "2.0x1.5 cm nodule",
    "A 1.2 cm nodule in the right upper lobe, unchanged since 01/02/2019.",
    "T10 and C5-C6 levels",
    "10:30 am",
    "1/2 and ½ and ² and ⅓",
    "0.5-1.0 cm",
    "12345678901234567890",
    "1e-3 and -3.2 and +7",
    "Temperature 38.5°C; SpO2 92%.",
    "ETT 3.5cm above carina; 5 mm; 12 MM; 40 kg",
    "one two three 1 2 3 ten 10",
]

EMOJI = [
    "🫁",
    "Emoji test 🫁 lung ❤️ heart.",
    "👍🏽 thumbs",
    "🇺🇸 flag",
    "family 👨‍👩‍👧 zwj",
    "😀😀😀",
]

CJK = [
    "胸部 积液",
    "胸部积液",
    "左侧胸腔积液",
    "心脏正常",
    "胸水",
    "CXR胸部X线",
    "きょうぶ",
    "흉부 엑스레이",
    "中文 and English 混合 text",
]

WHITESPACE = [
    "Tabs\tand\nnewlines\r\nmixed   with  spaces.",
    "   No   acute\tcardiopulmonary\n\nprocess.   ",
    "no\u00a0break\u00a0space",
    "ideographic\u3000space and em\u2003space",
    "line\u2028separator and\u2029paragraph",
    "vertical\x0btab and form\x0cfeed",
    "\t\n",
    " ",
]

CONTROL = [
    "null\x00char",
    "bell\x07 and escape\x1b[0m",
    "zero\u200bwidth space",
    "soft\u00adhyphen",
    "replacement \ufffd char",
    "bom\ufeffmark",
    "del\x7f char",
    "\x00",
]

SPECIAL_TEXT = [
    "[CLS] left [SEP]",
    "[MASK] effusion",
    "[cls] lower case is text",
    "small [PAD] effusion [UNK]",
    "[SEP][SEP]",
]

ODD = [
    "",
    "a",
    "x" * 100,
    "x" * 101,
    "pneumonoultramicroscopicsilicovolcanoconiosis",
    "pneumothoraxpneumothoraxpneumothorax",
    "unknownwordzzq",
    "qqq",
    "ʃ ǂ ∑ ≈ ∞",
    "<|startoftext|> CLIP's special tokens <|endoftext|> as text",
]


def long_texts():
    """Texts past 128 tokens, and ones at the boundary (126, 127 tokens between [CLS] and
    [SEP]: 128 and 129 in all)."""
    out = [
        "a " * 126,
        "a " * 127,
        "Small left pleural effusion. " * 30,
        "Heart size normal. Lungs clear. Pulmonary vasculature normal. No pleural effusion. "
        "No pneumothorax. Osseous structures intact. Impression: No acute cardiopulmonary "
        "abnormality. Recommend follow-up radiograph in 6-8 weeks to document resolution of "
        "the right lower lobe opacity, which may represent pneumonia or atelectasis. "
        "Support devices: endotracheal tube, enteric tube, right internal jugular central "
        "venous catheter, left chest tube, mediastinal drains, epicardial pacing wires, "
        "sternal wires, and cardiac monitoring leads are all in appropriate position without "
        "evidence of complication. There is persistent moderate bilateral pleural effusion "
        "with adjacent atelectasis and mild pulmonary edema, slightly improved from prior.",
        # truncation cuts into a word of several pieces ("pneumonoultramicroscopic…")
        "no " * 125 + "pneumonoultramicroscopicsilicovolcanoconiosis and more",
        "胸部积液 " * 40,
        "!!! " * 140,
    ]
    return out


def sentences():
    all_ = (REPORTS + CASE + ACCENTS + PUNCTUATION + NUMBERS + EMOJI + CJK + WHITESPACE
            + CONTROL + SPECIAL_TEXT + ODD + long_texts())
    seen, out = set(), []
    for s in all_:
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out


def save(tok, folder, keep):
    """`save_pretrained` into a temporary folder; copy the files named in `keep`."""
    with tempfile.TemporaryDirectory() as tmp:
        tok.save_pretrained(tmp)
        written = sorted(p.name for p in Path(tmp).iterdir())
        folder.mkdir(parents=True, exist_ok=True)
        for name in keep:
            shutil.copyfile(Path(tmp) / name, folder / name)
    log(f"save_pretrained wrote {written}; kept {keep} in {rel(folder)}")


def encode_row(tok, s):
    ids = tok(s, truncation=False).input_ids
    padded = tok(s, padding="max_length", max_length=MAX_LENGTH, truncation=True).input_ids
    return {
        "text": s,
        "input_ids": padded,
        "ids": ids,
        "decode": tok.decode(ids, skip_special_tokens=True),
        "decode_clean": tok.decode(ids, skip_special_tokens=True,
                                   clean_up_tokenization_spaces=True),
    }


# The BertTokenizer options other than the defaults, each run on OPTION_SENTENCES.
OPTIONS = [
    {"do_lower_case": False},
    {"strip_accents": False},
    {"do_lower_case": False, "strip_accents": True},
    {"tokenize_chinese_chars": False},
    {"do_lower_case": False, "tokenize_chinese_chars": False, "strip_accents": False},
]


def option_sentences():
    return (["Small left pleural effusion.", "small", "SMALL", "Small"] + CASE + ACCENTS
            + CJK + ["[CLS] Small [sep] [MASK]", ""])


def make_options(vocab_dir, legacy_diff):
    out = []
    for options in OPTIONS:
        tok = BertTokenizer.from_pretrained(vocab_dir, model_max_length=MAX_LENGTH, **options)
        legacy = BertTokenizerLegacy(vocab_file=str(VOCAB), model_max_length=MAX_LENGTH,
                                     **options)
        cases = []
        for s in option_sentences():
            ids = tok(s, truncation=False).input_ids
            if legacy(s, truncation=False).input_ids != ids:
                legacy_diff.append((options, s))
            cases.append({"text": s, "ids": ids,
                          "decode": tok.decode(ids, skip_special_tokens=True)})
        out.append({"options": options, "cases": cases})
    path = OUT / "ids_options.json"
    with open(path, "w", encoding="utf-8") as f:
        f.write("[\n" + ",\n".join(json.dumps(o, ensure_ascii=False) for o in out) + "\n]\n")
    log(f"wrote {rel(path)}: {len(OPTIONS)} option sets x {len(option_sentences())} sentences")


def main():
    check_pins()
    log(f"transformers {transformers.__version__}, tokenizers {tokenizers.__version__}")
    # Not `BertTokenizer(vocab_file=...)`: in transformers 5.24 that keyword is ignored and
    # the tokenizer silently holds only the 5 default special tokens (every word → [UNK]).
    # from_pretrained reads vocab.txt.
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copyfile(VOCAB, Path(tmp) / "vocab.txt")
        tok = BertTokenizer.from_pretrained(tmp, do_lower_case=True, model_max_length=MAX_LENGTH)
        options_legacy_diff = []
        make_options(tmp, options_legacy_diff)
    n_vocab = len(VOCAB.read_text(encoding="utf-8").splitlines())
    assert tok.vocab_size == n_vocab, (tok.vocab_size, n_vocab)
    got = {k: getattr(tok, f"{k}_token_id") for k in SPECIAL_IDS}
    assert got == SPECIAL_IDS, got
    assert tok.model_max_length == MAX_LENGTH

    save(tok, OUT, ["tokenizer_config.json"])
    save(tok, OUT / "fast", ["tokenizer.json", "tokenizer_config.json"])
    from_txt = BertTokenizer.from_pretrained(OUT)  # vocab.txt + tokenizer_config.json
    from_json = BertTokenizer.from_pretrained(OUT / "fast")  # tokenizer.json + config
    legacy = BertTokenizerLegacy(vocab_file=str(VOCAB), do_lower_case=True,
                                 model_max_length=MAX_LENGTH)
    assert legacy.vocab_size == n_vocab

    rows, legacy_diff, long_n = [], [], 0
    for s in sentences():
        row = encode_row(tok, s)
        ids, padded = row["ids"], row["input_ids"]
        assert len(padded) == MAX_LENGTH and padded[0] == SPECIAL_IDS["cls"], s
        if len(ids) <= MAX_LENGTH:
            assert padded[: len(ids)] == ids, s
            assert all(i == SPECIAL_IDS["pad"] for i in padded[len(ids):]), s
        else:
            long_n += 1
            assert padded[:-1] == ids[: MAX_LENGTH - 1] and padded[-1] == SPECIAL_IDS["sep"], s
        for name, other in (("vocab.txt", from_txt), ("tokenizer.json", from_json)):
            assert encode_row(other, s) == row, (name, s)
        if legacy(s, truncation=False).input_ids != ids:
            legacy_diff.append(s)
        rows.append(row)

    path = OUT / "ids.json"
    with open(path, "w", encoding="utf-8") as f:
        # one sentence per line: readable, diff-friendly, still one JSON array
        f.write("[\n" + ",\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n]\n")
    log(f"wrote {rel(path)}: {len(rows)} sentences, {long_n} longer than {MAX_LENGTH} tokens; "
        f"the reloaded vocab.txt and tokenizer.json folders agree on all")
    log(f"  BertTokenizerLegacy (transformers' pure-Python tokenizer) differs on "
        f"{len(legacy_diff)}:")
    for s in legacy_diff:
        log(f"    {s!r}:\n      transformers {tok(s).input_ids}\n"
            f"      legacy       {legacy(s).input_ids}")
    log(f"  and with the other options on {len(options_legacy_diff)}:")
    for options, s in options_legacy_diff:
        log(f"    {options} {s!r}")


if __name__ == "__main__":
    main()
