"""The output folder's layout as the CLI writes it (src/experiment/store.ts, manifest.ts, images-csv.ts,
readout.ts), for the Python API's ``LensResult.save``: the same paths, the same manifest shape and the
same images.csv, so that what reads a CLI run folder reads these too. Pure Python, no torch."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import re
import tempfile
import unicodedata
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

SLUG_MAX = 40
MANIFEST_VERSION = 1
MANIFEST_FILE = "manifest.json"
IMAGES_CSV_FILE = "images.csv"
# The CLI's LENS_ALGORITHM_VERSION (src/version.ts): the Python side of the lens is the same code.
LENS_ALGORITHM_VERSION = 1
CSV_FIXED = ("prompt", "layer", "depth", "stage", "seed", "path", "key")


def slugify(text: str) -> str:
    """The CLI's ``slugify``: ASCII letters and digits, lowercase, runs of anything else as one '-', at
    most 40 characters, 'prompt' when nothing is left."""
    slug = unicodedata.normalize("NFKD", text)
    slug = re.sub("[\u0300-\u036f]", "", slug).lower()
    slug = re.sub("[^a-z0-9]+", "-", slug).strip("-")[:SLUG_MAX].rstrip("-")
    return slug or "prompt"


def prompt_hash8(prompt: str) -> str:
    """First 8 hex digits of sha256(prompt as UTF-8)."""
    return hashlib.sha256(prompt.encode()).hexdigest()[:8]


def prompt_dir_name(prompt: str) -> str:
    """``<slug>-<hash8>``: the folder of a prompt's images and the name of its grid."""
    return f"{slugify(prompt)}-{prompt_hash8(prompt)}"


def _stage_suffix(stage: int) -> str:
    return "" if stage == 1 else f"-stage{stage}"


def image_path(prompt: str, layer: int, seed: int, num_layers: int, stage: int = 1) -> str:
    """``images/<slug>-<hash8>/L07-s2.png``: the layer zero-padded to the digits of L."""
    width = len(str(num_layers))
    return f"images/{prompt_dir_name(prompt)}/L{str(layer).zfill(width)}-s{seed}{_stage_suffix(stage)}.png"


def grid_path(prompt: str, stage: int = 1) -> str:
    return f"grids/{prompt_dir_name(prompt)}{_stage_suffix(stage)}.png"


def layer_depth(layer: int, num_layers: int) -> float | int:
    """The layer in percent of L, one decimal, halves rounded up (JavaScript's Math.round); whole numbers
    as ints, so that JSON and CSV show them as the CLI does ("60", not "60.0")."""
    if num_layers == 0:
        return 100
    depth = math.floor(layer / num_layers * 1000 + 0.5) / 10
    return int(depth) if depth.is_integer() else depth


def _js_number(value: Any) -> Any:
    """Numbers as JavaScript writes them in JSON: a whole float as an int."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Mapping):
        return {key: _js_number(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_js_number(item) for item in value]
    return value


def canonical_json(value: Any) -> str:
    """The CLI's ``canonicalJson``: keys sorted at every level, no spaces, numbers as JavaScript has them."""
    return json.dumps(_js_number(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def content_key(settings: Mapping[str, Any], prompt: str, layer: int, seed: int, tool: str) -> str:
    """sha256 of the canonical JSON of everything that determines an image, shaped as the CLI's
    ``contentKey``. ``tool`` names the code that made it (the Python API's own version)."""
    record = {
        "code": {"tool": tool, "algorithm": LENS_ALGORITHM_VERSION},
        **{name: settings[name] for name in ("model", "sampler", "lens")},
        "prompt": prompt,
        "layer": layer,
        "seed": seed,
    }
    return hashlib.sha256(canonical_json(record).encode()).hexdigest()


def image_readout(
    layer: int, encoders: Sequence[Mapping[str, Any]], follows: Sequence[str] | None, pooled: str
) -> dict[str, Any]:
    """The CLI's ``imageReadout``: each sequence encoder's hidden state and norm for ``layer``, and the
    pooled vector's mode and hidden state (``encoders``: the family's ``encoders()`` report;
    ``follows``: the sequence encoders that follow the layer, None = all)."""
    pooling = [encoder for encoder in encoders if encoder["pooled"]]
    sequence = []
    for encoder in encoders:
        if not encoder["sequence"]:
            continue
        follows_layer = follows is None or encoder["name"] in follows
        indices = encoder["indices"]
        state = indices[layer] if follows_layer and layer < len(indices) else encoder["stock_index"]
        sequence.append(
            {
                "name": encoder["name"],
                "hidden_state": state,
                "norm": encoder["norm"],
                "follows_layer": follows_layer,
            }
        )

    def pooled_state(encoder: Mapping[str, Any]) -> int:
        indices = encoder.get("pooled_indices")
        if pooled == "same-layer" and indices is not None and layer < len(indices):
            return int(indices[layer])
        return int(encoder["layers"])

    return {
        "encoders": sequence,
        "pooled": None
        if not pooling
        else {
            "mode": pooled,
            "encoders": [
                {"name": encoder["name"], "hidden_state": pooled_state(encoder)} for encoder in pooling
            ],
        },
    }


def images_csv(manifest: Mapping[str, Any]) -> str:
    """The CLI's images.csv of a manifest: prompt, the prompt file's columns, layer, depth, stage, seed,
    path, key (minimal quoting, '\\n' line ends, as csv-stringify writes it)."""
    extra = [
        (column, f"prompt_{column}" if column in CSV_FIXED else column)
        for column in manifest["prompt_columns"]
    ]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["prompt", *(header for _, header in extra), *CSV_FIXED[1:]])
    for image in manifest["images"]:
        columns = manifest["prompts"][image["prompt_index"]]["columns"]
        writer.writerow(
            [
                image["prompt"],
                *(columns.get(column, "") for column, _ in extra),
                image["layer"],
                image["depth"],
                image["stage"],
                image["seed"],
                image["path"],
                image["key"],
            ]
        )
    return buffer.getvalue()


def write_atomic(path: Path, data: bytes | str) -> None:
    """Writes a temp file in the same folder, then renames it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode() if isinstance(data, str) else data
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(payload)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def manifest_json(manifest: Mapping[str, Any]) -> str:
    """As the CLI writes manifest.json: two-space indents, a final newline."""
    return json.dumps(_js_number(manifest), indent=2, ensure_ascii=False) + "\n"
