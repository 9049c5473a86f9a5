"""Protocol fuzzing of the worker, with figures.

    cd python && PYTHONPATH=. python -m diffusion_lens.fuzz --messages 10000 --seed 0

Starts a real worker (``lens_server.py``, offline) and sends it seeded bad input from a fuzzing client:
random bytes, random msgpack values, random maps, a wrong-typed value for every field of every request
type (the fields are read from protocol.SCHEMA), missing and unknown fields, huge strings, lists, maps
and binaries, deep nesting, multi-frame messages, wrong versions, duplicate ids; with a tiny fixture
model loaded for part of the run, schema-valid requests the model cannot serve, so that generate and
score are checked past the schema. Meanwhile a well-behaved client (its own process) pings every 75 ms
and a slow reader floods pings and reads a few.

Prints the figures as one JSON line on stdout and a short summary on stderr; exits 1 when a figure that
must be 0 is not: messages left unanswered (every frame gets one final reply: one with the message's id
when it is a map with a string id, else an ``error`` with id ""), worker crashes or internal errors, and
the good client's pongs over 1 s late.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import random
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter
from copy import deepcopy
from itertools import pairwise
from pathlib import Path
from typing import Any

import msgpack
import zmq

from . import protocol

SERVER = Path(__file__).resolve().parents[1] / "lens_server.py"
# The last reply of a request (or of any message: an error).
FINALS = frozenset({"error", "ready", "pong", "ack", "loaded", "done", "score_done", "bye"})
WINDOW = 32  # messages in flight at once
GOOD_INTERVAL_S = 0.075
LATE_S = 1.0
VALID_GENERATES = 40  # real (cheap) generates at most: the rest of the run stays fast
DUPLICATE = b"two frames follow"  # the marker of duplicate_id: Fuzzer.pairs are sent one by one

Path_ = tuple[str | int, ...]


def tiny_png(width: int = 8, height: int = 8, rgb: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    """A valid RGB PNG without Pillow."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


PNG = tiny_png(32, 32)


def load_fields(model: str) -> dict[str, Any]:
    return {
        "model": model, "family": None, "dtype": "auto", "device": "cpu", "revision": None,
        "offload": "none", "stage2": None, "allow_pickle": False, "variant": None,
        "family_options": {}, "config": None, "lora": [], "compile": False,
    }  # fmt: skip


def bases(model: str) -> dict[str, dict[str, Any]]:
    """A valid request of each type (the generate is cheap on a tiny fixture)."""
    return {
        "hello": {"protocol": 1, "client": "fuzz"},
        "load": load_fields(model),
        "generate": {
            "prompts": ["a red apple"], "items": [{"prompt": 0, "layer": 1, "seed": 0}], "negative": "",
            "steps": 1, "guidance": 7.5, "height": 32, "width": 32, "scheduler": None, "uncond": "final",
            "noise": "shared", "encoders": None, "pooled": "final", "tokens": "all", "mix": None,
            "embeds": None, "max_batch": 1, "stage2": None, "family_options": {},
        },
        "score": {
            "scorer": {"kind": "shapes", "model": None, "revision": None, "device": "cpu", "dtype": "auto"},
            "items": [{"png": PNG, "prompt": "a red circle", "questions": []}],
        },
        "cancel": {"target": "nothing"},
        "ping": {},
        "shutdown": {},
    }  # fmt: skip


def envelope(kind: str, request_id: str, fields: dict[str, Any]) -> dict[str, Any]:
    return {"v": 1, "id": request_id, "type": kind, **deepcopy(fields)}


# --- the schema: fields, valid samples, wrong values ------------------------------------------------


def _options(schema: dict[str, Any]) -> list[dict[str, Any]]:
    """A schema's non-null alternatives (anyOf options, or itself)."""
    if "anyOf" in schema:
        return [option for option in schema["anyOf"] if option.get("type") != "null"]
    return [schema]


def fields_of(schema: dict[str, Any], path: Path_ = ()) -> list[tuple[Path_, dict[str, Any], bool]]:
    """Every field of a request schema, nested ones included: (path, its schema, required)."""
    found = []
    for option in _options(schema):
        if option.get("type") == "object":
            required = set(option.get("required", ()))
            for name, sub in option.get("properties", {}).items():
                found.append(((*path, name), sub, name in required))
                found.extend(fields_of(sub, (*path, name)))
        elif option.get("type") == "array":
            if "prefixItems" in option:
                for index, sub in enumerate(option["prefixItems"]):
                    found.append(((*path, index), sub, True))
                    found.extend(fields_of(sub, (*path, index)))
            elif isinstance(option.get("items"), dict):
                found.append(((*path, 0), option["items"], True))
                found.extend(fields_of(option["items"], (*path, 0)))
    return found


