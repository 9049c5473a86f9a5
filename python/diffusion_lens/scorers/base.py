"""What every scorer takes and gives: images with their questions in, one yes/no answer and a 0..1 score
per question out. A scorer is loaded once (``load``) and then asked batch after batch (``score``)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol

from PIL import Image


class ScorerRequestError(ValueError):
    """A score request that is well-formed but that this scorer cannot serve (``bad_request``)."""


class ScorerLoadError(ValueError):
    """A scorer model that cannot be loaded, with a message the user can act on (``load_failed``)."""


@dataclass(frozen=True)
class ScorerSpec:
    """Which scorer, with which model, where (the ``score`` request's ``scorer`` field)."""

    kind: str
    model: str | None
    revision: str | None
    device: str  # auto | cpu | cuda | mps
    dtype: str  # auto | fp32 | fp16 | bf16


@dataclass(frozen=True)
class Question:
    id: str
    text: str  # the question as asked (vqa)
    right: str | None  # clip: the text of an image for which the answer is yes
    contrast: tuple[str, ...]  # clip: the texts it must beat


@dataclass(frozen=True)
class Item:
    image: Image.Image  # RGB
    prompt: str
    questions: tuple[Question, ...]


@dataclass(frozen=True)
class Answer:
    question: str
    answer: int  # 1 = yes, 0 = no
    score: float  # in [0, 1]: how sure of yes
    note: str | None = None


@dataclass(frozen=True)
class Scored:
    answers: tuple[Answer, ...]
    skipped: str | None = None  # why the item got no answers


@dataclass(frozen=True)
class LoadedScorer:
    """What ``score_done`` says about the scorer that answered."""

    kind: str
    model: str | None
    revision: str | None  # the model's hub commit; None for a local folder or no model
    version: str  # the scorer's rule version and the library versions its answers depend on
    device: str
    dtype: str


class Scorer(Protocol):
    kind: ClassVar[str]
    loaded: LoadedScorer

    def check(self, items: Sequence[Item]) -> None:
        """Raise ScorerRequestError (naming the item and question) for what this scorer cannot answer."""

    def score(self, items: Sequence[Item]) -> list[Scored]:
        """One Scored per item, in order."""


def decode_png(data: bytes, where: str) -> Image.Image:
    """PNG (or any image Pillow reads) bytes as an RGB image; ScorerRequestError naming ``where`` if not."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.convert("RGB")
    except Exception as exc:  # noqa: BLE001 - Pillow raises several types on bad bytes
        raise ScorerRequestError(
            f"{where} is not an image Pillow can read ({type(exc).__name__}: {exc})"
        ) from None
