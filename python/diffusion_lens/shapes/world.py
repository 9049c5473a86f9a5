"""The synthetic "shapes" world: a finite grammar of scenes, their prompts and the train / held-out split.

Every scene is one of three kinds:

- ``single``: one object with a colour, shape, size and position ("a small red circle at the left");
- ``count``: 2 or 3 copies of one object, anywhere ("three large green crosses");
- ``relation``: two small objects of different colours *and* different shapes, one placed relative to the
  other ("a red circle above a blue square"). Requiring both to differ makes colour binding well defined:
  the swapped scene (blue circle, red square) is a different image.

Colours are chosen by *hue* so the scorer can classify pixels by hue and chroma (see ``scorer.py``): mixing
a colour with the white background (anti-aliasing, blur) keeps its hue and only lowers its chroma, so a
blurred edge of a red object never turns into a pink one. Hues (degrees): red 0, orange 29, yellow 58,
green 124, cyan 186, blue 227, purple 278, pink 326: at least 29 apart, no grey / white / black.

Shapes are six silhouettes that stay apart after blurring at 9 px (the small size at 32x32), where
finer shapes (stars, hearts, letters) would not. Their overlap (IoU of the masks in equal boxes, at the
sides rendered at 32 and 64) is at most: circle-square 0.85, circle-cross 0.77, diamond-cross 0.76, any
other pair 0.68, so a drawn shape fits its own mask clearly better than any other. Bar and square are
both full rectangles told apart by aspect (2:1 vs 1:1), which blur does not change. Triangles point up,
so their mass sits low, unlike a diamond's.

Positions and relations are defined on bounding-box centres, by ``position_of`` and ``relation_holds``
below; the renderer places objects with a margin inside those regions and the scorer uses the same two
functions.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (250, 121, 0),
    "yellow": (235, 227, 0),
    "green": (30, 170, 40),
    "cyan": (0, 180, 200),
    "blue": (30, 70, 220),
    "purple": (140, 40, 200),
    "pink": (235, 60, 160),
}
BACKGROUND: tuple[int, int, int] = (255, 255, 255)
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "cross", "bar")
PLURALS: dict[str, str] = {
    "circle": "circles",
    "square": "squares",
    "triangle": "triangles",
    "diamond": "diamonds",
    "cross": "crosses",
    "bar": "bars",
}
SIZES: tuple[str, ...] = ("small", "large")
POSITIONS: tuple[str, ...] = ("left", "right", "top", "bottom", "center")
POSITION_PHRASES: dict[str, str] = {
    "left": "at the left",
    "right": "at the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "center": "in the center",
}
RELATIONS: tuple[str, ...] = ("above", "below", "left of", "right of")
COUNT_WORDS: dict[int, str] = {1: "one", 2: "two", 3: "three"}
KINDS: tuple[str, ...] = ("single", "count", "relation")
DEFAULT_WEIGHTS: dict[str, float] = {"single": 0.5, "count": 0.2, "relation": 0.3}
HELDOUT_FRACTION = 0.15
# Half-width of the central cell: "center" is the middle cell of a 3x3 grid.
CENTER_HALF = 1 / 6


@dataclass(frozen=True)
class Obj:
    color: str
    shape: str
    size: str

    @property
    def words(self) -> str:
        return f"{self.color} {self.shape}"


@dataclass(frozen=True)
class Scene:
    kind: str  # "single" | "count" | "relation"
    objects: tuple[Obj, ...]  # single: 1; count: 1 (repeated `count` times); relation: 2 (first, second)
    position: str | None = None  # single only (always set there)
    count: int = 1  # count only: 2 or 3
    relation: str | None = None  # relation only: objects[0] <relation> objects[1]

    @property
    def prompt(self) -> str:
        if self.kind == "single":
            o = self.objects[0]
            return f"a {o.size} {o.words} {POSITION_PHRASES[self.position or 'center']}"
        if self.kind == "count":
            o = self.objects[0]
            return f"{COUNT_WORDS[self.count]} {o.size} {o.color} {PLURALS[o.shape]}"
        a, b = self.objects
        return f"a {a.words} {self.relation} a {b.words}"

    def key(self) -> str:
        objs = ",".join(f"{o.color} {o.shape} {o.size}" for o in self.objects)
        return f"{self.kind}|{objs}|{self.position or ''}|{self.count}|{self.relation or ''}"


def position_of(center: tuple[float, float]) -> str:
    """The position word of a centre (x, y in [0, 1], y down): the middle cell of a 3x3 grid is "center";
    outside it the larger offset from the image centre decides (ties go to left / right)."""
    dx, dy = center[0] - 0.5, center[1] - 0.5
    if max(abs(dx), abs(dy)) <= CENTER_HALF:
        return "center"
    if abs(dx) >= abs(dy):
        return "left" if dx < 0 else "right"
    return "top" if dy < 0 else "bottom"


def relation_holds(relation: str, a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Whether centre ``a`` is <relation> centre ``b``: the offset along the relation's axis has the right
    sign and is strictly larger than the offset across it (so each pair satisfies at most one relation)."""
    dx, dy = b[0] - a[0], b[1] - a[1]  # from a to b
    if relation == "above":
        return dy > abs(dx)
    if relation == "below":
        return -dy > abs(dx)
    if relation == "left of":
        return dx > abs(dy)
    if relation == "right of":
        return -dx > abs(dy)
    raise ValueError(f"unknown relation {relation!r}")


