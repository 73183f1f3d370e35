#!/usr/bin/env bash
# The service under abuse, for BENCHMARKS.md: random bodies, oversized fields, a flood of the
# largest accepted requests, slow clients (bench/service_fuzz.py), against `isco-dag serve`
# with the 150k ngram model that bench/run.sh promotes (or, without it, a model trained here
# on the demo data). Loopback only. Run from the project root: bash bench/service-fuzz.sh
# (SECONDS_FLOOD=30 by default; SERVER_NOFILE=128 to starve the server of descriptors).
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_FLOOD=${SECONDS_FLOOD:-30}
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/{print $2}') GiB"
echo "commit: $(git rev-parse --short HEAD); date: $(date -u +%F)"
cargo build --release --quiet --bin isco-dag
BIN=$PWD/target/release/isco-dag
OUT=bench/out/fuzz
rm -rf "$OUT" && mkdir -p "$OUT"
if [ -f bench/out/store/refs/best.json ]; then
  STORE=bench/out/store
  echo "model: the 150k ngram model of bench/run.sh"
else
  mkdir -p "$OUT/demo" && cp -r pipelines config "$OUT/demo/"
  (cd "$OUT/demo" && "$BIN" demo --dir data > /dev/null && "$BIN" run pipelines/full.toml > /dev/null)
  STORE=$OUT/demo/artifacts/store
  echo "model: the demo model (bench/run.sh not run)"
fi
sed -e "s#^review_dir = .*#review_dir = \"$OUT/review\"#" \
    -e "s#^corrections_dir = .*#corrections_dir = \"$OUT/corrections\"#" config/default.toml > "$OUT/serve.toml"
# SERVER_NOFILE=128 runs the server with that few file descriptors (the client keeps its own).
(
  [ -n "${SERVER_NOFILE:-}" ] && ulimit -n "$SERVER_NOFILE"
  ISCO_DAG_API_TOKEN=fuzz exec "$BIN" serve --store "$STORE" --addr 127.0.0.1:0 --config "$OUT/serve.toml"
) > "$OUT/server.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q "listening on" "$OUT/server.log" && break; sleep 0.1; done
ADDR=$(grep -o "http://[0-9.:]*" "$OUT/server.log" | head -1 | sed 's#http://##')
echo "server pid $PID at $ADDR; server's open-file limit $(awk '/Max open files/{print $4}' /proc/$PID/limits)"
python3 bench/service_fuzz.py --addr "$ADDR" --pid "$PID" --seconds "$SECONDS_FLOOD"
kill $PID; wait $PID 2>/dev/null || true
echo "server log lines: $(wc -l < "$OUT/server.log") (panics: $(grep -c panicked "$OUT/server.log" || true))"
