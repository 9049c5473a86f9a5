"""Caption cleaning as the stock T5 pipelines do it (IF, PixArt): ``_text_preprocessing`` with
``clean_caption=True`` strips URLs, HTML and odd characters using beautifulsoup4 and ftfy. The stock
pipelines clean only prompts they encode themselves, never passed embeddings, so the lens cleans once,
when it encodes."""

from __future__ import annotations

from typing import Any

from diffusers.utils import is_bs4_available, is_ftfy_available

from .base import CheckpointError

# The load option (``Family.options["load"]``) of a family that cleans captions.
CLEAN_CAPTION_OPTION = {
    "type": ["boolean", "null"],
    "default": None,
    "description": "clean captions as the stock pipeline does (needs beautifulsoup4 and ftfy); "
    "null: on when those are installed",
}


def caption_cleaning_missing() -> list[str]:
    """The packages caption cleaning needs that are not installed."""
    return [
        name for name, ok in (("beautifulsoup4", is_bs4_available()), ("ftfy", is_ftfy_available())) if not ok
    ]


def require_caption_cleaning(asked: bool | None) -> None:
    """Refuses ``clean_caption: true`` when its packages are missing (before any weights load)."""
    missing = caption_cleaning_missing()
    if asked and missing:
        raise CheckpointError(
            f"clean_caption is on but {' and '.join(missing)} not installed (pip install {' '.join(missing)})"
        )


def resolve_caption_cleaning(asked: bool | None, pipeline: str) -> tuple[bool, list[str]]:
    """Whether captions are cleaned (``asked``: true, false, or null = when possible), and the notice the
    user must see when null had to mean off."""
    missing = caption_cleaning_missing()
    if asked is None and missing:
        notice = (
            f"caption cleaning is off: {' and '.join(missing)} not installed, so prompts are only "
            f"lower-cased and stripped; the stock {pipeline} pipeline cleans captions by default "
            f"(pip install {' '.join(missing)})"
        )
        return False, [notice]
    return asked is not False and not missing, []


def preprocess(pipe: Any, prompt: str, clean: bool) -> str:
    """The prompt as the stock pipeline tokenizes it: cleaned, or lower-cased and stripped."""
    return pipe._text_preprocessing(prompt, clean_caption=clean)[0]
