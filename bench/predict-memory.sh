#!/usr/bin/env bash
# `isco-dag predict`'s peak memory and wall time on a census-sized file: the 150,000 records
# of ../shared/data/records_150k.csv (not part of the project) six times over, 900,000 rows
# (bench/out/census_900k.csv, written once). This build, then a baseline binary (BASE_BIN, e.g.
# a build of the previous commit) in the same run, each coding the file to CSV, to Parquet, to
# standard output, and as shard 0 of 8 (`--shard 0/8`, one process of a SLURM array), then the
# other 7 shards and `predict merge` of the 8, and shard 0 of 8 of the same rows as a Parquet
# file of 20 columns (the file coded once, bench/out/census_900k.parquet); prints
# each wall time, peak RSS and the output's hash (the same hash: the same bytes).
#   MODEL=bench/out/train/model BASE_BIN=/tmp/isco-dag-base bash bench/predict-memory.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/isco-dag}
MODEL=${MODEL:-best}
INPUT=bench/out/census_900k.csv
if [ ! -f "$INPUT" ]; then
  mkdir -p bench/out
  src=../shared/data/records_150k.csv
  { head -n 1 "$src"; for _ in 1 2 3 4 5 6; do tail -n +2 "$src"; done; } > "$INPUT"
fi
# A Parquet input of the same rows with 20 columns: the file coded once.
PQ_INPUT=bench/out/census_900k.parquet
[ -f "$PQ_INPUT" ] || "$BIN" predict --model "$MODEL" --store bench/out/store --input "$INPUT" -o "$PQ_INPUT" 2>/dev/null
echo "$(($(wc -l < "$INPUT") - 1)) rows, $(du -m "$INPUT" | cut -f1) MB; as Parquet $(du -m "$PQ_INPUT" | cut -f1) MB"
measure() { # label binary what output-args...: writes bench/out/memory_<what>_<label>.csv
  local label=$1 bin=$2 what=$3 out
  shift 3
  out=bench/out/memory_${what}_$label.csv
  /usr/bin/time -f "%e %M" -o bench/out/memory.time "$bin" predict --model "$MODEL" \
    --store bench/out/store --input "$([ "$what" = pq-shard ] && echo "$PQ_INPUT" || echo "$INPUT")" "$@" 2>/dev/null | { [ "$what" = stdout ] && cat > "$out" || cat > /dev/null; }
  [ "$what" = parquet ] && out=${out%.csv}.parquet
  read -r wall kb < bench/out/memory.time
  printf '%-5s %-8s %7.2f s  peak RSS %5d MB  %s\n' "$label" "$what" "$wall" $((kb / 1024)) "$(sha256sum "$out" | cut -c1-12)"
}
for label in new ${BASE_BIN:+base}; do
  b=$BIN; [ "$label" = base ] && b=$BASE_BIN
  measure "$label" "$b" csv -o "bench/out/memory_csv_$label.csv"
  measure "$label" "$b" parquet -o "bench/out/memory_parquet_$label.parquet"
  measure "$label" "$b" stdout
  measure "$label" "$b" shard --shard 0/8 -o "bench/out/memory_shard_$label.csv"
  measure "$label" "$b" pq-shard --shard 0/8 -o "bench/out/memory_pq-shard_$label.csv"
  for i in 1 2 3 4 5 6 7; do
    "$b" predict --model "$MODEL" --store bench/out/store --input "$INPUT" --shard "$i/8" \
      -o "bench/out/memory_shard${i}_$label.csv" 2>/dev/null
  done
  /usr/bin/time -f "%e %M" -o bench/out/memory.time "$b" predict merge -o "bench/out/memory_merge_$label.csv" \
    "bench/out/memory_shard_$label.csv" bench/out/memory_shard[1-7]_"$label".csv 2>/dev/null
  read -r wall kb < bench/out/memory.time
  printf '%-5s %-8s %7.2f s  peak RSS %5d MB  %s\n' "$label" merge "$wall" $((kb / 1024)) \
    "$(sha256sum "bench/out/memory_merge_$label.csv" | cut -c1-12)"
done
rm -f bench/out/memory_* bench/out/memory.time
