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
# A cold store and no corrections; other stores under bench/out (the ensemble scripts', with
# their warm embedding caches) are left alone. Every stage then runs and rewrites its outputs.
rm -rf bench/out/store bench/out/corrections_in
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
echo "== finetune.toml after full.toml: corrections.csv dropped into bench/out/corrections_in/"
mkdir -p bench/out/corrections_in
ln -sf "$(realpath $DATA/corrections.csv)" bench/out/corrections_in/corrections.csv
/usr/bin/time -f "finetune wall %e s, peak RSS %M KB" $BIN run bench/finetune-150k.toml
$BIN runs show last --store bench/out/store --format json | python3 -c "
import json, sys
r = json.load(sys.stdin)
print('outcomes:', ', '.join(f\"{s['id']}={s['outcome']}\" for s in r['stages']))"
python3 - <<'PY'
import json
a = json.load(open('bench/out/evaluate/metrics.json'))
b = json.load(open('bench/out/evaluate-finetune/metrics.json'))
for k in ['test', 'test_true_labels', 'new_occupations_eval']:
    print(f"{k}: accuracy {a[k]['accuracy']:.4f} -> {b[k]['accuracy']:.4f} ({100*(b[k]['accuracy']-a[k]['accuracy']):+.2f} pts)")
print(f"corrections_holdout (fine-tuned): accuracy {b['corrections_holdout']['accuracy']:.4f}")
PY
echo "== finetune.toml again, nothing new"
/usr/bin/time -f "finetune no-op wall %e s" $BIN run bench/finetune-150k.toml | tail -1
echo "== the same corrections re-exported in another order under another name"
python3 -c "
import csv, random
rows = list(csv.reader(open('$DATA/corrections.csv')))
body = rows[1:]; random.Random(1).shuffle(body)
csv.writer(open('bench/out/corrections_in/export_reordered.csv', 'w')).writerows([rows[0]] + body)"
rm bench/out/corrections_in/corrections.csv
/usr/bin/time -f "finetune after re-export wall %e s" $BIN run bench/finetune-150k.toml | grep -E "^executed|finetune-150k:"
