"""Protocol v1 messages: encoding, and validation of everything the worker receives.

The protocol is defined once, by the zod schemas in src/bridge/protocol.ts; ``protocol.schema.json``
beside this file is generated from them (``npm run protocol-schema``) and every incoming message is
validated against it here (the ``jsonschema`` package) before anything acts on it. docs/protocol.md
describes the messages. A bad message raises ``ProtocolError``, which the server turns into an
``error`` reply naming the field at fault. What a schema cannot know (a layer beyond the loaded
model's depth, an unknown scheduler, an item whose prompt index is past ``prompts``) is checked where
it is used, in generation.py and the families, and answered with ``bad_request``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
from jsonschema import Draft202012Validator, ValidationError, validators

from . import PROTOCOL_VERSION

SCHEMA_PATH = Path(__file__).with_name("protocol.schema.json")
SCHEMA: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
if SCHEMA["protocol"] != PROTOCOL_VERSION:
    raise RuntimeError(f"{SCHEMA_PATH} is for protocol v{SCHEMA['protocol']}, not v{PROTOCOL_VERSION}")

ERROR_CODES: tuple[str, ...] = tuple(SCHEMA["replies"]["error"]["properties"]["code"]["enum"])

# Classifier-free guidance scales: beyond about 100 images saturate, and 1e308 or inf overflows the
# guided noise to NaN (an all-black image). From the schema; generation.py checks library callers with it.
_GUIDANCE = SCHEMA["requests"]["generate"]["properties"]["guidance"]
GUIDANCE_RANGE: tuple[float, float] = (float(_GUIDANCE["minimum"]), float(_GUIDANCE["maximum"]))

# zod's integers are JS-safe: every integer field has this bound, which goes without saying in messages.
_SAFE_INTEGER = 2**53 - 1

Message = dict[str, Any]


class ProtocolError(Exception):
    """A message that cannot be acted on; ``code`` is one of ERROR_CODES."""

    def __init__(self, code: str, message: str, request_id: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.request_id = request_id


def range_problem(name: str, value: float, low: float, high: float) -> str | None:
    """Why ``value`` is not a number in low..high, or None. NaN fails every comparison and the
    infinities fail the finite bounds, so both are out of range."""
    if low <= value <= high:
        return None
    return f"{name} = {value!r} is out of range {low:g}..{high:g}"


# --- the validator ---------------------------------------------------------------------------------
# JSON Schema's types, as msgpack gives them to Python: an integer is an int (the bridge never sends
# 7.0 for 7, and a float would break range() and torch seeds), a number is finite (JSON has no NaN or
# infinity, and zod refuses them), a bool is neither.


def _is_integer(_checker: Any, value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(_checker: Any, value: Any) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)) or (
        isinstance(value, float) and math.isfinite(value)
    )


def _binary(_validator: Any, expected: Any, value: Any, _schema: Any) -> Iterator[ValidationError]:
    """msgpack ``bin`` (the schema has no binary type; zod's side checks for a Uint8Array)."""
    if expected and not isinstance(value, bytes | bytearray):
        yield ValidationError(f"{value!r:.40} is not msgpack bin")


_Validator = validators.extend(
    Draft202012Validator,
    validators={SCHEMA["binary_keyword"]: _binary},
    type_checker=Draft202012Validator.TYPE_CHECKER.redefine_many(
        {"integer": _is_integer, "number": _is_number}
    ),
)


def validator(schema: dict[str, Any]) -> Any:
    """A validator of ``schema`` with the protocol's types (families check their options with it)."""
    return _Validator(schema)


_REQUESTS = {kind: _Validator(schema) for kind, schema in SCHEMA["requests"].items()}
_REPLIES = {kind: _Validator(schema) for kind, schema in SCHEMA["replies"].items()}
REQUEST_TYPES: tuple[str, ...] = tuple(_REQUESTS)
REPLY_TYPES: tuple[str, ...] = tuple(_REPLIES)


def _field(path: Any) -> str:
    """``stage2.height``, ``items[0].layer``."""
    name = ""
    for part in path:
        name += f"[{part}]" if isinstance(part, int) else f"{'.' if name else ''}{part}"
    return name


def _bounds(schema: dict[str, Any]) -> tuple[int | None, int | None]:
    """The inclusive (low, high) of an integer schema, None where the JS-safe range is the bound."""
    low, high = schema.get("minimum"), schema.get("maximum")
    if "exclusiveMinimum" in schema:
        low = schema["exclusiveMinimum"] + 1
    if "exclusiveMaximum" in schema:
        high = schema["exclusiveMaximum"] - 1
    return (None if low == -_SAFE_INTEGER else low), (None if high == _SAFE_INTEGER else high)


def _a(noun: str) -> str:
    return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}"


