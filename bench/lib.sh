# Helpers the bench scripts source (run from the project root).

# store_pipeline FILE NAME EXTENDS STORE [OUT]: bench/out/FILE runs bench/EXTENDS with its own
# store bench/out/STORE and outputs under bench/out/OUT (default: FILE without .toml).
store_pipeline() {
  mkdir -p bench/out
  cat > "bench/out/$1" <<TOML
[pipeline]
name = "$2"
extends = "../$3"
root = "../.."
store = "bench/out/$4"
out_dir = "bench/out/${5:-${1%.toml}}"
TOML
}

# bench/out/cold.toml: the shipped ensemble in its own store, bench/out/store-cold.
cold_pipeline() {
  store_pipeline cold.toml ensemble-150k-cold ensemble-150k.toml store-cold
}

# The ensemble scripts' start: release build, all-MiniLM-L6-v2, bench/out/cold.toml; sets BIN.
ensemble_setup() {
  cargo build --release -q
  BIN=target/release/isco-dag
  $BIN models fetch minilm
  cold_pipeline
}

# link_corrections: ../shared/data/corrections.csv into bench/out/corrections_in/ (where the
# bench pipelines' `corrections` stage reads), removed again when the script exits.
link_corrections() {
  mkdir -p bench/out/corrections_in
  ln -sf "$(realpath ../shared/data/corrections.csv)" bench/out/corrections_in/corrections.csv
  trap 'rm -rf bench/out/corrections_in' EXIT
}

# train_variant FILE NAME EXTENDS PARAMS [OUT_DIR]: a pipeline in bench/out/FILE that extends
# bench/out/EXTENDS with the ensemble's `train` stage taking the inline PARAMS (a TOML inline
# table's body), e.g. train_variant hnsw.toml hnsw cold.toml 'model_kind = "ensemble", seed = 7'.
train_variant() {
  local out=""
  [ -n "${5:-}" ] && out="out_dir = \"$5\""
  cat > "bench/out/$1" <<TOML
[pipeline]
name = "$2"
extends = "$3"
$out

[[stage]]
id = "train"
kind = "train"
replace = true
inputs = { train = "split.train", validation = "split.validation", reference = "../shared/data/isco08_groups.csv", encoder = "models/pretrained/all-MiniLM-L6-v2/*.*" }
params_from = ["model", "training"]
params = { $4 }
TOML
}

# eval_row STORE LABEL: a table row of the store's last run's `evaluate` — LABEL, then for the
# test split, new_occupations_eval and ilo_titles_dev: accuracy (top-3), ECE, and of the rows
# coded at >= 0.9 confidence their share and the share of those right. Needs BIN.
eval_row() {
  "$BIN" runs show last --store "$1" --format json | python3 -c "
import json, sys
r = json.load(sys.stdin)
m = {x['id']: x for x in r['stages']}['evaluate']['metrics']
cells = []
for k in ['test', 'new_occupations_eval', 'ilo_titles_dev']:
    e = m[k]
    cells.append('%.4f (%.4f) ECE %.4f; >= 0.9: %.1f %% of rows, %.1f %% right' % (
        e['accuracy'], e['top3_accuracy'], e['ece'], 100 * e['share_conf_90'], 100 * e['accuracy_conf_90']))
print('| ' + sys.argv[1] + ' | ' + ' | '.join(cells) + ' |')
" "$2"
}

# libtorch_env: libtorch 2.9.0 (the version torch-sys 0.22 is generated for) for
# `--features tch`, without a libtorch download site: taken from the Python registry's `torch`
# wheel once into $WORK (default /tmp/isco-tch; ~2.5 GB), its CUDA libraries removed, with the
# two CUDA runtime libraries libtorch_cpu.so still links (cudart, cupti) from their wheels on the
# Python registry. Sets W, LIBTORCH, LIBTORCH_CXX11_ABI and LD_LIBRARY_PATH.
libtorch_env() {
  W=${WORK:-/tmp/isco-tch}
  if [ ! -f "$W/torch29/torch/lib/libtorch_cpu.so" ]; then
    mkdir -p "$W"
    pip download torch==2.9.0 nvidia-cuda-runtime-cu12==12.8.90 nvidia-cuda-cupti-cu12==12.8.90 --no-deps -d "$W/whl"
    rm -rf "$W/torch29" "$W/nv" && mkdir -p "$W/torch29" "$W/nv"
    unzip -q "$W"/whl/torch-2.9.0-*.whl 'torch/include/*' 'torch/lib/*' 'torch/share/*' -d "$W/torch29"
    rm -f "$W"/torch29/torch/lib/lib{c10_cuda,caffe2_nvrtc,torch_cuda,torch_cuda_linalg,torch_nvshmem}.so
    for w in "$W"/whl/nvidia_*.whl; do unzip -q -o "$w" -d "$W/nv"; done
  fi
  export LIBTORCH="$W/torch29/torch" LIBTORCH_CXX11_ABI=1
  export LD_LIBRARY_PATH="$LIBTORCH/lib:$W/nv/nvidia/cuda_cupti/lib:$W/nv/nvidia/cuda_runtime/lib"
}
