#!/usr/bin/env bash
# `isco-dag predict` of the 150,000 records of ../shared/data/records_150k.csv (not part of the
# project; titles and duties, no codes) with the ensemble of bench/cascade.sh (run that first),
# every run from a copy of the model without its embedding cache and an empty store, so every
# row the cascade sends on is embedded then. This build and a baseline binary (BASE_BIN, e.g. a
# build of the previous commit) alternate REPS times; prints each wall time, the medians, the
# peak RSS and whether the two builds wrote byte-identical files.
#   BASE_BIN=/tmp/isco-dag-base REPS=3 bash bench/cascade-speed.sh
# MODE=full codes every row with every part (`--no-cascade`). MODEL codes with another model
# directory; SET=section.key=value adds that `-S` to every run (e.g.
# SET=inference.title_only_agreement=false). One untimed run goes first: the first run after
# writing the model copy is seconds slower than the rest.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/isco-dag}
REPS=${REPS:-3}
MODE=${MODE:-cascade}
INPUT=bench/out/cascade_150k.csv
MODEL=${MODEL:-bench/out/cascade/train/model}
[ -f "$INPUT" ] && [ -d "$MODEL" ] || { echo "run bash bench/cascade.sh first" >&2; exit 1; }
cargo build --release --quiet --bin isco-dag
flags=(); [ "$MODE" = full ] && flags+=(--no-cascade)
[ -n "${SET:-}" ] && flags+=(-S "$SET")
declare -A times
# One copy, made before any timed run: writing it back to disk would otherwise overlap the
# first runs.
rm -rf bench/out/speed-model && cp -r "$MODEL" bench/out/speed-model
chmod -R u+w bench/out/speed-model && sync
run() { # label binary
  rm -rf bench/out/speed-store bench/out/speed-model/retrieval/cache-*.bin
  /usr/bin/time -f "%e %M" -o bench/out/speed-time "$2" predict --model bench/out/speed-model \
    --store bench/out/speed-store --input "$INPUT" --output "bench/out/speed_$1.parquet" "${flags[@]}" 2>/dev/null
  read -r wall rss < bench/out/speed-time
  echo "$1: wall $wall s, peak RSS $((rss / 1024)) MB"
  times[$1]+="$wall "
}
run warm-up "$BIN" >/dev/null
for i in $(seq "$REPS"); do
  run new "$BIN"
  [ -n "${BASE_BIN:-}" ] && run base "$BASE_BIN"
done
for label in new ${BASE_BIN:+base}; do
  m=$(echo "${times[$label]}" | tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  echo "$label ($MODE): median $m s = $(echo "150000 / $m" | bc) rows/s end to end"
done
if [ -n "${BASE_BIN:-}" ]; then
  cmp -s bench/out/speed_new.parquet bench/out/speed_base.parquet && echo "outputs byte-identical" || echo "outputs DIFFER"
fi
