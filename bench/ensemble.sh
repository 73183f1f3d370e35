#!/usr/bin/env bash
# The ensemble on the 150k records (../shared/data, not part of the project): a cold run in a
# fresh store (every stage, every embedding), then `train` forced again to show the embedding
# cache, then the ngram baseline on the same split, then encoder throughput against PyTorch.
# Needs `isco-dag models fetch minilm` (done here) and, for the PyTorch side, a venv with
# sentence-transformers (PY=..., see bench/encoder_parity.py).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
ensemble_setup
store_pipeline cold-ngram.toml ngram-150k-cold-store full-150k.toml store-cold cold
rm -rf bench/out/store-cold bench/out/cold
/usr/bin/time -f "cold ensemble run: %e s wall, peak RSS %M KB" $BIN run bench/out/cold.toml
/usr/bin/time -f "train forced again: %e s wall, peak RSS %M KB" $BIN run bench/out/cold.toml --force train --until evaluate
$BIN run bench/out/cold-ngram.toml --until evaluate
bash bench/encoder-speed.sh
