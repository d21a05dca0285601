#!/usr/bin/env bash
# Our training step beside the plain PyTorch-eager and JAX-jit baselines
# (../shared/bench/lsa_bench.py, run unedited), in one command on this machine, with the ratio
# to the faster baseline per depth and the roofline columns (FLOPs, GFLOP/s, % of the f32 matmul
# peak measured in the same command).
#
# Sets up (once) the baselines' own venv .bench-venv with the full PyTorch 2.11.0 wheel from PyPI
# and jax[cpu]; a second run skips it. Extra arguments go to `icl-lab bench`, e.g.
#   scripts/bench-baselines.sh --steps 500 --engines fused --threads 1
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.bench-venv
SCRIPT=${BASELINE_SCRIPT:-../shared/bench/lsa_bench.py}
if [ ! -f "$VENV/.icl-lab-baselines" ]; then
  echo "setting up $VENV (torch==2.11.0, jax[cpu]) ..."
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q torch==2.11.0 "jax[cpu]"
  touch "$VENV/.icl-lab-baselines"
fi
bash scripts/setup.sh >/dev/null
cargo build --release -q
echo "# $(date -u +%FT%TZ) $(uname -n), $(nproc) cores; $("$VENV/bin/python" -c 'import torch, jax; print("torch", torch.__version__, "jax", jax.__version__)')"
exec ./target/release/icl-lab bench --baseline-python "$VENV/bin/python" --baseline-script "$SCRIPT" "$@"
