#!/usr/bin/env bash
# Refitting with validation (`[training] refit = true`), on the 150k records (../shared/data,
# not part of the project), all in one store (bench/out/store-refit; the cold store's shared
# embedding cache linked in when there is one, so no run embeds the records again):
#   1. bench/ensemble-150k.toml as shipped and with `-S training.refit=true`, each evaluated
#      through the cascade (as shipped) and with every part on every row;
#   2. the refit with a smaller `cascade_max_loss`; `isco-dag predict` of the 150,000 records
#      with each ensemble; then, with the refit, a setting only the fits on validation read
#      (`training.calibration`): what a re-run of `train` keeps;
#   3. bench/full-150k.toml (`ngram`) as shipped and refitted;
#   4. each ensemble fine-tuned on corrections.csv (bench/finetune-150k.toml's stages, linked
#      into bench/out/corrections_in/ for this script only).
# Prints each evaluation as a BENCHMARKS.md table row (eval_row) and the `train` stage's lines.
#
#   bash bench/refit.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
ensemble_setup > /dev/null
STORE=store-refit
store_pipeline refit.toml ensemble-150k-refit ensemble-150k.toml $STORE refit
store_pipeline refit-ngram.toml full-150k-refit full-150k.toml $STORE refit-ngram
store_pipeline refit-ft-base.toml finetune-150k-refit finetune-150k.toml $STORE refit-ft
train_variant refit-ft.toml finetune-150k-refit refit-ft-base.toml \
  'model_kind = "ensemble", field_weights = []'
if [ ! -d bench/out/$STORE ] && [ -d bench/out/store-cold/shared ]; then
  mkdir -p bench/out/$STORE
  cp -al bench/out/store-cold/shared bench/out/$STORE/shared
fi
rm -rf bench/out/corrections_in
train_lines() { grep -E "^(executed|skipped|restored) +train|refit:|best epoch" || true; }
for refit in false true; do
  for cascade in true false; do
    echo "== ensemble, refit $refit, cascade $cascade"
    /usr/bin/time -f "wall %e s" $BIN run bench/out/refit.toml --until evaluate \
      -S training.refit=$refit -S inference.cascade=$cascade | train_lines
    eval_row bench/out/$STORE "ensemble, refit $refit, cascade $cascade"
  done
done
echo "== ensemble, refit true, cascade_max_loss 0.001"
$BIN run bench/out/refit.toml --until evaluate -S training.refit=true \
  -S model.cascade_max_loss=0.001 | train_lines
eval_row bench/out/$STORE "ensemble, refit true, cascade_max_loss 0.001"
# `isco-dag predict` of the 150,000 records (titles and duties) with each model, from a copy
# without its embedding cache and an empty store, so every row sent on is embedded then.
python3 - <<PY
import csv
r = csv.reader(open('../shared/data/records_150k.csv')); next(r)
w = csv.writer(open('bench/out/cascade_150k.csv', 'w')); w.writerow(['job_title', 'duties_description'])
[w.writerow(row[:2]) for row in r]
PY
for v in "shipped:" "refit:-S training.refit=true" \
  "refit, cascade_max_loss 0.001:-S training.refit=true -S model.cascade_max_loss=0.001"; do
  # shellcheck disable=SC2086
  $BIN run bench/out/refit.toml --until train ${v#*:} > /dev/null
  rm -rf bench/out/speed-model bench/out/speed-store && cp -r bench/out/refit/train/model bench/out/speed-model
  chmod -R u+w bench/out/speed-model && rm -f bench/out/speed-model/retrieval/cache-*.bin && sync
  echo "== isco-dag predict, ${v%%:*}"
  /usr/bin/time -f "wall %e s, peak RSS %M KB" $BIN predict --model bench/out/speed-model \
    --store bench/out/speed-store --input bench/out/cascade_150k.csv --output bench/out/speed_refit.parquet 2>&1 \
    | grep -E "^coded|wall"
done
echo "== ensemble, refit true, training.calibration=ece (a re-run of train)"
/usr/bin/time -f "wall %e s" $BIN run bench/out/refit.toml --until train \
  -S training.refit=true -S training.calibration=ece | train_lines
for refit in false true; do
  echo "== ngram, refit $refit"
  $BIN run bench/out/refit-ngram.toml --until evaluate -S training.refit=$refit | train_lines
  eval_row bench/out/$STORE "ngram, refit $refit"
done
link_corrections
for refit in false true; do
  echo "== ensemble fine-tuned on the corrections, refit $refit"
  $BIN run bench/out/refit-ft.toml -S training.refit=$refit \
    | grep -E "^(executed|skipped|restored) +(train|fine-tune)" || true
  "$BIN" runs show last --store bench/out/$STORE --format json | python3 -c "
import json, sys
r = json.load(sys.stdin)
m = {x['id']: x for x in r['stages']}['evaluate-finetune']['metrics']
for k in ['test', 'corrections_holdout', 'new_occupations_eval', 'ilo_titles_dev']:
    e = m.get(k)
    if e:
        print('  %s: accuracy %.4f, top-3 %.4f, macro-F1 %.4f, ECE %.4f (%d rows)' % (
            k, e['accuracy'], e['top3_accuracy'], e['macro_f1'], e['ece'], e['records']))"
done
