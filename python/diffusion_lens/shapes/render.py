"""Render scenes of the shapes world: flat palette colours on white, no anti-aliasing.

Rules (exact; ``scorer.py`` relies on them):

- An object is drawn in a box of ``w x h`` pixels. Its side ``s`` is the odd number nearest to
  0.28·size ("small": 9 px at 32, 17 at 64) or 0.42·size ("large": 13 at 32, 27 at 64); odd so every
  shape is symmetric about a pixel column. Bars are ``s`` wide and ``(s + 1) // 2`` high, every other
  shape is ``s x s``. The mask fills its box exactly (its pixel bounding box *is* the box).
- Masks sample each pixel at its centre against the continuous shape in the unit box (``shape_mask``):
  circle inscribed; square and bar fill the box; diamond |u|+|v| <= 1/2; triangle apex at the top
  centre, base the bottom edge; cross arms 1/3 of the side wide.
- Every box lies inside the image with an edge margin of ``max(1, size // 32)`` px, and any two boxes
  are at least ``max(3, size // 16)`` px apart along x or along y (3 at 32: one and a half latent pixels,
  so a drawn object that strays by a pixel still does not touch its neighbour; version 5 learned 2 px
  and its "three large" counts merged).
- Object centres are box centres, in [0, 1] image units. A single scene's centre satisfies
  ``world.position_of`` with a margin of ``POSITION_MARGIN`` (0.04) to the region's edges; a relation
  scene's offset satisfies ``world.relation_holds`` with ``RELATION_MARGIN`` (axis offset - |cross
  offset| >= 0.08). Relation objects are small. Count scenes place ``count`` copies anywhere.
- ``rng=None`` gives the canonical layout (the valid placement nearest to a fixed ideal centre);
  with an rng each object is placed uniformly at random among the valid placements, one after the other.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cache

import numpy as np
from PIL import Image

from .world import BACKGROUND, CENTER_HALF, COLORS, Obj, Scene

POSITION_MARGIN = 0.04
RELATION_MARGIN = 0.08
SIDE_FRACTION: dict[str, float] = {"small": 0.28, "large": 0.42}
_EPS = 1e-9

_IDEAL_POSITION: dict[str, tuple[float, float]] = {
    "center": (0.5, 0.5),
    "left": (0.2, 0.5),
    "right": (0.8, 0.5),
    "top": (0.5, 0.2),
    "bottom": (0.5, 0.8),
}
_IDEAL_COUNT: dict[int, list[tuple[float, float]]] = {
    2: [(0.27, 0.5), (0.73, 0.5)],
    3: [(0.27, 0.27), (0.73, 0.27), (0.5, 0.73)],
}
_IDEAL_RELATION: dict[str, list[tuple[float, float]]] = {
    "above": [(0.5, 0.27), (0.5, 0.73)],
    "below": [(0.5, 0.73), (0.5, 0.27)],
    "left of": [(0.27, 0.5), (0.73, 0.5)],
    "right of": [(0.73, 0.5), (0.27, 0.5)],
}


@dataclass(frozen=True)
class Placed:
    obj: Obj
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels, x1 / y1 exclusive

    def center(self, image_size: int) -> tuple[float, float]:
        x0, y0, x1, y1 = self.box
        return ((x0 + x1) / 2 / image_size, (y0 + y1) / 2 / image_size)


def side(size_word: str, image_size: int) -> int:
    """Side in pixels of a small / large object: the odd number nearest SIDE_FRACTION · image_size."""
    return 2 * round((SIDE_FRACTION[size_word] * image_size - 1) / 2) + 1


def box_size(obj: Obj, image_size: int) -> tuple[int, int]:
    s = side(obj.size, image_size)
    return (s, (s + 1) // 2) if obj.shape == "bar" else (s, s)


def edge_margin(image_size: int) -> int:
    return max(1, image_size // 32)


def min_gap(image_size: int) -> int:
    return max(3, image_size // 16)


def layout_rules(image_size: int) -> dict[str, int]:
    """The sizes and spacings a layout obeys at ``image_size``: recorded beside cached training scenes, so
    scenes rendered under other rules are not reused (``train.check_work_dir``)."""
    return {
        "small": side("small", image_size),
        "large": side("large", image_size),
        "edge_margin": edge_margin(image_size),
        "min_gap": min_gap(image_size),
    }


@cache
def shape_mask(shape: str, w: int, h: int) -> np.ndarray:
    """Boolean (h, w) mask of ``shape`` stretched to a w x h box, sampled at pixel centres (read-only)."""
    u = (np.arange(w) + 0.5) / w - 0.5
    v = (np.arange(h)[:, None] + 0.5) / h - 0.5
    au, av = np.abs(u)[None, :], np.abs(v)
    if shape in ("square", "bar"):
        m = np.ones((h, w), bool)
    elif shape == "circle":
        m = u[None, :] ** 2 + v**2 <= 0.25 + _EPS
    elif shape == "diamond":
        m = au + av <= 0.5 + _EPS
    elif shape == "triangle":
        m = au <= (v + 0.5) / 2 + _EPS
    elif shape == "cross":
        m = (au <= 1 / 6 + _EPS) | (av <= 1 / 6 + _EPS)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    m = np.broadcast_to(m, (h, w)).copy()
    m.flags.writeable = False
    return m


def position_margin(position: str, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """How far offsets (dx, dy) from the image centre lie inside ``position``'s region (> 0: inside)."""
    if position == "center":
        return CENTER_HALF - np.maximum(np.abs(dx), np.abs(dy))
    along, across = {"left": (-dx, dy), "right": (dx, dy), "top": (-dy, dx), "bottom": (dy, dx)}[position]
    return np.minimum(along - CENTER_HALF, along - np.abs(across))


