#!/usr/bin/env python3
"""Classical baseline: TF-IDF + logistic regression on the 7 mental-health classes.

What it mirrors in loraft
-------------------------
The floor that loraft's fine-tuned BERT + LoRA classifier is compared against.
It reads the same input loraft reads (Kaggle's "Combined Data.csv" layout:
header ``,statement,status``, RFC 4180 quoting with multi-line statements,
UTF-8 with or without a BOM; see ``shard/reader.go``) with the same row
policy where it matters for scores: empty or whitespace-only statements are
dropped, invalid UTF-8 is replaced with U+FFFD, exact duplicate statements
(after trimming) are dropped after their first occurrence within a file, and
labels are matched case-insensitively with '-', '_' and whitespace runs
alike (plus loraft's few aliases); an unknown label is an error naming the
line. It reports the metrics loraft's ``trainer/metrics`` reports, in the
canonical class order (Normal, Depression, Suicidal, Anxiety, Bipolar,
Stress, Personality disorder): accuracy, macro-F1 over all 7 classes
(scikit-learn ``f1_score(average="macro", labels=range(7),
zero_division=0)``), weighted-F1, per-class precision/recall/F1/support, the
confusion matrix (rows true, columns predicted), and, from the predicted
probabilities, ECE (15 bins), NLL and mean confidence at temperature 1.

Model: ``TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=2,
max_features=50000, lowercase=True)`` + ``LogisticRegression(max_iter=2000,
C=4.0, class_weight=None, random_state=0)`` (lbfgs; multinomial for more than
two classes).

How to run
----------
With Debian's system python and apt packages only (no pip)::

    sudo apt-get install -y --no-install-recommends python3-sklearn python3-numpy
    /usr/bin/python3 bench/reference/tfidf_baseline.py --train train.csv --test test.csv
    /usr/bin/python3 bench/reference/tfidf_baseline.py --train train.csv --test test.csv --json

The train and test files must be disjoint splits made beforehand (for
instance a stratified split of ../shared/data/combined-val.csv); the script
warns when test statements also occur in the train file.
"""

import argparse
import csv
import json
import math
import os
import sys
import time
import unicodedata
import warnings

try:
    import numpy as np
    import sklearn
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support
except ImportError as e:  # pragma: no cover - depends on the machine
    sys.exit("tfidf_baseline.py: cannot import numpy/scikit-learn (%s); install Debian's python3-sklearn "
             "and python3-numpy (apt-get install -y --no-install-recommends python3-sklearn python3-numpy) "
             "and run with /usr/bin/python3" % e)

CLASSES = ["Normal", "Depression", "Suicidal", "Anxiety", "Bipolar", "Stress", "Personality disorder"]
# shard/labels.go labelAliases (folded spelling -> class index).
ALIASES = {
    "personality disorders": 6,
    "depressed": 1,
    "suicide": 2,
    "anxious": 3,
    "bipolar disorder": 4,
    "stressed": 5,
}
ECE_BINS = 15
PROB_EPS = 1e-12


class InputError(Exception):
    pass


def fold_label(s):
    out, space = [], False
    for ch in s.strip():
        if ch in "-_" or ch.isspace():
            space = True
            continue
        if space and out:
            out.append(" ")
        space = False
        out.append(ch.lower())
    return "".join(out)


LABEL_BY_FOLDED = {fold_label(n): i for i, n in enumerate(CLASSES)}
LABEL_BY_FOLDED.update(ALIASES)


