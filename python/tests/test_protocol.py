"""Validation of every incoming message against protocol.schema.json (generated from the zod schemas in
src/bridge/protocol.ts): bad input becomes a ProtocolError with a code and a message naming the field,
never a crash."""

from __future__ import annotations

import msgpack
import pytest
from jsonschema import Draft202012Validator

from diffusion_lens import PROTOCOL_VERSION, protocol

GENERATE = {
    "v": 1,
    "id": "g1",
    "type": "generate",
    "prompts": ["a red apple"],
    "items": [{"prompt": 0, "layer": 3, "seed": 0}],
    "negative": "",
    "steps": 4,
    "guidance": 7.5,
    "height": 32,
    "width": 32,
    "scheduler": None,
    "uncond": "final",
    "noise": "shared",
    "encoders": None,
    "pooled": "final",
    "tokens": "all",
    "mix": None,
    "embeds": None,
    "max_batch": 8,
    "stage2": None,
    "family_options": {},
}
STAGE2 = {
    "steps": 3,
    "guidance": 4,
    "height": 32,
    "width": 32,
    "scheduler": None,
    "seed": None,
    "family_options": {"noise_level": 250},
}
LOAD = {
    "v": 1,
    "id": "l1",
    "type": "load",
    "model": "some/model",
    "family": None,
    "dtype": "auto",
    "device": "cpu",
    "revision": None,
    "offload": "encoder",
    "allow_pickle": False,
    "variant": "fp16",
    "stage2": {"model": "some/stage-2", "revision": None},
    "family_options": {"clean_caption": None},
    "config": None,
    "lora": [{"path": "style.safetensors", "scale": 0.5}],
    "compile": False,
}


def pack(message: object) -> bytes:
    return msgpack.packb(message, use_bin_type=True)


def test_valid_messages_round_trip():
    assert protocol.decode(pack(GENERATE)) == GENERATE
    with_stage2 = {**GENERATE, "stage2": STAGE2}
    assert protocol.decode(pack(with_stage2)) == with_stage2
    assert protocol.decode(pack(LOAD)) == LOAD
    ping = protocol.reply("p", "ping")
    assert protocol.decode(protocol.encode(ping)) == ping


