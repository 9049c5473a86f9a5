"""Ground-truth scorer for the shapes world: what a (generated) image shows, from its pixels only.

``detect`` finds the objects:

1. Pixel colour. Hue and chroma (max - min channel) are taken from the 3x3 mean around each pixel, the
   amount of ink from the pixel itself. A pixel is palette colour k when k has the nearest hue (within
   ``HUE_TOLERANCE``), the mean's chroma is at least ``MIN_CHROMA`` of k's, and the pixel holds at least
   ``CORE_ALPHA`` (half) of k's ink: (white - pixel) projected on (white - k). Mixing a colour with the
   white background (blur, soft edges) keeps its hue and scales its ink, so a blurred red edge stays red
   (never pink) and the half-ink contour is the object's edge; grey, white and black are background.
2. Objects: 8-connected components per colour, holes filled; components under ``MIN_AREA`` of the image
   are dropped (specks; the smallest object covers ~4%).
3. Shape: the component mask against every shape's mask (``render.shape_mask``) by IoU, see
   ``shape_scores``; the best shape wins if it scores at least ``MIN_SHAPE_SCORE``, else "unknown" (the
   colour still counts).
4. Size: small if the bounding box's longer side is under ``SIZE_THRESHOLD`` of the image side (small
   objects are 0.27-0.28 of it, large ones 0.41-0.42). Centre: the bounding-box centre in [0, 1].

``score`` answers a scene's questions about an image (see ``score_detections``).
``python -m diffusion_lens.shapes.scorer --validate`` prints the accuracy on rendered scenes, clean and
degraded like generated images (``perturb``), for their own prompts and for near-miss prompts.
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter
from scipy import ndimage

from .render import Placed, draw, layout, shape_mask
from .world import (
    COLORS,
    KINDS,
    POSITIONS,
    RELATIONS,
    SHAPES,
    Obj,
    Scene,
    all_scenes,
    is_heldout,
    position_of,
    relation_holds,
)

HUE_TOLERANCE = 30.0  # degrees; nearest palette hue wins, so this only rejects hues far from all (~90, ~155)
CORE_ALPHA = 0.5
MIN_CHROMA = 0.2
MIN_AREA = 0.02  # of the image area; the smallest object (a small diamond) is ~0.04
MIN_SHAPE_SCORE = 0.7
SIZE_THRESHOLD = 0.345
UNKNOWN = "unknown"
KEYS: tuple[str, ...] = (
    "present",
    "color",
    "shape",
    "color_shape",
    "size",
    "position",
    "count",
    "second",
    "binding",
    "relation",
)

_NAMES = list(COLORS)
_RGB = np.array([COLORS[c] for c in _NAMES], np.float32)


@dataclass(frozen=True)
class Detection:
    color: str
    shape: str  # one of SHAPES, or "unknown"
    size: str
    center: tuple[float, float]  # (x, y) in [0, 1]
    area: int
    bbox: tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels, x1 / y1 exclusive


def _hue_chroma(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hue in degrees [0, 360) and chroma (max - min) of float RGB values (..., 3)."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    mx, mn = rgb.max(-1), rgb.min(-1)
    chroma = mx - mn
    c = np.where(chroma > 0, chroma, 1)
    hue = np.where(mx == r, (g - b) / c, np.where(mx == g, 2 + (b - r) / c, 4 + (r - g) / c))
    return (hue * 60) % 360, chroma


_HUES, _CHROMAS = _hue_chroma(_RGB)
_INK = 255.0 - _RGB  # what each colour removes from white


def _as_array(image: Image.Image | np.ndarray) -> np.ndarray:
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), np.float32)
    arr = np.asarray(image, np.float32)
    if arr.ndim == 3 and arr.shape[0] in (3, 4) and arr.shape[-1] not in (3, 4):
        arr = arr.transpose(1, 2, 0)  # CHW
    if arr.ndim != 3 or arr.shape[-1] not in (3, 4):
        raise ValueError(f"expected an RGB image, got shape {arr.shape}")
    if np.issubdtype(np.asarray(image).dtype, np.floating) and arr.max() <= 1.0:
        arr = arr * 255  # floats in [0, 1]
    return arr[..., :3]


def classify_pixels(image: Image.Image | np.ndarray) -> np.ndarray:
    """(H, W) int array: index into COLORS of each pixel's colour, -1 for background."""
    return _classify(_as_array(image))


