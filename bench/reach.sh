#!/usr/bin/env bash
# What the records allow: three measurements behind the numbers the ensemble has not reached,
# on the 150k records (../shared/data, not part of the project). ilo_titles_dev.csv is only
# scored, never fitted on.
#   1. Several n-gram networks averaged: bench/full-150k.toml's `train` with training seeds
#      42, 43, 44 in its own store (bench/out/store-reach), each model's `isco-dag predict` of
#      the test split (top_k = 10), the test accuracy of the summed confidences.
#   2. ESCO's occupation labels (preferred and alternative, 32,878) as title-only training
#      records: the same pipeline on records_150k.csv followed by them. Its test split is not
#      the others' (the labels are split with the records); new_occupations_eval's titles are
#      mostly ESCO labels, so only its ilo_titles_dev cell says something.
#   3. ilo_titles_dev titles whose nearest training title is nearly the same words: how often
#      that title's records carry the ILO index's code (sentence-transformers from PY=,
#      default /tmp/pyref/bin/python; see bench/encoder_parity.py).
#   4. The ensemble's confidences divided by each code's prior (its share of the training
#      split) to a power tau before the argmax, the usual correction for a classifier drawn
#      to frequent classes: `isco-dag predict` (top_k = 15) of the validation and test splits
#      with the ensemble model ENSEMBLE (default: the one bench/finetune-ensemble.sh trains);
#      then where its errors on the test records the truth file marks correctly labelled are,
#      and the accuracy and macro-F1 a coder of every record's true code scores against the
#      given labels.
#   5. ESCO's labels in the ensemble (`esco-ensemble`, not part of "all"): the labels of the
#      ESCO occupations no reviewer correction names (bench/esco_titles.py) as title-only
#      records after records_150k.csv in bench/ensemble-150k.toml (store bench/out/store-cold),
#      so they are indexed by the retrieval and trained on by the n-gram network; only the
#      ilo_titles_dev cell says something (the test split holds labels too).
#   6. The title's last word as a second query (`head-word`, not part of "all"): English
#      occupational titles mostly end in the word that names the occupation ("thoracic
#      surgeon"). `isco-dag predict` (top_k = 10) with ENSEMBLE's model of each title and of
#      its last word alone; each code scored log p(title) + w log p(last word), w chosen on
#      the validation split's titles the training split lacks, reduced to their titles; the
#      ilo_titles_dev row at every w is for the record, never for the choice.
#
#   bash bench/reach.sh                 # the first four
#   bash bench/reach.sh prior           # the fourth alone
#   bash bench/reach.sh esco-ensemble   # the fifth
#   bash bench/reach.sh head-word       # the sixth
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
cargo build --release -q
BIN=target/release/isco-dag
PY=${PY:-/tmp/pyref/bin/python}
OUT=bench/out/reach
mkdir -p $OUT

# esco_records_pipeline FILE RECORDS: bench/out/FILE, its [pipeline] table read from standard
# input, then `clean` reading RECORDS, `cluster-outliers` and `evaluate` without the truth
# file (it knows the 150,000 records only).
esco_records_pipeline() {
  { cat; cat <<TOML
[[stage]]
id = "clean"
kind = "clean"
replace = true
inputs = { records = "$2", reference = "../shared/data/isco08_groups.csv" }
params_from = ["data"]

[[stage]]
id = "cluster-outliers"
kind = "cluster-outliers"
replace = true
inputs = { records = "corrections.records" }
params_from = ["outliers"]

[[stage]]
id = "evaluate"
kind = "evaluate"
replace = true
inputs = { model = "train.model", test = "split.test", extra = ["../shared/data/new_occupations_eval.csv", "../shared/data/ilo_titles_dev.csv"] }
params_from = ["inference"]
TOML
  } > "bench/out/$1"
}

