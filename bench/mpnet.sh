#!/usr/bin/env bash
# A larger encoder: the 150k ensemble with all-mpnet-base-v2 (12 layers, 768 wide) against
# all-MiniLM-L6-v2 (6 layers, 384 wide), on the 150k records (../shared/data, not part of the
# project). Evaluation only on the evaluation files: nothing is fitted on them.
#   1. bench/ensemble-150k.toml and bench/ensemble-mpnet-150k.toml cold, each in its own store
#      (bench/out/store-minilm, bench/out/store-mpnet), at PRECISION (default bf16: the
#      index's and the queries' products; fp32 on CPUs without AVX-512 BF16);
#   2. the evaluate table row of each (eval_row);
#   3. both encoders' speed at fp32 and bf16 against PyTorch on the same 3,000 records
#      (bench/encoder-speed.sh with ENC=; PY= a Python with sentence-transformers).
#
#   bash bench/mpnet.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
cargo build --release -q
BIN=$PWD/target/release/isco-dag
PRECISION=${PRECISION:-bf16}
$BIN models fetch minilm > /dev/null
$BIN models fetch mpnet > /dev/null
for enc in minilm mpnet; do
  if [ $enc = minilm ]; then base=ensemble-150k.toml; else base=ensemble-mpnet-150k.toml; fi
  rm -rf bench/out/store-$enc bench/out/$enc
  store_pipeline $enc.toml ensemble-150k-$enc $base store-$enc
  echo "== $enc cold, precision $PRECISION"
  /usr/bin/time -f "wall %e s, peak RSS %M KB" $BIN run bench/out/$enc.toml \
    -S model.precision=$PRECISION -S inference.precision=$PRECISION \
    | grep -E "^executed|cascade:" || true
  eval_row bench/out/store-$enc "$enc"
done
echo "== encoder speed (bench/encoder-speed.sh), each encoder at fp32 and bf16"
for enc in all-MiniLM-L6-v2 all-mpnet-base-v2; do
  for p in fp32 bf16; do
    echo "-- $enc $p"
    ENC=models/pretrained/$enc PRECISION=$p NO_COSINE=1 bash bench/encoder-speed.sh
  done
done
