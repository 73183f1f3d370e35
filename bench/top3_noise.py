"""How far label noise caps top-3 accuracy against the given labels.

Joins `isco-dag predict` output for the test split with records_150k.csv and its truth file
(../shared/data, not part of the project) on the exact text, keeping test rows whose text
occurs once in the records (so the given and true codes are unambiguous), and reports top-3
hit rates on correctly and wrongly labelled rows and the hit rate the wrong labels would
need for a given overall top-3.

    isco-dag predict --model MODEL_DIR --input bench/out/<out_dir>/split/test.parquet --output /tmp/test_pred.csv
    python3 bench/top3_noise.py /tmp/test_pred.csv [goal]
    python3 bench/top3_noise.py --ceiling

`--ceiling` needs no model: it reports the best top-3 any model can reach against the given
labels, that of one that knows every record's true code and the noise channel P(given code |
true code) itself, whose best top 3 for a record are the three likeliest given codes of its true
code. The channel is counted on a random half of records_150k and scored on the other half
(in-sample, the channel's sampling noise flatters it: also shown, as an upper bound).
"""
import collections
import csv
import sys

DATA = "../shared/data"


def ceiling():
    import random

    records = csv.DictReader(open(f"{DATA}/records_150k.csv"))
    truth = csv.DictReader(open(f"{DATA}/records_150k_truth.csv"))
    pairs = [(r["isco_code"], t["true_isco_code"]) for r, t in zip(records, truth)]
    noisy = sum(g != t for g, t in pairs) / len(pairs)
    siblings = sum(g != t and g[:3] == t[:3] for g, t in pairs) / max(1, sum(g != t for g, t in pairs))

    def top3(rows):
        channel = collections.defaultdict(collections.Counter)
        for g, t in rows:
            channel[t][g] += 1
        return {t: {c for c, _ in n.most_common(3)} for t, n in channel.items()}

    idx = list(range(len(pairs)))
    random.Random(0).shuffle(idx)
    half = len(idx) // 2
    fit = top3(pairs[i] for i in idx[:half])
    held = [pairs[i] for i in idx[half:]]
    held_hit = sum(g in fit.get(t, ()) for g, t in held) / len(held)
    inside = top3(pairs)
    in_hit = sum(g in inside[t] for g, t in pairs) / len(pairs)
    print(f"records: {len(pairs)}, wrong labels {noisy:.4f}, of them in the true code's 3-digit group {siblings:.3f}")
    print(f"best top-3 against the given labels, true codes and noise channel known: {held_hit:.4f} "
          f"(channel counted on the other half; in-sample upper bound {in_hit:.4f})")


if sys.argv[1:] == ["--ceiling"]:
    ceiling()
    sys.exit(0)
pred_file = sys.argv[1]
goal = float(sys.argv[2]) if len(sys.argv) > 2 else 0.975
records = csv.DictReader(open(f"{DATA}/records_150k.csv"))
truth = csv.DictReader(open(f"{DATA}/records_150k_truth.csv"))
by_text = collections.defaultdict(list)
for r, t in zip(records, truth):
    key = (r["job_title"], r["duties_description"])
    by_text[key].append((r["isco_code"], t["true_isco_code"], t["label_is_noise"] == "1"))

rows = clean_hits = noisy = noisy_hits = siblings = sibling_hits = 0
for p in csv.DictReader(open(pred_file)):
    found = by_text.get((p["job_title"], p["duties_description"]))
    if not found or len(found) != 1:
        continue
    given, true, is_noise = found[0]
    top3 = [p[f"alt_{i}_code"] for i in (1, 2, 3)]
    hit = given in top3
    rows += 1
    if not is_noise:
        clean_hits += hit
        continue
    noisy += 1
    noisy_hits += hit
    if given[:3] == true[:3]:
        siblings += 1
        sibling_hits += hit

clean = rows - noisy
print(f"test rows with an unambiguous text: {rows}, wrongly labelled: {noisy} ({noisy / rows:.3f})")
print(f"top-3 on correctly labelled rows: {clean_hits / clean:.4f}")
print(f"top-3 on wrongly labelled rows (the wrong label in the top 3): {noisy_hits / noisy:.4f}")
print(f"  wrong labels in the true code's 3-digit group: {siblings / noisy:.3f} of them, hit {sibling_hits / max(siblings, 1):.4f}")
print(f"overall top-3 against the given labels: {(clean_hits + noisy_hits) / rows:.4f}")
need = (goal * rows - clean_hits) / noisy
print(f"hit rate on wrong labels needed for {goal}: {need:.3f} at this clean top-3, "
      f"{(goal * rows - clean) / noisy:.3f} even with a perfect clean top-3; "
      f"ceiling with perfect clean top-3 and every same-group wrong label hit: {(clean + siblings) / rows:.4f}")