def sample(schema: dict[str, Any]) -> Any:
    """A valid value of ``schema`` (a non-null one where null is allowed)."""
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    options = _options(schema)
    if "anyOf" in schema:
        return sample(options[0]) if options else None
    if protocol.SCHEMA["binary_keyword"] in schema:
        return PNG
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((one for one in kind if one != "null"), "null")
    if kind == "object":
        return {name: sample(sub) for name, sub in schema.get("properties", {}).items()}
    if kind == "array":
        if "prefixItems" in schema:
            return [sample(sub) for sub in schema["prefixItems"]]
        return [sample(schema.get("items", {})) for _ in range(max(1, schema.get("minItems", 0)))]
    if kind == "integer":
        low = schema.get("minimum", schema.get("exclusiveMinimum", -1) + 1)
        low = max(low, 0) if "maximum" not in schema or schema["maximum"] >= 0 else low
        step = schema.get("multipleOf", 1)
        return step * max(1, math.ceil(low / step)) if step > 1 else low
    if kind == "number":
        return schema.get("minimum", 0.5)
    if kind == "string":
        return "0" * 64 if "pattern" in schema else "x" * max(1, schema.get("minLength", 0))
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    return {}


WRONG_POOL: list[Any] = [
    None, True, False, 0, -1, 1, 7, 2**53, -(2**63), 2**64 - 1, 1.5, -0.0, float("nan"), float("inf"),
    "", "x", "all", "ünïcødé ∞", b"", b"\x00\xff", [], [1, "a"], [None], [[[]]], {}, {"a": 1}, {"": None},
    {1: 2}, 1e308, "1",
]  # fmt: skip


class Schemas:
    """The request types and their fields, with validators of each field's schema (cached)."""

    def __init__(self) -> None:
        self.requests = protocol.SCHEMA["requests"]
        self.fields = {kind: fields_of(schema) for kind, schema in self.requests.items()}
        self._validators: dict[int, Any] = {}

    def accepts(self, schema: dict[str, Any], value: Any) -> bool:
        validator = self._validators.get(id(schema))
        if validator is None:
            validator = self._validators[id(schema)] = protocol.validator(schema)
        try:
            return validator.is_valid(value)
        except Exception:  # noqa: BLE001 - e.g. a map with an int key
            return False

    def wrong_values(self, schema: dict[str, Any]) -> list[Any]:
        return [value for value in WRONG_POOL if not self.accepts(schema, value)]


def put(message: dict[str, Any], path: Path_, value: Any, schema: dict[str, Any]) -> None:
    """Set ``path`` in ``message`` to ``value``, making valid parents (from ``schema``) where they are null
    or missing."""
    node: Any = message
    node_schema = schema
    for depth, part in enumerate(path[:-1]):
        child_schema = _child_schema(node_schema, part)
        if isinstance(node, dict):
            if not isinstance(node.get(part), dict | list) or (
                isinstance(node.get(part), list) and not node[part]
            ):
                node[part] = sample(child_schema)
            node = node[part]
        else:
            assert isinstance(part, int)
            if len(node) <= part:
                node.append(sample(child_schema))
            node = node[part]
        node_schema = child_schema
        del depth
    last = path[-1]
    if isinstance(node, dict):
        node[last] = value
    else:
        assert isinstance(last, int)
        if len(node) <= last:
            node.append(value)
        else:
            node[last] = value


def _child_schema(schema: dict[str, Any], part: str | int) -> dict[str, Any]:
    for option in _options(schema):
        if isinstance(part, str) and part in option.get("properties", {}):
            return option["properties"][part]
        if isinstance(part, int) and option.get("type") == "array":
            if "prefixItems" in option:
                return option["prefixItems"][part]
            return option.get("items", {})
    return {}


def delete(message: dict[str, Any], path: Path_, schema: dict[str, Any]) -> None:
    put(message, path, None, schema)  # makes the parents
    node: Any = message
    for part in path[:-1]:
        node = node[part]
    if isinstance(node, dict):
        node.pop(path[-1], None)


# --- what the worker can read of a frame ------------------------------------------------------------


def expected_id(frames: list[bytes]) -> str:
    """The id the worker's reply carries: the message's when it is a map with a string id, else ""."""
    if len(frames) != 1:
        return ""
    try:
        message = msgpack.unpackb(frames[0], raw=False, strict_map_key=False)
    except Exception:  # noqa: BLE001
        return ""
    request_id = message.get("id") if isinstance(message, dict) else None
    return request_id if isinstance(request_id, str) else ""


def pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


