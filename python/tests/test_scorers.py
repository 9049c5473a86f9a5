"""The automatic scorers (diffusion_lens.scorers) and the worker's ``score`` request.

The decision rules are checked on constructed cases whose answer is known: CLIP's on embeddings built so
that the image is (or is not) the right text's, VQA's normalisation on answer texts and its score on
logits, the shapes scorer on images rendered from the shapes world with known attributes. The tiny random
CLIP and BLIP fixtures check the plumbing: loading by path, batching, the messages, the errors."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from PIL import Image

from diffusion_lens import protocol
from diffusion_lens.engine import Engine
from diffusion_lens.fixtures import save_fixture
from diffusion_lens.scorers.clip import decide
from diffusion_lens.scorers.shapes import MATCHES_PROMPT, QUESTIONS, scene_of_prompt
from diffusion_lens.scorers.vqa import normalize_answer, yes_probability
from diffusion_lens.shapes.render import render
from diffusion_lens.shapes.world import all_scenes
from tests.test_server import Client, generate_request, load


@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_fixture("clip-scorer", tmp_path_factory.mktemp("fixtures") / "tiny-clip")


@pytest.fixture(scope="session")
def blip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_fixture("blip-vqa", tmp_path_factory.mktemp("fixtures") / "tiny-blip")


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def solid(rgb: tuple[int, int, int]) -> bytes:
    return png(Image.new("RGB", (32, 32), rgb))


def question(id: str, text: str = "", right: str | None = None, contrast: tuple[str, ...] = ()) -> dict:
    return {"id": id, "text": text, "right": right, "contrast": list(contrast)}


def score_request(kind: str, model: str | Path | None, items: list[dict], request_id: str = "s") -> dict:
    """A score request as the worker receives it: encoded and decoded (validated) like any message."""
    message = {
        "v": 1, "id": request_id, "type": "score",
        "scorer": {"kind": kind, "model": None if model is None else str(model), "revision": None,
                   "device": "cpu", "dtype": "auto"},
        "items": items,
    }  # fmt: skip
    return protocol.decode(protocol.encode(message))


class Recorder:
    """An engine whose every message is checked against the protocol's replies and kept."""

    def __init__(self) -> None:
        self.messages: list[dict] = []
        self.engine = Engine(self._emit)

    def _emit(self, message: dict) -> None:
        problem = protocol.reply_problem(message)
        assert problem is None, problem
        self.messages.append(message)

    def run(self, request: dict) -> list[dict]:
        self.messages.clear()
        self.engine.handle(request)
        return list(self.messages)


def answers_of(messages: list[dict]) -> list[dict[str, tuple[int, float]]]:
    scored = sorted((m for m in messages if m["type"] == "scored"), key=lambda m: m["item"])
    return [{a["question"]: (a["answer"], a["score"]) for a in m["answers"]} for m in scored]


def error_of(messages: list[dict]) -> tuple[str, str]:
    assert [m["type"] for m in messages] == ["error"], messages
    return messages[0]["code"], messages[0]["message"]


# --- CLIP's rule ------------------------------------------------------------------------------------


def test_clip_says_yes_when_the_image_is_the_right_texts_and_no_when_it_is_a_contrasts():
    right, other, third = torch.eye(3)[0], torch.eye(3)[1], torch.eye(3)[2]
    texts = torch.stack([right, other, third])
    answer, score = decide(right * 5, texts, logit_scale=100.0)  # the norm does not matter
    assert answer == 1 and score > 0.99
    answer, score = decide(other, texts, logit_scale=100.0)
    assert answer == 0 and score < 0.01
    # Halfway between right and the first contrast: a tie, which is no; the softmax shares it out.
    answer, score = decide(right + other, texts, logit_scale=100.0)
    assert answer == 0 and score == pytest.approx(0.5, abs=1e-4)


def test_clip_score_is_the_softmax_of_the_scaled_cosines_and_the_answer_their_arg_max():
    generator = torch.Generator().manual_seed(0)
    for _ in range(50):
        image, texts = torch.randn(8, generator=generator), torch.randn(5, 8, generator=generator)
        answer, score = decide(image, texts, logit_scale=20.0)
        cosines = torch.nn.functional.cosine_similarity(texts, image[None], dim=-1)
        assert score == pytest.approx(float((20.0 * cosines).softmax(0)[0]), rel=1e-5)
        assert answer == int(int(cosines.argmax()) == 0)
        pair = texts[:2]
        answer, score = decide(image, pair, logit_scale=20.0)
        assert answer == int(score > 0.5)  # with one contrast text: yes exactly when p > 0.5


