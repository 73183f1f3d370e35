#!/usr/bin/env bash
# The trained encoder against the encoder as downloaded, on the 150k records (../shared/data,
# not part of the project): bench/ensemble-trained-150k.toml cold in a fresh store (every
# stage, the encoder's training, every embedding); the same with title pairs only and no hard
# negatives (the pairs sentence-transformers' own measurement used), with a 600 s and a 1,200 s
# budget; then bench/ensemble-150k.toml in the same store, which reuses the split and retrains
# only `train` with the frozen encoder. Each `evaluate` scores the test split, new_occupations_eval.csv and
# ilo_titles_dev.csv; the table at the end is BENCHMARKS.md's.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
ensemble_setup
store_pipeline trained.toml ensemble-trained-150k-cold ensemble-trained-150k.toml store-trained
store_pipeline frozen.toml ensemble-150k-frozen ensemble-150k.toml store-trained
rm -rf bench/out/store-trained bench/out/trained bench/out/frozen bench/out/results
mkdir -p bench/out/results
keep() { rm -rf "bench/out/results/$2"; cp -r "bench/out/$1/evaluate" "bench/out/results/$2"; }
/usr/bin/time -f "cold trained-encoder ensemble: %e s wall, peak RSS %M KB" \
  $BIN run bench/out/trained.toml --until evaluate
keep trained trained
$BIN run bench/out/trained.toml --until evaluate \
  -S encoder_training.hard_negatives=false -S encoder_training.clause_share=0.0
keep trained titles-only
$BIN run bench/out/trained.toml --until evaluate \
  -S encoder_training.hard_negatives=false -S encoder_training.clause_share=0.0 \
  -S encoder_training.max_seconds=1200
keep trained titles-only-1200
/usr/bin/time -f "frozen-encoder ensemble, same store: %e s wall, peak RSS %M KB" \
  $BIN run bench/out/frozen.toml --until evaluate
keep frozen frozen
python3 bench/metrics_table.py \
  "frozen (as downloaded)=bench/out/results/frozen/metrics.json" \
  "trained (defaults)=bench/out/results/trained/metrics.json" \
  "trained, title pairs only, no hard negatives=bench/out/results/titles-only/metrics.json" \
  "the same, 1,200 s budget=bench/out/results/titles-only-1200/metrics.json"
