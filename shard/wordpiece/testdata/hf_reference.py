#!/usr/bin/env python3
"""A port of the slow HF transformers BertTokenizer(do_lower_case=True) pipeline.

This is NOT transformers itself (it is not installed on the development
machines): it restates, step by step, what
PreTrainedTokenizer.tokenize (tokenization_utils.py: char-by-char lowercasing
of the non-special text, split on special tokens) and BasicTokenizer +
WordpieceTokenizer (models/bert/tokenization_bert.py, v4.3x: clean_text,
CJK spacing, NFC, whitespace split, lower, NFD + strip Mn, punctuation split,
greedy longest-match-first WordPiece) do, using this Python's unicodedata.
It produced testdata/golden.json and the large comparison described in
doc.go; its output depends on the Unicode version of the Python running it
(3.11: Unicode 14.0.0).

Usage: hf_reference.py VOCAB < texts.json > golden.json
texts.json is a JSON list of strings, or of {"text": ...} objects (so
golden.json itself can be fed back in to regenerate it); the output is a JSON
list of {"text": ..., "ids": [...]}, ids with [CLS] and [SEP], no truncation.
"""
import json
import re
import sys
import unicodedata

SPECIALS = ["[UNK]", "[SEP]", "[PAD]", "[CLS]", "[MASK]"]


def load_vocab(path):
    vocab = {}
    with open(path, "r", encoding="utf-8") as f:
        for i, tok in enumerate(f.readlines()):
            vocab[tok.rstrip("\n")] = i
    return vocab


def _is_whitespace(ch):
    if ch in (" ", "\t", "\n", "\r"):
        return True
    return unicodedata.category(ch) == "Zs"


def _is_control(ch):
    if ch in ("\t", "\n", "\r"):
        return False
    return unicodedata.category(ch).startswith("C")


def _is_punctuation(ch):
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_chinese_char(cp):
    return (
        0x4E00 <= cp <= 0x9FFF
        or 0x3400 <= cp <= 0x4DBF
        or 0x20000 <= cp <= 0x2A6DF
        or 0x2A700 <= cp <= 0x2B73F
        or 0x2B740 <= cp <= 0x2B81F
        or 0x2B820 <= cp <= 0x2CEAF
        or 0xF900 <= cp <= 0xFAFF
        or 0x2F800 <= cp <= 0x2FA1F
    )


def whitespace_tokenize(text):
    text = text.strip()
    if not text:
        return []
    return text.split()


def basic_tokenize(text):
    out = []
    for ch in text:
        cp = ord(ch)
        if cp == 0 or cp == 0xFFFD or _is_control(ch):
            continue
        out.append(" " if _is_whitespace(ch) else ch)
    text = "".join(out)
    out = []
    for ch in text:
        if _is_chinese_char(ord(ch)):
            out += [" ", ch, " "]
        else:
            out.append(ch)
    text = unicodedata.normalize("NFC", "".join(out))
    split_tokens = []
    for token in whitespace_tokenize(text):
        if token not in SPECIALS:  # never_split
            token = token.lower()
            token = "".join(c for c in unicodedata.normalize("NFD", token) if unicodedata.category(c) != "Mn")
        else:
            split_tokens.append(token)
            continue
        words, new = [], True
        for c in token:
            if _is_punctuation(c):
                words.append([c])
                new = True
            else:
                if new:
                    words.append([])
                new = False
                words[-1].append(c)
        split_tokens += ["".join(w) for w in words]
    return whitespace_tokenize(" ".join(split_tokens))


def wordpiece(vocab, text):
    out = []
    for token in whitespace_tokenize(text):
        chars = list(token)
        if len(chars) > 100:
            out.append("[UNK]")
            continue
        bad, start, subs = False, 0, []
        while start < len(chars):
            end, cur = len(chars), None
            while start < end:
                s = "".join(chars[start:end])
                if start > 0:
                    s = "##" + s
                if s in vocab:
                    cur = s
                    break
                end -= 1
            if cur is None:
                bad = True
                break
            subs.append(cur)
            start = end
        out += ["[UNK]"] if bad else subs
    return out


_SPECIAL_RE = "(" + "|".join(re.escape(s) for s in SPECIALS) + ")"


def tokenize(vocab, text):
    # PreTrainedTokenizer.tokenize: lowercase everything but the special
    # tokens, one character at a time (so no final-sigma context).
    text = re.sub(_SPECIAL_RE + r"|(.+?)", lambda m: m.groups()[0] or m.groups()[1].lower(), text)
    toks = []
    for part in re.split(_SPECIAL_RE, text):
        if not part:
            continue
        if part in SPECIALS:
            toks.append(part)
            continue
        for t in basic_tokenize(part):
            toks += [t] if t in SPECIALS else wordpiece(vocab, t)
    return toks


def main():
    vocab = load_vocab(sys.argv[1])
    texts = json.load(sys.stdin)
    unk = vocab["[UNK]"]
    res = []
    for t in texts:
        if isinstance(t, dict):
            t = t["text"]
        ids = [vocab["[CLS]"]] + [vocab.get(x, unk) for x in tokenize(vocab, t)] + [vocab["[SEP]"]]
        res.append({"text": t, "ids": ids})
    sys.stdout.write("[\n" + ",\n".join(json.dumps(r, ensure_ascii=True) for r in res) + "\n]\n")


if __name__ == "__main__":
    main()
