#!/usr/bin/env bash
# What a `train` that re-runs keeps, on the 150k records (../shared/data, not part of the
# project): bench/ensemble-150k.toml in a store of its own (bench/out/store-reuse, made anew
# each time, its shared embedding cache linked from bench/out/store-cold's when that exists so
# that no run embeds the index again), timed
#   1. the first run (every part trained);
#   2. re-run after a setting only the calibration reads (`-S training.calibration=ece`);
#   3. re-run after a `titles` input is added (ESCO's titles, bench/esco_titles.py);
#   4. `--force train` with the shipped settings (every part trained again): its evaluation
#      must equal 1.'s, and 2. and 3. must report 1.'s network (its training seconds).
# Each row also gives how much the store's objects grew: the same network is written as the
# same bytes, so a run that keeps it (or trains it again identically) stores it once.
# With `transformer`: bench/transformer-150k.toml in bench/out/store-reuse-transformer (made
# anew), `run --until train` first, then again with `-S training.calibration=ece`.
#
#   bash bench/train-reuse.sh [transformer]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
ensemble_setup > /dev/null
if [ "${1:-}" = transformer ]; then
  rm -rf bench/out/store-reuse-transformer
  store_pipeline reuse-transformer.toml transformer-150k-reuse transformer-150k.toml \
    store-reuse-transformer
  echo "| train | stage seconds | n-gram network, its training | fine-tuned encoder, its fine-tuning |"
  echo "|---|---|---|---|"
  for set in "" "training.calibration=ece"; do
    $BIN run bench/out/reuse-transformer.toml --until train ${set:+-S $set} > /dev/null
    "$BIN" runs show last --store bench/out/store-reuse-transformer --format json | python3 -c "
import json, sys
t = {x['id']: x for x in json.load(sys.stdin)['stages']}['train']
m = t['metrics']
how = lambda reused: 'the previous run\'s' if reused else 'trained'
print('| %s | %.1f | %s, %.1f s | %s, %.1f s |' % (sys.argv[1] or 'first run', t['duration_s'],
  how(m['ngram_reused']), m['train_seconds'], how(m['transformer']['reused']),
  m['transformer']['report']['seconds']))
" "${set:+-S $set}"
  done
  exit 0
fi
python3 bench/esco_titles.py bench/out/esco_titles.csv > /dev/null
rm -rf bench/out/store-reuse
mkdir -p bench/out/store-reuse
if [ -d bench/out/store-cold/shared ]; then
  cp -al bench/out/store-cold/shared bench/out/store-reuse/shared
fi
store_pipeline reuse.toml ensemble-150k-reuse ensemble-150k.toml store-reuse
train_variant reuse-titles.toml ensemble-150k-reuse-titles reuse.toml \
  'model_kind = "ensemble", field_weights = []'
sed -i 's|encoder = "models/pretrained/all-MiniLM-L6-v2/\*\.\*" }|encoder = "models/pretrained/all-MiniLM-L6-v2/*.*", titles = "bench/out/esco_titles.csv" }|' \
  bench/out/reuse-titles.toml
grep -q 'titles = "bench/out/esco_titles.csv"' bench/out/reuse-titles.toml
objects_mb() { du -sm bench/out/store-reuse/objects | cut -f1; }
row() { # LABEL: the store's last run's train and evaluate, and the objects' growth
  local grown=$(( $(objects_mb) - before_mb ))
  "$BIN" runs show last --store bench/out/store-reuse --format json | python3 -c "
import json, sys
r = json.load(sys.stdin)
s = {x['id']: x for x in r['stages']}
t = s['train']
m = t['metrics']
e = s['evaluate']['metrics']
print('| %s | %.1f | %s, %.1f s | %.4f / %.4f / %.4f | %s MB |' % (sys.argv[1], t['duration_s'],
  'the previous run\'s' if m['ngram_reused'] else 'trained', m['train_seconds'],
  e['test']['accuracy'], e['new_occupations_eval']['accuracy'], e['ilo_titles_dev']['accuracy'],
  sys.argv[2]))
" "$1" "$grown"
}
echo "| train | stage seconds | n-gram network, its training | test / new_occupations_eval / ilo_titles_dev accuracy | store objects grew |"
echo "|---|---|---|---|---|"
before_mb=$(objects_mb 2>/dev/null || echo 0)
$BIN run bench/out/reuse.toml > /dev/null
row "first run"
before_mb=$(objects_mb)
$BIN run bench/out/reuse.toml -S training.calibration=ece > /dev/null
row "\`calibration = \"ece\"\`"
before_mb=$(objects_mb)
$BIN run bench/out/reuse-titles.toml > /dev/null
row "a \`titles\` input"
before_mb=$(objects_mb)
$BIN run bench/out/reuse.toml --force train > /dev/null
row "\`--force train\`"
