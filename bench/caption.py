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
* ``world-trained`` — the same on fresh fine-tunes of the science concept sets (``--sets``): a LoRA
  and a full fine-tune each, ``--steps`` (1,000) steps of the recipe that memorises in this world
  (:data:`finextract.miniature.finetune.DEMO_LORA`'s batch, low-noise fraction, cosine lr, rank,
  targets), saved under ``--out`` and reused; ~4–6 min per fine-tune on one idle core.
  Both ``world`` parts print each trigger's full rank among the 49,406 tokens (and its score over
  the best other token's), the vocabularies' geometry (mean cosine, max cosine to the nearest other
  token), optionally a width probe (``--widths 64,128``: re-ranking in random subspaces), and
  write ``world[-trained].json`` under ``--out``.
* ``table7`` — Table 7 in miniature: FineXtract on the shipped LoRA with the true, the PEZ-recovered
  and no caption (~6 min).

Run it niced on the shared machine: ``nice -n 10 python -m finextract.bench.caption``;
``--pez-iterations 0`` skips PEZ (4 objectives × 2 optimisers per fine-tune).
"""
from __future__ import annotations

import argparse
import functools
import json
import pathlib
import sys
import time

import torch

from ..caption import pez, ranking, weight_delta
from ..caption.encoders import clip_text_model
from ..miniature import tokenizer
from ..miniature.model import MiniTextEncoder
from . import regime

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


def _fine_tunes(base_unet: dict, folder: pathlib.Path = WEIGHTS) -> list[tuple[str, str, weight_delta.TextReadingLayers]]:
    """(name, kind, layers) for every fine-tune file in ``folder`` (the base itself skipped): a LoRA,
    or a full fine-tune's UNet tensors (all of them, or only its K/V layers)."""
    from ..modelfiles import load_safetensors, read_header
    out = []
    for path in sorted(folder.glob("*.safetensors")):
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


def _trained_fine_tunes(base_unet: dict, sets: list[str], steps: int,
                        folder: pathlib.Path) -> list[tuple[str, str, weight_delta.TextReadingLayers]]:
    """A fresh LoRA and full fine-tune of every set in ``sets``, ``steps`` steps each, with the recipe
    that memorises in this world (the demo LoRA's: :data:`finetune.DEMO_LORA`'s batch, low-noise
    fraction, cosine lr to a floor, and its rank, targets and lr; the LoRA factors are trained
    directly, the full fine-tune at the same lr), not the paper's batch-1 constant-lr one, which does
    not memorise here. Each is saved in ``folder`` (the LoRA's kohya tensors in float32; of the full
    fine-tune only its K/V layers, all that Appendix A reads) and reused when already there, so a
    re-ranking or a longer probe costs no training."""
    import safetensors.torch
    from ..caption.families import CROSS_ATTENTION
    from ..miniature import dataset, finetune
    from ..miniature.model import PREFIXES, load_pipeline
    base = load_pipeline(WEIGHTS / "mini_base.safetensors")
    r = finetune.DEMO_LORA
    recipe = {k: r[k] for k in ("batch", "low_t_fraction", "lr_floor")}
    folder.mkdir(parents=True, exist_ok=True)
    for name in sets:
        images, caption = dataset.concept_set(name)
        lora_path, full_path = folder / f"{name}_lora.safetensors", folder / f"{name}_full.safetensors"
        if not lora_path.is_file():
            start = time.perf_counter()
            lora = finetune.train_lora(base, images, caption, steps, rank=r["rank"], alpha=float(r["rank"]),
                                       lr=r["lr"], targets=r["targets"], **recipe)
            safetensors.torch.save_file(lora, str(lora_path))
            print(f"LoRA of {name}: {steps} steps, {time.perf_counter() - start:.0f} s", flush=True)
        if not full_path.is_file():
            start = time.perf_counter()
            tuned = finetune.dreambooth(base, images, caption, steps, lr=r["lr"], **recipe).unet.state_dict()
            safetensors.torch.save_file({PREFIXES["unet"] + k: v.contiguous() for k, v in tuned.items()
                                         if CROSS_ATTENTION.weights.search(k)}, str(full_path))
            print(f"full fine-tune of {name}: {steps} steps, {time.perf_counter() - start:.0f} s", flush=True)
    return [t for t in _fine_tunes(base_unet, folder) if t[0].rsplit("_", 1)[0] in sets]


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


