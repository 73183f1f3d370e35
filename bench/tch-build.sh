#!/usr/bin/env bash
# Builds and smoke-tests `--features tch` (burn-tch on libtorch, CPU) without a libtorch
# download site: libtorch 2.9.0 (the version torch-sys 0.22 is generated for) is taken from
# the Python registry's `torch` wheel, its CUDA libraries removed, and the two CUDA runtime libraries that
# libtorch_cpu.so still links (cudart, cupti) come from their wheels on the Python registry. Then the demo
# `pipelines/full.toml` runs with the libtorch binary in a fresh clone. Needs pip and ~2.5 GB.
set -euo pipefail
cd "$(dirname "$0")/.."
W=${WORK:-/tmp/isco-tch}
mkdir -p "$W"
pip download torch==2.9.0 nvidia-cuda-runtime-cu12==12.8.90 nvidia-cuda-cupti-cu12==12.8.90 --no-deps -d "$W/whl"
rm -rf "$W/torch29" "$W/nv" && mkdir -p "$W/torch29" "$W/nv"
unzip -q "$W"/whl/torch-2.9.0-*.whl 'torch/include/*' 'torch/lib/*' 'torch/share/*' -d "$W/torch29"
rm -f "$W"/torch29/torch/lib/lib{c10_cuda,caffe2_nvrtc,torch_cuda,torch_cuda_linalg,torch_nvshmem}.so
for w in "$W"/whl/nvidia_*.whl; do unzip -q -o "$w" -d "$W/nv"; done
export LIBTORCH="$W/torch29/torch" LIBTORCH_CXX11_ABI=1
export LD_LIBRARY_PATH="$LIBTORCH/lib:$W/nv/nvidia/cuda_cupti/lib:$W/nv/nvidia/cuda_runtime/lib"
/usr/bin/time -f "build with --features tch: %e s" cargo build --release --features tch
rm -rf "$W/demo" && git clone -q . "$W/demo"
(cd "$W/demo" && /usr/bin/time -f "demo full.toml on libtorch: %e s wall, peak RSS %M KB" "$OLDPWD/target/release/isco-dag" run pipelines/full.toml)
