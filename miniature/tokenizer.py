"""CLIP BPE tokenisation of captions, id-for-id the same as ComfyUI's SD1Tokenizer on plain text.

Why a real CLIP vocabulary in a toy world: caption inversion (paper §4.3) must face the same
49 408-token search space and the same word splitting it faces on Stable Diffusion. The vocabulary
is OpenAI's ``bpe_simple_vocab_16e6.txt.gz`` (MIT), shipped beside this file. As SD1Tokenizer
does: lower-case, whitespace collapsed, ``[49406] + bpe + [49407]`` padded with 49407 to 77 ids;
longer prompts are cut to 75 BPE tokens (SD1Tokenizer would open a second 77-token chunk instead).
ComfyUI's prompt-weight syntax ``(word:1.2)`` is not parsed here: captions are plain text.
"""
from __future__ import annotations

import functools
import gzip
import pathlib

import regex
import torch

VOCAB_FILE = pathlib.Path(__file__).with_name("bpe_simple_vocab_16e6.txt.gz")
START, END = 49406, 49407
CONTEXT_LENGTH = 77
_PATTERN = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte → printable-character map the BPE merges are written in."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars)))


_BYTE_ENCODER = _bytes_to_unicode()


@functools.lru_cache(maxsize=1)
def _vocabulary() -> tuple[dict[str, int], dict[tuple[str, str], int]]:
    """(token → id, merge pair → rank), read once from the shipped vocabulary."""
    lines = gzip.open(VOCAB_FILE).read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1:49152 - 256 - 2 + 1]]
    symbols = list(_BYTE_ENCODER.values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return {tok: i for i, tok in enumerate(vocab)}, {m: i for i, m in enumerate(merges)}


@functools.lru_cache(maxsize=50_000)
def _bpe(word: str) -> tuple[str, ...]:
    """Byte-pair-merge one pre-token (already byte-encoded) in merge-rank order."""
    ranks = _vocabulary()[1]
    parts = list(word[:-1]) + [word[-1] + "</w>"]
    while len(parts) > 1:
        pairs = {(a, b) for a, b in zip(parts, parts[1:])}
        best = min(pairs, key=lambda p: ranks.get(p, float("inf")))
        if best not in ranks:
            break
        merged, i = [], 0
        while i < len(parts):
            if i < len(parts) - 1 and (parts[i], parts[i + 1]) == best:
                merged.append(parts[i] + parts[i + 1])
                i += 2
            else:
                merged.append(parts[i])
                i += 1
        parts = merged
    return tuple(parts)


def encode(text: str) -> list[int]:
    """BPE ids of ``text`` without start/end tokens."""
    encoder = _vocabulary()[0]
    text = " ".join(text.split()).lower()
    ids = []
    for token in _PATTERN.findall(text):
        word = "".join(_BYTE_ENCODER[b] for b in token.encode("utf-8"))
        ids.extend(encoder[piece] for piece in _bpe(word))
    return ids


def tokenize(texts: list[str] | str) -> torch.LongTensor:
    """(B, 77) ids: start, BPE (at most 75), end, then end-padding — SD1Tokenizer's layout."""
    if isinstance(texts, str):
        texts = [texts]
    out = torch.full((len(texts), CONTEXT_LENGTH), END, dtype=torch.long)
    for row, text in enumerate(texts):
        ids = [START] + encode(text)[:CONTEXT_LENGTH - 2] + [END]
        out[row, :len(ids)] = torch.tensor(ids)
    return out