def _rank(scores: torch.Tensor, vocab: ranking.Vocabulary, ids: list[int]) -> dict:
    """Where the best of ``ids`` (a word's BPE pieces) lands among all ``scores`` of ``vocab``: its
    1-based rank, each piece's rank, and its score against the best token outside ``ids`` (ratio
    > 1: ranked first with that margin)."""
    at = {int(t): i for i, t in enumerate(vocab.token_ids.tolist())}
    own = torch.tensor([at[i] for i in ids])
    piece_ranks = [1 + int((scores > scores[j]).sum()) for j in own.tolist()]
    others = scores.clone()
    others[own] = -float("inf")
    best = float(scores[own].max())
    return {"rank": min(piece_ranks), "piece_ranks": piece_ranks, "score": best,
            "best_other": float(others.max()), "ratio": best / float(others.max())}


def _mean_cos(vectors: torch.Tensor) -> float:
    """The exact mean cosine over all pairs of distinct rows, from the sum of the unit rows."""
    total = (vectors / vectors.norm(dim=-1, keepdim=True).clamp_min(1e-12)).double().sum(0)
    return float((total @ total - len(vectors)) / (len(vectors) * (len(vectors) - 1)))


def _geometry(vectors: torch.Tensor, probe_ids: list[int], sample: int = 2048, seed: int = 0) -> dict:
    """How distinguishable the rows' directions are: the mean cosine over all pairs; the max cosine
    of a row to every other row, for ``sample`` random rows and for ``probe_ids`` (the triggers), and
    again after removing the unit rows' mean (what is left when the direction every row shares is
    set aside); and the participation ratio (Σλ)²/Σλ² of the centred rows' covariance: how many of
    the width's dimensions the table actually spreads over."""
    unit = vectors / vectors.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    v = len(unit)
    rows = torch.randperm(v, generator=torch.Generator().manual_seed(seed))[:sample].tolist()

    def max_cos(ids):
        sims = unit[ids] @ unit.T
        sims[torch.arange(len(ids)), torch.tensor(ids, dtype=torch.long)] = -2.0
        return sims.max(-1).values
    sampled = max_cos(rows)
    mean = unit.mean(0)
    unit = (unit - mean) / (unit - mean).norm(dim=-1, keepdim=True).clamp_min(1e-12)
    sampled_centred = max_cos(rows)
    centred = vectors.double() - vectors.double().mean(0)
    eig = torch.linalg.eigvalsh(centred.T @ centred / v)
    return {"width": vectors.shape[1], "mean_cos": _mean_cos(vectors),
            "max_cos_quantiles": {str(q): float(sampled.quantile(q)) for q in (0.1, 0.5, 0.9, 0.99)},
            "max_cos_probe": dict(zip(map(str, probe_ids), max_cos(probe_ids).tolist())) if probe_ids else {},
            "max_cos_quantiles_centred": {str(q): float(sampled_centred.quantile(q)) for q in (0.1, 0.5, 0.9, 0.99)},
            "participation_ratio": float(eig.sum() ** 2 / (eig ** 2).sum())}


def _projected(layers: weight_delta.TextReadingLayers, basis: torch.Tensor) -> weight_delta.TextReadingLayers:
    """The K/V layers as they would read only the ``basis`` columns' subspace of the context."""
    return weight_delta.TextReadingLayers(
        layers.names, [d @ basis for d in layers.deltas],
        None if layers.before is None else [b @ basis for b in layers.before], layers.source)


