#!/usr/bin/env python3
"""Golden vectors from Hugging Face itself, for loraft's Go tests (issue #16).

Runs where torch, transformers and peft are installed (the GPU machine; no
network needed) and writes, into OUT:

  tokenizer.json    BertTokenizer (the slow, Python one) ids for tricky strings
                    on bert-base-uncased's vocab.txt, with do_lower_case=True
                    ("uncased") and do_lower_case=False ("cased"): [CLS] and
                    [SEP] added, no truncation.
  tiny-bert/        a tiny random BertForSequenceClassification in loraft's
                    Tiny() shape (hidden 128, 2 layers, 2 heads, intermediate
                    512, vocab 30522, 512 positions, 7 labels), written by
                    save_pretrained(safe_serialization=True) with its tokenizer
                    files, so it is a complete --base directory for loraft;
                    tiny-bert/logits.json holds eval-mode float32 logits for a
                    fixed, padded batch.
  peft/logits.json  only with --adapter DIR: the tiny base above with
                    PeftModel.from_pretrained(DIR) applied, eval-mode logits
                    for the same batch (DIR: an adapter loraft trained and
                    exported on OUT/tiny-bert).

Two steps make the PEFT check (deploy/gpu-check.sh does both in one run):
  1. hf-golden.py OUT                         -> tokenizer.json, tiny-bert/
  2. bin/loraft train --base OUT/tiny-bert --quant fp32 ... --out ADAPTER
     hf-golden.py OUT --adapter ADAPTER --skip-base
                                              -> peft/logits.json
The layout of each file is in trainer/model/hub/testdata/README.md.

Everything is deterministic (fixed seeds, CPU, float32) and nothing is
downloaded: the vocabulary is the one embedded in loraft
(shard/wordpiece/vocab/bert-base-uncased.txt) unless --vocab says otherwise.
Only the standard library, torch, transformers and peft are used.
"""
import argparse
import hashlib
import json
import os
import shutil
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_VOCAB = os.path.join(REPO, "shard", "wordpiece", "vocab", "bert-base-uncased.txt")
GOLDEN_TEXTS = os.path.join(REPO, "shard", "wordpiece", "testdata", "golden.json")

# loraft's classes, in the order loraft's data package numbers them.
LABELS = ["Normal", "Depression", "Suicidal", "Anxiety", "Bipolar", "Stress", "Personality disorder"]

# Strings chosen to exercise every branch of BasicTokenizer + WordPiece.
TRICKY = [
    # accents, composed and decomposed, and case
    "café naïve résumé", "CAFÉ NAÏVE RÉSUMÉ", "cafe\u0301 nai\u0308ve", "Ångström \u212bngström",
    "Ça va? Où êtes-vous? Straße Œuvre ﬁne", "İstanbul ıi ǅ ǈ", "ΣΊΣΥΦΟΣ σίσυφος",
    # CJK (spaced per character), Japanese kana and Korean (not CJK-spaced)
    "中国人", "我很难过，睡不着。", "日本語のテキストとカタカナ", "한국어 텍스트", "𠀀𪜀 U+20000 range",
    # emoji, ZWJ sequences, skin tones, flags, variation selectors
    "so tired 😭😭", "👨‍👩‍👧 family 👍🏽 🇬🇧 ❤️ ☺︎", "i feel 🙂 ok-ish 🙃",
    # control, format and odd whitespace characters
    "a\x00b\x01c\x7fd", "i\u00a0am\u200b\tok\r\n", "line1\nline2\rline3\u2028line4\u2029",
    "zero\u200cwidth\u200djoin\ufeffbom", "\u3000ideographic\u2003em\u2009thin space",
    "\ufffd replacement \U0001f600\ufe0f", "soft\u00adhyphen",
    # long words: over 100 characters is [UNK]; 100 exactly is WordPiece'd
    "a" * 100, "a" * 101, "x" * 250 + " ok", "supercalifragilisticexpialidocious",
    # punctuation runs and symbols
    "!!!???...;;;:::", "...and then---nothing", "“hi”—¿…$^`~", "(((nested))) [[brackets]] {{braces}}",
    "¡¿‽⁉ §¶†‡ ©®™ °±×÷", "$1,000.50 €20 £5 ¥100 ₹42 ₿0.1",
    # contractions and apostrophes
    "don't", "Don’t can’t I'm you're we've they'd", "rock'n'roll o'clock y'all",
    # URLs, e-mails, handles, hashtags, paths
    "https://www.example.com/path?q=a&b=c#frag", "mail me: someone@example.org", "@user #MentalHealth r/depression",
    "C:\\Users\\me\\file.txt /usr/local/bin",
    # mixed case and digits
    "iPhone McDonald's NASA eBay", "COVID-19 2nd 3rd 10:30pm 50%", "I CAN'T DO THIS ANYMORE",
    # literal special tokens, in and out of case
    "i [SEP] am [MASK] [CLS] [PAD] [UNK]", "[sep] [Mask]", "[SEP][SEP]x[CLS]",
    # whitespace oddities
    "", " ", "   leading", "trailing   ", "many     spaces\t\ttabs", "\n\n\n",
    # other scripts
    "Привет, как дела?", "مرحبا كيف حالك", "שלום עולם", "नमस्ते दुनिया", "สวัสดีครับ", "Tiếng Việt có dấu",
]