def read_dataset(path):
    """Read a Kaggle-layout CSV; return (texts, labels, report dict)."""
    if not os.path.exists(path):
        raise InputError("%s: no such file" % path)
    if not os.path.isfile(path):
        raise InputError("%s: not a regular file" % path)
    csv.field_size_limit(1 << 30)
    texts, labels = [], []
    dropped = {"empty_statement": 0, "duplicate_statement": 0}
    seen = set()
    records = 0
    # utf-8-sig strips a BOM when there is one; errors="replace" turns invalid
    # UTF-8 into U+FFFD as loraft's reader does.
    with open(path, "r", encoding="utf-8-sig", errors="replace", newline="") as f:
        reader = csv.reader(f)
        try:
            header = next(reader)
        except StopIteration:
            raise InputError("%s: empty file (no header line)" % path)
        except csv.Error as e:
            raise InputError("%s: line 1: malformed CSV: %s" % (path, e))
        cols = {c.strip().lower(): i for i, c in enumerate(header)}
        for want in ("statement", "status"):
            if want not in cols:
                raise InputError('%s: header is %r, want a "%s" column (Kaggle layout: ,statement,status)'
                                 % (path, ",".join(header), want))
        si, li = cols["statement"], cols["status"]
        need = max(si, li) + 1
        while True:
            line = reader.line_num + 1
            try:
                rec = next(reader)
            except StopIteration:
                break
            except csv.Error as e:
                raise InputError("%s: line %d: malformed CSV: %s" % (path, line, e))
            if not rec:  # a blank line between records
                continue
            records += 1
            if len(rec) < need:
                raise InputError("%s: line %d: %d fields, want at least %d" % (path, line, len(rec), need))
            text, status = rec[si], rec[li]
            if not text.strip():
                dropped["empty_statement"] += 1
                continue
            lab = LABEL_BY_FOLDED.get(fold_label(status))
            if lab is None:
                raise InputError("%s: line %d: unknown label %r (want one of %s)" % (path, line, status, ", ".join(CLASSES)))
            key = text.strip()
            if key in seen:
                dropped["duplicate_statement"] += 1
                continue
            seen.add(key)
            texts.append(text)
            labels.append(lab)
    if not texts:
        raise InputError("%s: no usable rows (%d records read)" % (path, records))
    return texts, np.asarray(labels, dtype=np.int64), {"records": records, "kept": len(texts), "dropped": dropped}


def expected_calibration_error(conf, correct, bins=ECE_BINS):
    idx = np.minimum((conf * bins).astype(np.int64), bins - 1)  # conf == 1 goes to the last bin
    ece = 0.0
    n = len(conf)
    for b in range(bins):
        m = idx == b
        if m.any():
            ece += m.sum() / n * abs(correct[m].mean() - conf[m].mean())
    return float(ece)


def evaluate(y, probs):
    k = len(CLASSES)
    pred = probs.argmax(axis=1)  # ties to the lowest index, as loraft
    labels = list(range(k))
    p, r, f1, sup = precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    conf = probs.max(axis=1)
    p_true = probs[np.arange(len(y)), y]
    total = int(sup.sum())
    return {
        "n": int(len(y)),
        "accuracy": float((pred == y).mean()),
        "macro_f1": float(f1.mean()),
        "weighted_f1": float((f1 * sup).sum() / total) if total else 0.0,
        "per_class": [{"name": CLASSES[i], "precision": float(p[i]), "recall": float(r[i]),
                       "f1": float(f1[i]), "support": int(sup[i])} for i in range(k)],
        "confusion": confusion_matrix(y, pred, labels=labels).tolist(),
        "ece": expected_calibration_error(conf, (pred == y).astype(np.float64)),
        "ece_bins": ECE_BINS,
        "nll": float(-np.log(np.maximum(p_true, PROB_EPS)).mean()),
        "mean_confidence": float(conf.mean()),
        "temperature": 1.0,
    }


def abbreviate(name):
    if len(name) <= 10:
        return name
    words = name.split()
    return "".join(w[0].upper() for w in words) if len(words) > 1 else name[:9] + "."


