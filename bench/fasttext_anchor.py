"""fastText anchor for BENCHMARKS.md, run beside the ngram model on the same machine.

Python `fasttext` (pip package `fasttext-wheel`) with the issue's settings: wordNgrams=2,
minn=3, maxn=5, dim=100, epoch=15, 2 threads, trained on a random 85 % of records_150k
(seed 42), scored on the other 15 % and on new_occupations_eval.csv. Text is normalised like
isco-dag's (lower case, punctuation to spaces, `title | duties`).

Usage: python3 bench/fasttext_anchor.py ../shared/data [lr]   (lr defaults to fastText's 0.1)
"""
import csv
import os
import random
import re
import sys
import tempfile
import time

import fasttext

data = sys.argv[1] if len(sys.argv) > 1 else "../shared/data"
lr = float(sys.argv[2]) if len(sys.argv) > 2 else 0.1  # fastText default


def norm(s):
    s = s.replace("'", "").lower()
    s = re.sub(r"[^\w|]+", " ", s)
    return " ".join(s.split())


def text(title, duties):
    t, d = norm(title), norm(duties)
    return t if not d else (f"{t} | {d}" if t else f"| {d}")


def load(path):
    with open(path, newline="", encoding="utf-8") as f:
        r = csv.DictReader(f)
        return [(text(x["job_title"], x["duties_description"]), x["isco_code"]) for x in r]


rows = load(os.path.join(data, "records_150k.csv"))
rng = random.Random(42)
idx = list(range(len(rows)))
rng.shuffle(idx)
cut = int(len(idx) * 0.85)
train, test = [rows[i] for i in idx[:cut]], [rows[i] for i in idx[cut:]]
unseen = load(os.path.join(data, "new_occupations_eval.csv"))

with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
    for t, c in train:
        f.write(f"__label__{c} {t}\n")
    train_path = f.name

t0 = time.time()
model = fasttext.train_supervised(
    input=train_path, wordNgrams=2, minn=3, maxn=5, dim=100, epoch=15, thread=2, lr=lr, verbose=0
)
train_s = time.time() - t0


def score(items):
    texts = [t for t, _ in items]
    t0 = time.time()
    labels, probs = model.predict(texts, k=3)
    rate = len(texts) / (time.time() - t0)
    top1 = [l[0].replace("__label__", "") for l in labels]
    acc = sum(p == c for p, (_, c) in zip(top1, items)) / len(items)
    top3 = sum(c in [x.replace("__label__", "") for x in l] for l, (_, c) in zip(labels, items)) / len(items)
    classes = sorted({c for _, c in items})
    f1s = []
    for k in classes:
        tp = sum(p == k and c == k for p, (_, c) in zip(top1, items))
        fp = sum(p == k and c != k for p, (_, c) in zip(top1, items))
        fn = sum(p != k and c == k for p, (_, c) in zip(top1, items))
        f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    conf = [p[0] for p in probs]
    order = sorted(range(len(items)), key=lambda i: -conf[i])
    ok, best95 = 0, 0
    for n, i in enumerate(order, 1):
        ok += top1[i] == items[i][1]
        if ok / n >= 0.95:
            best95 = n
    return acc, top3, sum(f1s) / len(f1s), best95 / len(items), rate


for name, items in [("in-distribution 15 %", test), ("new_occupations_eval", unseen)]:
    acc, top3, mf1, prod, rate = score(items)
    print(f"fastText {name}: accuracy {acc:.4f}, top-3 {top3:.4f}, macro-F1 {mf1:.4f}, "
          f"production rate at 95 % {prod:.3f}, predict {rate:,.0f} rows/s")
print(f"fastText training: {train_s:.1f} s (2 threads, lr {lr})")
os.unlink(train_path)
