#!/usr/bin/env bash
# bfloat16 products (`precision = "bf16"`: the encoder's linear products on the bfloat16 kernel,
# CPUs with AVX-512 BF16) against fp32, same model, same run, on ../shared/data (not part of the
# project). Needs the 150k ensemble of bench/title-only.sh (its store, bench/out/store-title-only)
# and the PyTorch venv of bench/encoder-speed.sh (PY=).
#   1. encoder throughput, 3,000 rows, titles and title + duties: burn fp32 and bf16, PyTorch
#      fp32 and under torch.autocast(bfloat16), alternating;
#   2. `evaluate` of the ensemble with `[inference] precision` fp32 and bf16, with the cascade
#      and with every part on every row (the index was embedded in fp32 either way);
#   3. `isco-dag predict` of the 150,000 records (bench/cascade.sh writes them), fp32 and bf16
#      alternating REPS times, each from a copy of the model without its embedding cache;
#   4. `/predict/job` at 100 requests/s of uncached texts (bench/serve-cascade.sh), fp32 and
#      bf16 alternating;
#   5. bench/ensemble-150k.toml cold in its own store (bench/out/store-bf16-cold), with
#      `[model]` and `[inference] precision` fp32, then bf16: the index embedded at each.
#   REPS=2 bash bench/bf16.sh          STEPS="1 4" runs only those steps
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-/tmp/pyref/bin/python}
REPS=${REPS:-2}
STEPS=${STEPS:-1 2 3 4 5}
STORE=bench/out/store-title-only
[ -f $STORE/refs/best.json ] || { echo "run bash bench/title-only.sh first" >&2; exit 1; }
source bench/lib.sh
cargo build --release -q
cargo build --release -q -p classifier --features x86-v4 --example embed_speed
BIN=$PWD/target/release/isco-dag
ENC=models/pretrained/all-MiniLM-L6-v2
CSV=../shared/data/records_150k.csv
config() { # precision cascade -> bench/out/bf16/<precision>-<cascade>.toml
  mkdir -p bench/out/bf16
  sed -e "s/^cascade = .*/cascade = $2/" \
      -e "/^precision = .*its products/s/\"fp32\"/\"$1\"/" \
      config/default.toml > bench/out/bf16/$1-$2.toml
}
for step in $STEPS; do
case $step in
1)
  echo "== encoder throughput (rows/s), 3,000 rows, batch 32, <= 64 tokens"
  for field in title record; do
    for i in 1 2; do
      for p in fp32 bf16; do
        NO_COSINE=1 PRECISION=$p target/release/examples/embed_speed $ENC $CSV 3000 64 $field
        PRECISION=$p "$PY" bench/encoder_speed.py $ENC $CSV 3000 64 $field 2>/dev/null
      done
    done
  done
  PRECISION=bf16 target/release/examples/embed_speed $ENC $CSV 3000 64 record | grep cosine
  ;;
2)
  echo "== evaluate, fp32 against bf16"
  for cascade in true false; do
    for p in fp32 bf16; do
      $BIN run bench/out/title-only.toml -S inference.cascade=$cascade \
        -S inference.precision=$p > /dev/null
      eval_row $STORE "cascade $cascade | $p"
    done
  done
  ;;
3)
  INPUT=bench/out/cascade_150k.csv
  [ -f $INPUT ] || { echo "run bash bench/cascade.sh first (it writes $INPUT)" >&2; exit 1; }
  id=$(python3 -c "import json; print(json.load(open('$STORE/refs/best.json'))['target']['id'])")
  mkdir -p bench/out/bf16 && rm -rf bench/out/bf16/model && cp -r $STORE/checkouts/$id bench/out/bf16/model
  chmod -R u+w bench/out/bf16/model && sync
  config fp32 true; config bf16 true
  echo "== isco-dag predict, 150,000 records never embedded"
  for i in $(seq "$REPS"); do
    for p in fp32 bf16; do
      rm -rf bench/out/bf16/store bench/out/bf16/model/retrieval/cache-*.bin
      /usr/bin/time -f "%e %M" -o bench/out/bf16/time $BIN predict --model bench/out/bf16/model \
        --store bench/out/bf16/store --config bench/out/bf16/$p-true.toml --input $INPUT \
        --output bench/out/bf16/coded_$p.csv 2>/dev/null
      read -r wall rss < bench/out/bf16/time
      echo "$p: wall $wall s, $(echo "150000 / $wall" | bc) rows/s, peak RSS $((rss / 1024)) MB"
    done
  done
  python3 - <<'PY'
import csv
a = [r['isco_code'] for r in csv.DictReader(open('bench/out/bf16/coded_fp32.csv'))]
b = [r['isco_code'] for r in csv.DictReader(open('bench/out/bf16/coded_bf16.csv'))]
print(f"same code fp32 and bf16: {sum(x == y for x, y in zip(a, b))} of {len(a)} rows")
PY
  ;;
4)
  echo "== /predict/job, 100 requests/s, uncached texts, cascade"
  for i in 1 2; do
    for p in fp32 bf16; do
      echo "-- $p"
      STORE=$STORE PRECISION=$p MODES=cascade bash bench/serve-cascade.sh | grep -E "latency|requests to"
    done
  done
  ;;
5)
  echo "== bench/ensemble-150k.toml cold, the index and the queries at each precision"
  store_pipeline bf16-cold.toml ensemble-150k-bf16-cold ensemble-150k.toml store-bf16-cold
  for p in fp32 bf16; do
    rm -rf bench/out/store-bf16-cold bench/out/bf16-cold
    /usr/bin/time -f "$p: cold run %e s wall, peak RSS %M KB" $BIN run bench/out/bf16-cold.toml \
      -S model.precision=$p -S inference.precision=$p > /dev/null
    $BIN runs show last --store bench/out/store-bf16-cold --format json | python3 -c "
import json, sys
r = json.load(sys.stdin)
st = {x['id']: x for x in r['stages']}
m = st['evaluate']['metrics']
cells = ['%s %.4f (%.4f)' % (k, m[k]['accuracy'], m[k]['top3_accuracy'])
         for k in ['test', 'new_occupations_eval', 'ilo_titles_dev']]
print('$p: train %.0f s, evaluate %.0f s; ' % (st['train']['duration_s'], st['evaluate']['duration_s'])
      + '; '.join(cells) + '; test ECE %.4f, macro-F1 %.4f' % (m['test']['ece'], m['test']['macro_f1']))
"
  done
  ;;
esac
done
