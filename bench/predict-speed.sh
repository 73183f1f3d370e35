#!/usr/bin/env bash
# `isco-dag predict` end to end on the 150k records without their codes (../shared/data, not
# part of the project; bench/run.sh writes bench/out/predict_150k.csv and trains the model).
# Runs this build REPS times, then a baseline binary (BASE_BIN, e.g. a build of the previous
# commit) REPS times, each after one discarded warm-up run (on this VM the first run after
# switching binaries is 0.5-0.7 s slower, whichever binary it is), and prints each wall time
# and the medians.
#   MODEL=bench/out/train/model BASE_BIN=/tmp/isco-dag-base bash bench/predict-speed.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/isco-dag}
MODEL=${MODEL:-best}
REPS=${REPS:-7}
INPUT=bench/out/predict_150k.csv
[ -f "$INPUT" ] || { echo "run bash bench/run.sh first (it writes $INPUT)"; exit 1; }
run() { # binary label
  local t0 t1
  t0=$(date +%s.%N)
  "$1" predict --model "$MODEL" --store bench/out/store --input "$INPUT" --output "bench/out/predicted_$2.parquet" 2>/dev/null
  t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc
}
for label in new ${BASE_BIN:+base}; do
  b=$BIN; [ "$label" = base ] && b=$BASE_BIN
  run "$b" "$label" > /dev/null
  times=""
  for i in $(seq "$REPS"); do
    t=$(run "$b" "$label"); times+="$t "
    echo "run $i $label: $t s"
  done
  m=$(echo "$times" | tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  echo "$label: median $m s = $(echo "150000 / $m" | bc) rows/s end to end"
done
/usr/bin/time -f "peak RSS %M KB" "$BIN" predict --model "$MODEL" --store bench/out/store --input "$INPUT" --output bench/out/predicted_new.parquet 2>&1 | tail -1
