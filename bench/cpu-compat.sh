#!/usr/bin/env bash
# Runs the default (x86-v4) release binary on emulated CPUs without AVX-512 (Haswell: AVX2)
# and without AVX at all (qemu64: SSE2), to check that burn/gemm and the embedding-bag kernel
# pick their code paths at run time. Needs Debian's qemu-user. Run from the project root.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v qemu-x86_64 > /dev/null || { echo "apt-get install qemu-user" >&2; exit 1; }
cargo build --release --quiet
BIN=$(pwd)/target/release/isco-dag
OUT=bench/out/cpu-compat
rm -rf $OUT && mkdir -p $OUT/project/data
cp -r pipelines config $OUT/project/
cp -r data/raw data/reference data/demo $OUT/project/data/
(cd $OUT/project && $BIN run pipelines/full.toml > ../native.log && $BIN predict --input data/demo/new_jobs.csv --output ../native.csv > /dev/null)
for cpu in Haswell qemu64; do
  echo "== $cpu: predict with the natively trained model"
  (cd $OUT/project && qemu-x86_64 -cpu $cpu $BIN predict --input data/demo/new_jobs.csv --output ../$cpu.csv 2>/dev/null | tail -1)
  echo "rows differing from the native run: $(diff $OUT/native.csv $OUT/$cpu.csv | grep -c '^>' || true)"
done
echo "== Haswell: the whole demo pipeline (fresh store), training included"
rm -rf $OUT/project/artifacts
(cd $OUT/project && qemu-x86_64 -cpu Haswell $BIN run pipelines/full.toml 2>/dev/null | grep -E "test:|full:")
echo "== native, for comparison"
grep -E "test:|full:" $OUT/native.log
