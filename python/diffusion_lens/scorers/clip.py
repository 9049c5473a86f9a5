"""CLIP similarity as a yes/no scorer (``kind: clip``).

Each question comes with a ``right`` text (what an image for which the answer is yes shows, e.g. "a photo
of a banana") and ``contrast`` texts (what it must beat: the other objects of the set, the colours swapped,
...). The image and every text are embedded by a ``CLIPModel``; the logits are CLIP's own (cosine
similarity times the model's ``logit_scale``), as in zero-shot classification:

- answer yes (1) when the image is strictly more similar to ``right`` than to every contrast text (a tie is
  no), i.e. ``right`` is the zero-shot class;
- score = softmax over [right, *contrast] of those logits, at ``right``: the probability CLIP gives it among
  the candidates. With one contrast text, answer yes exactly when score > 0.5; with many, the answer is the
  arg max and the score may be below 0.5.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch

from .base import Answer, Item, LoadedScorer, Scored, ScorerRequestError, ScorerSpec
from .loading import dtype_name, from_pretrained, hub_revision, library_version, placement

RULE_VERSION = 1
TEXT_BATCH = 256
TEXT_CACHE = 8192  # text embeddings kept between requests (the same questions come back batch after batch)


def decide(image: torch.Tensor, texts: torch.Tensor, logit_scale: float) -> tuple[int, float]:
    """The answer and score for one image embedding (D,) against text embeddings (N, D), ``texts[0]``
    being the right text and the rest its contrast. Embeddings need not be normalised."""
    image = image.float() / image.float().norm()
    texts = texts.float() / texts.float().norm(dim=-1, keepdim=True)
    logits = logit_scale * (texts @ image)
    right, contrast = logits[0], logits[1:]
    answer = int(bool((right > contrast).all()))
    return answer, float(logits.softmax(0)[0])


def _features(output: object) -> torch.Tensor:
    """get_*_features' result: a tensor (transformers < 5) or an output whose pooler_output is projected."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output  # type: ignore[attr-defined]


class ClipScorer:
    kind: ClassVar[str] = "clip"

    def __init__(self, spec: ScorerSpec) -> None:
        from transformers import CLIPModel, CLIPProcessor

        device, dtype = placement(spec)
        what = "a CLIPModel and its processor"
        model = from_pretrained(CLIPModel, spec, what, dtype=dtype, use_safetensors=True)
        self.processor = from_pretrained(CLIPProcessor, spec, what)
        self.model = model.to(device).eval()
        self.device = device
        self.logit_scale = float(self.model.logit_scale.detach().exp())
        self._texts: dict[str, torch.Tensor] = {}
        self.loaded = LoadedScorer(
            kind=self.kind,
            model=spec.model,
            revision=hub_revision(spec, model),
            version=f"clip rule {RULE_VERSION}; {library_version()}",
            device=device,
            dtype=dtype_name(dtype),
        )

    def check(self, items: Sequence[Item]) -> None:
        for i, item in enumerate(items):
            for q, question in enumerate(item.questions):
                if question.right is None or not question.contrast:
                    raise ScorerRequestError(
                        f"items[{i}].questions[{q}] ({question.id}): the clip scorer needs a right text and "
                        "at least one contrast text"
                    )
                if question.right in question.contrast:
                    raise ScorerRequestError(
                        f"items[{i}].questions[{q}] ({question.id}): a contrast text is the right text "
                        f"({question.right!r}), which can never be beaten"
                    )

    @torch.inference_mode()
    def _text_embeddings(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        missing = list(dict.fromkeys(t for t in texts if t not in self._texts))
        if len(self._texts) + len(missing) > TEXT_CACHE:
            self._texts.clear()
        for start in range(0, len(missing), TEXT_BATCH):
            chunk = missing[start : start + TEXT_BATCH]
            tokens = self.processor.tokenizer(chunk, padding=True, truncation=True, return_tensors="pt")
            features = _features(self.model.get_text_features(**tokens.to(self.device))).float().cpu()
            self._texts.update(zip(chunk, features, strict=True))
        return {t: self._texts[t] for t in texts}

    @torch.inference_mode()
    def score(self, items: Sequence[Item]) -> list[Scored]:
        pixels = self.processor.image_processor([item.image for item in items], return_tensors="pt")
        pixel_values = pixels["pixel_values"].to(self.device, self.model.dtype)
        images = _features(self.model.get_image_features(pixel_values=pixel_values)).float().cpu()
        texts = [t for item in items for q in item.questions for t in (q.right or "", *q.contrast)]
        embedded = self._text_embeddings(texts)
        results = []
        for item, image in zip(items, images, strict=True):
            answers = []
            for q in item.questions:
                candidates = torch.stack([embedded[t] for t in (q.right or "", *q.contrast)])
                answer, score = decide(image, candidates, self.logit_scale)
                answers.append(Answer(q.id, answer, score))
            results.append(Scored(tuple(answers)))
        return results