def fail(msg):
    print(f"hf-golden: {msg}", file=sys.stderr)
    sys.exit(2)


def imports(need_peft):
    mods = {}
    names = ["torch", "transformers"] + (["peft"] if need_peft else [])
    for name in names:
        try:
            mods[name] = __import__(name)
        except ImportError as e:
            fail(f"python package {name!r} is missing ({e}); install torch, transformers and peft "
                 f"(pip install torch transformers peft safetensors) where this runs")
    return mods


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read())
    return h.hexdigest()


def write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=True, indent=1)
        f.write("\n")


def texts():
    out, seen = [], set()
    with open(GOLDEN_TEXTS, encoding="utf-8") as f:
        golden = [c["text"] for c in json.load(f)]
    for t in golden + TRICKY:
        if t not in seen:
            seen.add(t)
            out.append(t)
    return out


def tokenizers(m, vocab, out):
    from transformers import BertTokenizer

    cases = texts()
    doc = {"transformers": m["transformers"].__version__, "tokenizer": "BertTokenizer",
           "vocab_sha256": sha256(vocab)}
    for key, lower in [("uncased", True), ("cased", False)]:
        tok = BertTokenizer(vocab_file=vocab, do_lower_case=lower)
        rows = []
        for t in cases:
            ids = tok(t, add_special_tokens=True, truncation=False)["input_ids"]
            rows.append({"text": t, "ids": ids})
        doc[key] = rows
    write_json(os.path.join(out, "tokenizer.json"), doc)
    print(f"hf-golden: tokenizer.json: {len(cases)} strings, uncased and cased")


# The batch for the logits: real token ids (the uncased tokenizer's) padded to
# the longest row with [PAD] = 0 and mask 0, so padding is exercised.
BATCH_TEXTS = [
    "i can't stop worrying about everything",
    "exams next week and my boss wants the report by friday, i am so overwhelmed",
    "fine.",
    "café naïve résumé 中国人 😭",
]


def batch(vocab):
    from transformers import BertTokenizer

    tok = BertTokenizer(vocab_file=vocab, do_lower_case=True)
    rows = [tok(t)["input_ids"] for t in BATCH_TEXTS]
    width = max(len(r) for r in rows)
    ids = [r + [0] * (width - len(r)) for r in rows]
    mask = [[1] * len(r) + [0] * (width - len(r)) for r in rows]
    return ids, mask


def logits_of(m, model, ids, mask):
    torch = m["torch"]
    model.eval()
    with torch.no_grad():
        out = model(input_ids=torch.tensor(ids, dtype=torch.long),
                    attention_mask=torch.tensor(mask, dtype=torch.long),
                    token_type_ids=torch.zeros(len(ids), len(ids[0]), dtype=torch.long))
    return out.logits.to(torch.float32).tolist()


def load_kwargs():
    # Eager attention: the reference is the plain softmax(QK^T)V math, not a
    # fused kernel (older transformers do not know the argument).
    return {"attn_implementation": "eager"}


