#!/usr/bin/env bash
# Sets up (idempotent) and runs the whole test suite (Rust, then the Python module's pytest). Tests run in release: one build serves the
# CLI and the tests, and torch-sys is compiled once.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo test --release --workspace
# The Python module against the CLI (prompts bit for bit, learners, the tournament, the examples).
.venv/bin/python -m pytest -q python/tests
