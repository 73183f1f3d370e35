#!/usr/bin/env bash
# Service benchmarks quoted in BENCHMARKS.md: `isco-dag serve` with the model
# bench/run.sh promoted on ../shared/data/records_150k.csv (run that first), loaded from a
# second process on loopback by api/examples/loadgen.rs (open loop, latency from the
# scheduled send time). Run from the project root: bash bench/serve.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=../shared/data
[ -f bench/out/store/refs/best.json ] || { echo "run bash bench/run.sh first (it promotes the 150k model)" >&2; exit 1; }
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/{print $2}') GiB"
echo "commit: $(git rev-parse --short HEAD)"
cargo build --release --quiet --bin isco-dag --example loadgen -p isco-dag -p api
BIN=./target/release/isco-dag
LOAD=./target/release/examples/loadgen
mkdir -p bench/out/serve
python3 - <<PY
import csv, json, random
rows = list(csv.DictReader(open('$DATA/records_150k.csv')))
random.Random(7).shuffle(rows)
one = {'job_title': rows[0]['job_title'], 'duties_description': rows[0]['duties_description']}
json.dump(one, open('bench/out/serve/job.json', 'w'))
batch = [{'job_title': r['job_title'], 'duties_description': r['duties_description']} for r in rows[1:1001]]
json.dump(batch, open('bench/out/serve/batch1000.json', 'w'))
PY
sed 's#^review_dir = .*#review_dir = "bench/out/serve/review"#' config/default.toml > bench/out/serve/cache.toml
$BIN serve --store bench/out/store --addr 127.0.0.1:0 --config bench/out/serve/cache.toml > bench/out/serve/server.log 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q "listening on" bench/out/serve/server.log && break; sleep 0.1; done
ADDR=$(grep -o "http://[0-9.:]*" bench/out/serve/server.log | head -1 | sed 's#http://##')
echo "server pid $PID at $ADDR; model $(curl -s http://$ADDR/model | python3 -c 'import json,sys; m=json.load(sys.stdin); print(m["version"][:12], m["classes"], "classes")')"
echo "== warm-up"
$LOAD --addr $ADDR --path /predict/job --body bench/out/serve/job.json --rate 200 --duration 3 > /dev/null
echo "== /predict/job, 500 requests/s for 30 s, 16 connections (one fixed record; the LRU cache serves repeats)"
$LOAD --addr $ADDR --path /predict/job --body bench/out/serve/job.json --rate 500 --duration 30 --pid $PID
echo "== /predict/job, 500 requests/s for 30 s, LRU cache off (cache_size = 0: every request runs the model)"
kill $PID; wait $PID 2>/dev/null || true
sed 's/^cache_size = .*/cache_size = 0/' bench/out/serve/cache.toml > bench/out/serve/nocache.toml
$BIN serve --store bench/out/store --addr 127.0.0.1:0 --config bench/out/serve/nocache.toml > bench/out/serve/server.log 2>&1 &
PID=$!
for _ in $(seq 100); do grep -q "listening on" bench/out/serve/server.log && break; sleep 0.1; done
ADDR=$(grep -o "http://[0-9.:]*" bench/out/serve/server.log | head -1 | sed 's#http://##')
$LOAD --addr $ADDR --path /predict/job --body bench/out/serve/job.json --rate 200 --duration 3 > /dev/null
$LOAD --addr $ADDR --path /predict/job --body bench/out/serve/job.json --rate 500 --duration 30 --pid $PID
echo "== /predict/batch with 1,000 records, one at a time, 50 requests"
$LOAD --addr $ADDR --path /predict/batch --body bench/out/serve/batch1000.json --rate 5 --count 50 --connections 1 --pid $PID
echo "== metrics excerpt"
curl -s http://$ADDR/metrics | grep -E '^isco_(requests_total|predictions_total|fallbacks_total|model_reloads)' | head -12
