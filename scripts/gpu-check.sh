#!/usr/bin/env bash
# One prepared run on a CUDA machine with PyTorch 2.11 (no Rust toolchain there): the release
# binary built here, run against that machine's libtorch.
#
#   here:   ./scripts/gpu-check.sh --pack          # copies the binary, OpenBLAS and the baseline into .device/
#   there:  ./scripts/gpu-check.sh [OUT]           # writes OUT/{gpu.txt,bench-cuda.txt,baselines-cuda.txt,...}
#
# What it measures, each in the same command so ratios are meaningful:
#   1. `icl-lab bench --device cuda` (1, 2, 3 recurrent layers; 5 separate layers);
#   2. ../shared/bench/lsa_bench.py unedited, in PyTorch eager and JAX jit on the same GPU
#      (PyTorch's default device set to cuda before the script runs; JAX picks the GPU itself);
#   3. a CUDA training run of vo2023-fig2 at the paper's setting, with its wall time, to compare
#      with the CPU report (reports/vo2023-fig2.md).
set -uo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "--pack" ]]; then
    mkdir -p .device/libs
    grep -qx '/.device/' .git/info/exclude 2>/dev/null || echo '/.device/' >>.git/info/exclude
    cp target/release/icl-lab .device/
    for lib in libopenblas.so.0 libgfortran.so.5 libquadmath.so.0; do
        cp -L "/lib/x86_64-linux-gnu/$lib" .device/libs/
    done
    cp ../shared/bench/lsa_bench.py .device/
    du -sh .device
    exit 0
fi

OUT=${1:-${OUT:-gpu-out}}
mkdir -p "$OUT"
BIN=.device/icl-lab
TORCH_LIB=$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH="$TORCH_LIB:$PWD/.device/libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PYTHONUNBUFFERED=1

{
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
    python3 -c 'import torch, jax; print("torch", torch.__version__, "jax", jax.__version__, jax.devices())'
    nproc
} 2>&1 | tee "$OUT/gpu.txt"

echo "== icl-lab bench --device cuda"
$BIN bench --device cuda --threads 1 --steps "${BENCH_STEPS:-500}" 2>&1 | tee "$OUT/bench-cuda.txt"

echo "== baselines (../shared/bench/lsa_bench.py, unedited) on the same GPU"
cat >/tmp/lsa_cuda.py <<'EOF'
import runpy, sys, torch
torch.set_default_device("cuda")
sys.argv = [".device/lsa_bench.py"] + sys.argv[1:]
runpy.run_path(".device/lsa_bench.py", run_name="__main__")
EOF
for layers in 1 2 3; do
    echo "layers=$layers $(python3 /tmp/lsa_cuda.py torch 500 $layers 2>&1 | tail -1)"
    echo "layers=$layers $(python3 .device/lsa_bench.py jax 500 $layers 2>&1 | tail -1)"
done 2>&1 | tee "$OUT/baselines-cuda.txt"

echo "== vo2023-fig2 trained on CUDA"
TIMEFORMAT='wall_s %R'
{ time $BIN train --preset vo2023-fig2 --device cuda --runs /tmp/gpu-runs --seed 0 2>&1 | tail -5; } 2>&1 | tee "$OUT/train-cuda.txt"
cp /tmp/gpu-runs/*/seed-0/metrics.json "$OUT/train-cuda-metrics.json" 2>/dev/null || true