# --- the fuzzing client -----------------------------------------------------------------------------


class Fuzzer:
    """Makes the seeded bad messages; ``next_message`` gives (kind, frames)."""

    def __init__(self, rng: random.Random, model: str | None) -> None:
        self.rng = rng
        self.model = model
        self.schemas = Schemas()
        self.bases = bases(model or "./missing-model")
        self.count = 0
        self.phase = "no model"  # then "model", then "loads"
        self.valid_generates = 0

    def new_id(self, prefix: str = "f") -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def request(self, kind: str | None = None) -> tuple[str, dict[str, Any]]:
        kind = kind or self.rng.choice(list(self.schemas.requests))
        return kind, envelope(kind, self.new_id(), self.bases[kind])

    def next_message(self) -> tuple[str, list[bytes]]:
        rng = self.rng
        kinds = [
            ("random_bytes", 8), ("random_msgpack", 8), ("random_map", 7), ("wrong_type", 25),
            ("missing_field", 8), ("unknown_field", 6), ("wrong_version", 6), ("huge", 2),
            ("duplicate_id", 3), ("valid", 9),
        ]  # fmt: skip
        if self.phase != "no model":
            kinds.append(("model_cannot_serve", 12))
        if self.phase == "loads":
            kinds.append(("bad_load", 10))
        kind = rng.choices([k for k, _ in kinds], weights=[w for _, w in kinds])[0]
        for _ in range(20):
            frames = getattr(self, kind)()
            if frames is not None and self.acceptable(frames):
                return kind, frames
        return "valid", [pack(envelope("ping", self.new_id(), {}))]

    def acceptable(self, frames: list[bytes]) -> bool:
        """Not a message that would end the run or make it slow: a valid shutdown, a valid load outside
        the load phase (it would replace the model), an expensive valid generate."""
        if len(frames) != 1 or frames == [DUPLICATE] or len(frames[0]) > 2**16:
            return True  # the huge ones are made to be harmless
        try:
            message = protocol.decode(frames[0])
        except Exception:  # noqa: BLE001 - invalid: fine
            return True
        kind = message["type"]
        if kind == "shutdown":
            return False
        if kind == "load":
            same = {k: v for k, v in message.items() if k not in ("v", "id", "type")} == self.bases["load"]
            return self.phase == "loads" or (same and self.phase == "model")
        if kind == "generate":
            cost = len(message["items"]) * (message["steps"] + (message["stage2"] or {}).get("steps", 0))
            size = message["height"] * message["width"]
            cheap = (
                cost <= 4 and size <= 64 * 64 and message["stage2"] is None and len(message["prompts"]) <= 8
            )
            if not cheap or message["id"] == "":
                return False
            if self.phase != "no model":
                if self.valid_generates >= VALID_GENERATES:
                    return False
                self.valid_generates += 1
        return not (kind == "score" and (len(message["items"]) > 8 or message["id"] == ""))

    # The kinds of bad input. Each returns the frames of one message (or None to draw again).
    def random_bytes(self) -> list[bytes]:
        size = self.rng.choice([0, 1, 2, 8, 64, 300, 2000])
        return [self.rng.randbytes(size)]

    def junk(self, depth: int = 0) -> Any:
        rng = self.rng
        choice = rng.randrange(10 if depth < 4 else 7)
        if choice == 0:
            return rng.randint(-(2**63), 2**64 - 1)
        if choice == 1:
            return rng.choice([0.0, -1.5, float("nan"), float("-inf"), 1e300, rng.random()])
        if choice == 2:
            return "".join(chr(rng.randint(32, 0x2FFF)) for _ in range(rng.randint(0, 12)))
        if choice == 3:
            return rng.randbytes(rng.randint(0, 16))
        if choice == 4:
            return rng.choice([None, True, False])
        if choice == 5:
            return rng.choice(["v", "id", "type", "ping", "generate", "", "1"])
        if choice == 6:
            return msgpack.ExtType(rng.randint(0, 127), rng.randbytes(rng.randint(0, 8)))
        if choice in (7, 8):
            return [self.junk(depth + 1) for _ in range(rng.randint(0, 4))]
        keys = [self.junk(depth + 1) for _ in range(rng.randint(0, 4))]
        return {
            k if isinstance(k, str | int | bytes | float | bool) or k is None else str(k): self.junk(
                depth + 1
            )
            for k in keys
        }

    def random_msgpack(self) -> list[bytes]:
        value = self.junk()
        while isinstance(value, dict):
            value = self.junk()
        return [pack(value)]

    def random_map(self) -> list[bytes]:
        rng = self.rng
        message = {str(self.junk(3)): self.junk(1) for _ in range(rng.randint(0, 6))}
        if rng.random() < 0.6:
            message["id"] = self.new_id() if rng.random() < 0.9 else self.junk(3)
        if rng.random() < 0.5:
            message["v"] = rng.choice([1, 1, 0, "1"])
        if rng.random() < 0.6:
            message["type"] = rng.choice([*self.schemas.requests, "pong", "ready", "", "GENERATE", 7])
        if rng.random() < 0.3:
            message[rng.randint(-5, 5)] = self.junk(2)  # a non-string key
        return [pack(message)]

    def wrong_type(self) -> list[bytes]:
        kind, message = self.request()
        path, schema, _ = self.rng.choice(self.schemas.fields[kind])
        if path in (("v",), ("id",), ("type",)) and self.rng.random() < 0.7:
            return self.wrong_type()  # the envelope has its own kinds of fuzz: mostly the body here
        wrong = self.schemas.wrong_values(schema)
        if not wrong:
            return None  # type: ignore[return-value]
        put(message, path, self.rng.choice(wrong), self.schemas.requests[kind])
        return [pack(message)]

    def missing_field(self) -> list[bytes]:
        kind, message = self.request()
        required = [(path, schema) for path, schema, needed in self.schemas.fields[kind] if needed]
        path, _ = self.rng.choice(required)
        if isinstance(path[-1], int):
            return None  # type: ignore[return-value]
        delete(message, path, self.schemas.requests[kind])
        return [pack(message)]

    def unknown_field(self) -> list[bytes]:
        kind, message = self.request()
        objects = [()] + [
            path
            for path, schema, _ in self.schemas.fields[kind]
            if any(option.get("type") == "object" and option.get("properties") for option in _options(schema))
        ]
        path = self.rng.choice(objects)
        name = self.rng.choice(["seeds", "Id", "V", "extra", "", "__proto__", "constructor", "ünï"])
        if path:
            put(message, (*path, name), self.junk(2), self.schemas.requests[kind])
        else:
            message[name] = self.junk(2)
        return [pack(message)]

    def wrong_version(self) -> list[bytes]:
        _, message = self.request()
        version = self.rng.choice([0, 2, 1.0, True, "1", None, -1, 1.5, [1], {"v": 1}, 2**63, "missing"])
        if version == "missing":
            del message["v"]
        else:
            message["v"] = version
        return [pack(message)]

    def huge(self) -> list[bytes]:
        rng = self.rng
        size = rng.choice([2**18, 2**20, 2**21, 4 * 2**20])
        choice = rng.randrange(8)
        if choice == 0:  # a huge string in a valid hello
            return [pack(envelope("hello", self.new_id(), {"protocol": 1, "client": "x" * size}))]
        if choice == 1:  # a huge unknown field
            return [pack({**envelope("ping", self.new_id(), {}), "blob": "y" * size})]
        if choice == 2:  # a huge list of the wrong element type (caught at its first element)
            _, message = self.request("generate")
            message["prompts"] = list(range(size // 4))
            return [pack(message)]
        if choice == 3:  # a long list of valid prompts, then a bad field: the whole list is checked
            _, message = self.request("generate")
            message["prompts"] = ["a prompt"] * rng.choice([10_000, 30_000])
            message["steps"] = 0
            return [pack(message)]
        if choice == 4:  # deep nesting where anything goes (family options), and as a whole message
            depth = rng.choice([100, 500, 1000, 5000])
            nested: Any = 0
            for _ in range(min(depth, 1000)):
                nested = [nested]
            if rng.random() < 0.5:
                return [b"\x91" * depth + b"\x00"]
            _, message = self.request("generate")
            message["family_options"] = {"deep": nested}
            return [pack(message)]
        if choice == 5:  # a multi-frame message
            frames = [pack(envelope("ping", self.new_id(), {})) for _ in range(rng.randint(2, 5))]
            return frames
        if choice == 6:  # a big binary: PNG bytes that are no image
            _, message = self.request("score")
            message["items"][0]["png"] = rng.randbytes(size)
            return [pack(message)]
        # A big map of family options (valid for the schema: the family refuses it): up to 65,536 keys,
        # since a valid message is decoded in the worker too, which takes about 60 ns a byte.
        _, message = self.request("generate")
        message["family_options"] = {f"option{i}": i for i in range(size // 64)}
        return [pack(message)]

    def duplicate_id(self) -> list[bytes]:
        """Two frames in a row with the same id; the second is answered 'already in use' while the first
        is queued or running. Returned as one 'message' of two frames, sent separately (see send)."""
        request_id = self.new_id("d")
        first_kind = "generate" if self.valid_generates < VALID_GENERATES else "score"
        if first_kind == "generate" and self.phase != "no model":
            self.valid_generates += 1
        first = envelope(first_kind, request_id, self.bases[first_kind])
        second_kind = self.rng.choice(
            ["generate", "score", "load"] if self.phase == "model" else ["generate", "score"]
        )
        second = envelope(second_kind, request_id, self.bases[second_kind])
        self.pairs = [pack(first), pack(second)]
        return [DUPLICATE]

    def valid(self) -> list[bytes]:
        rng = self.rng
        choice = rng.randrange(6)
        if choice == 0:
            return [pack(envelope("ping", self.new_id(), {}))]
        if choice == 1:
            return [
                pack(envelope("hello", self.new_id(), {"protocol": rng.choice([1, 1, 2, 0]), "client": "f"}))
            ]
        if choice == 2:
            return [pack(envelope("cancel", self.new_id(), {"target": rng.choice(["nothing", "d1", "f3"])}))]
        if choice == 3:
            return [pack(envelope("score", self.new_id(), self.bases["score"]))]
        if choice == 4 and self.phase == "model":
            return [pack(envelope("load", self.new_id(), self.bases["load"]))]  # the loaded one: at once
        return [pack(envelope("generate", self.new_id(), self.bases["generate"]))]

    def model_cannot_serve(self) -> list[bytes]:
        """Schema-valid requests that the loaded model (or the scorer) refuses: checked past the schema."""
        rng = self.rng
        _, message = self.request("generate")
        choice = rng.randrange(12)
        if choice == 0:
            message["items"][0]["layer"] = rng.choice([6, 100, 2**53 - 1])
        elif choice == 1:
            message["items"][0]["prompt"] = rng.choice([1, 5, 2**53 - 1])
        elif choice == 2:
            message["scheduler"] = rng.choice(["nope", "DDIM", "euler_a", "ünï"])
        elif choice == 3:
            message["encoders"] = rng.choice([["nope"], ["text_encoder", "text_encoder_2"]])
        elif choice == 4:
            message["stage2"] = sample(self.schemas.requests["generate"]["properties"]["stage2"])
        elif choice == 5:
            message["family_options"] = rng.choice([{"nope": 1}, {"noise_level": 3}, {"": None}])
        elif choice == 6:
            message["mix"] = rng.choice([{"layers": [0, 99], "alpha": 0.5}, {"layers": [1, 1], "alpha": 0.5}])
        elif choice == 7:
            message["embeds"] = {
                "path": rng.choice(["/nonexistent/e.safetensors", ".", "/etc/passwd"]),
                "sha256": "0" * 64,
            }
        elif choice == 8:
            message["mix"] = {"layers": [1, 2], "alpha": 0.5}
            message["tokens"] = "prompt"
            message["embeds"] = {"path": "/nonexistent", "sha256": "0" * 64}
        elif choice == 9:
            message["items"][0]["seed"] = 2**53 - 1
            message["items"][0]["layer"] = 99
        else:
            _, message = self.request("score")
            score_choice = rng.randrange(4)
            if score_choice == 0:
                message["scorer"]["kind"] = rng.choice(["clip", "vqa"])  # model null
            elif score_choice == 1:
                message["scorer"]["model"] = rng.choice(["x", "/nonexistent/clip"])  # shapes takes none
            elif score_choice == 2:
                message["items"][0]["png"] = rng.randbytes(rng.randint(0, 64))
            else:
                message["scorer"] = {**message["scorer"], "kind": "clip", "model": "/nonexistent/clip"}
                message["items"][0]["questions"] = [{"id": "q", "text": "t", "right": None, "contrast": []}]
        return [pack(message)]

    def bad_load(self) -> list[bytes]:
        """Schema-valid loads of models that are not there (the load phase: they unload the fixture)."""
        rng = self.rng
        fields = load_fields(
            rng.choice(
                ["./missing", "/nonexistent/model", "org/name", "/nonexistent/m.safetensors", "~/x.ckpt"]
            )
        )
        fields["allow_pickle"] = rng.random() < 0.5
        if rng.random() < 0.3:
            fields["stage2"] = {"model": "/nonexistent/sr", "revision": None}
        if rng.random() < 0.3:
            fields["lora"] = [{"path": "/nonexistent/l.safetensors", "scale": 1.0}]
        return [pack(envelope("load", self.new_id(), fields))]


# --- the well-behaved client and the slow reader ----------------------------------------------------


def good_client(endpoint: str, interval: float, ready: Any, stop: Any, results: Any) -> None:
    """Its own process: pings every ``interval`` and times the pongs (and the heartbeats)."""
    context = zmq.Context()
    socket = context.socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, 0)
    socket.connect(endpoint)
    socket.send(pack({"v": 1, "id": "hello", "type": "hello", "protocol": 1, "client": "good"}))
    while msgpack.unpackb(socket.recv(), raw=False).get("type") != "ready":
        pass
    ready.set()
    sent: dict[str, float] = {}
    latencies: list[float] = []
    pong_times: list[float] = []
    beat_times: list[float] = []
    count = 0
    next_ping = time.monotonic()

    def take(timeout_ms: int) -> None:
        if not socket.poll(timeout_ms):
            return
        message = msgpack.unpackb(socket.recv(), raw=False)
        now = time.monotonic()
        if message.get("type") == "pong" and message.get("id") in sent:
            latencies.append(now - sent.pop(message["id"]))
            pong_times.append(now)
        elif message.get("type") == "heartbeat":
            beat_times.append(now)

    while not stop.is_set():
        now = time.monotonic()
        if now >= next_ping:
            request_id = f"g{count}"
            count += 1
            sent[request_id] = now
            socket.send(pack({"v": 1, "id": request_id, "type": "ping"}))
            next_ping = now + interval
        take(max(1, int((next_ping - time.monotonic()) * 1000)))
    deadline = time.monotonic() + 3
    while sent and time.monotonic() < deadline:
        take(100)
    gaps = [b - a for a, b in pairwise(pong_times)]
    beat_gaps = [b - a for a, b in pairwise(beat_times)]
    results.put(
        {
            "pings": count,
            "pongs": len(latencies),
            "unanswered": len(sent),
            "longest_gap_between_pongs_ms": round(max(gaps, default=0.0) * 1000, 1),
            "max_latency_ms": round(max(latencies, default=0.0) * 1000, 1),
            "median_latency_ms": round(sorted(latencies)[len(latencies) // 2] * 1000, 1)
            if latencies
            else None,
            "pongs_over_1s_late": sum(latency > LATE_S for latency in latencies) + len(sent),
            "heartbeats": len(beat_times),
            "longest_gap_between_heartbeats_ms": round(max(beat_gaps, default=0.0) * 1000, 1),
        }
    )
    socket.close()
    context.term()


class SlowReader(threading.Thread):
    """Sends pings much faster than it reads their pongs (one every 20 ms): its queue fills and the worker
    drops it."""

    def __init__(self, context: zmq.Context, endpoint: str, pings: int = 5000) -> None:
        super().__init__(name="slow-reader", daemon=True)
        self.socket = context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.RCVHWM, 100)
        self.socket.connect(endpoint)
        self.pings = pings
        self.sent = 0
        self.read = 0
        self.stop = threading.Event()

    def run(self) -> None:
        self.socket.send(pack({"v": 1, "id": "hello", "type": "hello", "protocol": 1, "client": "slow"}))
        while not self.stop.wait(0.02):
            for _ in range(100):
                if self.sent >= self.pings:
                    break
                try:
                    self.socket.send(pack({"v": 1, "id": f"s{self.sent}", "type": "ping"}), zmq.NOBLOCK)
                    self.sent += 1
                except zmq.Again:
                    break
            if self.socket.poll(0):
                self.socket.recv()
                self.read += 1
        self.socket.close()


# --- the run ----------------------------------------------------------------------------------------


class Run:
    def __init__(
        self, messages: int, seed: int, model: str | None, log: Path, builder: subprocess.Popen | None = None
    ) -> None:
        self.builder = builder
        self.messages = messages
        self.seed = seed
        self.model = model
        self.log = log
        self.context = zmq.Context()
        self.sent: Counter[str] = Counter()
        self.replies: Counter[str] = Counter()
        self.codes: Counter[str] = Counter()
        self.expected: Counter[str] = Counter()  # id → final replies still due
        self.expected_kind: dict[str, str] = {}
        self.blank_sent = 0
        self.blank_answered = 0
        self.answerable = 0
        self.duplicates_refused = 0
        self.internal: list[str] = []
        self.in_flight = 0

    def start_worker(self) -> subprocess.Popen:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        process = subprocess.Popen(
            [sys.executable, str(SERVER), "--heartbeat", "0.5"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log.open("wb"),
            env=env,
        )
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"the worker did not start; its log: {self.log}")
        self.listening = json.loads(line)
        return process

    def send(self, socket: zmq.Socket, kind: str, frames: list[bytes]) -> None:
        if frames == [DUPLICATE]:
            for frame in self.fuzzer.pairs:
                self.send(socket, kind, [frame])
            return
        self.sent[kind] += 1
        request_id = expected_id(frames)
        if request_id:
            self.answerable += 1
            self.expected[request_id] += 1
            self.expected_kind[request_id] = kind
        else:
            self.blank_sent += 1
        self.in_flight += 1
        socket.send_multipart(frames)

    def take(self, socket: zmq.Socket, timeout_ms: int) -> bool:
        if not socket.poll(timeout_ms):
            return False
        while True:
            try:
                raw = socket.recv(zmq.NOBLOCK)
            except zmq.Again:
                return True
            self.count(msgpack.unpackb(raw, raw=False))

    def count(self, message: dict[str, Any]) -> None:
        """One message from the worker, counted; a final one answers a message in flight."""
        kind = message.get("type")
        if kind == "heartbeat":
            return
        self.replies[kind] += 1
        if kind == "error":
            self.codes[message["code"]] += 1
            if "is already in use by a" in message["message"]:
                self.duplicates_refused += 1
            if message["code"] == "internal":
                self.internal.append(message["message"][:200])
        if kind not in FINALS:
            return
        self.in_flight -= 1
        request_id = message["id"]
        if request_id == "":
            self.blank_answered += 1
        elif self.expected[request_id] > 0:
            self.expected[request_id] -= 1
            if self.expected[request_id] == 0:
                del self.expected[request_id]
                self.expected_kind.pop(request_id, None)
        else:
            self.replies["unexpected"] += 1

    def run(self) -> dict[str, Any]:
        started = time.monotonic()
        rng = random.Random(self.seed)
        worker = self.start_worker()
        endpoint = self.listening["endpoint"]
        spawn = multiprocessing.get_context("spawn")
        ready, stop, results = spawn.Event(), spawn.Event(), spawn.Queue()
        good = spawn.Process(
            target=good_client, args=(endpoint, GOOD_INTERVAL_S, ready, stop, results), daemon=True
        )
        good.start()
        if not ready.wait(120):
            raise RuntimeError("the good client did not get ready")
        slow = SlowReader(self.context, endpoint)
        slow.start()
        socket = self.context.socket(zmq.DEALER)
        socket.setsockopt(zmq.LINGER, 0)
        socket.connect(endpoint)
        self.fuzzer = Fuzzer(rng, self.model)
        model_loaded = False
        try:
            socket.send(pack(envelope("hello", "hello", {"protocol": 1, "client": "fuzz"})))
            while not self.take(socket, 1000) or self.replies["ready"] == 0:
                if worker.poll() is not None:
                    raise RuntimeError(f"the worker exited; its log: {self.log}")
            self.replies.clear()
            tried_load = False
            while (n := sum(self.sent.values())) < self.messages:
                if self.model is not None and not tried_load and n >= self.messages * 0.3:
                    tried_load = True
                    model_loaded = self.load_model(socket)
                    self.fuzzer.phase = "model" if model_loaded else "no model"
                if model_loaded and n >= self.messages * 0.9:
                    self.fuzzer.phase = "loads"
                kind, frames = self.fuzzer.next_message()
                if frames == [DUPLICATE] and n + 2 > self.messages:
                    continue
                self.send(socket, kind, frames)
                while self.in_flight >= WINDOW:
                    if not self.take(socket, 10_000):
                        break  # counted as unanswered below
                self.take(socket, 0)
            deadline = time.monotonic() + 60
            while (self.expected or self.blank_answered < self.blank_sent) and time.monotonic() < deadline:
                self.take(socket, 200)
            # The worker still answers, and ends cleanly when asked.
            socket.send(pack(envelope("ping", "final-ping", {})))
            alive = False
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not alive:
                if socket.poll(200):
                    message = msgpack.unpackb(socket.recv(), raw=False)
                    alive = message.get("id") == "final-ping" and message.get("type") == "pong"
        finally:
            stop.set()
            slow.stop.set()
        good_figures = results.get(timeout=30)
        good.join(10)
        slow.join(5)
        socket.send(pack(envelope("shutdown", "bye", {})))
        try:
            exit_code = worker.wait(15)
        except subprocess.TimeoutExpired:
            worker.kill()
            exit_code = worker.wait()
        socket.close()
        self.context.term()
        log_text = self.log.read_text(errors="replace")
        crashes = int(not alive) + int(exit_code != 0)
        unanswered = sum(self.expected.values())
        blank_unanswered = self.blank_sent - self.blank_answered
        figures = {
            "messages": sum(self.sent.values()),
            "seed": self.seed,
            "sent_by_kind": dict(sorted(self.sent.items())),
            "answerable": self.answerable,
            "unanswered": unanswered,
            "unanswered_by_kind": dict(Counter(self.expected_kind[i] for i in self.expected)),
            "without_readable_id": {
                "sent": self.blank_sent,
                "answered_with_id_empty": self.blank_answered,
                "unanswered": blank_unanswered,
                "what": "non-map frames, maps without a string id and multi-frame messages get an error "
                "with id ''",
            },
            "replies": dict(sorted(self.replies.items())),
            "error_replies": sum(self.codes.values()),
            "error_codes": dict(sorted(self.codes.items())),
            "duplicate_ids_refused": self.duplicates_refused,
            "internal_errors": len(self.internal),
            "internal_examples": self.internal[:5],
            "worker_crashes": crashes,
            "worker_exit_code": exit_code,
            "worker_tracebacks_logged": log_text.count("Traceback (most recent call last)"),
            "model_loaded_part_of_run": model_loaded,
            "good_client": good_figures,
            "slow_reader": {
                "pings_sent": slow.sent,
                "replies_read": slow.read,
                "dropped": "does not read its replies" in log_text,
            },
            "clients_dropped": log_text.count("does not read its replies"),
            "elapsed_s": round(time.monotonic() - started, 1),
        }
        figures["ok"] = (
            unanswered == 0
            and blank_unanswered == 0
            and crashes == 0
            and not self.internal
            and good_figures["pongs_over_1s_late"] == 0
            and good_figures["unanswered"] == 0
        )
        return figures

    def load_model(self, socket: zmq.Socket) -> bool:
        assert self.model is not None
        if self.builder is not None and self.builder.wait() != 0:
            print("fuzz: the tiny fixture could not be built; fuzzing without a model", file=sys.stderr)
            self.model = None
            return False
        socket.send(pack(envelope("load", "fuzz-load", load_fields(self.model))))
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if not socket.poll(500):
                continue
            message = msgpack.unpackb(socket.recv(), raw=False)
            if message.get("id") == "fuzz-load":
                if message["type"] == "error":
                    print(f"fuzz: the fixture did not load: {message['message']}", file=sys.stderr)
                return message["type"] == "loaded"
            self.count(message)  # a late reply to the fuzz so far
        return False


def build_fixture(folder: Path) -> subprocess.Popen:
    """The tiny SD fixture, built by another process while the worker starts."""
    return subprocess.Popen(
        [sys.executable, "-m", "diffusion_lens.fixtures", "sd", str(folder)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=Path(__file__).resolve().parents[1],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )


def summary(figures: dict[str, Any]) -> str:
    good, slow = figures["good_client"], figures["slow_reader"]
    blank = figures["without_readable_id"]
    lines = [
        f"fuzz: {figures['messages']} messages (seed {figures['seed']}) in {figures['elapsed_s']} s; "
        f"model loaded for part of the run: {figures['model_loaded_part_of_run']}",
        "  sent: " + ", ".join(f"{kind} {n}" for kind, n in figures["sent_by_kind"].items()),
        f"  error replies: {figures['error_replies']} ("
        + ", ".join(f"{code} {n}" for code, n in figures["error_codes"].items())
        + f"); duplicate ids refused: {figures['duplicate_ids_refused']}",
        f"  unanswered: {figures['unanswered']} of {figures['answerable']} maps with a string id; "
        f"{blank['unanswered']} of {blank['sent']} frames without a readable id (answered with id '')",
        f"  worker crashes: {figures['worker_crashes']} (exit code {figures['worker_exit_code']}); "
        f"internal errors: {figures['internal_errors']}",
        f"  good client: {good['pongs']}/{good['pings']} pongs, longest gap between pongs "
        f"{good['longest_gap_between_pongs_ms']} ms, max latency {good['max_latency_ms']} ms, over 1 s late: "
        f"{good['pongs_over_1s_late']}; longest gap between heartbeats "
        f"{good['longest_gap_between_heartbeats_ms']} ms",
        f"  slow reader: {slow['pings_sent']} pings sent, {slow['replies_read']} replies read, "
        f"dropped: {slow['dropped']}",
        f"  {'OK' if figures['ok'] else 'FAILED'}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fuzz the worker's protocol and print figures.")
    parser.add_argument("--messages", type=int, default=10_000, help="fuzzed messages to send")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--model", help="a tiny fixture folder to load for part of the run (default: build one)"
    )
    parser.add_argument("--no-model", action="store_true", help="never load a model")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="dlens-fuzz-") as temp:
        folder = Path(temp)
        builder = None
        model = args.model
        if model is None and not args.no_model:
            model = str(folder / "tiny-sd")
            builder = build_fixture(Path(model))
        run = Run(args.messages, args.seed, None if args.no_model else model, folder / "worker.log", builder)
        figures = run.run()
    print(json.dumps(figures), flush=True)
    print(summary(figures), file=sys.stderr, flush=True)
    return 0 if figures["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
