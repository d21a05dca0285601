#!/usr/bin/env bash
# Our training step beside the plain PyTorch-eager and JAX-jit baselines
# (../shared/bench/lsa_bench.py, run unedited), and the GPT-style step beside Garg et al.'s model
# as their code builds it (../shared/bench/garg_gpt_bench.py, HF GPT2Model, run unedited), in one
# command on this machine, with the ratio to the faster baseline per depth and size and the
# roofline columns (FLOPs, GFLOP/s, % of the f32 matmul peak measured in the same command).
#
# Sets up (once) the baselines' own venv .bench-venv with the full PyTorch 2.11.0 wheel from PyPI,
# jax[cpu] and transformers; a second run skips it. Extra arguments go to `icl-lab bench`, e.g.
#   scripts/bench-baselines.sh --steps 500 --engines fused --threads 1
#   scripts/bench-baselines.sh --families gpt --gpt quick
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.bench-venv
SCRIPT=${BASELINE_SCRIPT:-../shared/bench/lsa_bench.py}
if [ ! -f "$VENV/.icl-lab-baselines-2" ]; then
  echo "setting up $VENV (torch==2.11.0, jax[cpu], transformers) ..."
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q torch==2.11.0 "jax[cpu]" transformers
  touch "$VENV/.icl-lab-baselines-2"
fi
bash scripts/setup.sh >/dev/null
cargo build --release -q
echo "# $(date -u +%FT%TZ) $(uname -n), $(nproc) cores; $("$VENV/bin/python" -c 'import torch, jax, transformers; print("torch", torch.__version__, "jax", jax.__version__, "transformers", transformers.__version__)')"
exec ./target/release/icl-lab bench --baseline-python "$VENV/bin/python" --baseline-script "$SCRIPT" \
  --gpt-baseline-script "${GPT_BASELINE_SCRIPT:-../shared/bench/garg_gpt_bench.py}" "$@"
