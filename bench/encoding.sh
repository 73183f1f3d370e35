#!/usr/bin/env bash
# Records saved in a legacy code page (`[data] encoding`), on the 150k records
# (../shared/data, not part of the project): records_150k.csv re-saved as windows-1252 (a
# spreadsheet's plain "CSV" export on Western European Windows; the few characters that code
# page lacks become `?`) into bench/out/, then `clean` alone, three times each, on
#   1. the UTF-8 original;
#   2. the windows-1252 copy read as UTF-8 (the default);
#   3. the windows-1252 copy with `-S data.encoding=windows-1252`.
# Prints each run's `clean` line and its summary.
#
#   bash bench/encoding.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=../shared/data
cargo build --release -q
BIN=target/release/isco-dag
mkdir -p bench/out
python3 - "$DATA/records_150k.csv" bench/out/records_150k_1252.csv <<'PY'
import sys
text = open(sys.argv[1], encoding="utf-8", newline="").read()
lacking = sum(1 for c in text if c.encode("cp1252", errors="replace") == b"?" and c != "?")
open(sys.argv[2], "wb").write(text.encode("cp1252", errors="replace"))
print(f"windows-1252 copy: {lacking} characters the code page lacks written as ?")
PY
for name in utf8 cp1252; do
  records="$DATA/records_150k.csv"
  [ "$name" = cp1252 ] && records=bench/out/records_150k_1252.csv
  cat > "bench/out/encoding-$name.toml" <<TOML
[pipeline]
name = "encoding-$name"
config = "../../config/default.toml"
root = "../.."
store = "bench/out/store-encoding"
out_dir = "bench/out/encoding-$name"

[[stage]]
id = "clean"
kind = "clean"
inputs = { records = "$records", reference = "$DATA/isco08_groups.csv" }
params_from = ["data"]
TOML
done
for i in 1 2 3; do
  for run in "utf8" "cp1252" "cp1252 -S data.encoding=windows-1252"; do
    set -- $run
    echo "== $run ($i)"
    $BIN run "bench/out/encoding-$1.toml" --force clean "${@:2}" | grep -A1 "executed  clean"
  done
done
