"""Caption recovery benchmark: ``python -m finextract.bench.caption [speed] [world] [world-trained] [table7]``.

* ``speed`` — an SD1.5-size CLIP-L text encoder (the miniature MiniTextEncoder class at CLIP-L's
  sizes: 12 layers, width 768, 49 408 tokens; random weights, which cost the same as real ones) and
  SD1.5's 16 cross-attention blocks (32 K/V layers). Prints: ranking time over the whole vocabulary
  (Eq. 17, Eq. 19), the contextual vocabulary's cost, and PEZ iterations/s for both update rules
  and L = 3 / 7, F over all 77 context rows (the paper's E(c)) side by side with F over the prompt
  rows only (the causal shortcut: BOS + prompt).
* ``world`` — the miniature world's real fine-tunes (``miniature/weights``: the base, and per
  concept set a LoRA and/or a full fine-tune): where each set's trigger token (and, after a slash,
  the trigger or the concept noun, whichever comes first) lands in the Eq. 17/19 top 10 (raw and
  contextual vocabularies; Eq. 17 also deflated by 1 and 2 directions), whether PEZ's caption
  contains them, and hit rates of both.
* ``world-trained`` — the same on fresh fine-tunes of every concept set (a LoRA and a DreamBooth-style
  full fine-tune each, :mod:`finextract.miniature.finetune` defaults, 200·N0 steps; ~25 min).
* ``table7`` — Table 7 in miniature: FineXtract on the shipped LoRA with the true, the PEZ-recovered
  and no caption (~6 min).

Run it niced on the shared machine: ``nice -n 10 python -m finextract.bench.caption``.
"""
from __future__ import annotations

import pathlib
import functools
import sys
import time

import torch

from ..caption import pez, ranking, weight_delta
from ..caption.encoders import clip_text_model
from ..miniature import tokenizer
from ..miniature.model import MiniTextEncoder

SD15_CROSS_ATTENTION = [320, 320, 640, 640, 1280, 1280, 1280, 1280, 1280, 1280, 640, 640, 640, 320, 320, 320]
"""Channel width of each of SD1.5's 16 cross-attention blocks (down, middle, up)."""
WEIGHTS = pathlib.Path(__file__).resolve().parent.parent / "miniature" / "weights"


def _timed(fn, repeat=1):
    start = time.perf_counter()
    for _ in range(repeat):
        out = fn()
    return out, (time.perf_counter() - start) / repeat


def speed(pez_iterations: int = 10) -> None:
    torch.manual_seed(0)
    text = MiniTextEncoder(vocab_size=49408, hidden_size=768, num_layers=12, num_heads=12,
                           intermediate_size=3072, max_positions=77).eval().requires_grad_(False)
    encoder = clip_text_model(text, tokenizer.START, tokenizer.END)
    allowed = torch.arange(49406)
    g = torch.Generator().manual_seed(1)
    base = {f"b{i}.attn2.to_{kv}.weight": torch.randn(c, 768, generator=g) / 768 ** 0.5
            for i, c in enumerate(SD15_CROSS_ATTENTION) for kv in "kv"}
    tuned = {k: w + 0.01 * torch.randn(w.shape[0], 4, generator=g) @ torch.randn(4, 768, generator=g) / 768 ** 0.5
             for k, w in base.items()}
    layers = weight_delta.from_state_dicts(base, tuned)
    vocab = ranking.Vocabulary(allowed, encoder.token_embedding[allowed], "raw")
    print(f"threads {torch.get_num_threads()}; SD1.5-size text encoder "
          f"({sum(p.numel() for p in text.parameters()) / 1e6:.0f} M parameters), {len(layers.names)} K/V layers")
    for equation in ranking.OBJECTIVES:
        objective, t_obj = _timed(lambda: ranking.objective(layers, equation))
        _, t_rank = _timed(lambda: ranking.rank_vocabulary(objective, vocab, 20))
        print(f"ranking {equation}: objective {t_obj:.2f} s + ranking 49406 raw tokens {t_rank:.2f} s")
    sample = allowed[:512]
    _, t_ctx = _timed(lambda: ranking.contextual_vocabulary(encoder.encode, encoder.token_embedding, sample, 256))
    print(f"contextual vocabulary: {t_ctx:.2f} s per 512 tokens -> {t_ctx * len(allowed) / 512 / 60:.1f} min "
          "for the whole vocabulary (estimate)")
    objective = ranking.objective(layers, "eq19")
    for length in (3, 7):
        rates = {}
        for rows in pez.ROWS:
            for optimiser in pez.OPTIMISERS:
                _, t = _timed(lambda: pez.hard_prompt(encoder, objective, length, pez_iterations,
                                                      optimiser=optimiser, allowed=allowed, rows=rows))
                rates[rows, optimiser] = pez_iterations / t
                print(f"PEZ L={length} {optimiser:5s} rows={rows:8s}: {rates[rows, optimiser]:.2f} it/s "
                      f"({1000 / rates[rows, optimiser] / 60:.1f} min per 1000 iterations)")
        print(f"PEZ L={length}: prompt rows (BOS + prompt) x{rates['prompt', 'pgd'] / rates['sequence', 'pgd']:.1f} "
              f"faster than all 77 rows (pgd); adamw/pgd rate ratio {rates['sequence', 'adamw'] / rates['sequence', 'pgd']:.2f}")


