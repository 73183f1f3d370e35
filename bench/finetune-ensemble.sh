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
# Prints per run the test, corrections hold-out and new_occupations_eval rows of `evaluate`.
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
    $BIN run bench/out/finetune-ensemble.toml -S corrections.holdout_fraction=$holdout \
      ${s:+-S $s} | grep -E "^executed  fine-tune" || true
    rows
  done
done