def tiny_base(m, vocab, out):
    torch = m["torch"]
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    torch.manual_seed(16)
    cfg = BertConfig(
        vocab_size=30522, hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=512, max_position_embeddings=512, type_vocab_size=2,
        hidden_act="gelu", layer_norm_eps=1e-12, hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1, initializer_range=0.02, pad_token_id=0,
        num_labels=len(LABELS), id2label=dict(enumerate(LABELS)),
        label2id={l: i for i, l in enumerate(LABELS)},
    )
    cfg._name_or_path = "loraft/hf-tiny-bert"
    model = BertForSequenceClassification(cfg)
    # HF's init (std 0.02, LayerNorm 1/0) makes every logit nearly equal, so
    # a wrong op would hide under the tolerance: draw larger weights, with the
    # scale of gen_torch.py, in a fixed order.
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if "LayerNorm.weight" in name:
                p.copy_(1 + 0.1 * torch.randn_like(p))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn_like(p))
            elif "embeddings" in name:
                p.copy_(0.3 * torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) / p.shape[1] ** 0.5)
    d = os.path.join(out, "tiny-bert")
    os.makedirs(d, exist_ok=True)
    model.save_pretrained(d, safe_serialization=True)
    BertTokenizer(vocab_file=vocab, do_lower_case=True).save_pretrained(d)
    # Reload what was written, as a user would, and take the logits from that.
    try:
        model = BertForSequenceClassification.from_pretrained(d, **load_kwargs())
    except (TypeError, ValueError):
        model = BertForSequenceClassification.from_pretrained(d)
    ids, mask = batch(vocab)
    doc = {"torch": torch.__version__, "transformers": m["transformers"].__version__,
           "texts": BATCH_TEXTS, "ids": ids, "mask": mask, "logits": logits_of(m, model, ids, mask)}
    write_json(os.path.join(d, "logits.json"), doc)
    print(f"hf-golden: tiny-bert/: {sorted(os.listdir(d))}")


def peft_logits(m, vocab, out, adapter):
    torch = m["torch"]
    from peft import PeftModel
    from transformers import BertForSequenceClassification

    d = os.path.join(out, "tiny-bert")
    if not os.path.isfile(os.path.join(d, "config.json")):
        fail(f"{d} has no config.json: run without --skip-base first")
    for f in ["adapter_config.json", "adapter_model.safetensors"]:
        if not os.path.isfile(os.path.join(adapter, f)):
            fail(f"adapter directory {adapter} has no {f}")
    try:
        base = BertForSequenceClassification.from_pretrained(d, **load_kwargs())
    except (TypeError, ValueError):
        base = BertForSequenceClassification.from_pretrained(d)
    model = PeftModel.from_pretrained(base, adapter)
    ids, mask = batch(vocab)
    pd = os.path.join(out, "peft")
    os.makedirs(pd, exist_ok=True)
    with open(os.path.join(adapter, "adapter_config.json"), encoding="utf-8") as f:
        adapter_config = json.load(f)
    doc = {"torch": torch.__version__, "transformers": m["transformers"].__version__,
           "peft": m["peft"].__version__, "adapter_config": adapter_config,
           "adapter_sha256": sha256(os.path.join(adapter, "adapter_model.safetensors")),
           "texts": BATCH_TEXTS, "ids": ids, "mask": mask, "logits": logits_of(m, model, ids, mask)}
    write_json(os.path.join(pd, "logits.json"), doc)
    # The adapter itself travels with its logits, so the Go test can load it.
    shutil.copytree(adapter, os.path.join(pd, "adapter"), dirs_exist_ok=True)
    print(f"hf-golden: peft/logits.json from {adapter}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", help="output directory")
    ap.add_argument("--vocab", default=DEFAULT_VOCAB, help="bert-base-uncased vocab.txt")
    ap.add_argument("--adapter", help="loraft adapter directory exported on OUT/tiny-bert: write peft/logits.json")
    ap.add_argument("--skip-base", action="store_true", help="keep OUT/tokenizer.json and OUT/tiny-bert as they are")
    a = ap.parse_args()
    if not os.path.isfile(a.vocab):
        fail(f"vocabulary {a.vocab} not found (pass --vocab)")
    m = imports(a.adapter is not None)
    m["torch"].set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    m["torch"].use_deterministic_algorithms(True)
    os.makedirs(a.out, exist_ok=True)
    if not a.skip_base:
        tokenizers(m, a.vocab, a.out)
        tiny_base(m, a.vocab, a.out)
    if a.adapter:
        peft_logits(m, a.vocab, a.out, a.adapter)


if __name__ == "__main__":
    main()
