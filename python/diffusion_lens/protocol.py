"""Protocol v1 messages: encoding, and validation of everything the worker receives.

See docs/protocol.md. Every incoming message is checked here before anything acts on it; a bad one
raises ``ProtocolError``, which the server turns into an ``error`` reply.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgpack

from . import PROTOCOL_VERSION

ERROR_CODES = (
    "bad_message",
    "version_mismatch",
    "not_loaded",
    "load_failed",
    "bad_request",
    "cancelled",
    "oom",
    "internal",
)

Message = dict[str, Any]
Check = Callable[[Any], bool]
Spec = tuple[Check, str]  # a check, and what it asks for (for the error message)

# Classifier-free guidance scales: beyond about 100 images saturate, and 1e308 or inf overflows the
# guided noise to NaN (an all-black image). The TS config has the same bound.
GUIDANCE_RANGE = (0.0, 100.0)


class ProtocolError(Exception):
    """A message that cannot be acted on; ``code`` is one of ERROR_CODES."""

    def __init__(self, code: str, message: str, request_id: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.request_id = request_id


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_str(value: Any) -> bool:
    return isinstance(value, str)


def _optional(check: Check) -> Check:
    return lambda value: value is None or check(value)


def _one_of(*choices: str) -> Check:
    return lambda value: value in choices


def _non_negative_int(value: Any) -> bool:
    return _is_int(value) and value >= 0


def _positive_int(value: Any) -> bool:
    return _is_int(value) and value > 0


def range_problem(name: str, value: float, low: float, high: float) -> str | None:
    """Why ``value`` is not a number in low..high, or None. NaN fails every comparison and the
    infinities fail the finite bounds, so both are out of range."""
    if low <= value <= high:
        return None
    return f"{name} = {value!r} is out of range {low:g}..{high:g}"


class _Range:
    """A finite number in low..high (integers too: msgpack encoders send 7.0 as 7)."""

    def __init__(self, low: float, high: float) -> None:
        self.low, self.high = low, high

    def __call__(self, value: Any) -> bool:
        return _is_number(value) and range_problem("", value, self.low, self.high) is None


class _Map:
    """A map with exactly these keys, each passing its check (or null, when nullable)."""

    def __init__(self, fields: dict[str, Spec], nullable: bool = False) -> None:
        self.fields, self.nullable = fields, nullable

    def __call__(self, value: Any) -> bool:
        if value is None:
            return self.nullable
        return (
            isinstance(value, dict)
            and set(value) == set(self.fields)
            and all(check(value[k]) for k, (check, _) in self.fields.items())
        )


def _list_of(check: Check, non_empty: bool = True) -> Check:
    return lambda value: (
        isinstance(value, list) and (len(value) > 0 or not non_empty) and all(map(check, value))
    )


def _item(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and set(value) == {"prompt", "layer", "seed"}
        and all(_non_negative_int(value[k]) for k in ("prompt", "layer", "seed"))
    )


def _multiple_of_8(value: Any) -> bool:
    return _positive_int(value) and value % 8 == 0


_GUIDANCE: Spec = (_Range(*GUIDANCE_RANGE), "a finite number in {:g}..{:g}".format(*GUIDANCE_RANGE))
_STAGE2_SOURCE = _Map(
    {
        "model": (lambda v: _is_str(v) and v != "", "a non-empty string"),
        "revision": (_optional(_is_str), "a string or null"),
    },
    nullable=True,
)
_STAGE2_SETTINGS = _Map(
    {
        "steps": (_positive_int, "a positive integer"),
        "guidance": _GUIDANCE,
        "height": (_multiple_of_8, "a positive multiple of 8"),
        "width": (_multiple_of_8, "a positive multiple of 8"),
        "noise_level": (_non_negative_int, "a non-negative integer"),
        "scheduler": (_optional(_is_str), "a scheduler name or null"),
        "seed": (_optional(_non_negative_int), "a non-negative integer or null"),
    },
    nullable=True,
)

# Per request type: field → (check, description used in the error message).
REQUEST_FIELDS: dict[str, dict[str, Spec]] = {
    "hello": {"protocol": (_is_int, "an integer"), "client": (_is_str, "a string")},
    "load": {
        "model": (lambda v: _is_str(v) and v != "", "a non-empty string"),
        "family": (_optional(_is_str), "a string or null"),
        "dtype": (
            _one_of("auto", "fp32", "fp16", "bf16"),
            "one of auto, fp32, fp16, bf16",
        ),
        "device": (
            _one_of("auto", "cpu", "cuda", "mps"),
            "one of auto, cpu, cuda, mps",
        ),
        "revision": (_optional(_is_str), "a string or null"),
        "offload": (_one_of("none", "encoder", "model"), "one of none, encoder, model"),
        "allow_pickle": (lambda v: isinstance(v, bool), "a boolean"),
        "variant": (_optional(lambda v: _is_str(v) and v != ""), "a non-empty string or null"),
        "clean_caption": (_optional(lambda v: isinstance(v, bool)), "a boolean or null"),
        "stage2": (_STAGE2_SOURCE, "null or {model: non-empty string, revision: string or null}"),
    },
    "generate": {
        "prompts": (_list_of(_is_str), "a non-empty list of strings"),
        "items": (
            _list_of(_item),
            "a non-empty list of {prompt, layer, seed} non-negative integers",
        ),
        "negative": (_is_str, "a string"),
        "steps": (_positive_int, "a positive integer"),
        "guidance": _GUIDANCE,
        "height": (_multiple_of_8, "a positive multiple of 8"),
        "width": (_multiple_of_8, "a positive multiple of 8"),
        "scheduler": (_optional(_is_str), "a scheduler name or null"),
        "uncond": (_one_of("final", "same-layer"), "'final' or 'same-layer'"),
        "noise": (_one_of("shared", "per-layer"), "'shared' or 'per-layer'"),
        "max_batch": (_positive_int, "a positive integer"),
        "stage2": (
            _STAGE2_SETTINGS,
            "null or {steps, guidance, height, width, noise_level, scheduler, seed} (see docs/protocol.md)",
        ),
    },
    "cancel": {"target": (_is_str, "a string")},
    "ping": {},
    "shutdown": {},
}


def decode(frame: bytes) -> Message:
    """Parse and validate one incoming frame, or raise ProtocolError."""
    try:
        message = msgpack.unpackb(frame, raw=False, strict_map_key=False)
    except Exception as exc:  # noqa: BLE001 - msgpack raises several unrelated types on garbage
        raise ProtocolError(
            "bad_message", f"frame is not valid msgpack ({type(exc).__name__}: {exc})"
        ) from None
    if not isinstance(message, dict):
        raise ProtocolError("bad_message", f"message must be a map, got {type(message).__name__}")
    request_id = message.get("id")
    if not isinstance(request_id, str):
        raise ProtocolError("bad_message", "field 'id' must be a string")
    if message.get("v") != PROTOCOL_VERSION:
        raise ProtocolError(
            "version_mismatch",
            f"protocol version {message.get('v')!r} is not supported; this worker speaks v{PROTOCOL_VERSION}",
            request_id,
        )
    kind = message.get("type")
    if kind not in REQUEST_FIELDS:
        raise ProtocolError(
            "bad_message",
            f"unknown message type {kind!r}; expected one of {sorted(REQUEST_FIELDS)}",
            request_id,
        )
    for field, (check, description) in REQUEST_FIELDS[kind].items():
        if field not in message:
            raise ProtocolError("bad_message", f"{kind}: missing field '{field}'", request_id)
        problem = _problem(field, check, description, message[field])
        if problem is not None:
            raise ProtocolError("bad_message", f"{kind}: {problem}", request_id)
    return message


def _problem(name: str, check: Check, description: str, value: Any) -> str | None:
    """None when ``value`` passes ``check``; else what is wrong, naming the innermost field at fault
    (``stage2.guidance``) and, for a number out of range, its value."""
    if check(value):
        return None
    if isinstance(check, _Range) and _is_number(value):
        return range_problem(name, value, check.low, check.high)
    if isinstance(check, _Map) and isinstance(value, dict) and set(value) == set(check.fields):
        for key, (inner, inner_description) in check.fields.items():
            problem = _problem(f"{name}.{key}", inner, inner_description, value[key])
            if problem is not None:
                return problem
    return f"field '{name}' must be {description}"


def encode(message: Message) -> bytes:
    return msgpack.packb(message, use_bin_type=True)


def reply(request_id: str, kind: str, **fields: Any) -> Message:
    return {"v": PROTOCOL_VERSION, "id": request_id, "type": kind, **fields}


def error(request_id: str, code: str, message: str, traceback: str | None = None) -> Message:
    assert code in ERROR_CODES, code
    return reply(request_id, "error", code=code, message=message, traceback=traceback)
