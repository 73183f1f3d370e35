"""Writes the ESCO occupations of ../shared/data/esco_occupations.csv that no reviewer
correction names (none of their labels is a title of corrections.csv) to the file given, so
that titles calibrating the ensemble leave `new_occupations_eval.csv` (held-out titles of the
corrected occupations) a measurement of occupations the model has not seen.

    python3 bench/esco_titles.py OUT.csv
"""
import csv
import re
import sys

DATA = "../shared/data"


def norm(s):
    return " ".join(re.findall(r"\w+", s.lower()))


corrected = {norm(r["job_title"]) for r in csv.DictReader(open(f"{DATA}/corrections.csv"))}
kept = dropped = 0
with open(f"{DATA}/esco_occupations.csv", newline="") as f, open(sys.argv[1], "w", newline="") as o:
    r = csv.DictReader(f)
    w = csv.DictWriter(o, fieldnames=["isco_code", "preferred_label", "alt_labels"])
    w.writeheader()
    for row in r:
        labels = [row["preferred_label"]] + row["alt_labels"].split("|")
        if any(norm(l) in corrected for l in labels if l):
            dropped += 1
            continue
        kept += 1
        w.writerow({k: row[k] for k in ["isco_code", "preferred_label", "alt_labels"]})
print(f"{kept} ESCO occupations kept, {dropped} named by a correction left out", file=sys.stderr)
