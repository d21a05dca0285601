#!/usr/bin/env bash
# Sets up (idempotent) and runs the whole test suite. Tests run in release: one build serves the
# CLI and the tests, and torch-sys is compiled once.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo test --release --workspace