@pytest.mark.parametrize(
    ("frame", "code", "fragment", "request_id"),
    [
        (b"\xc1\x00garbage", "bad_message", "not valid msgpack", ""),
        (pack([1, 2, 3]), "bad_message", "must be a map, got list", ""),
        (pack({"v": 1, "type": "ping"}), "bad_message", "'id' must be a string", ""),
        (pack({"v": 2, "id": "x", "type": "ping"}), "version_mismatch", "protocol version 2", "x"),
        (pack({"v": 1, "id": "x", "type": "explode"}), "bad_message", "unknown message type 'explode'", "x"),
        (pack({**GENERATE, "items": "x"}), "bad_message", "field 'items' must be", "g1"),
        (
            pack({**GENERATE, "items": [{"prompt": 0, "layer": -1, "seed": 0}]}),
            "bad_message",
            r"field 'items\[0\]\.layer' must be a non-negative integer",
            "g1",
        ),
        (pack({**GENERATE, "items": []}), "bad_message", "field 'items' must be a non-empty list", "g1"),
        (pack({**GENERATE, "prompts": []}), "bad_message", "field 'prompts' must be a non-empty list", "g1"),
        (
            pack({**GENERATE, "items": [{"prompt": 0, "layer": 0}]}),
            "bad_message",
            r"missing field 'items\[0\]\.seed'",
            "g1",
        ),
        (
            pack({**GENERATE, "items": [{"prompt": 0, "layer": 0, "seed": 2**53}]}),
            "bad_message",
            r"items\[0\]\.seed = 9007199254740992 is out of the protocol's integer range",
            "g1",
        ),
        (pack({**GENERATE, "seeds": [0]}), "bad_message", "generate: unknown field 'seeds'", "g1"),
        (pack({**GENERATE, "type": ["generate"]}), "bad_message", "unknown message type", "g1"),
        (pack({**GENERATE, "v": True}), "version_mismatch", "protocol version True", "g1"),
        (pack({**GENERATE, "height": 30}), "bad_message", "'height' must be a positive multiple of 8", "g1"),
        (pack({**GENERATE, "steps": True}), "bad_message", "'steps' must be a positive integer", "g1"),
        (pack({**GENERATE, "uncond": "sometimes"}), "bad_message", "'uncond'", "g1"),
        (
            pack({k: v for k, v in GENERATE.items() if k != "seeds" and k != "prompts"}),
            "bad_message",
            "missing field 'prompts'",
            "g1",
        ),
        (pack({"v": 1, "id": "c", "type": "cancel"}), "bad_message", "missing field 'target'", "c"),
        (
            pack({**LOAD, "offload": True}),
            "bad_message",
            "'offload' must be one of none, encoder, model",
            "l1",
        ),
        (pack({**LOAD, "clean_caption": True}), "bad_message", "unknown field 'clean_caption'", "l1"),
        (pack({**LOAD, "family_options": "yes"}), "bad_message", "'family_options' must be a map", "l1"),
        (
            pack({**LOAD, "stage2": {"model": ""}}),
            "bad_message",
            r"'stage2\.model' must be a non-empty",
            "l1",
        ),
        (
            pack({**LOAD, "stage2": "x"}),
            "bad_message",
            r"'stage2' must be a map \{model, revision\} or null",
            "l1",
        ),
        (pack({**LOAD, "variant": ""}), "bad_message", "'variant' must be a non-empty string", "l1"),
        (pack({**LOAD, "lora": [{"path": "x"}]}), "bad_message", r"missing field 'lora\[0\]\.scale'", "l1"),
        (
            pack({**LOAD, "lora": [{"path": "x", "scale": float("nan")}]}),
            "bad_message",
            r"field 'lora\[0\]\.scale' must be a finite number",
            "l1",
        ),
        (
            pack({**GENERATE, "stage2": {**STAGE2, "height": 20}}),
            "bad_message",
            r"field 'stage2\.height' must be a positive multiple of 8",
            "g1",
        ),
        (
            pack({**GENERATE, "stage2": {**STAGE2, "extra": 1}}),
            "bad_message",
            r"unknown field 'stage2\.extra'",
            "g1",
        ),
        (pack({**GENERATE, "stage2": {**STAGE2, "seed": -1}}), "bad_message", r"'stage2\.seed'", "g1"),
    ],
)
def test_bad_messages_are_named(frame, code, fragment, request_id):
    with pytest.raises(protocol.ProtocolError, match=fragment) as caught:
        protocol.decode(frame)
    assert caught.value.code == code
    assert caught.value.request_id == request_id


INF, NAN = float("inf"), float("nan")


@pytest.mark.parametrize(
    ("guidance", "shown"),
    [
        (1e308, "1e+308"),
        (INF, "inf"),
        (-INF, "-inf"),
        (NAN, "nan"),
        (-0.5, "-0.5"),
        (100.5, "100.5"),
        (101, "101"),
    ],
)
def test_guidance_must_be_a_finite_number_up_to_100(guidance, shown):
    """1e308 or inf overflow the guided noise to NaN: an all-black image, unless refused here."""
    for message, field in (
        ({**GENERATE, "guidance": guidance}, "guidance"),
        ({**GENERATE, "stage2": {**STAGE2, "guidance": guidance}}, "stage2.guidance"),
    ):
        with pytest.raises(protocol.ProtocolError) as caught:
            protocol.decode(pack(message))
        assert caught.value.code == "bad_message" and caught.value.request_id == "g1"
        assert str(caught.value) == f"generate: {field} = {shown} is out of range 0..100"
    with pytest.raises(protocol.ProtocolError, match=r"field 'guidance' must be a finite number in 0\.\.100"):
        protocol.decode(pack({**GENERATE, "guidance": "7.5"}))


