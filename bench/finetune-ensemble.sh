#!/usr/bin/env bash
# Fine-tuning the ensemble on reviewers' corrections, on the 150k records (../shared/data, not
# part of the project):
#   1. bench/ensemble-150k.toml in its own store (bench/out/store-finetune-ensemble; cold the
#      first time, kept after);
#   2. bench/finetune-150k.toml on that model with corrections.csv linked into
#      bench/out/corrections_in/ (for this script only): `[finetune]` defaults, then
#      `SETTINGS` (default: the head's learning rate) one at a time;
#   3. the same settings again with a hold-out of 30 % of the corrections instead of 10 %
#      (`corrections.holdout_fraction`), the larger sample the defaults are chosen on.
# Prints per run the test, corrections hold-out and new_occupations_eval rows of `evaluate`,
# and how much the store's objects grew with the run.
#
#   bash bench/finetune-ensemble.sh
#   SETTINGS="finetune.corrections_repeats=8 finetune.epochs=5" bash bench/finetune-ensemble.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
ensemble_setup > /dev/null
SETTINGS=${SETTINGS:-"finetune.lr_head=0.0 finetune.lr_head=0.003 finetune.lr_head=0.01"}
store_pipeline finetune-ensemble-base.toml ensemble-150k-finetune ensemble-150k.toml \
  store-finetune-ensemble finetune-ensemble
# A new store takes the cold store's shared embedding cache (when there is one), so that its
# first run does not embed the records again.
if [ ! -d bench/out/store-finetune-ensemble ] && [ -d bench/out/store-cold/shared ]; then
  mkdir -p bench/out/store-finetune-ensemble
  cp -al bench/out/store-cold/shared bench/out/store-finetune-ensemble/shared
fi
objects_mb() { du -sm bench/out/store-finetune-ensemble/objects | cut -f1; }
# The base model is trained without corrections (another script may have left some there).
rm -rf bench/out/corrections_in
echo "== ensemble-150k"
/usr/bin/time -f "wall %e s" $BIN run bench/out/finetune-ensemble-base.toml \
  | grep -E "^executed  train|test:|new_occupations_eval:" || true
store_pipeline finetune-ensemble-ft.toml finetune-150k-ensemble finetune-150k.toml \
  store-finetune-ensemble finetune-ensemble
train_variant finetune-ensemble.toml finetune-150k-ensemble finetune-ensemble-ft.toml \
  'model_kind = "ensemble", field_weights = []'
link_corrections
# The fine-tuned model's evaluation, from the store's last run (also when it was cached).
rows() {
  "$BIN" runs show last --store bench/out/store-finetune-ensemble --format json | python3 -c "
import json, sys
r = json.load(sys.stdin)
m = {x['id']: x for x in r['stages']}['evaluate-finetune']['metrics']
for k in ['test', 'corrections_holdout', 'new_occupations_eval']:
    e = m[k]
    print('  %s: accuracy %.4f, top-3 %.4f, macro-F1 %.4f, ECE %.4f (%d rows)' % (
        k, e['accuracy'], e['top3_accuracy'], e['macro_f1'], e['ece'], e['records']))"
}
for holdout in 0.1 0.3; do
  for s in "" $SETTINGS; do
    echo "== hold-out $holdout ${s:-defaults}"
    before_mb=$(objects_mb)
    $BIN run bench/out/finetune-ensemble.toml -S corrections.holdout_fraction=$holdout \
      ${s:+-S $s} | grep -E "^executed  fine-tune" || true
    rows
    echo "  store objects grew $(( $(objects_mb) - before_mb )) MB"
  done
done
