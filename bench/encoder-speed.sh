#!/usr/bin/env bash
# Encoder throughput, burn (flex + x86-v4) against PyTorch CPU, same model, same rows, batch 32,
# sequence length <= 64. Uses ../shared/data/records_150k.csv (not part of the project) and
# models/pretrained/all-MiniLM-L6-v2 (`isco-dag models fetch minilm`; ENC= another encoder
# directory). PyTorch comes from a
# venv: PY=/path/to/python (default /tmp/pyref/bin/python; see bench/encoder_parity.py).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-/tmp/pyref/bin/python}
ENC=${ENC:-models/pretrained/all-MiniLM-L6-v2}
CSV=../shared/data/records_150k.csv
ROWS=${ROWS:-3000}
# x86-v4 as in the default isco-dag build (the classifier crate alone does not enable it).
cargo build --release -q -p classifier --features x86-v4 --example embed_speed
for field in title record; do
  for i in 1 2; do
    target/release/examples/embed_speed "$ENC" "$CSV" "$ROWS" 64 "$field"
    "$PY" bench/encoder_speed.py "$ENC" "$CSV" "$ROWS" 64 "$field" 2>/dev/null
  done
done