@cache
def _all_scenes() -> tuple[Scene, ...]:
    scenes: list[Scene] = []
    for color in COLORS:
        for shape in SHAPES:
            for size in SIZES:
                obj = Obj(color, shape, size)
                scenes.extend(Scene("single", (obj,), position=p) for p in POSITIONS)
                scenes.extend(Scene("count", (obj,), count=n) for n in (2, 3))
            a = Obj(color, shape, "small")
            for color_b in COLORS:
                for shape_b in SHAPES:
                    if color_b == color or shape_b == shape:
                        continue
                    b = Obj(color_b, shape_b, "small")
                    scenes.extend(Scene("relation", (a, b), relation=r) for r in RELATIONS)
    return tuple(sorted(scenes, key=Scene.key))


def all_scenes() -> list[Scene]:
    """Every scene the grammar can make, sorted by key (480 single, 192 count, 6720 relation)."""
    return list(_all_scenes())


def _hash(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")


@cache
def _heldout_keys() -> frozenset[str]:
    # Per kind, the 15% of scenes with the smallest sha256 of their key: exact fractions, deterministic
    # across machines and Python versions (no dependence on `hash()` or on random state).
    held: set[str] = set()
    for kind in KINDS:
        keys = sorted((s.key() for s in _all_scenes() if s.kind == kind), key=_hash)
        held.update(keys[: round(HELDOUT_FRACTION * len(keys))])
    return frozenset(held)


def is_heldout(scene: Scene) -> bool:
    """Whether the scene belongs to the held-out split (never used for training)."""
    return scene.key() in _heldout_keys()


@cache
def _split(kind: str, split: str) -> tuple[Scene, ...]:
    if split not in ("train", "heldout"):
        raise ValueError(f"unknown split {split!r}")
    return tuple(s for s in _all_scenes() if s.kind == kind and is_heldout(s) == (split == "heldout"))


def sample_scene(
    rng: random.Random,
    split: str = "train",
    kinds: tuple[str, ...] = KINDS,
    weights: Sequence[float] | None = None,
) -> Scene:
    """A uniformly random scene of a kind drawn with ``weights`` (default: single 0.5, count 0.2,
    relation 0.3, for whichever ``kinds`` are given) from ``split`` ("train" or "heldout")."""
    if weights is None:
        weights = [DEFAULT_WEIGHTS[k] for k in kinds]
    if len(weights) != len(kinds):
        raise ValueError("weights must match kinds")
    kind = rng.choices(kinds, weights=weights)[0]
    return rng.choice(_split(kind, split))


@cache
def _vocabulary() -> tuple[str, ...]:
    return tuple(sorted({w for s in _all_scenes() for w in s.prompt.split()}))


def vocabulary() -> list[str]:
    """Every word any prompt can contain, sorted."""
    return list(_vocabulary())
