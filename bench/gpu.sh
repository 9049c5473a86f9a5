#!/usr/bin/env bash
# The lens at full model size on one GPU, in one call of under 8 minutes (issue 15, item 4).
#
# Builds Stable Diffusion 2.1 (768 px), DeepFloyd IF-I-XL stage I (64 px), SDXL (1024 px) and FLUX.1-dev
# (1024 px) with random weights, from the component configs in bench/archs/*.json (nothing is downloaded;
# the machine needs no internet), and for each: times the lens sweep (every layer x 4 seeds, items batched
# across layers) against the official-style loop (one stock pipeline call per layer, seeds batched), counts
# the denoiser's, text encoders' and VAE's FLOPs, and reports images/s, the lens/loop ratio, achieved
# TFLOP/s, MFU (against the GPU's dense bf16 peak; $DLENS_PEAK_TFLOPS for a GPU not in the table), peak
# CUDA memory, and the host-device syncs and copies per denoising step. Prints a markdown table; writes
# every figure as JSON (--out, default bench-gpu.json). The code is python/diffusion_lens/gpu_bench.py
# (its --help lists the options; this script passes every argument on).
#
# To fit the time, each model gets a share of --time-limit (default 400 s, counted from this script's
# start): the lens always covers every layer x seed, at fewer denoising steps than the model's default
# where the default would not fit (then the loop runs the same steps, and figures at the default steps are
# added, scaled by FLOPs), and the loop is timed on an evenly spread subset of the layers and scaled up.
# The table's notes say where either happened; --no-adapt runs everything at the defaults.
#
#   bench/gpu.sh                          # a GPU machine: all four models, bf16
#   bench/gpu.sh --models sd21,if --out /tmp/bench.json
#   bench/gpu.sh --small                  # no GPU needed: the same code at small widths on the CPU (~1 min)
#
# Paths (--out) are relative to the repository root. The device machine (Python 3.12 with torch, no
# internet, an older transformers and no diffusers): first, here, `bench/fetch-wheels.sh` (about 22 MB of
# wheels into .whl/, ignored by git), then run there with .whl carried:
#   command: set -o pipefail; bench/gpu.sh --out $OUT/bench-gpu.json 2>&1 | tee $OUT/bench-gpu.log
#   carry: [".whl"]    timeout_s: 560
# Where the python lacks a package the worker imports, or has diffusers / transformers at another version
# than python/requirements.txt pins, the wheels in .whl/ are installed into /tmp/site, first on PYTHONPATH.
set -euo pipefail

DLENS_BENCH_STARTED="$(date +%s.%N)"
export DLENS_BENCH_STARTED
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

args=()
for arg in "$@"; do
  if [ "$arg" = "--small" ]; then args+=(--scale small); else args+=("$arg"); fi
done

has_torch() { "$1" -c "import torch" >/dev/null 2>&1; }
python=""
for candidate in "${PYTHON:-}" python/.venv/bin/python python3; do
  if [ -n "$candidate" ] && command -v "$candidate" >/dev/null 2>&1 && has_torch "$candidate"; then
    python="$candidate"
    break
  fi
done
if [ -z "$python" ]; then
  echo "gpu.sh: no python with torch found (tried \$PYTHON, python/.venv/bin/python, python3)" >&2
  exit 1
fi

export PYTHONPATH="$root/python${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
# torch's CUDA allocator: fewer fragmentation failures when one process builds four models in turn.
export PYTORCH_CUDA_ALLOC_CONF="${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}"

problems() {  # what this python lacks for the benchmark (by package metadata: fast); empty when nothing
  "$python" - <<'PY'
import importlib.metadata as metadata
import re

pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==([^\s#]+)", open("python/requirements.txt").read(), re.M))
found = []
for name in ("diffusers", "transformers"):
    try:
        version = metadata.version(name)
    except metadata.PackageNotFoundError:
        version = None
    if version != pins[name]:
        found.append(f"{name} {version or 'missing'} (the worker pins {pins[name]})")
for name in ("jsonschema", "ftfy", "beautifulsoup4"):
    try:
        metadata.version(name)
    except metadata.PackageNotFoundError:
        found.append(f"{name} missing")
print("; ".join(found))
PY
}

missing="$(problems)"
if [ -n "$missing" ]; then
  if ! compgen -G ".whl/*.whl" >/dev/null; then
    echo "gpu.sh: $missing; and no wheels in .whl/ (run bench/fetch-wheels.sh, and carry .whl)" >&2
    exit 1
  fi
  echo "gpu.sh: $missing: installing .whl/ into /tmp/site" >&2
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl/*.whl
  export PYTHONPATH="/tmp/site:$PYTHONPATH"
  missing="$(problems)"
  if [ -n "$missing" ]; then
    echo "gpu.sh: still $missing after installing .whl/" >&2
    exit 1
  fi
fi

exec "$python" -m diffusion_lens.gpu_bench ${args[@]+"${args[@]}"}
