#!/usr/bin/env bash
# Titles the ensemble never saw, given without duties (how ilo_titles_dev.csv arrives): the
# model's calibration and cascade threshold of their own (`title_only_calibration`) against
# the calibration fitted on records with duties, on the 150k records (../shared/data, not part
# of the project). Evaluation only on the evaluation files: nothing is fitted on them.
#   1. bench/ensemble-150k.toml in its own store (bench/out/store-title-only), `train` run now;
#   2. `evaluate` with and without `[inference] title_only_calibration`, each with the cascade
#      and with every part on every row (`cascade = false`), in the same run;
#   3. bench/finetune-150k.toml on that model (corrections.csv linked for this step only), the
#      fine-tuned model evaluated with and without it.
#
#   bash bench/title-only.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
cargo build --release -q
BIN=$PWD/target/release/isco-dag
$BIN models fetch minilm > /dev/null
store_pipeline title-only.toml ensemble-150k-title-only ensemble-150k.toml store-title-only
echo "== ensemble-150k, train run now"
/usr/bin/time -f "wall %e s, peak RSS %M KB" $BIN run bench/out/title-only.toml --force train \
  | grep -E "^executed|unseen titles|cascade:"
for cascade in true false; do
  for own in true false; do
    $BIN run bench/out/title-only.toml -S inference.cascade=$cascade \
      -S inference.title_only_calibration=$own > /dev/null
    eval_row bench/out/store-title-only "cascade $cascade | own calibration $own"
  done
done
echo "== finetune-150k.toml on this model: corrections.csv in bench/out/corrections_in/ for this step only"
store_pipeline title-only-finetune-base.toml finetune-150k-title-only finetune-150k.toml \
  store-title-only title-only
train_variant title-only-finetune.toml finetune-150k-title-only title-only-finetune-base.toml \
  'model_kind = "ensemble", field_weights = []'
link_corrections
for own in true false; do
  echo "-- title_only_calibration = $own"
  $BIN run bench/out/title-only-finetune.toml -S inference.title_only_calibration=$own \
    | grep -E "^executed  fine-tune|unseen titles|test:|new_occupations_eval:|corrections_holdout:" || true
done
