"""Layer specs for the Python API, with the CLI's semantics (src/config/layers.ts): "all", "stock", an
integer (negatives count from the end: -1 = L), a list of integers, "start:end[:step]" (inclusive; an
omitted start is 0, an omitted end is L), comma lists of those, and relative depths ("0%:100%:25%",
"50%"). A layer listed twice is an error, as in the CLI."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

_INT = re.compile(r"^[+-]?\d+$")
_PERCENT = re.compile(r"^\d+(\.\d+)?%$")
SYNTAX = (
    'use "all", "start:end[:step]", a comma list like "0,4,8", integers (-1 = final layer), '
    'relative depths like "0%:100%:25%", or "stock" (the layer the stock pipeline uses)'
)

LayerSpecInput = str | int | Sequence[int]


class LayerSpecError(ValueError):
    """A layer spec that is malformed or out of range for the model."""


@dataclass(frozen=True)
class _Range:
    start: float
    end: float
    step: float
    text: str
    relative: bool = False
    stock: bool = False


def _int(text: str, whole: str) -> int:
    if not _INT.match(text):
        raise LayerSpecError(f'"{whole}" is not a layer spec: "{text}" is not an integer; {SYNTAX}')
    return int(text)


def _percent(text: str, whole: str) -> float:
    if not _PERCENT.match(text):
        raise LayerSpecError(
            f'"{whole}" is not a layer spec: "{text}" is not a percentage like 25%; {SYNTAX}'
        )
    value = float(text[:-1])
    if value > 100:
        raise LayerSpecError(f'"{whole}": {text} is beyond 100% (the final layer)')
    return value


def _part(part: str, whole: str) -> _Range:
    if part.lower() == "stock":
        return _Range(-1, -1, 1, part, stock=True)
    pieces = [piece.strip() for piece in part.split(":")]
    if len(pieces) <= 3 and any(piece.endswith("%") for piece in pieces):
        if any(piece and not piece.endswith("%") for piece in pieces):
            raise LayerSpecError(
                f'"{whole}": "{part}" mixes layers and percentages; write every bound of a range one way'
            )
        if len(pieces) == 1:
            point = _percent(pieces[0], whole)
            return _Range(point, point, 0, part, relative=True)
        a, b, c = (*pieces, "")[:3]
        start = _percent(a, whole) if a else 0.0
        end = _percent(b, whole) if b else 100.0
        step = _percent(c, whole) if c else 0.0
        if c and step <= 0:
            raise LayerSpecError(f'"{whole}": step {c} must be above 0%')
        if start > end:
            raise LayerSpecError(f"range {part} is empty ({a} > {b})")
        return _Range(start, end, step, part, relative=True)
    if len(pieces) == 1:
        n = _int(pieces[0], whole)
        return _Range(n, n, 1, part)
    if len(pieces) > 3:
        raise LayerSpecError(f'"{whole}" is not a layer spec: "{part}" has too many \':\'; {SYNTAX}')
    a, b, c = (*pieces, "")[:3]
    step = _int(c, whole) if c else 1
    if step < 1:
        raise LayerSpecError(f'"{whole}": step {step} must be >= 1')
    return _Range(_int(a, whole) if a else 0, _int(b, whole) if b else -1, step, part)


def layer_at_depth(percent: float, num_layers: int) -> int:
    """The layer nearest a relative depth (percent of L), halves rounded up: 50% of 3 is layer 2."""
    return math.floor(percent * num_layers / 100 + 0.5 + 1e-9)


def _relative_layers(spec: _Range, num_layers: int) -> list[int]:
    if spec.step == 0:
        return list(range(layer_at_depth(spec.start, num_layers), layer_at_depth(spec.end, num_layers) + 1))
    layers, i = [], 0
    while spec.start + i * spec.step <= spec.end + 1e-9:
        layers.append(layer_at_depth(spec.start + i * spec.step, num_layers))
        i += 1
    return layers


def resolve_layers(spec: LayerSpecInput, num_layers: int, stock_layer: int | None = None) -> list[int]:
    """The layers ``spec`` names on 0..``num_layers``, in the order given (``stock``: ``stock_layer``,
    default L). Raises LayerSpecError naming the bad value and the valid range."""
    stock = num_layers if stock_layer is None else stock_layer
    if isinstance(spec, bool):
        raise LayerSpecError(f"{spec!r} is not a layer spec; {SYNTAX}")
    if isinstance(spec, int):
        ranges, whole = [_Range(spec, spec, 1, str(spec))], str(spec)
    elif isinstance(spec, str):
        whole = spec.strip()
        if whole.lower() == "all":
            return list(range(num_layers + 1))
        if not whole:
            raise LayerSpecError(f"the layer spec is empty; {SYNTAX}")
        parts = [part.strip() for part in whole.split(",")]
        if any(not part for part in parts):
            raise LayerSpecError(f'"{whole}" has an empty item; {SYNTAX}')
        ranges = [_part(part, whole) for part in parts]
    else:
        values = list(spec)
        if not values:
            raise LayerSpecError("the layer list is empty")
        for value in values:
            if isinstance(value, bool) or not isinstance(value, int):
                raise LayerSpecError(f"{value!r} is not an integer layer")
        ranges, whole = [_Range(n, n, 1, str(n)) for n in values], str(values)
    suffix = "" if _INT.match(whole) else f" (in {whole})"

    def resolve(n: int) -> int:
        layer = num_layers + 1 + n if n < 0 else n
        if not 0 <= layer <= num_layers:
            hint = (
                f"; negative layers count from the end, -1 = {num_layers}, -{num_layers + 1} = 0"
                if n < 0
                else ""
            )
            raise LayerSpecError(f"layer {n} is out of range 0..{num_layers}{hint}{suffix}")
        return layer

    out: list[int] = []
    sources: dict[int, list[str]] = {}
    for item in ranges:
        if item.stock:
            layers = [stock]
        elif item.relative:
            layers = list(dict.fromkeys(_relative_layers(item, num_layers)))
        else:
            start, end = resolve(int(item.start)), resolve(int(item.end))
            if start > end:
                raise LayerSpecError(
                    f"range {int(item.start)}:{int(item.end)} is empty ({start} > {end}){suffix}"
                )
            layers = list(range(start, end + 1, int(item.step)))
        for layer in layers:
            if layer not in sources:
                out.append(layer)
            sources.setdefault(layer, []).append(item.text)
    repeated = [layer for layer in out if len(sources[layer]) > 1]
    if repeated:
        listed = "; ".join(
            f"layer {layer} is listed {len(sources[layer])} times "
            f"(in {', '.join(repr(text) for text in sources[layer])})"
            for layer in repeated
        )
        raise LayerSpecError(f"{listed}{suffix}")
    return out
