"""One call that recovers a caption from whatever is available, strongest source first, and says
where it came from. The ComfyUI node (FineXtractCaptionInverter) is a thin wrapper around :func:`recover_caption`.

Methods: ``metadata`` (the files' training metadata, :mod:`.metadata`), ``ranking`` (the top-L tokens
of Eq. 17/19, :mod:`.ranking`), ``pez`` (Algorithm 1, :mod:`.pez`), ``auto`` — metadata when it holds
a caption (it is the trainer's own record), else PEZ (the paper's extracted caption, Table 6–7).
The ranked-token output is the weight-space ranking whenever the K/V layers changed; with ``auto``
and a metadata caption, a pair whose K/V layers did not change is noted, not an error.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from . import pez, ranking
from .encoders import PromptEncoder
from .metadata import NotSafetensorsError, TrainingMetadata, training_metadata
from .weight_delta import NoTextLayerChangeError, TextReadingLayers

METHODS = ("auto", "metadata", "ranking", "pez")
VOCABULARIES = ("raw", "contextual")


@dataclass
class CaptionRequest:
    """Settings of one recovery (paper defaults: L = 3, 1000 iterations, L2-PGD, Eq. 19)."""

    method: str = "auto"
    length: int = 3
    iterations: int = 1000
    seed: int = 0
    objective: str = "eq19"
    optimiser: str = "pgd"
    lr: float | None = None
    vocabulary: str = "raw"
    rows: str = "sequence"
    deflate: int = 0
    top_k: int = 20


@dataclass
class CaptionResult:
    caption: str
    ranked: list[tuple[str, float]] = field(default_factory=list)
    source: list[str] = field(default_factory=list)

    def ranked_text(self) -> str:
        return "\n".join(f"{token}\t{score:.6g}" for token, score in self.ranked)


def read_metadata(paths: Sequence[str], notes: list[str]) -> list[TrainingMetadata]:
    """Training metadata of every file that has a readable header; unreadable files are noted."""
    found = []
    for path in paths:
        try:
            found.append(training_metadata(path))
        except (NotSafetensorsError, OSError) as exc:
            notes.append(f"metadata unreadable: {exc}")
    return found


def recover_caption(request: CaptionRequest, *, layers: Callable[[], TextReadingLayers] | None,
                    encoder: PromptEncoder | None, decode: Callable[[list[int]], str],
                    allowed: torch.Tensor, metadata_files: Sequence[str] = (),
                    progress: Callable[[int, int], None] | None = None,
                    check_interrupt: Callable[[], None] | None = None) -> CaptionResult:
    """Recover a caption. ``layers`` builds the K/V pair lazily (it may raise
    :class:`NoTextLayerChangeError`); ``encoder``/``decode`` are the loaded text encoder and its
    tokenizer's decoder; ``allowed`` the candidate token ids (special tokens excluded)."""
    if request.method not in METHODS:
        raise ValueError(f"unknown method {request.method!r}; one of {METHODS}")
    result = CaptionResult("")
    notes = result.source
    metadata = read_metadata(metadata_files, notes)
    notes += [m.summary() for m in metadata]
    meta_caption = next((c for c in (m.caption() for m in metadata) if c), None)
    if request.method == "metadata" and meta_caption is None:
        raise ValueError("no caption in the training metadata" + (
            f" of {', '.join(metadata_files)}" if metadata_files else ": no file name known "
            "(load the pair with FineXtractDualModelLoader, or name the file)"))
    use_metadata = request.method in ("metadata", "auto") and meta_caption is not None

    try:
        pair = layers() if layers is not None else None
    except NoTextLayerChangeError as exc:
        if not use_metadata:
            raise
        notes.append(f"weights: {exc}")
        pair = None
    if pair is not None:
        notes.append(pair.describe())
        objective = ranking.objective(pair, request.objective if pair.before is not None else "eq17",
                                      deflate=request.deflate)
        started = time.perf_counter()
        vocab = _vocabulary(request.vocabulary, encoder, allowed, check_interrupt)
        if not pair.accepts(vocab.vectors.shape[1]):
            raise ValueError(f"the text encoder gives {vocab.vectors.shape[1]}-wide embeddings but the "
                             f"model reads {pair.context_width}-wide ones: mismatched model families")
        top = ranking.rank_vocabulary(objective, vocab, max(request.top_k, request.length))
        result.ranked = [(decode([t]), s) for t, s in top]
        notes.append(f"ranking: {objective.equation} over {len(vocab.token_ids)} {vocab.kind} "
                     f"in {time.perf_counter() - started:.2f} s")
    elif not use_metadata:
        raise ValueError(f"method {request.method!r} needs the base and fine-tuned weights "
                         "(and found no caption in any training metadata)")

    if use_metadata:
        result.caption = meta_caption
        notes.insert(0, "caption from: training metadata (trainer's own record; check it against the weights)")
        if not result.ranked:
            result.ranked = [(t, float(c)) for m in metadata for t, c in m.tag_ranking()][:request.top_k]
    elif request.method == "ranking":
        result.caption = " ".join(t.strip() for t, _ in result.ranked[:request.length])
        notes.insert(0, f"caption from: weight-space ranking, top {request.length} tokens ({objective.equation})")
    else:
        started = time.perf_counter()
        best = pez.hard_prompt(encoder, objective, request.length, request.iterations, request.lr,
                               request.optimiser, request.seed, allowed, request.rows, progress, check_interrupt)
        elapsed = time.perf_counter() - started
        result.caption = decode(best.token_ids)
        notes.insert(0, f"caption from: hard-prompt extraction (Algorithm 1, {request.optimiser}, "
                        f"{objective.equation} over {request.rows} rows), F = {best.score:.6g} at iteration {best.iteration}")
        notes.append(f"PEZ: {request.iterations} iterations in {elapsed:.1f} s "
                     f"({request.iterations / max(elapsed, 1e-9):.1f} it/s)")
    return result


def _vocabulary(kind: str, encoder: PromptEncoder, allowed: torch.Tensor,
                check_interrupt: Callable[[], None] | None) -> ranking.Vocabulary:
    if kind == "raw":
        return ranking.Vocabulary(allowed, encoder.token_embedding[allowed],
                                  "raw token embeddings (the encoder's input table, an approximation)")
    if kind == "contextual":
        return ranking.contextual_vocabulary(encoder.encode, encoder.token_embedding, allowed,
                                             check_interrupt=check_interrupt)
    raise ValueError(f"unknown vocabulary {kind!r}; one of {VOCABULARIES}")
