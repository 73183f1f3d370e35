#!/usr/bin/env bash
# The ensemble's cascade against the whole ensemble on every row, in the same run, on the 150k
# records (../shared/data, not part of the project):
#   1. bench/ensemble-150k.toml cold in its own store (bench/out/store-cascade): the model, its
#      cascade fitted on validation, and `evaluate` with the cascade (test split,
#      new_occupations_eval.csv, ilo_titles_dev.csv — evaluation only);
#   2. `evaluate` again with `-S inference.cascade=false` (every part on every row);
#   3. `isco-dag predict` of all 150,000 records (titles and duties, no codes) with and without
#      the cascade, each from a copy of the model without its embedding cache and a store with
#      no shared vectors, so every row it embeds is embedded then: wall time, rows/s, peak RSS.
#
#   bash bench/cascade.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
DATA=../shared/data
cargo build --release -q
BIN=$PWD/target/release/isco-dag
$BIN models fetch minilm > /dev/null
store_pipeline cascade.toml ensemble-150k-cascade ensemble-150k.toml store-cascade
rm -rf bench/out/store-cascade bench/out/cascade
echo "== cold ensemble-150k with the cascade"
/usr/bin/time -f "wall %e s, peak RSS %M KB" $BIN run bench/out/cascade.toml
metrics() { # label
  $BIN runs show last --store bench/out/store-cascade --format json | python3 -c "
import json, sys
r = json.load(sys.stdin)
s = {x['id']: x for x in r['stages']}
if 'train' in s and s['train']['outcome'] == 'executed':
    print('cascade fit:', json.dumps(s['train']['metrics'].get('cascade')))
m = s['evaluate']['metrics']
for k in ['test', 'new_occupations_eval', 'ilo_titles_dev']:
    e = m[k]
    print('$1', k, 'accuracy %.4f top-3 %.4f macro-F1 %.4f ECE %.4f' % (e['accuracy'], e['top3_accuracy'], e['macro_f1'], e['ece']), 'decided by', json.dumps(e.get('decided_by')))
"
}
metrics cascade
echo "== evaluate with every part on every row"
$BIN run bench/out/cascade.toml -S inference.cascade=false > /dev/null
metrics full

echo "== isco-dag predict, 150,000 records never embedded"
python3 - <<PY
import csv
r = csv.reader(open('$DATA/records_150k.csv')); next(r)
w = csv.writer(open('bench/out/cascade_150k.csv', 'w')); w.writerow(['job_title', 'duties_description'])
[w.writerow(row[:2]) for row in r]
PY
rm -rf bench/out/cascade-model && cp -r bench/out/cascade/train/model bench/out/cascade-model
chmod -R u+w bench/out/cascade-model && rm -f bench/out/cascade-model/retrieval/cache-*.bin
for mode in cascade full; do
  flag=""; [ $mode = full ] && flag="--no-cascade"
  rm -rf bench/out/cascade-empty-store
  /usr/bin/time -f "$mode: wall %e s, peak RSS %M KB" $BIN predict --model bench/out/cascade-model \
    --store bench/out/cascade-empty-store --input bench/out/cascade_150k.csv \
    --output bench/out/cascade_coded_$mode.parquet $flag
done
