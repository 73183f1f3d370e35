#!/usr/bin/env bash
# The store's shared sentence-vector cache (`<store>/shared/embeddings/`) on the 150k records
# (../shared/data, not part of the project). In a fresh store: a cold ensemble run (evaluate
# embeds the test split), `evaluate` forced again (every vector from the cache), then a second
# ensemble model (training seed 7) whose evaluate, and promote's re-scoring of the first
# model (now `best`), read the test rows' vectors from the cache. Per-stage times and
# `embeddings_computed` come from the run records. Needs `isco-dag models fetch minilm`.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/isco-dag}
source bench/lib.sh
store_pipeline sc.toml ensemble-150k-shared-cache ensemble-150k.toml store-sc
train_variant sc-seed7.toml ensemble-150k-shared-cache-seed7 sc.toml \
  'model_kind = "ensemble", duties_char_ngrams = true, seed = 7'
rm -rf bench/out/store-sc bench/out/sc
times() {
  $BIN runs show last --store bench/out/store-sc --format json | python3 -c "
import json, sys
r = json.load(sys.stdin)
for s in r['stages']:
    if s['outcome'] == 'executed':
        m = s.get('metrics') or {}
        extra = f\", embeddings computed {m['embeddings_computed']}\" if 'embeddings_computed' in m else ''
        print(f\"  {s['id']}: {s.get('seconds', s.get('duration_s', 0)):.1f} s{extra}\")"
}
/usr/bin/time -f "cold ensemble run: %e s wall, peak RSS %M KB" $BIN run bench/out/sc.toml > /dev/null; times
/usr/bin/time -f "evaluate forced: %e s wall" $BIN run bench/out/sc.toml --force evaluate > /dev/null; times
/usr/bin/time -f "second model (seed 7): %e s wall" $BIN run bench/out/sc-seed7.toml > /dev/null; times
du -sh bench/out/store-sc/shared/embeddings