prior_shift() {
  echo "== 4. the ensemble's confidences corrected for the class prior"
  local ens=${ENSEMBLE:-bench/out/finetune-ensemble}
  sed -e 's/^top_k = 3/top_k = 15/' -e 's/^similar = 3 /similar = 0 /' config/default.toml > $OUT/top15.toml
  for s in validation test; do
    $BIN predict --model $ens/train/model --config $OUT/top15.toml \
      --input $ens/split/$s.parquet --output $OUT/prior-$s.parquet > /dev/null
  done
  "$PY" bench/reach.py prior-shift $ens/split/train.parquet \
    $ens/split/validation.parquet $OUT/prior-validation.parquet \
    $ens/split/test.parquet $OUT/prior-test.parquet
  echo "== where the ensemble's errors on correctly labelled test records are"
  "$PY" bench/reach.py clean-errors $ens/split/train.parquet $ens/split/test.parquet \
    $OUT/prior-test.parquet
}
esco_ensemble() {
  echo "== 5. ESCO labels as title-only records of the ensemble"
  $BIN models fetch minilm > /dev/null
  cold_pipeline
  python3 bench/esco_titles.py $OUT/esco_titles.csv
  python3 - $OUT/esco_titles.csv $OUT/records_esco_ensemble.csv <<'PY'
import csv, shutil, sys
shutil.copy("../shared/data/records_150k.csv", sys.argv[2])
with open(sys.argv[1], newline="") as f, open(sys.argv[2], "a", newline="") as o:
    w = csv.writer(o)
    for r in csv.DictReader(f):
        for label in [r["preferred_label"]] + r["alt_labels"].split("|"):
            if label:
                w.writerow([label, "", r["isco_code"]])
PY
  esco_records_pipeline reach-esco-ensemble.toml "$OUT/records_esco_ensemble.csv" <<TOML
[pipeline]
name = "ensemble-150k-esco-records"
extends = "cold.toml"
out_dir = "bench/out/reach-esco-ensemble"
TOML
  $BIN run bench/out/cold.toml > /dev/null
  eval_row bench/out/store-cold "the records"
  $BIN run bench/out/reach-esco-ensemble.toml --until evaluate > /dev/null
  eval_row bench/out/store-cold "the records and ESCO's labels"
}
head_word() {
  echo "== 6. the title's last word as a second query"
  local ens=${ENSEMBLE:-bench/out/finetune-ensemble}
  sed -e 's/^top_k = 3/top_k = 10/' -e 's/^similar = 3 /similar = 0 /' config/default.toml > $OUT/top10.toml
  "$PY" bench/reach.py head-word-inputs $ens/split/train.parquet $ens/split/validation.parquet $OUT
  for f in val-title val-last ilo-title ilo-last; do
    $BIN predict --model $ens/train/model --config $OUT/top10.toml \
      --input $OUT/head-$f.csv --output $OUT/head-$f.parquet > /dev/null
  done
  "$PY" bench/reach.py head-word $OUT
}
if [ "${1:-all}" = head-word ]; then
  head_word
  exit 0
fi
if [ "${1:-all}" = prior ]; then
  prior_shift
  exit 0
fi
if [ "${1:-all}" = esco-ensemble ]; then
  esco_ensemble
  exit 0
fi
$BIN models fetch minilm > /dev/null
store_pipeline reach.toml full-150k-reach full-150k.toml store-reach
sed 's/^top_k = 3/top_k = 10/' config/default.toml > $OUT/top10.toml

echo "== 1. n-gram networks of three training seeds, averaged"
for seed in 42 43 44; do
  $BIN run bench/out/reach.toml --until train -S training.seed=$seed > /dev/null
  $BIN predict --model $OUT/train/model --config $OUT/top10.toml \
    --input $OUT/split/test.parquet --output $OUT/seed$seed.parquet > /dev/null
done
"$PY" bench/reach.py seed-average $OUT/split/test.parquet $OUT/seed{42,43,44}.parquet

echo "== 2. ESCO labels as title-only training records"
"$PY" bench/reach.py esco-records $OUT/records_esco.csv
esco_records_pipeline reach-esco.toml "$OUT/records_esco.csv" <<TOML
[pipeline]
name = "full-150k-reach-esco"
extends = "../full-150k.toml"
root = "../.."
store = "bench/out/store-reach"
out_dir = "bench/out/reach-esco"
TOML
$BIN run bench/out/reach.toml -S training.seed=42 | grep -E "test:|new_occupations_eval:|ilo_titles_dev:" || true
$BIN run bench/out/reach-esco.toml --until evaluate | grep -E "test:|new_occupations_eval:|ilo_titles_dev:"

echo "== 3. ILO titles next to a training title"
"$PY" bench/reach.py near-titles $OUT/split/train.parquet

prior_shift
