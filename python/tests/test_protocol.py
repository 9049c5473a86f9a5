"""Validation of every incoming message: bad input becomes a ProtocolError with a code, never a crash."""

from __future__ import annotations

import msgpack
import pytest

from diffusion_lens import protocol

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
    "max_batch": 8,
    "stage2": None,
}
STAGE2 = {
    "steps": 3,
    "guidance": 4,
    "height": 32,
    "width": 32,
    "noise_level": 250,
    "scheduler": None,
    "seed": None,
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
    "clean_caption": None,
    "stage2": {"model": "some/stage-2", "revision": None},
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
            "'items'",
            "g1",
        ),
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
        (pack({**LOAD, "clean_caption": "yes"}), "bad_message", "'clean_caption'", "l1"),
        (pack({**LOAD, "stage2": {"model": ""}}), "bad_message", "'stage2'", "l1"),
        (
            pack({**GENERATE, "stage2": {**STAGE2, "height": 20}}),
            "bad_message",
            r"field 'stage2\.height' must be a positive multiple of 8",
            "g1",
        ),
        (pack({**GENERATE, "stage2": {**STAGE2, "extra": 1}}), "bad_message", "'stage2'", "g1"),
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


@pytest.mark.parametrize("bad", [NAN, INF, 4.0])
def test_integer_fields_refuse_floats_nan_and_inf(bad):
    """The other numbers of the protocol are integers: a float, NaN or an infinity is never one."""
    for field in ("steps", "height", "width", "max_batch"):
        with pytest.raises(protocol.ProtocolError, match=f"field '{field}' must be"):
            protocol.decode(pack({**GENERATE, field: bad}))
    for field in ("steps", "height", "noise_level", "seed"):
        with pytest.raises(protocol.ProtocolError, match=rf"field 'stage2\.{field}' must be"):
            protocol.decode(pack({**GENERATE, "stage2": {**STAGE2, field: bad}}))
    with pytest.raises(protocol.ProtocolError, match="'items'"):
        protocol.decode(pack({**GENERATE, "items": [{"prompt": 0, "layer": bad, "seed": 0}]}))