def _classify(rgb: np.ndarray) -> np.ndarray:
    # Hue and chroma from the 3x3 mean: averaging the ink around a pixel keeps its hue (white mixing does
    # not change hue) but divides pixel noise by 3, so faint edge pixels still get a reliable hue.
    hue, chroma = _hue_chroma(ndimage.uniform_filter(rgb, size=(3, 3, 1), mode="nearest"))
    dist = np.abs(hue[..., None] - _HUES)
    dist = np.minimum(dist, 360 - dist)
    k = dist.argmin(-1)
    # How much of colour k's ink the pixel holds (projection on white - colour; 1 = the palette colour).
    alpha = np.einsum("hwc,hwc->hw", 255.0 - rgb, _INK[k]) / (_INK[k] ** 2).sum(-1)
    ok = (dist.min(-1) <= HUE_TOLERANCE) & (chroma >= MIN_CHROMA * _CHROMAS[k]) & (alpha >= CORE_ALPHA)
    return np.where(ok, k, -1)


def shape_scores(mask: np.ndarray) -> dict[str, float]:
    """How well a component mask (cropped to its bounding box) fits each shape, in [0, 1]: the best of

    - the shape stretched to the bounding box: IoU times an aspect factor (bars are 2:1, the rest 1:1),
      forgiving of squashed or stretched drawings;
    - the shape at its own aspect with a side from the box's side - 1 to + (2 + side // 12), centred on
      the box: IoU. Blur erodes thin tips (a diamond's corners, a triangle's apex), which shrinks the
      box; this compares with the shape at the size it had before.
    """
    h, w = mask.shape
    area = int(mask.sum())
    aspect = w / h
    extra = 2 + max(w, h) // 12  # how much larger than the box the shape may have been
    pad = extra
    canvas = np.zeros((h + 2 * pad, w + 2 * pad), bool)
    canvas[pad : pad + h, pad : pad + w] = mask
    scores: dict[str, float] = {}
    for shape in SHAPES:
        t = shape_mask(shape, w, h)
        target = 2.0 if shape == "bar" else 1.0
        best = (mask & t).sum() / (mask | t).sum() * min(aspect, target) / max(aspect, target)
        base = w if shape == "bar" else max(w, h)
        for side in range(max(base - 1, 1), base + extra + 1):
            tw, th = (side, (side + 1) // 2) if shape == "bar" else (side, side)
            x0, y0 = pad + (w - tw) // 2, pad + (h - th) // 2
            if min(x0, y0) < 0 or x0 + tw > canvas.shape[1] or y0 + th > canvas.shape[0]:
                continue
            t = shape_mask(shape, tw, th)
            inter = int((canvas[y0 : y0 + th, x0 : x0 + tw] & t).sum())
            best = max(best, inter / (area + int(t.sum()) - inter))
        scores[shape] = float(best)
    return scores


def classify_shape(mask: np.ndarray) -> str:
    """The best-fitting shape of a component mask cropped to its bounding box, or "unknown" if no shape
    scores at least MIN_SHAPE_SCORE."""
    scores = shape_scores(mask)
    shape = max(scores, key=scores.__getitem__)
    return shape if scores[shape] >= MIN_SHAPE_SCORE else UNKNOWN


def detect(image: Image.Image | np.ndarray) -> list[Detection]:
    """The objects in an image, sorted by area (largest first)."""
    labels = _classify(_as_array(image))
    height, width = labels.shape
    min_area = MIN_AREA * height * width
    out: list[Detection] = []
    for k, color in enumerate(_NAMES):
        comps, _ = ndimage.label(labels == k, structure=np.ones((3, 3), bool))
        for i, sl in enumerate(ndimage.find_objects(comps), start=1):
            if sl is None:
                continue
            mask = ndimage.binary_fill_holes(comps[sl] == i)  # noise can punch holes into an object
            area = int(mask.sum())
            if area < min_area:
                continue
            y0, y1, x0, x1 = sl[0].start, sl[0].stop, sl[1].start, sl[1].stop
            big = max((x1 - x0) / width, (y1 - y0) / height) >= SIZE_THRESHOLD
            out.append(
                Detection(
                    color=color,
                    shape=classify_shape(mask),
                    size="large" if big else "small",
                    center=((x0 + x1) / 2 / width, (y0 + y1) / 2 / height),
                    area=area,
                    bbox=(x0, y0, x1, y1),
                )
            )
    out.sort(key=lambda d: (-d.area, d.bbox))
    return out


def truth(placed: list[Placed], image_size: int) -> list[Detection]:
    """The detections a perfect detector returns for a rendered layout."""
    out = []
    for p in placed:
        x0, y0, x1, y1 = p.box
        area = int(shape_mask(p.obj.shape, x1 - x0, y1 - y0).sum())
        out.append(Detection(p.obj.color, p.obj.shape, p.obj.size, p.center(image_size), area, p.box))
    out.sort(key=lambda d: (-d.area, d.bbox))
    return out


def score_detections(scene: Scene, dets: list[Detection]) -> dict[str, bool | None]:
    """The answers of ``score`` from detections (None: the question does not apply to the scene's kind).

    With ``first`` = scene.objects[0] and its matches = detections with its colour and shape (the main
    match is the largest):

    - present / color_shape: some detection has first's colour and shape (the two are the same question);
    - color / shape: some detection has first's colour / first's shape;
    - size (single, count): single: the main match has first's size; count: every match has it;
    - position (single): the main match's centre is in the scene's region (``world.position_of``);
    - count (count): the number of matches equals scene.count;
    - second (relation): some detection has the second object's colour and shape;
    - binding (relation): first and second present, and neither colour-swapped object (first's shape in
      second's colour, second's shape in first's colour) is;
    - relation (relation): first and second present and the main matches' centres satisfy the relation.
    """

    def matches(o: Obj) -> list[Detection]:
        return [d for d in dets if d.color == o.color and d.shape == o.shape]

    first = scene.objects[0]
    found = matches(first)
    res: dict[str, bool | None] = dict.fromkeys(KEYS)
    res["present"] = res["color_shape"] = bool(found)
    res["color"] = any(d.color == first.color for d in dets)
    res["shape"] = any(d.shape == first.shape for d in dets)
    if scene.kind == "single":
        res["size"] = bool(found) and found[0].size == first.size
        res["position"] = bool(found) and position_of(found[0].center) == scene.position
    elif scene.kind == "count":
        res["size"] = bool(found) and all(d.size == first.size for d in found)
        res["count"] = len(found) == scene.count
    elif scene.kind == "relation":
        second = scene.objects[1]
        found2 = matches(second)
        res["second"] = bool(found2)
        swapped = matches(Obj(second.color, first.shape, first.size)) or matches(
            Obj(first.color, second.shape, second.size)
        )
        res["binding"] = bool(found) and bool(found2) and not swapped
        res["relation"] = (
            bool(found)
            and bool(found2)
            and relation_holds(scene.relation or "", found[0].center, found2[0].center)
        )
    return res


def score(scene: Scene, image: Image.Image | np.ndarray) -> dict[str, bool | None]:
    """Per-question answers for ``scene`` about ``image`` (see ``score_detections``)."""
    return score_detections(scene, detect(image))


# --- validation ------------------------------------------------------------------------------------


def perturb(image: Image.Image, rng: random.Random) -> Image.Image:
    """Degrade a render the way generated images deviate: Gaussian blur (radius 0.5-0.7 px), a global
    colour shift (±10 per channel) and per-pixel colour noise (±20 per channel)."""
    img = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 0.7)))
    arr = np.asarray(img, np.float32)
    nrng = np.random.default_rng(rng.randrange(2**32))
    arr = arr + nrng.uniform(-10, 10, 3) + nrng.uniform(-20, 20, arr.shape)
    return Image.fromarray(np.clip(arr.round(), 0, 255).astype(np.uint8), "RGB")


