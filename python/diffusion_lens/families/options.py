"""A family's own options: declared as JSON Schemas (reported to the orchestrator in ``ready`` and
``loaded``), checked here with the protocol's validator so that errors read like the protocol's."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..protocol import first_problem, validator

OptionsSchema = Mapping[str, Any]


def options_schema(**properties: Mapping[str, Any]) -> dict[str, Any]:
    """A map of exactly these options (each a JSON Schema, with its ``default`` and ``description``)."""
    return {"type": "object", "properties": dict(properties), "additionalProperties": False}


NO_OPTIONS = options_schema()


def max_sequence_length_option(default: int, note: str = "") -> dict[str, Any]:
    """The T5 token count of the pipelines whose ``__call__`` takes ``max_sequence_length`` (Flux, SD3)."""
    return {
        "type": "integer",
        "minimum": 1,
        "maximum": 512,
        "default": default,
        "description": "T5 tokens a prompt is padded and cut to, as the stock pipeline's "
        f"max_sequence_length{note}",
    }


def options_problem(schema: OptionsSchema, given: Any, where: str, owner: str) -> str | None:
    """Why ``given`` is not a valid options map for ``schema``, naming ``where`` (a dotted field path,
    e.g. ``stage2.family_options``) and the option at fault; None when it is valid."""
    if not isinstance(given, Mapping):
        return f"{where} must be a map of options, not {type(given).__name__}"
    known = schema["properties"]
    unknown = next((name for name in given if name not in known), None)
    if unknown is not None:
        choices = ", ".join(known) or "none"
        return f"{where}.{unknown}: {owner} has no such option (its options here: {choices})"
    # Wrapped in the path's maps, the validator's messages name the whole field path.
    wrapped: dict[str, Any] = dict(schema)
    value: Any = dict(given)
    for part in reversed(where.split(".")):
        wrapped = {"type": "object", "properties": {part: wrapped}}
        value = {part: value}
    return first_problem(validator(wrapped), value)


def with_defaults(schema: OptionsSchema, given: Mapping[str, Any]) -> dict[str, Any]:
    """``given`` with the schema's default for every option it leaves out."""
    defaults = {name: spec["default"] for name, spec in schema["properties"].items() if "default" in spec}
    return {**defaults, **given}


# PixArt's and Sana's stock resolution binning, as a sampling option.
RESOLUTION_BINNING_OPTION: dict[str, Any] = {
    "type": "boolean",
    "default": True,
    "description": "generate at the nearest trained aspect-ratio size and resize to the asked one, as the "
    "stock pipeline does",
}