def describe(schema: dict[str, Any]) -> str:
    """What a schema asks for, in words: 'a positive multiple of 8', 'a string or null'."""
    if "const" in schema:
        return json.dumps(schema["const"])
    if "enum" in schema:
        return "one of " + ", ".join(str(choice) for choice in schema["enum"])
    if "anyOf" in schema:
        return " or ".join(describe(option) for option in schema["anyOf"])
    if SCHEMA["binary_keyword"] in schema:
        return "bytes (msgpack bin)"
    kind = schema.get("type")
    if isinstance(kind, list):
        return " or ".join(describe({**schema, "type": one}) for one in kind)
    if kind == "integer":
        low, high = _bounds(schema)
        noun = f"multiple of {schema['multipleOf']}" if "multipleOf" in schema else "integer"
        if low is not None and high is not None:
            return f"{_a(noun)} in {low}..{high}"
        sign = {None: "", 0: "non-negative ", 1: "positive "}.get(low)
        return _a(f"{sign}{noun}") if sign is not None else f"{_a(noun)} >= {low}"
    if kind == "number":
        if "minimum" in schema and "maximum" in schema:
            return f"a finite number in {schema['minimum']:g}..{schema['maximum']:g}"
        if schema.get("exclusiveMinimum") == 0:
            return "a positive number"
        return "a non-negative number" if schema.get("minimum") == 0 else "a finite number"
    if kind == "string":
        return "a non-empty string" if schema.get("minLength", 0) >= 1 else "a string"
    if kind == "boolean":
        return "a boolean"
    if kind == "null":
        return "null"
    if kind == "array" and "prefixItems" in schema:
        parts = schema["prefixItems"]
        return f"a list of {len(parts)}: " + ", ".join(describe(part) for part in parts)
    if kind == "array":
        items = describe(schema.get("items", {}))
        return f"a {'non-empty ' if schema.get('minItems', 0) >= 1 else ''}list, each {items}"
    if kind == "object":
        return "a map {" + ", ".join(schema.get("properties", {})) + "}"
    return "something else"


def _innermost(error: ValidationError) -> ValidationError:
    """For a value that matches none of ``anyOf``'s options (``stage2``: null or a map), the error
    inside the one option its type fits, so that the message names the innermost field at fault."""
    while error.context:
        options: dict[Any, list[ValidationError]] = {}
        for inner in error.context:
            options.setdefault(inner.relative_schema_path[0], []).append(inner)
        fitting = [
            errors
            for errors in options.values()
            if not any(inner.validator == "type" and not inner.relative_path for inner in errors)
        ]
        if len(fitting) != 1:
            break
        error = fitting[0][0]
    return error


def _explain(error: ValidationError) -> str:
    """One validation error as the `bad_message` text: names the field, says what it must be."""
    error = _innermost(error)
    path, schema, value = list(error.absolute_path), error.schema, error.instance
    if error.validator == "required":
        missing = next(name for name in error.validator_value if name not in value)
        return f"missing field '{_field([*path, missing])}'"
    if error.validator == "additionalProperties":
        unknown = next(name for name in value if name not in schema.get("properties", {}))
        return f"unknown field '{_field([*path, unknown])}'"
    if error.validator in ("minimum", "maximum") and abs(error.validator_value) == _SAFE_INTEGER:
        return f"{_field(path)} = {value} is out of the protocol's integer range ±(2^53 - 1)"
    bounded = schema.get("type") == "number" and "minimum" in schema and "maximum" in schema
    if bounded and isinstance(value, int | float) and not isinstance(value, bool):
        problem = range_problem(_field(path), value, schema["minimum"], schema["maximum"])
        if problem is not None:  # else an in-range number broke another rule
            return problem
    return f"field '{_field(path)}' must be {describe(schema)}"


def first_problem(validator: Any, message: Any) -> str | None:
    """The first schema error of ``message``, explained; None when it is valid."""
    error = next(iter(validator.iter_errors(message)), None)
    return None if error is None else _explain(error)


def reply_problem(message: Any) -> str | None:
    """Why ``message`` is not a message the worker may send (the schema's replies), or None. The
    tests check everything the worker sends with it."""
    if not isinstance(message, dict):
        return f"a message must be a map, not {type(message).__name__}"
    kind = message.get("type")
    if not isinstance(kind, str) or kind not in _REPLIES:
        return f"unknown reply type {kind!r}; expected one of {sorted(_REPLIES)}"
    problem = first_problem(_REPLIES[kind], message)
    return None if problem is None else f"{kind}: {problem}"


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
    # The envelope by hand first: the id is echoed even when the rest is bad, and another version is
    # version_mismatch, not bad_message.
    request_id = message.get("id")
    if not isinstance(request_id, str):
        raise ProtocolError("bad_message", "field 'id' must be a string")
    version = message.get("v")
    # Only the integer: 1.0 == 1 and True == 1 in Python, but neither is what the bridge sends.
    if type(version) is not int or version != PROTOCOL_VERSION:
        raise ProtocolError(
            "version_mismatch",
            f"protocol version {version!r} is not supported; this worker speaks v{PROTOCOL_VERSION}",
            request_id,
        )
    kind = message.get("type")
    if not isinstance(kind, str) or kind not in _REQUESTS:
        raise ProtocolError(
            "bad_message",
            f"unknown message type {kind!r}; expected one of {sorted(_REQUESTS)}",
            request_id,
        )
    problem = first_problem(_REQUESTS[kind], message)
    if problem is not None:
        raise ProtocolError("bad_message", f"{kind}: {problem}", request_id)
    return message


def encode(message: Message) -> bytes:
    return msgpack.packb(message, use_bin_type=True)


def reply(request_id: str, kind: str, **fields: Any) -> Message:
    return {"v": PROTOCOL_VERSION, "id": request_id, "type": kind, **fields}


def error(request_id: str, code: str, message: str, traceback: str | None = None) -> Message:
    assert code in ERROR_CODES, code
    return reply(request_id, "error", code=code, message=message, traceback=traceback)