def _fine_tunes(base_unet: dict) -> list[tuple[str, str, weight_delta.TextReadingLayers]]:
    """(concept, kind, layers) for every fine-tune file shipped beside the base."""
    from ..modelfiles import load_safetensors, read_header
    out = []
    for path in sorted(WEIGHTS.glob("*.safetensors")):
        if path.name == "mini_base.safetensors":
            continue
        keys = read_header(path).keys()
        tensors = load_safetensors(path)
        if any(k.endswith(".lora_down.weight") for k in keys):
            out.append((path.stem, "lora", weight_delta.from_lora(tensors, base_unet, source=path.name)))
        elif any(k.startswith("model.diffusion_model.") for k in keys):
            unet = {k: v.float() for k, v in tensors.items() if k.startswith("model.diffusion_model.")}
            try:
                out.append((path.stem, "full", weight_delta.from_state_dicts(base_unet, unet, path.name)))
            except weight_delta.NoTextLayerChangeError as exc:
                print(f"{path.name}: {exc}")
    return out


def _trained_fine_tunes(base_unet: dict) -> list[tuple[str, str, weight_delta.TextReadingLayers]]:
    """(concept, kind, layers) of a fresh LoRA and full fine-tune of every concept set."""
    from ..miniature import dataset, finetune
    from ..miniature.model import PREFIXES, load_pipeline
    base = load_pipeline(WEIGHTS / "mini_base.safetensors")
    out = []
    for name in dataset.CONCEPT_NAMES:
        images, caption = dataset.concept_set(name)
        lora = finetune.train_lora(base, images, caption)
        out.append((f"{name} lora", "lora", weight_delta.from_lora(lora, base_unet, source=f"{name} LoRA")))
        tuned = finetune.dreambooth(base, images, caption).unet.state_dict()
        out.append((f"{name} full", "full", weight_delta.from_state_dicts(
            base_unet, {PREFIXES["unet"] + k: v for k, v in tuned.items()}, f"{name} full fine-tune")))
        print(f"fine-tuned {name}", flush=True)
    return out


def _base_side(base_path: pathlib.Path):
    """The miniature base as Appendix A needs it: its UNet tensors (β⁻, the "before" of Eq. 17/19),
    its text encoder as a PromptEncoder, and the pipeline itself."""
    from ..miniature.model import load_pipeline
    from ..modelfiles import load_safetensors
    pipe = load_pipeline(base_path)
    unet = {k: v.float() for k, v in load_safetensors(base_path).items() if k.startswith("model.diffusion_model.")}
    return unet, clip_text_model(pipe.text.requires_grad_(False), tokenizer.START, tokenizer.END), pipe


@functools.cache
def _pieces() -> dict[int, str]:
    return {i: piece for piece, i in tokenizer._vocabulary()[0].items()}


def _decode(ids) -> str:
    """Miniature-tokenizer ids as words (BPE pieces joined, end-of-word marks as spaces)."""
    return "".join(_pieces()[i] for i in ids).replace("</w>", " ").strip()


