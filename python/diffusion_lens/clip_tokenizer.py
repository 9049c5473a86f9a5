"""CLIP tokenizers built offline, in memory (no vocabulary files to download).

The byte-level base vocabulary (the 256 byte symbols, each also with the end-of-word suffix) with no
merges tokenises any text, one token per character. Given ``words``, a BPE is trained on them so that
each becomes a single token (whole-word tokens keep short prompts short); other text still falls back
to bytes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from itertools import pairwise

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
    """Tokens and merges of a BPE trained until every word is one token: at each step the most frequent
    pair of adjacent symbols is merged, ties going to the first pair in text order.
    (The `tokenizers` trainer breaks ties differently in every process, so a model trained from scratch
    would get other token ids on every rebuild.)"""
    parts = [[*word[:-1], word[-1] + END_OF_WORD] for word in words]
    merges: list[tuple[str, str]] = []
    while counts := Counter(pair for symbols in parts for pair in pairwise(symbols)):
        pair = min(counts, key=lambda p: (-counts[p], p))
        merges.append(pair)
        for symbols in parts:
            i = 0
            while i < len(symbols) - 1:
                if (symbols[i], symbols[i + 1]) == pair:
                    symbols[i : i + 2] = [pair[0] + pair[1]]
                i += 1
    return [a + b for a, b in merges], merges


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
