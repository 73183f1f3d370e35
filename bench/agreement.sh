#!/usr/bin/env bash
# The cap on an unseen title's confidence by how far the ensemble's parts agree on its code
# (`[inference] title_only_agreement`), on the 150k records (../shared/data, not part of the
# project). Evaluation only on the evaluation files: nothing is fitted on them.
#   1. bench/ensemble-150k.toml in its own store (bench/out/store-agreement; the store-cold
#      sentence vectors are linked in when there), `train` run now; `evaluate` with the cap
#      and without it, each through the cascade and with every part on every row;
#   2. the same ensemble with `train`'s `titles` input (ESCO's labels less the corrected
#      occupations, bench/esco_titles.py), with the cap and without it;
#   3. bench/finetune-150k.toml's stages on the first model (corrections.csv linked for this
#      step only), the fine-tuned model evaluated with the cap and without it.
# Each table row: accuracy (top-3), ECE; the share of rows coded at >= 0.9 and the share of
# those right, for test, new_occupations_eval and ilo_titles_dev.
#
#   bash bench/agreement.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
ensemble_setup > /dev/null
STORE=bench/out/store-agreement
if [ ! -d $STORE/shared ] && [ -d bench/out/store-cold/shared ]; then
  mkdir -p $STORE && cp -al bench/out/store-cold/shared $STORE/shared
fi
store_pipeline agreement.toml ensemble-150k-agreement ensemble-150k.toml store-agreement
echo "== ensemble-150k, train run now"
/usr/bin/time -f "wall %e s, peak RSS %M KB" $BIN run bench/out/agreement.toml --force train \
  | grep -E "^executed|unseen titles"
echo "| cap | through | test | new_occupations_eval | ilo_titles_dev |"
echo "|---|---|---|---|---|"
for cascade in true false; do
  for cap in true false; do
    $BIN run bench/out/agreement.toml -S inference.cascade=$cascade \
      -S inference.title_only_agreement=$cap > /dev/null
    eval_row $STORE "$cap | cascade $cascade"
  done
done

echo "== with the titles input"
python3 bench/esco_titles.py bench/out/esco_titles.csv
train_variant agreement-titles.toml ensemble-150k-agreement-titles agreement.toml \
  'model_kind = "ensemble", field_weights = []'
sed -i 's|encoder = "models/pretrained/all-MiniLM-L6-v2/\*\.\*" }|encoder = "models/pretrained/all-MiniLM-L6-v2/*.*", titles = "bench/out/esco_titles.csv" }|' \
  bench/out/agreement-titles.toml
$BIN run bench/out/agreement-titles.toml --force train | grep -E "unseen titles" || true
for cap in true false; do
  $BIN run bench/out/agreement-titles.toml -S inference.title_only_agreement=$cap > /dev/null
  eval_row $STORE "$cap, with titles | cascade true"
done

echo "== finetune-150k.toml on the first model: corrections.csv in bench/out/corrections_in/ for this step only"
store_pipeline agreement-ft-base.toml finetune-150k-agreement finetune-150k.toml \
  store-agreement agreement
train_variant agreement-ft.toml finetune-150k-agreement agreement-ft-base.toml \
  'model_kind = "ensemble", field_weights = []'
rm -rf bench/out/corrections_in
# `train` is frozen in the fine-tune pipeline: its base is the store's last `train` run.
$BIN run bench/out/agreement.toml > /dev/null
link_corrections
for cap in true false; do
  $BIN run bench/out/agreement-ft.toml -S inference.title_only_agreement=$cap \
    | grep -E "^executed  fine-tune|unseen titles" || true
  "$BIN" runs show last --store $STORE --format json | python3 -c "
import json, sys
r = json.load(sys.stdin)
m = {x['id']: x for x in r['stages']}['evaluate-finetune']['metrics']
print('cap $cap:', '; '.join('%s %.4f (top-3 %.4f), ECE %.4f, >= 0.9: %.1f %% of rows, %.1f %% right' % (
      k, m[k]['accuracy'], m[k]['top3_accuracy'], m[k]['ece'], 100 * m[k]['share_conf_90'],
      100 * m[k]['accuracy_conf_90']) for k in ['test', 'corrections_holdout', 'new_occupations_eval']))"
done