def world(iterations: int = 1000, length: int = 3, rows: str = "sequence", trained: bool = False,
          deflations: tuple[int, ...] = (1, 2)) -> None:
    base_path = WEIGHTS / "mini_base.safetensors"
    if not base_path.is_file():
        print(f"world: no {base_path} (the miniature world's weights are not here yet)")
        return
    from ..miniature.dataset import CONCEPT_SOURCES  # the concept sets and their trigger captions
    base_unet, encoder, _ = _base_side(base_path)
    allowed = torch.arange(49406)
    vocabs = {"raw": ranking.Vocabulary(allowed, encoder.token_embedding[allowed], "raw")}
    vocabs["contextual"], t_ctx = _timed(lambda: ranking.contextual_vocabulary(
        encoder.encode, encoder.token_embedding, allowed, 2048))
    print(f"contextual vocabulary of the miniature encoder: {t_ctx:.1f} s")
    # "a photo of <trigger> <concept noun>": both words are new to the base (no pretraining caption
    # names them); the bar counts the trigger or the concept token.
    triggers = {c.concept: c.caption.split()[-2] for c in CONCEPT_SOURCES}
    nouns = {c.concept: c.caption.split()[-1] for c in CONCEPT_SOURCES}
    hits: dict[str, list[bool]] = {}
    for name, kind, layers in (_trained_fine_tunes if trained else _fine_tunes)(base_unet):
        concept = next((c for c in triggers if c in name), None)
        if concept is None:
            continue
        wanted = set(tokenizer.encode(triggers[concept]))
        either = wanted | set(tokenizer.encode(nouns[concept]))
        row = [f"{name:28s} trigger {triggers[concept]!r} noun {nouns[concept]!r}"]
        for equation, deflate in [(e, 0) for e in ranking.OBJECTIVES] + [("eq17", d) for d in deflations]:
            objective = ranking.objective(layers, equation, deflate=deflate)
            equation = objective.equation
            for vname, vocab in vocabs.items():
                top = [t for t, _ in ranking.rank_vocabulary(objective, vocab, 10)]
                hits.setdefault(f"top10 {equation} {vname}", []).append(bool(wanted & set(top)))
                hits.setdefault(f"top10 {equation} {vname} (trigger or noun)", []).append(bool(either & set(top)))
                first = [min((top.index(t) for t in ids if t in top), default="-") for ids in (wanted, either)]
                row.append(f"{equation}/{vname}: {first[0]}/{first[1]}")
            for optimiser in pez.OPTIMISERS:
                best, t = _timed(lambda: pez.hard_prompt(encoder, objective, length, iterations,
                                                         optimiser=optimiser, allowed=allowed, rows=rows))
                hit = bool(wanted & set(best.token_ids))
                hits.setdefault(f"PEZ {equation} {optimiser}", []).append(hit)
                hits.setdefault(f"PEZ {equation} {optimiser} (trigger or noun)", []).append(
                    bool(either & set(best.token_ids)))
                row.append(f"PEZ {equation}/{optimiser}: {_decode(best.token_ids)!r}{' HIT' if hit else ''} "
                           f"({iterations / t:.0f} it/s)")
        print(" | ".join(row))
    for key, values in hits.items():
        print(f"hit rate {key}: {sum(values)}/{len(values)}")


def table7(concept: str = "cat", steps: int = 10, w: float = 5.0, k: float = -0.02) -> None:
    """Table 7 in miniature on the shipped LoRA of ``concept``: FineXtract (N = 50·N0, same seeds) with
    the true caption, PEZ's recovered caption (L = 3 and 7; Eq. 19, L2-PGD, 1000 iterations: the
    paper's settings) and none (Eq. 6: empty caption, k = 0), beside a base-model control."""
    from ..caption import recover
    from ..clustering import evaluate
    from ..clustering.descriptors import load_descriptor
    from ..miniature.demo import BASE, extract_images, load_concept
    from ..miniature.finetune import load_lora
    from ..modelfiles import load_safetensors
    lora_path = WEIGHTS / f"mini_lora_{concept}.safetensors"
    images, caption = load_concept(concept)
    base_unet, encoder, base = _base_side(BASE)
    tuned = load_lora(base, lora_path)
    layers = weight_delta.from_lora(load_safetensors(lora_path), base_unet, source=lora_path.name)
    captions = {"true caption": caption}
    for length in (3, 7):
        found, t = _timed(lambda: recover.recover_caption(
            recover.CaptionRequest(method="pez", length=length), layers=lambda: layers, encoder=encoder,
            decode=_decode, allowed=torch.arange(49406)))
        captions[f"PEZ L={length}"] = found.caption
        print(f"PEZ L={length}: {found.caption!r} ({t:.0f} s)", flush=True)
    captions["none (Eq. 6)"] = ""
    descriptor = load_descriptor()
    train = descriptor.embed(images)
    n0 = len(images)
    runs = {name: (tuned, base, "finextract", w, 0.0 if not c else k, c) for name, c in captions.items()}
    runs["base-model control"] = (base, None, "direct", 1.0, 0.0, caption)
    for name, (model, other, method, scale, kk, c) in runs.items():
        _, ex = extract_images(model, other, c, n0, 50 * n0, method, scale, kk, steps, 0, descriptor, name)
        raw = evaluate(train, ex.extracted_descriptors())["raw"]
        print(f"\n{name:18s} {c!r}: AS {raw['AS']:.3f}  A-ESR@0.6 {raw['A-ESR']['0.6']:.2f}", flush=True)


def main(argv: list[str] | None = None) -> None:
    parts = (argv if argv is not None else sys.argv[1:]) or ["speed", "world"]
    for part in parts:
        {"speed": speed, "world": world, "world-trained": lambda: world(trained=True), "table7": table7}[part]()


if __name__ == "__main__":
    main()