def relation_margin(relation: str, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Axis offset minus |cross offset| of the offset (dx, dy) from the first to the second object."""
    along, across = {"above": (dy, dx), "below": (-dy, dx), "left of": (dx, dy), "right of": (-dx, dy)}[
        relation
    ]
    return along - np.abs(across)


@cache
def _candidates(w: int, h: int, image_size: int) -> np.ndarray:
    """All top-left corners (N, 2) that keep a w x h box inside the image with the edge margin."""
    e = edge_margin(image_size)
    xs = np.arange(e, image_size - e - w + 1)
    ys = np.arange(e, image_size - e - h + 1)
    gx, gy = np.meshgrid(xs, ys)
    return np.stack([gx.ravel(), gy.ravel()], axis=1)


def _place(
    objs: list[Obj],
    ideals: list[tuple[float, float]],
    scene: Scene,
    image_size: int,
    rng: random.Random | None,
) -> list[Placed] | None:
    """Place objects one after the other; None if some object has no valid placement left."""
    gap = min_gap(image_size)
    placed: list[Placed] = []
    for i, (obj, ideal) in enumerate(zip(objs, ideals, strict=True)):
        w, h = box_size(obj, image_size)
        c = _candidates(w, h, image_size)
        cx, cy = (c[:, 0] + w / 2) / image_size, (c[:, 1] + h / 2) / image_size
        ok = np.ones(len(c), bool)
        for p in placed:  # separated by >= gap along x or along y
            x0, y0, x1, y1 = p.box
            ok &= (
                (c[:, 0] >= x1 + gap)
                | (c[:, 0] + w + gap <= x0)
                | (c[:, 1] >= y1 + gap)
                | (c[:, 1] + h + gap <= y0)
            )
        if scene.kind == "single":
            ok &= position_margin(scene.position or "center", cx - 0.5, cy - 0.5) >= POSITION_MARGIN
        elif scene.kind == "relation" and i == 1:
            ax, ay = placed[0].center(image_size)
            ok &= relation_margin(scene.relation or "above", cx - ax, cy - ay) >= RELATION_MARGIN
        idx = np.flatnonzero(ok)
        if len(idx) == 0:
            return None
        if rng is None:  # canonical: the valid placement nearest to the ideal centre (first on ties)
            k = idx[np.argmin((cx[idx] - ideal[0]) ** 2 + (cy[idx] - ideal[1]) ** 2)]
        else:
            k = idx[rng.randrange(len(idx))]
        x, y = int(c[k, 0]), int(c[k, 1])
        placed.append(Placed(obj, (x, y, x + w, y + h)))
    return placed


def layout(scene: Scene, size: int, rng: random.Random | None = None) -> list[Placed]:
    """The objects of ``scene`` with their boxes in a ``size`` x ``size`` image."""
    if scene.kind == "single":
        objs, ideals = [scene.objects[0]], [_IDEAL_POSITION[scene.position or "center"]]
    elif scene.kind == "count":
        objs, ideals = [scene.objects[0]] * scene.count, _IDEAL_COUNT[scene.count]
    elif scene.kind == "relation":
        objs, ideals = list(scene.objects), _IDEAL_RELATION[scene.relation or "above"]
    else:
        raise ValueError(f"unknown scene kind {scene.kind!r}")
    if rng is not None:
        for _ in range(100):  # random sequential placement can paint itself into a corner: retry
            placed = _place(objs, ideals, scene, size, rng)
            if placed is not None:
                return placed
    placed = _place(objs, ideals, scene, size, None)
    if placed is None:
        raise ValueError(f"{scene.prompt!r} does not fit in {size}x{size}")
    return placed


def draw(placed: list[Placed], size: int) -> np.ndarray:
    """The (size, size, 3) uint8 image of placed objects on the background."""
    img = np.empty((size, size, 3), np.uint8)
    img[:] = BACKGROUND
    for p in placed:
        x0, y0, x1, y1 = p.box
        img[y0:y1, x0:x1][shape_mask(p.obj.shape, x1 - x0, y1 - y0)] = COLORS[p.obj.color]
    return img


def render(scene: Scene, size: int = 32, rng: random.Random | None = None) -> Image.Image:
    """RGB image of ``scene``: exact palette pixels on white; ``rng`` jitters placement (None: canonical)."""
    return Image.fromarray(draw(layout(scene, size, rng), size), "RGB")
