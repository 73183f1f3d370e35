#!/usr/bin/env bash
# The ensemble on the 150k records (../shared/data, not part of the project): a cold run in a
# fresh store (every stage, every embedding), then `train` forced again to show the embedding
# cache, then the ngram baseline on the same split, then encoder throughput against PyTorch.
# Needs `isco-dag models fetch minilm` (done here) and, for the PyTorch side, a venv with
# sentence-transformers (PY=..., see bench/encoder_parity.py).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q
BIN=target/release/isco-dag
$BIN models fetch minilm
source bench/lib.sh
cold_pipeline
cat > bench/out/cold-ngram.toml <<'TOML'
[pipeline]
name = "ngram-150k-cold-store"
extends = "../full-150k.toml"
root = "../.."
store = "bench/out/store-cold"
out_dir = "bench/out/cold"
TOML
rm -rf bench/out/store-cold bench/out/cold
/usr/bin/time -f "cold ensemble run: %e s wall, peak RSS %M KB" $BIN run bench/out/cold.toml
/usr/bin/time -f "train forced again: %e s wall, peak RSS %M KB" $BIN run bench/out/cold.toml --force train --until evaluate
$BIN run bench/out/cold-ngram.toml --until evaluate
bash bench/encoder-speed.sh
