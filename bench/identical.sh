#!/usr/bin/env bash
# Predictions byte for byte against another build: the demo (full.toml and ensemble.toml) and
# the 150k records (../shared/data, not part of the project; bench/full-150k.toml and
# bench/ensemble-150k.toml), each trained cold by both builds in stores of their own, then the
# pipelines' prediction tables and `isco-dag predict` on the records compared with `cmp`.
#
#   bash bench/identical.sh [BASE_COMMIT]        # default: HEAD~1
#
# The other build is compiled from BASE_COMMIT in a worktree under bench/out/ (or set BASE_BIN
# to a binary). Needs all-MiniLM-L6-v2 (`isco-dag models fetch minilm`). Exit 1 on a
# difference.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
DATA=../shared/data
BASE_COMMIT=${1:-HEAD~1}
cargo build --release -q
NEW=$PWD/target/release/isco-dag
if [ -z "${BASE_BIN:-}" ]; then
  rm -rf bench/out/base-src
  git worktree add -f --detach bench/out/base-src "$BASE_COMMIT" > /dev/null
  (cd bench/out/base-src && CARGO_TARGET_DIR=$PWD/../base-target cargo build --release -q)
  BASE_BIN=$PWD/bench/out/base-target/release/isco-dag
  git worktree remove --force bench/out/base-src
fi
$NEW models fetch minilm > /dev/null
differ=0
same() { # same LABEL FILE_A FILE_B
  if cmp -s "$2" "$3"; then echo "identical  $1 ($(wc -l < "$2") lines)"; else echo "DIFFERENT  $1: $2 vs $3"; differ=1; fi
}

# The demo, in a copy of the project per build.
for who in base new; do
  bin=$BASE_BIN; [ $who = new ] && bin=$NEW
  d=bench/out/identical-demo-$who
  rm -rf "$d"; mkdir -p "$d"
  cp -r config pipelines data "$d/"
  mkdir -p "$d/models" && cp -r models/pretrained "$d/models/"
  rm -rf "$d/data/processed" "$d/data/review" "$d/data/corrections"
  (cd "$d" && "$bin" run pipelines/full.toml > /dev/null && cp data/processed/predictions.csv ngram_predictions.csv \
     && "$bin" predict --model models/latest --input data/demo/new_jobs.csv --output ngram_new_jobs.csv > /dev/null \
     && "$bin" run pipelines/ensemble.toml > /dev/null && cp data/processed/predictions.csv ensemble_predictions.csv \
     && "$bin" predict --model models/latest --input data/demo/new_jobs.csv --output ensemble_new_jobs.csv > /dev/null)
done
for f in ngram_predictions ngram_new_jobs ensemble_predictions ensemble_new_jobs; do
  same "demo $f" bench/out/identical-demo-base/$f.csv bench/out/identical-demo-new/$f.csv
done

# The 150k records: cold stores per build; every record coded by the ngram model, the first
# 20,000 by the ensemble.
python3 - <<PY
import csv
r = csv.reader(open('$DATA/records_150k.csv')); next(r)
w = csv.writer(open('bench/out/identical_150k.csv', 'w')); w.writerow(['job_title', 'duties_description'])
rows = [row[:2] for row in r]
[w.writerow(x) for x in rows]
w = csv.writer(open('bench/out/identical_20k.csv', 'w')); w.writerow(['job_title', 'duties_description'])
[w.writerow(x) for x in rows[:20000]]
PY
for who in base new; do
  bin=$BASE_BIN; [ $who = new ] && bin=$NEW
  store_pipeline identical-ngram-$who.toml identical-ngram-$who full-150k.toml identical-store-ngram-$who
  store_pipeline identical-ensemble-$who.toml identical-ensemble-$who ensemble-150k.toml identical-store-ensemble-$who
  rm -rf bench/out/identical-store-*-$who bench/out/identical-ngram-$who bench/out/identical-ensemble-$who
  $bin run bench/out/identical-ngram-$who.toml > /dev/null
  $bin predict --model bench/out/identical-ngram-$who/train/model --input bench/out/identical_150k.csv \
    --output bench/out/identical-ngram-$who/coded_150k.csv --store bench/out/identical-store-ngram-$who > /dev/null
  $bin run bench/out/identical-ensemble-$who.toml > /dev/null
  $bin predict --model bench/out/identical-ensemble-$who/train/model --input bench/out/identical_20k.csv \
    --output bench/out/identical-ensemble-$who/coded_20k.csv --store bench/out/identical-store-ensemble-$who > /dev/null
done
same "150k ngram: 150,000 records coded" bench/out/identical-ngram-base/coded_150k.csv bench/out/identical-ngram-new/coded_150k.csv
same "150k ensemble: 20,000 records coded" bench/out/identical-ensemble-base/coded_20k.csv bench/out/identical-ensemble-new/coded_20k.csv
exit $differ