def near_miss(scene: Scene, rng: random.Random) -> Scene:
    """A scene differing from ``scene`` in one attribute (colour, shape, size, position, count, relation,
    or the two objects' colours swapped), to check that the scorer also says "no" when it should."""
    o = scene.objects[0]
    options: list[Callable[[], Scene]] = [
        lambda: _with_first(scene, Obj(rng.choice([c for c in COLORS if c != o.color]), o.shape, o.size)),
        lambda: _with_first(scene, Obj(o.color, rng.choice([s for s in SHAPES if s != o.shape]), o.size)),
    ]
    if scene.kind == "single":
        options.append(
            lambda: _with_first(scene, Obj(o.color, o.shape, "small" if o.size == "large" else "large"))
        )
        options.append(
            lambda: _replace(scene, position=rng.choice([p for p in POSITIONS if p != scene.position]))
        )
    elif scene.kind == "count":
        options.append(
            lambda: _with_first(scene, Obj(o.color, o.shape, "small" if o.size == "large" else "large"))
        )
        options.append(lambda: _replace(scene, count=5 - scene.count))
    else:
        a, b = scene.objects
        options.append(
            lambda: _replace(scene, relation=rng.choice([r for r in RELATIONS if r != scene.relation]))
        )
        options.append(
            lambda: _replace(scene, objects=(Obj(b.color, a.shape, a.size), Obj(a.color, b.shape, b.size)))
        )
    for _ in range(20):
        other = rng.choice(options)()
        if other.kind != "relation" or (
            len({d.color for d in other.objects}) == 2 and len({d.shape for d in other.objects}) == 2
        ):
            return other
    return scene


