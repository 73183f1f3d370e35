#!/usr/bin/env bash
# Mixed precision (`precision = "bf16"`, libtorch build) against fp32, in the same run:
#   1. encoder throughput on ROWS real rows (titles; title + duties), batch 32, at most 64
#      tokens: burn on libtorch at fp32 and bf16 beside PyTorch CPU at fp32 and under
#      torch.autocast(bfloat16), and the cosine of the bf16 vectors to the fp32 ones;
#   2. train-encoder on the 150k records' pairs with a MAX_SECONDS budget at fp32 and at bf16:
#      the hard-negative mining's time, the training's seconds per 1000 pairs, the pairs trained
#      on in the budget and the in-batch validation accuracy reached;
#   3. the 150k ensemble of bench/cascade.sh evaluated with every part on every row, queries
#      embedded at fp32 and at bf16: accuracy on the test split, new_occupations_eval.csv and
#      ilo_titles_dev.csv (evaluation only).
# Both use bench/cascade.sh's store (bench/out/store-cascade: run it first), whose cleaned and
# split records train-encoder reads as they are.
# Needs ../shared/data (not part of the project), libtorch (bench/lib.sh `libtorch_env`), a CPU
# with AVX-512 BF16 or AMX for bf16 to pay, and PyTorch + sentence-transformers in a venv
# (PY, default /tmp/pyref/bin/python; see bench/encoder-speed.sh).
#   bash bench/mixed-precision.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
libtorch_env
PY=${PY:-/tmp/pyref/bin/python}
ROWS=${ROWS:-3000}
MAX_SECONDS=${MAX_SECONDS:-300}
ENC=models/pretrained/all-MiniLM-L6-v2
DATA=../shared/data
export CARGO_TARGET_DIR="$W/target"
grep -qw avx512_bf16 /proc/cpuinfo || echo "note: this CPU has no AVX-512 BF16: bf16 products are emulated and slower"
cargo build --release -q --features tch
cargo build --release -q -p classifier --features tch --example embed_speed
BIN=$W/target/release/isco-dag
$BIN models fetch minilm > /dev/null

echo "== 1. encoder throughput"
for field in title record; do
  for p in fp32 bf16; do
    PRECISION=$p "$W/target/release/examples/embed_speed" "$ENC" "$DATA/records_150k.csv" "$ROWS" 64 "$field"
    PRECISION=$p "$PY" bench/encoder_speed.py "$ENC" "$DATA/records_150k.csv" "$ROWS" 64 "$field" 2>/dev/null
  done
done

echo "== 2. train-encoder, ${MAX_SECONDS} s budget"
[ -d bench/out/store-cascade ] || { echo "run bash bench/cascade.sh first (it trains the model)"; exit 1; }
store_pipeline mp-train.toml ensemble-150k-mp-train ensemble-trained-150k.toml store-cascade mp-train
for p in fp32 bf16; do
  $BIN run bench/out/mp-train.toml --until train-encoder --force train-encoder \
    -S encoder_training.max_seconds="$MAX_SECONDS" \
    -S encoder_training.precision=$p -S encoder_training.device=cpu > /dev/null
  $BIN runs show last --store bench/out/store-cascade --format json | python3 -c "
import json, sys
s = {x['id']: x for x in json.load(sys.stdin)['stages']}['train-encoder']
m = s['metrics']
print('$p', json.dumps({k: m.get(k) for k in ['mining_seconds', 'steps', 'pairs_seen', 'seconds_per_1000_pairs', 'stopped_by', 'validation_before', 'validation_after']}), 'stage %.0f s' % s['duration_s'])
"
done

echo "== 3. the 150k ensemble, every part on every row, queries at fp32 and bf16"
for p in fp32 bf16; do
  $BIN run bench/out/cascade.toml --until evaluate --force evaluate \
    -S inference.cascade=false -S inference.precision=$p \
    -S inference.device=cpu > /dev/null
  $BIN runs show last --store bench/out/store-cascade --format json | python3 -c "
import json, sys
s = {x['id']: x for x in json.load(sys.stdin)['stages']}['evaluate']
m = s['metrics']
for k in ['test', 'new_occupations_eval', 'ilo_titles_dev']:
    e = m[k]
    print('$p', k, 'accuracy %.4f top-3 %.4f macro-F1 %.4f ECE %.4f' % (e['accuracy'], e['top3_accuracy'], e['macro_f1'], e['ece']))
"
done