# --- VQA's rule -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "answer", "noted"),
    [
        ("yes", 1, False),
        (" Yes.", 1, False),
        ("yes yes yes", 1, False),
        ("yeah", 1, False),
        ("no", 0, False),
        ("No, it is blue", 0, False),
        ("nope", 0, False),
        ("red", 0, True),
        ("2", 0, True),
        ("", 0, True),
        ("not sure", 0, True),
        ("yesterday", 0, True),
    ],
)
def test_vqa_answers_become_yes_or_no_and_anything_else_no_with_a_note(text, answer, noted):
    got, note = normalize_answer(text)
    assert got == answer and (note is not None) == noted
    if noted:
        assert repr(text.strip()) in note


def test_vqa_score_is_p_yes_over_p_yes_plus_p_no():
    logits = torch.tensor([0.0, 3.0, 1.0, -2.0])
    assert yes_probability(logits, 1, 2) == pytest.approx(1 / (1 + torch.e**-2), rel=1e-6)
    assert yes_probability(logits, 2, 1) == pytest.approx(1 - 1 / (1 + torch.e**-2), rel=1e-6)


# --- the shapes scorer --------------------------------------------------------------------------------


def test_every_shapes_prompt_parses_to_its_scene_and_other_text_to_none():
    for scene in all_scenes():
        assert scene_of_prompt(scene.prompt) == scene
    assert scene_of_prompt("  A small red circle  at the LEFT. ") == scene_of_prompt(
        "a small red circle at the left"
    )
    for other in ("a red apple", "a small red circle", "a red circle above a red square", ""):
        assert scene_of_prompt(other) is None


SHAPES_CASES = [
    # (prompt the image is rendered from, prompt asked about, the answers expected)
    (
        "a small red circle at the left",
        "a small red circle at the left",
        {"object_correct": 1, "colour_correct": 1, "shape_correct": 1, "size_correct": 1,
         "position_correct": 1, MATCHES_PROMPT: 1},
    ),
    (
        "a small red circle at the left",
        "a small blue circle at the left",
        {"object_correct": 0, "colour_correct": 0, "shape_correct": 1, "size_correct": 0,
         "position_correct": 0, MATCHES_PROMPT: 0},
    ),
    (
        "a large green cross at the top",
        "a large green cross at the bottom",
        {"object_correct": 1, "colour_correct": 1, "shape_correct": 1, "size_correct": 1,
         "position_correct": 0, MATCHES_PROMPT: 0},
    ),
    (
        "three small yellow triangles",
        "three small yellow triangles",
        {"object_correct": 1, "colour_correct": 1, "shape_correct": 1, "size_correct": 1,
         "count_correct": 1, MATCHES_PROMPT: 1},
    ),
    (
        "three small yellow triangles",
        "two small yellow triangles",
        {"object_correct": 1, "colour_correct": 1, "shape_correct": 1, "size_correct": 1,
         "count_correct": 0, MATCHES_PROMPT: 0},
    ),
    (
        "a red circle above a blue square",
        "a red circle above a blue square",
        {"object_correct": 1, "colour_correct": 1, "shape_correct": 1, "second_correct": 1,
         "binding_correct": 1, "relation_correct": 1, MATCHES_PROMPT: 1},
    ),
    (
        "a red circle above a blue square",
        "a blue circle above a red square",
        {"object_correct": 0, "colour_correct": 1, "shape_correct": 1, "second_correct": 0,
         "binding_correct": 0, "relation_correct": 0, MATCHES_PROMPT: 0},
    ),
    (
        "a red circle above a blue square",
        "a red circle below a blue square",
        {"object_correct": 1, "colour_correct": 1, "shape_correct": 1, "second_correct": 1,
         "binding_correct": 1, "relation_correct": 0, MATCHES_PROMPT: 0},
    ),
]  # fmt: skip


