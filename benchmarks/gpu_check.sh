#!/usr/bin/env bash
# One-device GPU check (issue 15 item 4): the 760M Transformer++ / Titans / HOPE train steps at
# T=4096 in bf16, compile time, tokens/s, peak memory, MFU -> $OUT/gpu_check.json (or --out=DIR).
# ~8 minutes at most (--budget=450 s for the three models, --timeout=200 s each).
#   bash benchmarks/gpu_check.sh                 # on the GPU machine
#   bash benchmarks/gpu_check.sh --tiny          # CPU smoke test (tiny configs, T=256)
# Needs a GPU jax (`pip install -U "jax[cuda12]"`); requirements.txt installs the CPU one, and
# the device machine has no internet, so the environment must be carried there.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-$(for p in .venv/bin/python venv/bin/python; do [ -x "$p" ] && echo "$p" && break; done; true)}"
PY="${PY:-python3}"
# the children need the device's memory: let XLA take most of it, grown on demand
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.95}"
tiny=0
for a in "$@"; do [ "$a" = "--tiny" ] && tiny=1; done
if [ "$tiny" = 0 ]; then
  backend="$("$PY" -c 'import jax; print(jax.default_backend())' 2>/dev/null || echo none)"
  if [ "$backend" != "gpu" ]; then
    echo "error: $PY has jax backend '$backend', not gpu." >&2
    echo "  install a CUDA jax first: $PY -m pip install -U \"jax[cuda12]\" (or PYTHON=/path/to/python with one)" >&2
    echo "  (no internet on the device machine: carry a venv that has it; --tiny runs on CPU)" >&2
    exit 3
  fi
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
exec timeout 480 "$PY" benchmarks/gpu_check.py "$@"
