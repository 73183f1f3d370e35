"""One row per evaluated model for BENCHMARKS.md: test accuracy, macro-F1, top-3, accuracy
against the true labels, new_occupations_eval, ilo_titles_dev (top-3), and on ilo_titles_dev
the share of titles coded at confidence >= 0.9 and how many of them are right.

    python3 bench/metrics_table.py NAME=bench/out/X/evaluate/metrics.json ...
"""
import csv
import json
import os
import sys


def high_confidence(report_dir, part, threshold=0.9):
    """Share of rows at >= threshold confidence and their accuracy, from the reliability
    report's 0.05-wide bins (the bins whose mean confidence is at least `threshold`)."""
    path = os.path.join(report_dir, f"{part}_reliability.csv")
    if not os.path.exists(path):
        return None
    rows = list(csv.DictReader(open(path)))
    n_all = sum(int(r["count"]) for r in rows)
    hi = [r for r in rows if float(r["confidence"]) >= threshold]
    n = sum(int(r["count"]) for r in hi)
    right = sum(float(r["accuracy"]) * int(r["count"]) for r in hi)
    return n / max(n_all, 1), right / max(n, 1)


for arg in sys.argv[1:]:
    name, path = arg.split("=", 1)
    m = json.load(open(path))
    report = os.path.join(os.path.dirname(path), "report")
    t, truth = m["test"], m.get("test_true_labels", {})
    new, ilo = m.get("new_occupations_eval", {}), m.get("ilo_titles_dev", {})
    hc = (
        (ilo["share_conf_90"], ilo["accuracy_conf_90"])
        if ilo.get("accuracy_conf_90") is not None
        else high_confidence(report, "ilo_titles_dev")
    )
    hc_text = f"{hc[0]:.1%} of titles, {hc[1]:.1%} right" if hc else "–"
    print(
        f"| {name} | {t['accuracy']:.4f} | {t['macro_f1']:.4f} | {t.get('top3_accuracy', float('nan')):.4f} "
        f"| {truth.get('accuracy', float('nan')):.4f} | {new.get('accuracy', float('nan')):.4f} "
        f"| {ilo.get('accuracy', float('nan')):.4f} ({ilo.get('top3_accuracy', float('nan')):.4f}) | {hc_text} |"
    )