def format_report(res):
    r = res["test"]
    lines = []
    lines.append("TF-IDF + logistic regression  (scikit-learn %s)" % res["sklearn_version"])
    lines.append("train %s: %d rows kept of %d   test %s: %d rows kept of %d" % (
        res["train_file"], res["train_rows"]["kept"], res["train_rows"]["records"],
        res["test_file"], res["test_rows"]["kept"], res["test_rows"]["records"]))
    lines.append("features %d   converged %s (%d iterations)" % (res["features"], res["converged"], res["n_iter"]))
    lines.append("")
    w = max(len(c) for c in CLASSES + ["weighted avg"])
    lines.append("%*s  %9s  %9s  %9s  %7s" % (w, "class", "precision", "recall", "f1", "support"))
    for m in r["per_class"]:
        lines.append("%*s  %9.4f  %9.4f  %9.4f  %7d" % (w, m["name"], m["precision"], m["recall"], m["f1"], m["support"]))
    pc = r["per_class"]
    total = sum(m["support"] for m in pc)
    mp = sum(m["precision"] for m in pc) / len(pc)
    mr = sum(m["recall"] for m in pc) / len(pc)
    wp = sum(m["precision"] * m["support"] for m in pc) / total
    wr = sum(m["recall"] * m["support"] for m in pc) / total
    lines.append("")
    lines.append("%*s  %9.4f  %9.4f  %9.4f  %7d" % (w, "macro avg", mp, mr, r["macro_f1"], total))
    lines.append("%*s  %9.4f  %9.4f  %9.4f  %7d" % (w, "weighted avg", wp, wr, r["weighted_f1"], total))
    lines.append("")
    lines.append("accuracy         %.4f  (n=%d)" % (r["accuracy"], r["n"]))
    lines.append("macro F1         %.4f" % r["macro_f1"])
    lines.append("weighted F1      %.4f" % r["weighted_f1"])
    lines.append("ECE (%d bins)    %.4f" % (r["ece_bins"], r["ece"]))
    lines.append("NLL              %.4f" % r["nll"])
    lines.append("mean confidence  %.4f" % r["mean_confidence"])
    lines.append("")
    heads = [abbreviate(c) for c in CLASSES]
    cw = max(7, max(len(h) for h in heads))
    lines.append("confusion (rows: true, columns: predicted)")
    lines.append("%*s  %7s  " % (w, "true \\ pred", "support") + "  ".join("%*s" % (cw, h) for h in heads))
    for i, row in enumerate(r["confusion"]):
        lines.append("%*s  %7d  " % (w, CLASSES[i], sum(row)) + "  ".join("%*d" % (cw, v) for v in row))
    legend = ["%s = %s" % (h, c) for h, c in zip(heads, CLASSES) if h != c]
    if legend:
        lines.append("(" + "; ".join(legend) + ")")
    if res.get("test_in_train"):
        lines.append("")
        lines.append("WARNING: %d test statements also occur in the train file" % res["test_in_train"])
    lines.append("")
    lines.append("wall time %.2f s  (read %.2f, vectorize+fit %.2f, predict %.2f)" % (
        res["wall_s"], res["read_s"], res["fit_s"], res["predict_s"]))
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(
        description="TF-IDF + logistic-regression baseline for loraft's 7-class mental-health classifier.",
        epilog="Run with Debian's /usr/bin/python3 and python3-sklearn.")
    ap.add_argument("--train", required=True, metavar="FILE", help="training CSV (Kaggle 'Combined Data.csv' layout)")
    ap.add_argument("--test", required=True, metavar="FILE", help="test CSV (same layout)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    try:
        xtr, ytr, rtr = read_dataset(args.train)
        xte, yte, rte = read_dataset(args.test)
    except InputError as e:
        sys.exit("tfidf_baseline.py: %s" % e)
    except OSError as e:
        sys.exit("tfidf_baseline.py: %s" % e)
    if len(np.unique(ytr)) < 2:
        sys.exit("tfidf_baseline.py: %s: the train file holds only one class (%s)" % (args.train, CLASSES[int(ytr[0])]))
    train_set = {t.strip() for t in xtr}
    overlap = sum(1 for t in xte if t.strip() in train_set)
    t1 = time.perf_counter()

    vec = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=2, max_features=50000, lowercase=True)
    clf = LogisticRegression(max_iter=2000, C=4.0, class_weight=None, random_state=0, solver="lbfgs")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        try:
            Xtr = vec.fit_transform(xtr)
        except ValueError as e:  # e.g. no term occurs in two documents
            sys.exit("tfidf_baseline.py: %s: cannot build a vocabulary: %s" % (args.train, e))
        clf.fit(Xtr, ytr)
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    t2 = time.perf_counter()

    # predict_proba columns follow clf.classes_ (the classes seen in training);
    # widen to all 7 so classes absent from train get probability 0.
    part = clf.predict_proba(vec.transform(xte))
    probs = np.zeros((len(xte), len(CLASSES)))
    probs[:, clf.classes_] = part
    t3 = time.perf_counter()

    res = {
        "impl": "sklearn-tfidf-logreg",
        "sklearn_version": sklearn.__version__,
        "train_file": args.train,
        "test_file": args.test,
        "train_rows": rtr,
        "test_rows": rte,
        "test_in_train": overlap,
        "classes": CLASSES,
        "vectorizer": {"sublinear_tf": True, "ngram_range": [1, 2], "min_df": 2, "max_features": 50000,
                       "lowercase": True},
        "model": {"type": "LogisticRegression", "solver": "lbfgs", "multinomial": True, "C": 4.0,
                  "max_iter": 2000, "class_weight": None, "random_state": 0},
        "features": int(len(vec.vocabulary_)),
        "converged": converged,
        "n_iter": int(np.max(clf.n_iter_)),
        "test": evaluate(yte, probs),
        "read_s": t1 - t0,
        "fit_s": t2 - t1,
        "predict_s": t3 - t2,
        "wall_s": t3 - t0,
    }
    if args.json:
        print(json.dumps(res))
    else:
        print(format_report(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