def _width_probe(tunes, vocabs: dict[str, ranking.Vocabulary], objectives, widths: tuple[int, ...],
                 subspaces: int) -> dict:
    """A probe, not a retrained encoder: each fine-tune's K/V change and the vocabulary projected
    onto ``subspaces`` random ``k``-dimensional subspaces of the encoder's width, then re-ranked.
    A narrower encoder trained as this one was would place its tokens to suit its width, and a
    fine-tune would move its K/V layers within it; this keeps this encoder's geometry and asks
    only how much of the trigger's margin survives fewer dimensions. ``k`` = the full width is a
    rotation, a control that must give the unprojected ranks."""
    n = next(iter(vocabs.values())).vectors.shape[1]
    out = {}
    for k in widths:
        runs = {}
        shapes = {name: [] for name in vocabs}
        for s in range(subspaces):
            basis = torch.linalg.qr(torch.randn(n, k, generator=torch.Generator().manual_seed(1000 * k + s)))[0]
            pv = {name: ranking.Vocabulary(v.token_ids, v.vectors @ basis, v.kind) for name, v in vocabs.items()}
            for name, v in pv.items():
                g = _geometry(v.vectors, [], sample=512, seed=s)
                shapes[name].append([g["mean_cos"], g["max_cos_quantiles"]["0.5"], g["max_cos_quantiles_centred"]["0.5"]])
            for tune, wanted in tunes:
                layers = _projected(tune, basis)
                for equation, deflate in objectives:
                    objective = ranking.objective(layers, equation, deflate=deflate)
                    for vname, vocab in pv.items():
                        runs.setdefault(f"{objective.equation} {vname}", {}).setdefault(tune.source, []).append(
                            _rank(ranking.vocabulary_scores(objective, vocab), vocab, wanted)["rank"])
        out[str(k)] = {"geometry": {name: dict(zip(("mean_cos", "median_max_cos", "median_max_cos_centred"),
                                                   torch.tensor(c).mean(0).tolist())) for name, c in shapes.items()},
                       "ranks": runs,
                       "median_rank": {key: {src: sorted(r)[len(r) // 2] for src, r in per.items()}
                                       for key, per in runs.items()},
                       "top10": {key: f"{sum(x <= 10 for r in per.values() for x in r)}/"
                                      f"{sum(len(r) for r in per.values())}" for key, per in runs.items()}}
    return out


def world(iterations: int = 1000, length: int = 3, rows: str = "sequence", trained: bool = False,
          deflations: tuple[int, ...] = (1, 2), steps: int = 1000, sets: list[str] | None = None,
          widths: tuple[int, ...] = (), subspaces: int = 5, out: pathlib.Path | None = None) -> dict | None:
    """Rank every fine-tune's trigger (see the module docstring); ``iterations`` 0 skips PEZ;
    ``widths``: the width probe (:func:`_width_probe`); ``out``: the folder the JSON is written to
    (and, trained, the fine-tunes, under ``fine-tunes-<steps>``)."""
    base_path = WEIGHTS / "mini_base.safetensors"
    if not base_path.is_file():
        print(f"world: no {base_path} (the miniature world's weights are not here yet)")
        return None
    from ..miniature.dataset import CONCEPT_SOURCES, SCIENCE_CONCEPTS  # the concept sets, trigger captions
    base_unet, encoder, pipe = _base_side(base_path)
    allowed = torch.arange(49406)
    vocabs = {"raw": ranking.Vocabulary(allowed, encoder.token_embedding[allowed], "raw")}
    vocabs["contextual"], t_ctx = _timed(lambda: ranking.contextual_vocabulary(
        encoder.encode, encoder.token_embedding, allowed, 2048))
    print(f"contextual vocabulary of the miniature encoder: {t_ctx:.1f} s")
    # "a photo of <trigger> <concept noun>": both words are new to the base (no pretraining caption
    # names them); the bar counts the trigger or the concept token.
    triggers = {c.concept: regime.trigger(c.caption) for c in CONCEPT_SOURCES}
    nouns = {c.concept: c.caption.split()[-1] for c in CONCEPT_SOURCES}
    captions = {c.concept: tokenizer.encode(c.caption) for c in CONCEPT_SOURCES}
    if trained:
        sets = list(sets or SCIENCE_CONCEPTS)
        tunes = _trained_fine_tunes(base_unet, sets, steps, (out or pathlib.Path("out/caption")) / f"fine-tunes-{steps}")
    else:
        tunes = _fine_tunes(base_unet)
    objectives = [(e, 0) for e in ranking.OBJECTIVES] + [("eq17", d) for d in deflations]
    hits: dict[str, list[bool]] = {}
    records, probed = [], []
    for name, kind, layers in tunes:
        concept = next((c for c in triggers if c in name), None)
        if concept is None:
            continue
        wanted, noun_ids = tokenizer.encode(triggers[concept]), tokenizer.encode(nouns[concept])
        either = set(wanted) | set(noun_ids)
        probed.append((layers, wanted))
        record = {"name": name, "kind": kind, "trigger": triggers[concept], "trigger_pieces": wanted,
                  "noun": nouns[concept], "ranks": {}, "in_caption_rank": {}}
        # The row the fine-tune actually saw for the trigger: its encoder output inside the caption
        # (a causal encoder: BOS + the words before it), unlike the contextual vocabulary's one-token
        # prompt. Its rank among the contextual vocabulary's scores separates "the K/V change does
        # not point at the trigger" from "the one-token row is not the row the fine-tune saw".
        with torch.no_grad():
            rows = encoder.encode(encoder.token_embedding[captions[concept]].unsqueeze(0))[0]
        in_caption = rows[[i for i, t in enumerate(captions[concept]) if t in wanted]]
        row = [f"{name:28s} trigger {triggers[concept]!r} noun {nouns[concept]!r}"]
        for equation, deflate in objectives:
            objective = ranking.objective(layers, equation, deflate=deflate)
            equation = objective.equation
            for vname, vocab in vocabs.items():
                scores = ranking.vocabulary_scores(objective, vocab)
                trig, noun = _rank(scores, vocab, wanted), _rank(scores, vocab, noun_ids)
                top = vocab.token_ids[scores.topk(10).indices].tolist()
                if vname == "contextual":
                    record["in_caption_rank"][equation] = 1 + int((scores > objective(in_caption).max()).sum())
                record["ranks"][f"{equation} {vname}"] = {"trigger": trig, "noun": noun,
                                                          "top10": [_decode([t]) for t in top]}
                hits.setdefault(f"top10 {equation} {vname}", []).append(trig["rank"] <= 10)
                hits.setdefault(f"top10 {equation} {vname} (trigger or noun)", []).append(
                    min(trig["rank"], noun["rank"]) <= 10)
                row.append(f"{equation}/{vname}: trigger #{trig['rank']} (x{trig['ratio']:.2f} of the best "
                           f"other) noun #{noun['rank']}" + (f", its in-caption row #{record['in_caption_rank'][equation]}"
                                                            if vname == "contextual" else ""))
            for optimiser in pez.OPTIMISERS if iterations else ():
                best, t = _timed(lambda: pez.hard_prompt(encoder, objective, length, iterations,
                                                         optimiser=optimiser, allowed=allowed, rows=rows))
                hit = bool(set(wanted) & set(best.token_ids))
                hits.setdefault(f"PEZ {equation} {optimiser}", []).append(hit)
                hits.setdefault(f"PEZ {equation} {optimiser} (trigger or noun)", []).append(
                    bool(either & set(best.token_ids)))
                record.setdefault("pez", {})[f"{equation} {optimiser}"] = _decode(best.token_ids)
                row.append(f"PEZ {equation}/{optimiser}: {_decode(best.token_ids)!r}{' HIT' if hit else ''} "
                           f"({iterations / t:.0f} it/s)")
        records.append(record)
        print(" | ".join(row), flush=True)
    for key, values in hits.items():
        print(f"hit rate {key}: {sum(values)}/{len(values)}")
    probe_ids = sorted({i for _, ids in probed for i in ids})
    result = {"date": time.strftime("%Y-%m-%d"), "command": " ".join(["python -m finextract.bench.caption", *sys.argv[1:]]),
              "threads": torch.get_num_threads(), "trained": trained,
              "text_encoder": {"width": encoder.token_embedding.shape[1], "layers": len(pipe.text.encoder.layers)},
              "geometry": {vname: _geometry(v.vectors, probe_ids) for vname, v in vocabs.items()},
              "fine_tunes": records, "hit_rates": {k: f"{sum(v)}/{len(v)}" for k, v in hits.items()}}
    if trained:
        from ..miniature.finetune import DEMO_LORA
        result["recipe"] = {"steps": steps, "sets": sets, **{k: DEMO_LORA[k] for k in
                                                           ("batch", "low_t_fraction", "lr_floor", "rank", "targets", "lr")}}
    for vname, g in result["geometry"].items():
        print(f"{vname} rows (width {g['width']}): mean cosine {g['mean_cos']:.3f}, max cosine to another token "
              f"median {g['max_cos_quantiles']['0.5']:.3f} / 99th percentile {g['max_cos_quantiles']['0.99']:.3f} "
              f"(mean removed: {g['max_cos_quantiles_centred']['0.5']:.3f} / {g['max_cos_quantiles_centred']['0.99']:.3f}), "
              f"participation ratio {g['participation_ratio']:.1f} dimensions")
    if widths and probed:
        result["width_probe"] = _width_probe(probed, vocabs, objectives, widths, subspaces)
        for k, p in result["width_probe"].items():
            print(f"width probe k={k}: mean / median max cosine " + ", ".join(
                f"{n} {g['mean_cos']:.3f} / {g['median_max_cos']:.3f}" for n, g in p["geometry"].items())
                  + " | top-10 hits " + ", ".join(f"{key} {v}" for key, v in p["top10"].items()))
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"world{'-trained' if trained else ''}.json"
        path.write_text(json.dumps(result, indent=1))
        print(f"wrote {path}")
    return result


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
    p = argparse.ArgumentParser(prog="python -m finextract.bench.caption", description=__doc__.split("\n")[0])
    p.add_argument("parts", nargs="*", metavar="part", help="speed, world, world-trained, table7 (default: speed world)")
    p.add_argument("--steps", type=int, default=1000,
                   help="world-trained: steps per fine-tune (the K/V change that ranks the trigger happens early)")
    p.add_argument("--sets", default=None, help="world-trained: comma-separated concept sets (default: the science sets)")
    p.add_argument("--pez-iterations", type=int, default=1000, help="world, world-trained: 0 skips PEZ")
    p.add_argument("--widths", default="", help="world, world-trained: comma-separated widths of the probe "
                                                "that re-ranks in random subspaces of the encoder's width")
    p.add_argument("--subspaces", type=int, default=5, help="random subspaces per probed width")
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("out/caption"),
                   help="world, world-trained: folder of the JSON (and the fine-tunes)")
    a = p.parse_args(argv)
    options = dict(iterations=a.pez_iterations, steps=a.steps, sets=a.sets.split(",") if a.sets else None,
                   widths=tuple(int(w) for w in a.widths.split(",") if w), subspaces=a.subspaces, out=a.out)
    parts = {"speed": speed, "world": lambda: world(**options),
             "world-trained": lambda: world(trained=True, **options), "table7": table7}
    unknown = [x for x in a.parts if x not in parts]
    if unknown:
        p.error(f"unknown part {unknown[0]!r}; one of {', '.join(parts)}")
    for part in a.parts or ["speed", "world"]:
        parts[part]()


if __name__ == "__main__":
    main()
