#!/usr/bin/env bash
# Downloads, into .whl/ at the repository root, the wheels that bench/gpu.sh installs on a GPU machine that
# has no internet: the worker's pinned diffusers and transformers (python/requirements.txt) and the
# packages the worker imports that the GPU image lacks (see /work/.library/device/KINDS.md there: it has
# Python 3.12 with torch, accelerate, safetensors, huggingface-hub, tokenizers, numpy, pillow, scipy,
# msgpack, pyyaml, attrs, typer, ...). Wheels only (no builds), for CPython 3.12 on x86-64 Linux, no
# dependencies resolved by pip: each one the worker needs is named here, at the version the worker's venv
# (python/.venv) was tested with. regex is carried because transformers checks regex>=2025.10.22 at import.
#
#   bench/fetch-wheels.sh            # then: carry .whl to the GPU machine and run bench/gpu.sh there
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

pin() {  # NAME: its == pin in python/requirements.txt
  sed -n "s/^$1==\([^ #]*\).*/\1/p" python/requirements.txt
}

packages=(
  "diffusers==$(pin diffusers)"
  "transformers==$(pin transformers)"
  "jsonschema==$(pin jsonschema)"  # the protocol module (imported by the lens) validates messages
  jsonschema-specifications==2025.9.1
  referencing==0.37.0
  rpds-py==2026.9.1
  "ftfy==$(pin ftfy)"  # IF's caption cleaning, as the stock pipeline does it
  wcwidth==0.9.4
  "beautifulsoup4==$(pin beautifulsoup4)"
  soupsieve==4.1.3
  regex==2026.11.19
)

platforms=()
for platform in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 \
  manylinux1_x86_64; do
  platforms+=(--platform "$platform")
done

mkdir -p .whl
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${platforms[@]}" -d .whl "${packages[@]}"

# Keep one version of each package: two copies stop the install on the GPU machine.
python3 - <<'PY'
import collections
import pathlib
import re

found = collections.defaultdict(list)
for wheel in pathlib.Path(".whl").glob("*.whl"):
    found[re.sub(r"[-_.]+", "-", wheel.name.split("-")[0]).lower()].append(wheel.name)
twice = {name: names for name, names in found.items() if len(names) > 1}
if twice:
    raise SystemExit(f"more than one version in .whl/: {twice}; delete the old ones")
PY
du -sh .whl