@pytest.mark.parametrize("guidance", [0, 0.0, 1, 7.5, 100, 100.0])
def test_guidance_bounds_are_inclusive(guidance):
    for message in (
        {**GENERATE, "guidance": guidance},
        {**GENERATE, "stage2": {**STAGE2, "guidance": guidance}},
    ):
        assert protocol.decode(pack(message)) == message


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"tokens": -1}, "field 'tokens' must be a non-negative integer"),
        ({"tokens": "middle"}, "field 'tokens' must be one of all, prompt, padding$"),
        ({"mix": {"layers": [1], "alpha": 0.5}}, r"field 'mix\.layers' must be a list of 2: a non-negative"),
        ({"mix": {"layers": [1, 2], "alpha": 2}}, r"mix\.alpha = 2 is out of range 0\.\.1"),
        ({"embeds": {"path": "e.safetensors", "sha256": "abc"}}, r"field 'embeds\.sha256' must be"),
        ({"embeds": {"path": "", "sha256": "0" * 64}}, r"field 'embeds\.path' must be a non-empty string"),
    ],
)
def test_ablation_fields_are_checked(fields, fragment):
    with pytest.raises(protocol.ProtocolError, match=fragment):
        protocol.decode(pack({**GENERATE, **fields}))
    good = {**GENERATE, "tokens": 3, "mix": {"layers": [1, 2], "alpha": 1}, "embeds": None}
    assert protocol.decode(pack(good)) == good


@pytest.mark.parametrize("bad", [NAN, INF, 4.0])
def test_integer_fields_refuse_floats_nan_and_inf(bad):
    """The other numbers of the protocol are integers: a float, NaN or an infinity is never one."""
    for field in ("steps", "height", "width", "max_batch"):
        with pytest.raises(protocol.ProtocolError, match=f"field '{field}' must be"):
            protocol.decode(pack({**GENERATE, field: bad}))
    for field in ("steps", "height", "width", "seed"):
        with pytest.raises(protocol.ProtocolError, match=rf"field 'stage2\.{field}' must be"):
            protocol.decode(pack({**GENERATE, "stage2": {**STAGE2, field: bad}}))
    with pytest.raises(protocol.ProtocolError, match=r"field 'items\[0\]\.layer' must be"):
        protocol.decode(pack({**GENERATE, "items": [{"prompt": 0, "layer": bad, "seed": 0}]}))


def test_the_schema_file_is_a_valid_json_schema_for_this_protocol():
    """Generated from the zod schemas (test/protocol-schema.test.ts checks it is not stale)."""
    assert protocol.SCHEMA["protocol"] == PROTOCOL_VERSION
    assert set(protocol.REQUEST_TYPES) == {"hello", "load", "generate", "score", "cancel", "ping", "shutdown"}
    assert set(protocol.REPLY_TYPES) == {
        "ready", "loaded", "progress", "image", "done", "scored", "score_done", "error", "ack", "pong", "bye",
        "heartbeat",
    }  # fmt: skip
    for group in ("requests", "replies"):
        for schema in protocol.SCHEMA[group].values():
            Draft202012Validator.check_schema(schema)
    Draft202012Validator.check_schema(protocol.SCHEMA["listening"])
    assert "bad_message" in protocol.ERROR_CODES and protocol.GUIDANCE_RANGE == (0.0, 100.0)


def test_what_the_worker_builds_is_checked_against_the_reply_schemas():
    assert protocol.reply_problem(protocol.reply("", "heartbeat", busy=False)) is None
    assert protocol.reply_problem(protocol.reply("p", "pong", busy=True)) is None
    assert protocol.reply_problem(protocol.reply("c", "ack", target="g")) is None
    assert protocol.reply_problem(protocol.error("g", "oom", "out of memory", "Traceback")) is None
    assert protocol.reply_problem(protocol.reply("p", "pong")) == "pong: missing field 'busy'"
    assert (
        protocol.reply_problem(protocol.reply("p", "pong", busy=1)) == "pong: field 'busy' must be a boolean"
    )
    assert protocol.reply_problem(protocol.reply("b", "bye", extra=1)) == "bye: unknown field 'extra'"
    assert protocol.reply_problem(protocol.reply("x", "explode")).startswith("unknown reply type 'explode'")
    assert protocol.reply_problem({**protocol.error("g", "oom", "x"), "code": "gone"}) == (
        "error: field 'code' must be one of " + ", ".join(protocol.ERROR_CODES)
    )
    image = protocol.reply(
        "g", "image", item=0, prompt=0, layer=1, seed=2, stage=1, png=b"\x89PNG",
        width=8, height=8, elapsed_ms=1.5,
    )  # fmt: skip
    assert protocol.reply_problem(image) is None
    assert (
        protocol.reply_problem({**image, "png": "iVBOR"}) == "image: field 'png' must be bytes (msgpack bin)"
    )
    assert protocol.reply_problem({**image, "stage": 3}) == "image: field 'stage' must be one of 1, 2"
