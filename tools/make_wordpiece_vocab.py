#!/usr/bin/env python3
"""Write tests/fixtures/wordpiece/vocab.txt: a small BERT WordPiece vocabulary in
BioViL-T's id order.

BioViL-T's (microsoft/BiomedVLP-BioViL-T) vocabulary puts [PAD]=0, [UNK]=1, [CLS]=2,
[SEP]=3, [MASK]=4 first, unlike bert-base-uncased (0/100/101/102/103). Its file cannot be
downloaded on the machines that build this project (only package registries are
reachable), so the fixtures use this stand-in with the same special-token order: every
ASCII printable character alone and as a `##` continuation, digits, a few hundred
radiology and common English words and suffix pieces, units, and a handful of CJK
characters (BERT splits CJK into single characters). Words not in it fall apart into
pieces or become [UNK], exercising every branch of WordPiece.

Deterministic: no randomness, the order below is the id order. Standard library only.
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "wordpiece" / "vocab.txt"

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

WORDS = """
the a an and or of in on at to with without no not is are was were be been there this that
it its as by for from new old small large mild moderate severe trace tiny minimal marked
left right bilateral both sided side lower upper middle mid base bases apex apices apical
basal basilar lobe lobes lung lungs pleural effusion effusions pneumothorax pneumonia
consolidation consolidations opacity opacities opacification atelectasis atelectatic edema
pulmonary interstitial alveolar vascular congestion cardiomegaly cardiac heart size silhouette
mediastinal mediastinum contour contours hilar hila enlarged enlargement normal unchanged
stable improved improving worsening worse increased decreased increase decrease resolved
interval since prior comparison study exam radiograph chest film frontal lateral view views
pa ap portable upright supine semi erect tube tubes line lines catheter picc central venous
endotracheal enteric nasogastric tip terminates projects svc atrium ventricle pacemaker
device devices leads lead wires sternotomy surgical clips fracture fractures rib ribs
osseous structures bony spine thoracic degenerative changes change findings finding
impression no acute cardiopulmonary process evidence of focal free air under diaphragm
hemidiaphragm hemidiaphragms costophrenic angle angles blunting nodule nodules mass masses
granuloma calcified calcification calcifications scarring fibrosis emphysema hyperinflated
hyperinflation aorta aortic tortuous knob arch thoracic
patient patients history cough fever dyspnea shortness breath pain evaluate assess
likely possible possibly probable concerning suggestive may could represent represents
cannot excluded exclude differential includes including infection aspiration malignancy
layering loculated loculation fluid small-to-moderate moderate-to-large
mm cm ml kg x
one two three four five six seven eight nine ten
word piece token pieces sentence sentences text model prompt image images
cafe resume naive
""".split()

PIECES = """
##s ##es ##ed ##ing ##al ##ly ##ion ##ions ##ity ##ic ##ary ##ous ##ar ##er ##ers ##est
##ment ##ness ##ia ##is ##itis ##osis ##ectomy ##ation ##ations ##ive ##able ##ible ##ized
##ize ##ise ##ent ##ant ##al ##ial ##ular ##graphy ##gram ##scopy ##ance ##ence ##ism
##mm ##cm ##ml
""".split()

CJK = list("胸部肺积液心脏影像正常左右侧")


def main():
    vocab, seen = [], set()

    def add(tok):
        if tok not in seen:
            seen.add(tok)
            vocab.append(tok)

    for t in SPECIALS:
        add(t)
    for i in range(10):
        add(f"[unused{i}]")
    printable = [chr(c) for c in range(33, 127)]
    # single characters (lower case only: the tokenizer lower-cases first)
    for ch in printable:
        if not ch.isupper():
            add(ch)
    for ch in printable:
        if ch.isalnum() and not ch.isupper():
            add("##" + ch)
    for w in WORDS:
        add(w)
    for p in PIECES:
        add(p)
    for ch in CJK:
        add(ch)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("".join(t + "\n" for t in vocab), encoding="utf-8")
    print(f"{OUT.relative_to(ROOT)}: {len(vocab)} tokens")


if __name__ == "__main__":
    main()