def _replace(scene: Scene, **changes: object) -> Scene:
    fields = {
        "kind": scene.kind,
        "objects": scene.objects,
        "position": scene.position,
        "count": scene.count,
        "relation": scene.relation,
    }
    fields.update(changes)
    return Scene(**fields)  # type: ignore[arg-type]


def _with_first(scene: Scene, obj: Obj) -> Scene:
    return _replace(scene, objects=(obj, *scene.objects[1:]))


def validate(
    n: int, seed: int = 0, sizes: tuple[int, ...] = (32, 64)
) -> dict[str, dict[str, tuple[int, int]]]:
    """Score n random scenes (every kind, both splits, each image size, jittered layouts) against their
    own render and against a near-miss prompt, clean and perturbed. Returns, per condition, per key,
    (answers equal to the truth, questions asked); the truth comes from the layout (``truth``). The
    "detect" key counts images whose detections match the layout exactly (colour, shape, size, bbox)."""
    rng = random.Random(seed)
    pools: dict[tuple[str, bool], list[Scene]] = {}
    for s in all_scenes():
        pools.setdefault((s.kind, is_heldout(s)), []).append(s)
    results: dict[str, dict[str, tuple[int, int]]] = {}

    def tally(cond: str, key: str, ok: bool) -> None:
        right, total = results.setdefault(cond, {}).get(key, (0, 0))
        results[cond][key] = (right + ok, total + 1)

    for i in range(n):
        # cycle through kinds, splits and sizes so each is well represented
        scene = rng.choice(pools[(KINDS[i % 3], (i // 3) % 2 == 1)])
        size = sizes[(i // 6) % len(sizes)]
        placed = layout(scene, size, rng)
        expected = truth(placed, size)
        clean = Image.fromarray(draw(placed, size), "RGB")
        for label, image in (("clean", clean), ("perturbed", perturb(clean, rng))):
            dets = detect(image)
            tally(label, "detect", _same(dets, expected, tolerance=0 if label == "clean" else 1))
            for prompt_kind, asked in (("own", scene), ("near-miss", near_miss(scene, rng))):
                got, want = score_detections(asked, dets), score_detections(asked, expected)
                for key in KEYS:
                    if want[key] is not None:
                        tally(f"{label} / {prompt_kind}", key, got[key] == want[key])
    return results


def _same(dets: list[Detection], expected: list[Detection], tolerance: int = 0) -> bool:
    """Same objects (colour, shape, size) with bounding boxes within ``tolerance`` px."""
    if len(dets) != len(expected):
        return False
    pending = list(expected)
    for d in dets:
        hit = next(
            (
                e
                for e in pending
                if (d.color, d.shape, d.size) == (e.color, e.shape, e.size)
                and max(abs(a - b) for a, b in zip(d.bbox, e.bbox, strict=True)) <= tolerance
            ),
            None,
        )
        if hit is None:
            return False
        pending.remove(hit)
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--validate", action="store_true", help="print per-key accuracy on rendered scenes")
    ap.add_argument("-n", type=int, default=2000, help="number of scenes (default 2000)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if not args.validate:
        ap.print_help()
        return
    results = validate(args.n, args.seed)
    print(f"{args.n} random scenes (all kinds, train + held-out, sizes 32 and 64, jittered layouts)")
    print("perturbed: Gaussian blur radius 0.5-0.7 px, colour shift ±10 and pixel noise ±20 per channel")
    print("own: the scene's prompt; near-miss: a prompt with one attribute changed; detect: objects exact")
    for cond, keys in results.items():
        cells = "  ".join(f"{k} {r / t:.1%} ({t})" for k, (r, t) in keys.items())
        print(f"{cond:22s} {cells}")


if __name__ == "__main__":
    main()
