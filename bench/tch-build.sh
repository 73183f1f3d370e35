#!/usr/bin/env bash
# Builds and smoke-tests `--features tch` (burn-tch on libtorch, CPU) with libtorch 2.9.0 from
# the Python registry's `torch` wheel (bench/lib.sh `libtorch_env`; needs pip and ~2.5 GB), then
# runs the demo `pipelines/full.toml` with the libtorch binary in a fresh clone.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
libtorch_env
/usr/bin/time -f "build with --features tch: %e s" cargo build --release --features tch
rm -rf "$W/demo" && git clone -q . "$W/demo"
(cd "$W/demo" && /usr/bin/time -f "demo full.toml on libtorch: %e s wall, peak RSS %M KB" "$OLDPWD/target/release/isco-dag" run pipelines/full.toml)
