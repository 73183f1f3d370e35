#!/usr/bin/env bash
# Exact against approximate (HNSW) retrieval search for the ensemble, on the 150k records
# (../shared/data, not part of the project; see BENCHMARKS.md):
#  1. the shipped ensemble, cold, in bench/out/store-cold (skipped when bench/ensemble.sh or an
#     earlier run of this script left it there);
#  2. the same model with `exact_search_limit = 0` (both indexes searched through HNSW graphs)
#     on the same store and split: `train` again (embeddings come from the cache) and
#     `evaluate`; the metrics of both side by side;
#  3. `examples/ann_scale.rs`: queries/s, recall and score agreement of both searches as the
#     index grows past the 150k records' 62k entries (SIZES, default 62506,250000,500000).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
ensemble_setup
train_variant hnsw.toml ensemble-150k-hnsw cold.toml \
  'model_kind = "ensemble", field_weights = [], exact_search_limit = 0' bench/out/hnsw
[ -f bench/out/cold/evaluate/metrics.json ] ||
  /usr/bin/time -f "cold ensemble run (exact search): %e s wall, peak RSS %M KB" $BIN run bench/out/cold.toml
/usr/bin/time -f "HNSW ensemble, train + evaluate: %e s wall, peak RSS %M KB" \
  $BIN run bench/out/hnsw.toml --until evaluate -v
python3 - <<'PY'
import json
a = json.load(open('bench/out/cold/evaluate/metrics.json'))
b = json.load(open('bench/out/hnsw/evaluate/metrics.json'))
print('| set | metric | exact | HNSW |')
print('|---|---|---|---|')
for s in ['test', 'test_true_labels', 'new_occupations_eval']:
    for k in ['accuracy', 'macro_f1', 'top3_accuracy', 'ece']:
        if k in a.get(s, {}):
            print(f"| {s} | {k} | {a[s][k]:.4f} | {b[s][k]:.4f} |")
PY
$BIN runs show last --store bench/out/store-cold --format json | python3 -c "
import json, sys
r = json.load(sys.stdin)
for s in r['stages']:
    if s['id'] in ('train', 'evaluate'):
        m = s.get('metrics', {}).get('retrieval', {})
        print(s['id'], s['outcome'], f\"{s.get('duration_s', 0):.1f} s\", 'search:', m.get('search'), 'graph build s:', m.get('search_graph_seconds'))"
MODEL=$(find bench/out/hnsw/train -name index.json -path '*retrieval*' | head -1 | xargs dirname | xargs dirname)
cargo run --release -q -p classifier --example ann_scale -- \
  "$MODEL" bench/out/store-cold/shared/embeddings ../shared/data/new_occupations_eval.csv \
  "${SIZES:-62506,250000,500000}"
