#!/usr/bin/env bash
# Submits the shards as one SLURM array and the merge as a job that runs when all succeed.
#
#   INPUT=/shared/census.csv OUT_DIR=/shared/coded ISCO_DAG_REMOTE=s3://bucket/isco-dag \
#     deploy/slurm/submit.sh 16
#
# Writes $OUT_DIR/coded.csv (or .parquet with OUT_EXT=parquet); prints the two job ids.
# With WAIT=1 it returns only when the merge has finished (and fails if it failed).
set -euo pipefail
shards="${1:?give the number of shards}"
here="$(cd "$(dirname "$0")" && pwd)"
: "${OUT_DIR:?set OUT_DIR to a directory every node can write}"
bin="${ISCO_DAG_BIN:-isco-dag}"
ext="${OUT_EXT:-csv}"
array=$(sbatch --parsable --array="0-$((shards - 1))" "$here/predict-array.sbatch")
parts=()
for ((i = 0; i < shards; i++)); do parts+=("$OUT_DIR/part-$i.$ext"); done
wait_flag=()
[ "${WAIT:-0}" = 1 ] && wait_flag=(--wait)
merge=$(sbatch --parsable "${wait_flag[@]}" --dependency="afterok:$array" --job-name=isco-dag-merge \
  --output="isco-dag-merge-%j.log" \
  --wrap="$(printf '%q ' "$bin" predict merge --output "$OUT_DIR/coded.$ext" "${parts[@]}")")
echo "shards: job $array; merge: job $merge -> $OUT_DIR/coded.$ext"
