#!/usr/bin/env bash
# Sets up (idempotent) and reproduces the headline figure, von Oswald et al. 2023 Fig. 2, on CPU.
# Extra arguments go to `icl-lab reproduce` (e.g. --seeds 5).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
target/release/icl-lab reproduce vo2023-fig2 "$@"
