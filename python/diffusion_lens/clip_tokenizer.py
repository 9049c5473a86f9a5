"""CLIP tokenizers built offline, in memory (no vocabulary files to download).

The byte-level base vocabulary (the 256 byte symbols, each also with the end-of-word suffix) with no
merges tokenises any text, one token per character. Given ``words``, a BPE is trained on them so that
each becomes a single token (whole-word tokens keep short prompts short); other text still falls back
to bytes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from transformers import CLIPTokenizer

CLIP_BOS, CLIP_EOS = "<|startoftext|>", "<|endoftext|>"
END_OF_WORD = "</w>"


def bytes_to_unicode() -> list[str]:
    """GPT-2's reversible map from the 256 byte values to printable unicode symbols."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    symbols = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            symbols.append(256 + extra)
            extra += 1
    return [chr(s) for s in symbols]


def _word_merges(words: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Tokens and merges of a BPE trained until every word is one token."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE(end_of_word_suffix=END_OF_WORD))
    bpe.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(
        vocab_size=100_000, min_frequency=1, end_of_word_suffix=END_OF_WORD, show_progress=False
    )
    bpe.train_from_iterator([" ".join(words)], trainer)
    model = json.loads(bpe.to_str())["model"]
    tokens = sorted(model["vocab"], key=model["vocab"].get)
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    return tokens, merges  # type: ignore[return-value]


def clip_tokenizer(
    pad_token: str = CLIP_EOS, model_max_length: int = 77, words: Iterable[str] = ()
) -> CLIPTokenizer:
    vocab: dict[str, int] = {}
    for symbol in bytes_to_unicode():
        vocab[symbol] = len(vocab)
    for symbol in bytes_to_unicode():
        vocab[symbol + END_OF_WORD] = len(vocab)
    merges: list[tuple[str, str]] = []
    word_list = sorted({w.lower() for w in words})
    if word_list:
        tokens, merges = _word_merges(word_list)
        for token in tokens:
            vocab.setdefault(token, len(vocab))
    vocab[CLIP_BOS] = len(vocab)
    vocab[CLIP_EOS] = len(vocab)
    tokenizer = CLIPTokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=CLIP_EOS,
        bos_token=CLIP_BOS,
        eos_token=CLIP_EOS,
        pad_token=pad_token,
    )
    tokenizer.model_max_length = model_max_length
    return tokenizer
