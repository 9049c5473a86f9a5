"""A visual question answering model as a yes/no scorer (``kind: vqa``): BLIP (``BlipForQuestionAnswering``
with its ``BlipProcessor``, e.g. Salesforce/blip-vqa-base) answers each question's text about the image.

- answer: the generated answer (greedy), lower-cased; its first word decides: yes / yeah / yep / true = yes
  (1), no / nope / false = no (0); anything else ("red", "2") counts as no, with a note quoting it;
- score: P(yes) / (P(yes) + P(no)) from the first answer token's logits (before any generation processor),
  so an answer whose first token is "yes" has a score above 0.5 and one whose first token is "no" a score
  below. When the tokenizer has no single token
  for "yes" or "no", the score is the answer itself (1.0 or 0.0).

Images that ask the same question text are answered in one batch, so no question is padded to another's
length and an answer does not depend on what else shares the request.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from typing import ClassVar

import torch

from .base import Answer, Item, LoadedScorer, Scored, ScorerLoadError, ScorerRequestError, ScorerSpec
from .loading import dtype_name, from_pretrained, hub_revision, library_version, placement

RULE_VERSION = 1
MAX_ANSWER_TOKENS = 10
BATCH = 32
YES = frozenset({"yes", "yeah", "yep", "true"})
NO = frozenset({"no", "nope", "false"})


def normalize_answer(text: str) -> tuple[int, str | None]:
    """A generated answer as 1 (yes) or 0 (no), with a note when it was neither."""
    words = re.findall(r"[a-z]+", text.lower())
    if words and words[0] in YES:
        return 1, None
    if words and words[0] in NO:
        return 0, None
    return 0, f"answered {text.strip()!r}, neither yes nor no: counted as no"


def yes_probability(logits: torch.Tensor, yes_id: int, no_id: int) -> float:
    """P(yes) / (P(yes) + P(no)) of one decoding step's logits (V,)."""
    pair = torch.stack([logits[yes_id], logits[no_id]]).float()
    return float(pair.softmax(0)[0])


class VqaScorer:
    kind: ClassVar[str] = "vqa"

    def __init__(self, spec: ScorerSpec) -> None:
        from transformers import AutoConfig, BlipForQuestionAnswering, BlipProcessor

        device, dtype = placement(spec)
        what = "a BLIP VQA model (BlipForQuestionAnswering) and its processor"
        config = from_pretrained(AutoConfig, spec, what)
        if getattr(config, "model_type", None) != "blip":
            raise ScorerLoadError(
                f'vqa scorer model "{spec.model}" is a {getattr(config, "model_type", "?")} model; the vqa '
                "scorer runs BLIP question answering models (BlipForQuestionAnswering, e.g. "
                "Salesforce/blip-vqa-base)"
            )
        model = from_pretrained(BlipForQuestionAnswering, spec, what, dtype=dtype, use_safetensors=True)
        self.processor = from_pretrained(BlipProcessor, spec, what)
        self.model = model.to(device).eval()
        self.device = device
        tokenizer = self.processor.tokenizer
        ids = [tokenizer.convert_tokens_to_ids(word) for word in ("yes", "no")]
        known = all(isinstance(i, int) and i != tokenizer.unk_token_id for i in ids)
        self.yes_no: tuple[int, int] | None = (ids[0], ids[1]) if known else None
        self.loaded = LoadedScorer(
            kind=self.kind,
            model=spec.model,
            revision=hub_revision(spec, model),
            version=f"vqa rule {RULE_VERSION}; {library_version()}",
            device=device,
            dtype=dtype_name(dtype),
        )

    def check(self, items: Sequence[Item]) -> None:
        for i, item in enumerate(items):
            for q, question in enumerate(item.questions):
                if not question.text.strip():
                    raise ScorerRequestError(
                        f"items[{i}].questions[{q}] ({question.id}): the vqa scorer needs the question's text"
                    )

    @torch.inference_mode()
    def _answer(self, images: list, text: str) -> list[tuple[int, float, str | None]]:
        inputs = self.processor(images=images, text=[text] * len(images), return_tensors="pt", padding=True)
        inputs = inputs.to(self.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        out = self.model.generate(
            **inputs,
            max_new_tokens=MAX_ANSWER_TOKENS,
            do_sample=False,
            num_beams=1,
            output_logits=True,
            return_dict_in_generate=True,
        )
        decoded = self.processor.batch_decode(out.sequences, skip_special_tokens=True)
        results = []
        for row, text_answer in enumerate(decoded):
            answer, note = normalize_answer(text_answer)
            score = (
                float(answer) if self.yes_no is None else yes_probability(out.logits[0][row], *self.yes_no)
            )
            results.append((answer, score, note))
        return results

    def score(self, items: Sequence[Item]) -> list[Scored]:
        asks: dict[str, list[tuple[int, int]]] = defaultdict(list)  # question text -> (item, question)
        for i, item in enumerate(items):
            for q, question in enumerate(item.questions):
                asks[question.text].append((i, q))
        answers: dict[tuple[int, int], Answer] = {}
        for text, where in asks.items():
            for start in range(0, len(where), BATCH):
                chunk = where[start : start + BATCH]
                got = self._answer([items[i].image for i, _ in chunk], text)
                for (i, q), (answer, score, note) in zip(chunk, got, strict=True):
                    answers[(i, q)] = Answer(items[i].questions[q].id, answer, score, note)
        return [
            Scored(tuple(answers[(i, q)] for q in range(len(item.questions)))) for i, item in enumerate(items)
        ]
