#!/usr/bin/env bash
# Benchmarks quoted in BENCHMARKS.md. Uses ../shared/data (beside the project root; not part
# of the project). Run from the project root: bash bench/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=../shared/data
[ -f "$DATA/records_150k.csv" ] || { echo "bench/run.sh needs $DATA/records_150k.csv" >&2; exit 1; }
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/{print $2}') GiB"
echo "commit: $(git rev-parse --short HEAD)"
cargo build --release --quiet
BIN=./target/release/isco-dag
rm -rf bench/out
echo "== full pipeline on records_150k (cold store)"
/usr/bin/time -f "wall %e s, peak RSS %M KB" $BIN run bench/full-150k.toml -v
echo "== no-op re-run (everything fresh), 3 times"
for i in 1 2 3; do /usr/bin/time -f "no-op run: %e s" $BIN run bench/full-150k.toml > /dev/null; done
echo "== status, 3 times"
for i in 1 2 3; do /usr/bin/time -f "status: %e s" $BIN status bench/full-150k.toml > /dev/null; done
echo "== clean, cluster-outliers and split only (forced; per-stage times in runs show last)"
$BIN run bench/full-150k.toml --until split --force | grep -E "^executed|s:"
echo "== metrics of the last full run"
$BIN runs show last --store bench/out/store --format json > /dev/null
$BIN runs list --store bench/out/store | tail -3
if python3 -c "import fasttext" 2>/dev/null; then
  echo "== fastText anchor (pip install fasttext-wheel)"
  python3 bench/fasttext_anchor.py "$DATA" 0.5
  $BIN run bench/full-150k.toml --force train | grep -E "^executed"
else
  echo "== fastText anchor skipped: pip install fasttext-wheel"
fi
echo "== predict 150k uncoded records with the promoted model"
python3 -c "
import csv
r = csv.reader(open('$DATA/records_150k.csv')); next(r)
w = csv.writer(open('bench/out/predict_150k.csv', 'w')); w.writerow(['job_title', 'duties_description'])
[w.writerow(row[:2]) for row in r]"
/usr/bin/time -f "predict wall %e s, peak RSS %M KB" $BIN predict --input bench/out/predict_150k.csv --output bench/out/predicted.parquet --store bench/out/store
