"""Automatic scorers, run by the worker for ``score`` requests: each answers yes/no questions about images
with a 0..1 score. ``clip`` (CLIP similarity of the image to a right text against contrast texts), ``vqa``
(a BLIP visual question answering model), ``shapes`` (the shapes world's ground truth, from pixels). One
module per scorer; ``load_scorer`` picks one by kind."""

from __future__ import annotations

from collections.abc import Callable

from .base import (
    Answer,
    Item,
    LoadedScorer,
    Question,
    Scored,
    Scorer,
    ScorerLoadError,
    ScorerRequestError,
    ScorerSpec,
    decode_png,
)


def _clip(spec: ScorerSpec) -> Scorer:
    from .clip import ClipScorer

    return ClipScorer(spec)


def _vqa(spec: ScorerSpec) -> Scorer:
    from .vqa import VqaScorer

    return VqaScorer(spec)


def _shapes(spec: ScorerSpec) -> Scorer:
    from .shapes import ShapesScorer

    return ShapesScorer(spec)


SCORERS: dict[str, Callable[[ScorerSpec], Scorer]] = {"clip": _clip, "vqa": _vqa, "shapes": _shapes}


def load_scorer(spec: ScorerSpec) -> Scorer:
    """The scorer ``spec`` names, loaded (ScorerLoadError for a model the user can fix)."""
    if spec.kind not in SCORERS:
        raise ScorerRequestError(
            f"scorer.kind: unknown scorer {spec.kind!r}; choose one of {', '.join(SCORERS)}"
        )
    if spec.kind != "shapes" and spec.model is None:
        raise ScorerRequestError(
            f"scorer.model: the {spec.kind} scorer needs a model (a hub id or a local folder)"
        )
    return SCORERS[spec.kind](spec)


__all__ = [
    "SCORERS",
    "Answer",
    "Item",
    "LoadedScorer",
    "Question",
    "Scored",
    "Scorer",
    "ScorerLoadError",
    "ScorerRequestError",
    "ScorerSpec",
    "decode_png",
    "load_scorer",
]
