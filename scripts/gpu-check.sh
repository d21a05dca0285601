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
#      with the CPU report (reports/vo2023-fig2.md);
#   4. the GPT-style family (issue #24): a short run on CPU and on CUDA from the same config
#      (the losses must agree to float rounding), `icl-lab bench --device cuda --families gpt`
#      with host-drawn and device-drawn batches (`train.data = "device"`), and Garg et al.'s model
#      as their code builds it (../shared/bench/garg_gpt_bench.py, unedited) on the same GPU
#      where `transformers` imports there (packed into .device/pylib.tar.xz by --pack).
# Budget: sections 1-3 took about 4 minutes on an H200; section 4 is sized by GPT_STEPS (200).
set -uo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "--pack" ]]; then
    mkdir -p .device/libs
    grep -qx '/.device/' .git/info/exclude 2>/dev/null || echo '/.device/' >>.git/info/exclude
    cp target/release/icl-lab .device/
    for lib in libopenblas.so.0 libgfortran.so.5 libquadmath.so.0; do
        cp -L "/lib/x86_64-linux-gnu/$lib" .device/libs/
    done
    cp ../shared/bench/lsa_bench.py ../shared/bench/garg_gpt_bench.py .device/
    # transformers for garg_gpt_bench.py (pure Python; the GPU machine has torch but no network).
    if [ -x .bench-venv/bin/python ]; then
        # With its dependencies, but not numpy (the GPU machine's own serves its torch).
        rm -rf .device/pylib
        .bench-venv/bin/python -m pip install -q --disable-pip-version-check --target .device/pylib transformers \
            >/dev/null 2>&1 || echo "(could not pack transformers; the GPU Garg baseline will be skipped)"
        # Pruned to what GPT2Model imports (the carry to the GPU machine holds 64 MiB in all) and
        # compressed: about 5 MB.
        (cd .device/pylib && rm -rf numpy numpy-* numpy.libs hf_xet tokenizers pydantic pydantic_core pygments rich bin)
        for d in .device/pylib/transformers/models/*/; do
            case "$(basename "$d")" in gpt2 | auto) ;; *) rm -rf "$d" ;; esac
        done
        find .device/pylib -name __pycache__ -type d -prune -exec rm -rf {} +
        tar -C .device -cJf .device/pylib.tar.xz pylib && rm -rf .device/pylib
    fi
    cat >.device/gpt-tiny.toml <<'TOML'
name = "gpt-cuda-check"
[task]
name = "gaussian_linear"
x_dim = 5
context_len = 10
[gpt]
layers = 3
heads = 2
width = 32
[train]
steps = 200
batch = 64
lr = 0.001
[eval]
every = 100
tasks = 500
TOML
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
$BIN bench --device cuda --families lsa --threads 1 --steps "${BENCH_STEPS:-500}" 2>&1 | tee "$OUT/bench-cuda.txt"

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

echo "== GPT-style: the same short run on CPU and on CUDA (losses agree to float rounding)"
for dev in cpu cuda; do
    $BIN train --config .device/gpt-tiny.toml --device "$dev" --runs "/tmp/gpt-check-$dev" >/dev/null 2>&1 ||
        echo "training on $dev failed"
done
python3 - <<'PY' 2>&1 | tee "$OUT/gpt-cuda-vs-cpu.txt"
import glob, json
rows = {d: json.load(open(glob.glob(f"/tmp/gpt-check-{d}/*/seed-0/metrics.json")[0]))["rows"] for d in ("cpu", "cuda")}
worst = max(abs(a["loss"] - b["loss"]) / abs(a["loss"]) for a, b in zip(rows["cpu"], rows["cuda"]))
for a, b in zip(rows["cpu"], rows["cuda"]):
    print(f"step {a['step']:>4}: cpu {a['loss']:.6f}  cuda {b['loss']:.6f}")
print(f"largest relative difference {worst:.2e}: {'AGREE' if worst < 1e-3 else 'DIFFER'} (bound 1e-3)")
PY

echo "== GPT-style: icl-lab bench --device cuda --families gpt (host-drawn, then device-drawn batches)"
for data in host device; do
    $BIN bench --device cuda --families gpt --gpt quick,standard --engines libtorch --threads 1 \
        --gpt-steps "${GPT_STEPS:-200}" --together 0 --gpt-data "$data" 2>&1
done | tee "$OUT/bench-gpt-cuda.txt"

echo "== Garg et al.'s code (garg_gpt_bench.py, unedited) on the same GPU"
cat >/tmp/garg_cuda.py <<'PY'
import runpy, sys, torch
torch.set_default_device("cuda")
sys.argv = [".device/garg_gpt_bench.py"] + sys.argv[1:]
runpy.run_path(".device/garg_gpt_bench.py", run_name="__main__")
PY
[ -f .device/pylib.tar.xz ] && tar -C /tmp -xJf .device/pylib.tar.xz
export PYTHONPATH="/tmp/pylib${PYTHONPATH:+:$PYTHONPATH}"
if python3 -c 'import transformers' 2>/dev/null; then
    for args in "5 11 3 2 32 ${GPT_STEPS:-200}" "20 41 12 8 256 ${GPT_STEPS:-200}"; do
        echo "$(python3 /tmp/garg_cuda.py $args 2>&1 | tail -1)"
    done 2>&1 | tee "$OUT/baselines-gpt-cuda.txt"
else
    echo "transformers does not import on this machine: the GPU Garg baseline is skipped" | tee "$OUT/baselines-gpt-cuda.txt"
fi
