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


def _exact_map(fields: dict[str, Check]) -> Check:
    """A map with exactly these keys, each passing its check."""
    return lambda value: (
        isinstance(value, dict)
        and set(value) == set(fields)
        and all(check(value[k]) for k, check in fields.items())
    )


def _multiple_of_8(value: Any) -> bool:
    return _positive_int(value) and value % 8 == 0


_STAGE2_SOURCE = _exact_map({"model": lambda v: _is_str(v) and v != "", "revision": _optional(_is_str)})
_STAGE2_SETTINGS = _exact_map(
    {
        "steps": _positive_int,
        "guidance": lambda v: _is_number(v) and v >= 0,
        "height": _multiple_of_8,
        "width": _multiple_of_8,
        "noise_level": _non_negative_int,
        "scheduler": _optional(_is_str),
        "seed": _optional(_non_negative_int),
    }
)

# Per request type: field → (check, description used in the error message).
REQUEST_FIELDS: dict[str, dict[str, tuple[Check, str]]] = {
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
        "stage2": (_optional(_STAGE2_SOURCE), "null or {model: non-empty string, revision: string or null}"),
    },
    "generate": {
        "prompts": (_list_of(_is_str), "a non-empty list of strings"),
        "items": (
            _list_of(_item),
            "a non-empty list of {prompt, layer, seed} non-negative integers",
        ),
        "negative": (_is_str, "a string"),
        "steps": (_positive_int, "a positive integer"),
        "guidance": (lambda v: _is_number(v) and v >= 0, "a non-negative number"),
        "height": (_multiple_of_8, "a positive multiple of 8"),
        "width": (_multiple_of_8, "a positive multiple of 8"),
        "scheduler": (_optional(_is_str), "a scheduler name or null"),
        "uncond": (_one_of("final", "same-layer"), "'final' or 'same-layer'"),
        "noise": (_one_of("shared", "per-layer"), "'shared' or 'per-layer'"),
        "max_batch": (_positive_int, "a positive integer"),
        "stage2": (
            _optional(_STAGE2_SETTINGS),
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
        if not check(message[field]):
            raise ProtocolError(
                "bad_message",
                f"{kind}: field '{field}' must be {description}",
                request_id,
            )
    return message


def encode(message: Message) -> bytes:
    return msgpack.packb(message, use_bin_type=True)


def reply(request_id: str, kind: str, **fields: Any) -> Message:
    return {"v": PROTOCOL_VERSION, "id": request_id, "type": kind, **fields}


def error(request_id: str, code: str, message: str, traceback: str | None = None) -> Message:
    assert code in ERROR_CODES, code
    return reply(request_id, "error", code=code, message=message, traceback=traceback)
