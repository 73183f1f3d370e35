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
