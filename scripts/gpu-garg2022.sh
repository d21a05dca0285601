#!/usr/bin/env bash
# garg2022-fig2 at the paper's setting (d = 20, the 12-layer `standard` GPT-style model, batch 64,
# Adam 1e-4, the curriculum) on a CUDA machine, trained for as many steps as fit in BUDGET_S
# seconds (the paper's 500,000 need hours of eager libtorch steps); the report says how many.
#
#   here:   ./scripts/gpu-check.sh --pack          # the release binary, OpenBLAS and the baseline into .device/
#   there:  BUDGET_S=300 ./scripts/gpu-garg2022.sh OUT
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-${OUT:-gpu-out}}
mkdir -p "$OUT"
BIN=.device/icl-lab
TORCH_LIB=$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH="$TORCH_LIB:$PWD/.device/libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
BUDGET_S=${BUDGET_S:-300}

echo "== timing 300 steps of the paper's model on CUDA"
start=$(date +%s%N)
$BIN train --preset garg2022-fig2 --device cuda --steps 300 --runs /tmp/timing >/dev/null || exit 1
ms=$(( ($(date +%s%N) - start) / 300000000 ))
steps=$(( BUDGET_S * 1000 / (ms > 0 ? ms : 1) / 2000 * 2000 ))
(( steps < 2000 )) && steps=2000
(( steps > 500000 )) && steps=500000
echo "≈ $ms ms/step (CUDA start and two evaluations included) → $steps steps in ${BUDGET_S} s" | tee "$OUT/timing.txt"

echo "== reproduce garg2022-fig2 --steps $steps on CUDA"
TIMEFORMAT='wall_s %R'
time $BIN reproduce garg2022-fig2 --seeds 1 --jobs 1 --device cuda --steps "$steps" \
    --runs /tmp/runs --reports "$OUT/reports" --figures "$OUT/figures" >/dev/null
cp /tmp/runs/garg2022-fig2-*/seed-0/metrics.json "$OUT/metrics.json" 2>/dev/null
cat "$OUT/reports/garg2022-fig2.md" 2>/dev/null | head -40
