#!/usr/bin/env bash
# Titles coded outside the records calibrating the titles an ensemble never saw, on the 150k
# records (../shared/data, not part of the project):
#   1. bench/ensemble-150k.toml cold in its own store (bench/out/store-cold, kept after), and
#      its `evaluate` (test split, new_occupations_eval.csv, ilo_titles_dev.csv — evaluation
#      only);
#   2. the same ensemble with `train`'s `titles` input: ESCO's occupations and alternative
#      labels (esco_occupations.csv) less the occupations a reviewer correction names
#      (bench/esco_titles.py), so new_occupations_eval.csv — held-out titles of the corrected
#      occupations — stays a measurement of occupations the model has not seen;
#      each evaluated through its cascade (as shipped) and with every part on every row;
#   3. each model fine-tuned on corrections.csv (bench/finetune-150k.toml's stages, `[finetune]`
#      defaults), evaluated on the test split, the corrections' hold-out and
#      new_occupations_eval.csv.
#
#   bash bench/external-titles.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
ensemble_setup > /dev/null
python3 bench/esco_titles.py bench/out/esco_titles.csv
rm -rf bench/out/corrections_in
TRAIN_INPUTS='train = "split.train", validation = "split.validation", reference = "../shared/data/isco08_groups.csv", encoder = "models/pretrained/all-MiniLM-L6-v2/*.*"'
titles_pipeline() { # FILE NAME EXTENDS
  cat > "bench/out/$1" <<TOML
[pipeline]
name = "$2"
extends = "$3"

[[stage]]
id = "train"
kind = "train"
replace = true
inputs = { $TRAIN_INPUTS, titles = "bench/out/esco_titles.csv" }
params_from = ["model", "training"]
params = { model_kind = "ensemble", field_weights = [] }
TOML
}
titles_pipeline titles.toml ensemble-150k-titles cold.toml
echo "| titles | test | new_occupations_eval | ilo_titles_dev |"
echo "|---|---|---|---|"
$BIN run bench/out/cold.toml > /dev/null
eval_row bench/out/store-cold "validation's"
/usr/bin/time -f "train with titles: wall %e s" $BIN run bench/out/titles.toml \
  | grep -E "unseen titles without duties" >&2 || true
eval_row bench/out/store-cold "validation's and ESCO's"
# Every part on every row.
$BIN run bench/out/cold.toml -S inference.cascade=false > /dev/null
eval_row bench/out/store-cold "validation's, every part"
$BIN run bench/out/titles.toml -S inference.cascade=false > /dev/null
eval_row bench/out/store-cold "validation's and ESCO's, every part"

# Fine-tuned on the corrections.
store_pipeline titles-ft-base.toml finetune-150k-ensemble finetune-150k.toml store-cold cold
train_variant titles-ft.toml finetune-150k-ensemble titles-ft-base.toml \
  'model_kind = "ensemble", field_weights = []'
titles_pipeline titles-ft-titles.toml finetune-150k-ensemble-titles titles-ft-base.toml
# `train` is frozen in the fine-tune pipelines: it keeps the model the store's last run of
# `train` gave, so each fine-tune runs after its own base (trained without corrections).
for pair in cold.toml:titles-ft.toml titles.toml:titles-ft-titles.toml; do
  f=${pair#*:}
  rm -rf bench/out/corrections_in
  $BIN run bench/out/${pair%%:*} > /dev/null
  link_corrections
  $BIN run bench/out/$f | grep -E "^executed  fine-tune|unseen titles" >&2 || true
  "$BIN" runs show last --store bench/out/store-cold --format json | python3 -c "
import json, sys
r = json.load(sys.stdin)
m = {x['id']: x for x in r['stages']}['evaluate-finetune']['metrics']
print('$f', '; '.join('%s %.4f (top-3 %.4f), ECE %.4f' % (k, m[k]['accuracy'], m[k]['top3_accuracy'], m[k]['ece'])
      for k in ['test', 'corrections_holdout', 'new_occupations_eval']))"
done