def test_the_shapes_scorer_gives_the_known_answers_on_rendered_scenes():
    recorder = Recorder()
    items = [
        {"png": png(render(scene_of_prompt(drawn), size=size)), "prompt": asked, "questions": []}
        for drawn, asked, _ in SHAPES_CASES
        for size in (32, 64)
    ]
    items.append({"png": solid((255, 255, 255)), "prompt": "a red apple", "questions": []})
    messages = recorder.run(score_request("shapes", None, items))
    assert messages[-1]["type"] == "score_done" and messages[-1]["items"] == len(items)
    assert messages[-1]["scorer"]["kind"] == "shapes" and messages[-1]["scorer"]["model"] is None
    got = answers_of(messages)
    for i, (_, _, expected) in enumerate(case for case in SHAPES_CASES for _ in (32, 64)):
        assert {q: a for q, (a, _) in got[i].items()} == expected, SHAPES_CASES[i // 2]
        assert all(score == answer for answer, score in got[i].values())
    apple = next(m for m in messages if m["type"] == "scored" and m["item"] == len(items) - 1)
    assert apple["answers"] == [] and "not a prompt of the shapes world" in apple["skipped"]
    assert set(QUESTIONS.values()) >= {q for case in SHAPES_CASES for q in case[2]} - {MATCHES_PROMPT}


# --- the tiny CLIP and BLIP fixtures through `score` ---------------------------------------------------


def test_clip_through_score_matches_the_clip_model_itself(clip_dir):
    from transformers import CLIPModel, CLIPProcessor

    recorder = Recorder()
    colours = [(220, 30, 30), (30, 70, 220), (30, 170, 40)]
    q = question(
        "matches_prompt", "Does the image show a red apple?", "a red apple", ("a blue car", "an image")
    )
    q2 = question("colour_correct", "Is it red?", "a photo of a red thing", ("a photo of a blue thing",))
    items = [{"png": solid(c), "prompt": "a red apple", "questions": [q, q2]} for c in colours]
    messages = recorder.run(score_request("clip", clip_dir, items))
    done = messages[-1]
    assert done["type"] == "score_done" and done["items"] == 3
    assert done["scorer"] == {
        "kind": "clip", "model": str(clip_dir), "revision": None, "device": "cpu", "dtype": "fp32",
        "version": done["scorer"]["version"],
    }  # fmt: skip
    assert done["scorer"]["version"].startswith("clip rule 1; transformers ")
    got = answers_of(messages)

    # The reference: the stock model's logits_per_image over [right, *contrast], for each image alone.
    model, processor = CLIPModel.from_pretrained(clip_dir).eval(), CLIPProcessor.from_pretrained(clip_dir)
    for i, colour in enumerate(colours):
        for spec in (q, q2):
            texts = [spec["right"], *spec["contrast"]]
            inputs = processor(
                text=texts, images=Image.new("RGB", (32, 32), colour), return_tensors="pt", padding=True
            )
            with torch.no_grad():
                logits = model(**inputs).logits_per_image[0]
            answer, score = got[i][spec["id"]]
            assert score == pytest.approx(float(logits.softmax(0)[0]), abs=1e-5)
            assert answer == int(int(logits.argmax()) == 0)

    # An item's answers do not depend on what shares its request.
    alone = answers_of(recorder.run(score_request("clip", clip_dir, items[1:2])))
    assert alone[0]["matches_prompt"][1] == pytest.approx(got[1]["matches_prompt"][1], abs=1e-6)


def test_vqa_through_score_answers_and_scores_from_yes_and_no(blip_dir):
    recorder = Recorder()
    items = [
        {"png": solid(c), "prompt": "a red apple",
         "questions": [question("is_red", "Is the apple red?"), question("is_apple", "Is there an apple?")]}
        for c in ((220, 30, 30), (30, 70, 220))
    ]  # fmt: skip
    messages = recorder.run(score_request("vqa", blip_dir, items))
    assert messages[-1]["type"] == "score_done" and messages[-1]["scorer"]["kind"] == "vqa"
    for scored in (m for m in messages if m["type"] == "scored"):
        assert [a["question"] for a in scored["answers"]] == ["is_red", "is_apple"]
        for a in scored["answers"]:  # a random model rambles: no, with a note quoting it
            assert 0 <= a["score"] <= 1 and (a["note"] is None or a["answer"] == 0)

    # A decoder made to say "yes" (or "no") first: that answer, with the score on its side of 0.5.
    scorer = recorder.engine.scorer[1]
    bias = scorer.model.text_decoder.cls.predictions.bias
    yes_id, no_id = scorer.yes_no
    for word, token, expected in (("yes", yes_id, 1), ("no", no_id, 0)):
        with torch.no_grad():
            saved = bias.clone()
            bias[token] += 1000.0
        try:
            got = answers_of(recorder.run(score_request("vqa", blip_dir, items)))
        finally:
            with torch.no_grad():
                bias.copy_(saved)
        for answers in got:
            for answer, score in answers.values():
                assert answer == expected, word
                assert (score > 0.5) == (expected == 1)


def test_scoring_errors_name_what_is_wrong(clip_dir, blip_dir, tmp_path, empty_offline_hub):
    recorder = Recorder()
    item = {"png": solid((255, 0, 0)), "prompt": "a red apple", "questions": [question("q", "Is it red?")]}
    assert error_of(recorder.run(score_request("clip", clip_dir, [item]))) == (
        "bad_request",
        "items[0].questions[0] (q): the clip scorer needs a right text and at least one contrast text",
    )
    same = {**item, "questions": [question("q", "", "a red apple", ("a red apple",))]}
    code, message = error_of(recorder.run(score_request("clip", clip_dir, [same])))
    assert code == "bad_request" and "a contrast text is the right text" in message
    code, message = error_of(recorder.run(score_request("clip", None, [item])))
    assert code == "bad_request" and message.startswith("scorer.model: the clip scorer needs a model")
    code, message = error_of(recorder.run(score_request("clip", tmp_path / "nowhere", [item])))
    assert code == "load_failed" and message.startswith("clip scorer model folder not found:")
    code, message = error_of(recorder.run(score_request("vqa", clip_dir, [item])))
    assert code == "load_failed" and "is a clip model; the vqa scorer runs BLIP" in message
    code, message = error_of(recorder.run(score_request("clip", "org/not-cached", [item])))
    assert (
        code == "load_failed"
        and 'cannot reach the Hugging Face hub for the clip scorer model "org/not-cached"' in message
    )
    code, message = error_of(recorder.run(score_request("shapes", clip_dir, [item])))
    assert code == "bad_request" and message.startswith("scorer.model: the shapes scorer has no model")
    code, message = error_of(recorder.run(score_request("shapes", None, [item])))
    assert code == "bad_request" and message.startswith("items[0].questions: the shapes scorer asks its own")
    broken = {**item, "png": b"\x89PNG not really", "questions": []}
    code, message = error_of(recorder.run(score_request("shapes", None, [broken])))
    assert code == "bad_request" and message.startswith("items[0].png is not an image")
    with pytest.raises(
        protocol.ProtocolError, match=r"field 'scorer\.kind' must be one of clip, vqa, shapes"
    ):
        score_request("blip", None, [item])
    with pytest.raises(protocol.ProtocolError, match=r"field 'items\[0\]\.png' must be bytes"):
        score_request("shapes", None, [{**item, "png": "not bytes", "questions": []}])


def test_the_worker_scores_without_a_model_and_keeps_its_model_loaded(sd_dir, clip_dir):
    client = Client()
    try:
        client.send(id="h", type="hello", protocol=1, client="pytest")
        assert client.receive()["type"] == "ready"
        item = {"png": png(render(scene_of_prompt("a small red circle at the left"))),
                "prompt": "a small red circle at the left", "questions": []}  # fmt: skip
        client.send(**{k: v for k, v in score_request("shapes", None, [item], "s1").items() if k != "v"})
        first = client.until("s1", ("score_done", "error"))
        assert [m["type"] for m in first] == ["scored", "score_done"]
        assert load(client, sd_dir)["type"] == "loaded"
        clip_item = {**item, "questions": [question("q", "", "a red circle", ("a blue square",))]}
        client.send(
            **{k: v for k, v in score_request("clip", clip_dir, [clip_item], "s2").items() if k != "v"}
        )
        assert client.until("s2", ("score_done", "error"))[-1]["type"] == "score_done"
        client.send(**generate_request("g", layers=[5], seeds=[0]))
        assert client.until("g")[-1]["type"] == "done"  # the diffusion model is still loaded
    finally:
        client.close()
