"""The shapes world's ground-truth scorer as a scorer (``kind: shapes``): for images of the embedded shapes
model, what an image shows is read off its pixels (``shapes.scorer``) and compared with the scene its
prompt describes, parsed by the shapes grammar (``shapes.world``).

It answers its own questions, whatever the run's manifest asks (the shapes model's prompts belong to no
prompt set, so their manifest question is the generic ``matches_prompt``), those that apply to the
prompt's kind of scene:

- ``object_correct``: an object of the (first) object's colour and shape is there;
- ``colour_correct`` / ``shape_correct``: something of its colour / of its shape is there;
- ``size_correct`` (single, count): the object (every copy, for a count) has the prompt's size;
- ``position_correct`` (single): the object is in the prompt's region;
- ``count_correct`` (count): exactly the prompt's number of copies;
- ``second_correct`` (relation): the second object is there;
- ``binding_correct`` (relation): both objects are there and neither colour-swapped object is;
- ``relation_correct`` (relation): both are there, placed as the relation says;
- ``matches_prompt``: every one of the above that applies is yes (the manifest's generic question).

Answers are 1 or 0, and the score is the answer. An item whose prompt is not a prompt of the shapes world
(matched ignoring case, spacing and a final full stop) is skipped, saying so.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cache
from typing import ClassVar

from .. import __version__
from ..shapes.scorer import score as score_scene
from ..shapes.world import Scene, all_scenes
from .base import Answer, Item, LoadedScorer, Scored, ScorerRequestError, ScorerSpec

RULE_VERSION = 1
MATCHES_PROMPT = "matches_prompt"
# The ground-truth scorer's keys (shapes.scorer.KEYS) as question ids; `present` is `color_shape` again.
QUESTIONS: dict[str, str] = {
    "color_shape": "object_correct",
    "color": "colour_correct",
    "shape": "shape_correct",
    "size": "size_correct",
    "position": "position_correct",
    "count": "count_correct",
    "second": "second_correct",
    "binding": "binding_correct",
    "relation": "relation_correct",
}


def _normal(prompt: str) -> str:
    return re.sub(r"\s+", " ", prompt.strip().lower()).rstrip(".").strip()


@cache
def _scenes_by_prompt() -> dict[str, Scene]:
    return {_normal(scene.prompt): scene for scene in all_scenes()}


def scene_of_prompt(prompt: str) -> Scene | None:
    """The scene a shapes-world prompt describes, or None for any other text."""
    return _scenes_by_prompt().get(_normal(prompt))


def answers_for(scene: Scene, truth: dict[str, bool | None]) -> tuple[Answer, ...]:
    """The scorer's per-attribute results (None = does not apply) as answers, ``matches_prompt`` last."""
    answers = [
        Answer(question, int(truth[key]), float(truth[key]))
        for key, question in QUESTIONS.items()
        if truth.get(key) is not None
    ]
    every = all(answer.answer == 1 for answer in answers)
    return (*answers, Answer(MATCHES_PROMPT, int(every), float(every)))


class ShapesScorer:
    kind: ClassVar[str] = "shapes"

    def __init__(self, spec: ScorerSpec) -> None:
        if spec.model is not None:
            raise ScorerRequestError(
                "scorer.model: the shapes scorer has no model (it reads pixels); leave it null, not "
                f"{spec.model!r}"
            )
        self.loaded = LoadedScorer(
            kind=self.kind,
            model=None,
            revision=None,
            version=f"shapes rule {RULE_VERSION}; diffusion-lens {__version__}",
            device="cpu",
            dtype="none",
        )

    def check(self, items: Sequence[Item]) -> None:
        for i, item in enumerate(items):
            if item.questions:
                raise ScorerRequestError(
                    f"items[{i}].questions: the shapes scorer asks its own questions "
                    f"({', '.join([*QUESTIONS.values(), MATCHES_PROMPT])}); send none"
                )

    def score(self, items: Sequence[Item]) -> list[Scored]:
        results = []
        for item in items:
            scene = scene_of_prompt(item.prompt)
            if scene is None:
                results.append(
                    Scored((), skipped=f"{item.prompt!r} is not a prompt of the shapes world (shapes.world)")
                )
            else:
                results.append(Scored(answers_for(scene, score_scene(scene, item.image))))
        return results
