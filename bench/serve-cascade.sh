#!/usr/bin/env bash
# `/predict/job` with the 150k ensemble (bench/cascade.sh promotes it in bench/out/store-cascade;
# run that first), with and without the cascade, on texts no cache holds: 6,000 records of
# ../shared/data/records_150k.csv (not part of the project) rephrased — a seniority word before
# the title, "as required" after each duty — so neither the model's embedding cache, the store's
# shared vectors nor the server's LRU cache has seen them. 100 requests/s for 60 s over 16
# connections from api/examples/loadgen.rs (open loop: latency from each request's scheduled
# time). Run from the project root: bash bench/serve-cascade.sh
# BIN= serves with another build (e.g. the libtorch one: `--features tch`, with bench/lib.sh
# `libtorch_env`), PRECISION=bf16 embeds the queries in mixed precision (the bfloat16 kernel on CPUs with
# AVX-512 BF16, or libtorch builds),
# MODES= picks `cascade` and/or `full`; STORE= serves another store's promoted model.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=../shared/data
STORE=${STORE:-bench/out/store-cascade}
[ -f $STORE/refs/best.json ] || { echo "run bash bench/cascade.sh first" >&2; exit 1; }
cargo build --release --quiet --bin isco-dag --example loadgen -p isco-dag -p api
BIN=${BIN:-./target/release/isco-dag}
LOAD=./target/release/examples/loadgen
mkdir -p bench/out/serve-cascade
python3 - <<PY
import csv, json, random
rows = list(csv.DictReader(open('$DATA/records_150k.csv')))
rnd = random.Random(11)
rnd.shuffle(rows)
words = ['senior', 'junior', 'assistant', 'trainee', 'chief', 'lead', 'deputy', 'relief']
with open('bench/out/serve-cascade/bodies.jsonl', 'w') as f:
    for r in rows[:6000]:
        duties = '; '.join(c.strip() + ' as required' for c in r['duties_description'].split(';') if c.strip())
        f.write(json.dumps({'job_title': rnd.choice(words) + ' ' + r['job_title'], 'duties_description': duties}) + '\n')
PY
for mode in ${MODES:-cascade full}; do
  flag=true; [ $mode = full ] && flag=false
  sed -e 's#^review_dir = .*#review_dir = "bench/out/serve-cascade/review"#' -e 's/^cache_size = .*/cache_size = 0/' \
      -e "s/^cascade = .*/cascade = $flag/" \
      -e "/^precision = .*its products/s/\"fp32\"/\"${PRECISION:-fp32}\"/" \
      config/default.toml > bench/out/serve-cascade/$mode.toml
  $BIN serve --store $STORE --addr 127.0.0.1:0 --config bench/out/serve-cascade/$mode.toml > bench/out/serve-cascade/server.log 2>&1 &
  PID=$!
  for _ in $(seq 300); do grep -q "listening on" bench/out/serve-cascade/server.log && break; sleep 0.1; done
  ADDR=$(grep -o "http://[0-9.:]*" bench/out/serve-cascade/server.log | head -1 | sed 's#http://##')
  echo "== $mode: /predict/job, 100 requests/s for 60 s, 6,000 distinct uncached texts"
  $LOAD --addr $ADDR --path /predict/job --bodies bench/out/serve-cascade/bodies.jsonl --rate 100 --duration 60 --pid $PID
  curl -s http://$ADDR/metrics | grep -E '^isco_predictions' | head -8 || true
  kill $PID; wait $PID 2>/dev/null || true
done
