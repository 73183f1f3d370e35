# Helpers the bench scripts source (run from the project root).

# bench/out/cold.toml: the shipped ensemble (bench/ensemble-150k.toml) in its own store,
# bench/out/store-cold, with outputs under bench/out/cold.
cold_pipeline() {
  mkdir -p bench/out
  cat > bench/out/cold.toml <<'TOML'
[pipeline]
name = "ensemble-150k-cold"
extends = "../ensemble-150k.toml"
root = "../.."
store = "bench/out/store-cold"
out_dir = "bench/out/cold"
TOML
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
