#!/usr/bin/env bash
# The cross-encoder re-ranker's ablation on the 150k records (../shared/data, not part of the
# project): frozen vs trained bi-encoder, with and without the re-ranker, in one store.
# bench/ensemble-reranked-150k.toml cold (the encoder's training, the ensemble, the re-ranker's
# training, evaluation), then bench/ensemble-frozen-reranked-150k.toml in the same store (the
# split is reused; `train` with the encoder as downloaded and a re-ranker for that model are
# trained). Each re-ranked model is evaluated as shipped and again with `inference.rerank=false`
# (only `evaluate` re-runs): the model without its re-ranker is exactly the model it was
# trained for. Each `evaluate` scores the test split, new_occupations_eval.csv and
# ilo_titles_dev.csv; the table at the end is BENCHMARKS.md's.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
ensemble_setup
store_pipeline reranked.toml ensemble-reranked-150k-cold ensemble-reranked-150k.toml store-reranked
store_pipeline frozen-reranked.toml ensemble-frozen-reranked-150k ensemble-frozen-reranked-150k.toml store-reranked
rm -rf bench/out/store-reranked bench/out/reranked bench/out/frozen-reranked bench/out/results-reranker
mkdir -p bench/out/results-reranker
keep() { rm -rf "bench/out/results-reranker/$2"; cp -r "bench/out/$1/evaluate" "bench/out/results-reranker/$2"; }
/usr/bin/time -f "cold trained-encoder ensemble with re-ranker: %e s wall, peak RSS %M KB" \
  $BIN run bench/out/reranked.toml --until evaluate
keep reranked trained-reranked
$BIN run bench/out/reranked.toml --until evaluate -S inference.rerank=false
keep reranked trained
/usr/bin/time -f "frozen-encoder ensemble with re-ranker, same store: %e s wall, peak RSS %M KB" \
  $BIN run bench/out/frozen-reranked.toml --until evaluate
keep frozen-reranked frozen-reranked
$BIN run bench/out/frozen-reranked.toml --until evaluate -S inference.rerank=false
keep frozen-reranked frozen
python3 bench/metrics_table.py \
  "frozen bi-encoder=bench/out/results-reranker/frozen/metrics.json" \
  "frozen bi-encoder + re-ranker=bench/out/results-reranker/frozen-reranked/metrics.json" \
  "trained bi-encoder=bench/out/results-reranker/trained/metrics.json" \
  "trained bi-encoder + re-ranker=bench/out/results-reranker/trained-reranked/metrics.json"
