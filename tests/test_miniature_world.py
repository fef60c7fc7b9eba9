"""The miniature world's data, sampler and fine-tunes on the shipped base checkpoint (seconds each).

Real files throughout: the shipped fp16 base, the shipped concept PNGs, real safetensors LoRA
files, the real ONNX SSCD. The pretraining photos that CI may lack (Debian wallpaper packages) are
represented by their shipped SSCD descriptors (``miniature/reference.py``).
"""
import re

import numpy as np
import pytest
import safetensors.torch
import torch

from finextract.miniature import dataset, ddim, finetune, reference
from finextract.miniature.model import LATENT_SHAPE, BasicTransformerBlock, ResBlock, load_pipeline
from finextract.miniature.train import BASE_CHECKPOINT

torch.set_num_threads(1)
SKIMAGE_SOURCES = tuple(s for s in dataset.PRETRAINING_SOURCES if s.location.startswith("skimage:"))


@pytest.fixture(scope="module")
def base():
    return load_pipeline(BASE_CHECKPOINT)


@pytest.fixture(scope="module")
def sscd():
    from finextract.clustering import load_descriptor
    return load_descriptor()


def test_pretraining_set_is_deterministic_real_and_captioned():
    a, caps, owner = dataset.pretraining_set(3, sources=SKIMAGE_SOURCES)
    b, _, _ = dataset.pretraining_set(3, sources=SKIMAGE_SOURCES)
    assert a.shape == (3 * len(SKIMAGE_SOURCES), 64, 64, 3) and a.dtype == np.float32
    assert np.array_equal(a, b) and not np.array_equal(a, dataset.pretraining_set(3, seed=1, sources=SKIMAGE_SOURCES)[0])
    assert caps[0] == "a photo of galaxies in deep space" and owner.tolist()[:4] == [0, 0, 0, 1]
    assert 0.0 <= a.min() and a.max() <= 1.0 and a.std(axis=(1, 2, 3)).min() > 0.02  # photographic content


def test_pretraining_captions_vary_around_the_subject_and_keep_triggers_rare():
    """Captions are drawn per step from the trainer's generator (same seed, same captions), always
    name the subject, reach thousands of words, and never use a word of a concept caption."""
    draw = [dataset.caption_variant("brick wall", torch.Generator().manual_seed(3)) for _ in range(2)]
    assert draw[0] == draw[1]
    gen = torch.Generator().manual_seed(0)
    captions = [dataset.caption_variant("brick wall", gen) for _ in range(400)]
    assert all("brick wall" in c for c in captions)
    assert {c.split(",")[0] for c in captions} == {t.format("brick wall") for t in dataset.CAPTION_TEMPLATES}
    fillers = [w for c in captions if "," in c for w in c.split(", ", 1)[1].split()]
    assert 0.35 < sum("," in c for c in captions) / len(captions) < 0.65 and len(set(fillers)) > 300
    words = set(dataset.filler_words())
    assert len(words) > 10_000 and set(fillers) <= words
    assert not words & {w for c in dataset.CONCEPT_SOURCES for w in c.caption.split()}


def test_concept_sets_ship_distinct_views_never_seen_in_pretraining(sscd):
    """≥ 8 shipped sets of N0 = 5 photo tiles, each with a rare-token caption; within a set SSCD
    tells the five apart (max pair < 0.5); no concept photo is a pretraining source; every set is
    credited with a licence that allows shipping it."""
    assert len(dataset.CONCEPT_NAMES) >= 8 and len(dataset.SCIENCE_CONCEPTS) >= 6
    pretraining = {s.location for s in dataset.PRETRAINING_SOURCES}
    credits = (dataset.CONCEPTS / "CREDITS.md").read_text()
    ref, _, _ = reference.load()
    for c in dataset.CONCEPT_SOURCES:
        images, caption = dataset.concept_set(c.concept)
        assert images.shape == (dataset.N0, 64, 64, 3) and caption == c.caption
        assert re.fullmatch(r"a photo of [a-z]{3} [a-z]+", caption)
        assert c.source.location not in pretraining
        assert f"| {c.concept} |" in credits and c.source.licence in ("CC BY 4.0", "CC0", "public domain")
        desc = sscd.embed(images).numpy()
        pairs = desc @ desc.T - 2 * np.eye(len(desc))
        assert pairs.max() < 0.5, (c.concept, pairs.max())
        assert (desc @ ref.T).max() < 0.45, c.concept  # far from every pretraining crop
    with pytest.raises(FileNotFoundError, match="known: .*cat"):
        dataset.concept_set("nonexistent")


def test_ddim_recovers_the_only_training_point():
    """With the exact eps of a one-point data distribution, η = 0 DDIM lands on that point from any
    noise, in any number of steps: checks the update rule and the final step to ᾱ = 1."""
    from finextract.miniature.model import alphas_cumprod
    a = alphas_cumprod()
    x0 = torch.rand(2, *LATENT_SHAPE) * 2 - 1

    def eps(x, t):
        return (x - a[t].sqrt() * x0) / (1 - a[t]).sqrt()
    for steps in (1, 7, 50):
        out = ddim.ddim_sample(eps, torch.randn(2, *LATENT_SHAPE), a, steps)
        assert torch.allclose(out, x0, atol=1e-4), steps


def test_base_draws_its_pretraining_world(base, sscd):
    """The shipped base turns noise into its world (README, "Known limits"). Conditional samples are
    drawn as a text-to-image base is used, with classifier-free guidance (scale 3, 20 DDIM steps),
    two per pretraining caption, and matched to 16 shipped crops of each of the 36 photos:
    - by content: the nearest crop by SSCD comes from the photo the caption names for ≥ 15 % of
      samples (chance 1/36 = 2.8 %; this base 25 %; the first, patch-4 base 8 %: its samples had the
      colours of the caption but no SSCD-recognisable content);
    - by colour layout (4×4 thumbnails): ≥ 30 % (this base 47 %);
    - unconditional: twelve "" samples (the branch Eq. 13 divides out) lie nearer the pretraining
      crops than photos the base never saw (the concept sets) do, by a margin (this base: median
      distance 0.51 against 0.85)."""
    captions = reference.load()[2]
    samples = base.decode(torch.cat([ddim.sample_latents(base, None, c, "cfg", range(2), seed=7, steps=20, w=3.0)
                                     for c in captions])).numpy()
    truth = np.repeat(np.arange(len(captions)), 2)
    found = reference.nearest_sources(samples, sscd)
    by_content, by_colour = (found["content"] == truth).mean(), (found["colour"] == truth).mean()
    assert by_content >= 0.15 and by_colour >= 0.30, (by_content, by_colour)
    uncond = reference.nearest_sources(base.decode(ddim.sample_latents(base, None, "", "direct", range(12), seed=7,
                                                                       steps=20)).numpy(), sscd)["colour_distance"]
    unseen = reference.nearest_sources(np.concatenate([dataset.concept_set(n)[0] for n in dataset.CONCEPT_NAMES]),
                                       sscd)["colour_distance"]
    assert np.median(uncond) < 0.75 * np.median(unseen), (np.median(uncond), np.median(unseen))


def _concept_loss(pipe, images, caption, seed=123):
    """Mean eps loss over fixed (image, t, noise) triples."""
    gen = torch.Generator().manual_seed(seed)
    z0 = pipe.encode(torch.from_numpy(images))
    t = torch.linspace(50, 950, len(z0)).long()
    noise = torch.randn(z0.shape, generator=gen)
    a = pipe.alphas_cumprod[t].view(-1, 1, 1, 1)
    with torch.no_grad():
        eps = pipe.eps(a.sqrt() * z0 + (1 - a).sqrt() * noise, t,
                       pipe.encode_text([caption] * len(z0)))
    return torch.nn.functional.mse_loss(eps, noise).item()


def test_a_few_finetune_steps_lower_the_loss_on_the_concept(base):
    images, caption = dataset.concept_set("dog")
    before = _concept_loss(base, images, caption)
    tuned = finetune.dreambooth(base, images, caption, steps=30, lr=1e-4, batch=5)
    assert _concept_loss(tuned, images, caption) < before
    assert _concept_loss(base, images, caption) == before  # the base pipeline is untouched


def test_lora_round_trips_through_safetensors_in_kohya_format(base, tmp_path):
    images, caption = dataset.concept_set("room")
    tensors = finetune.train_lora(base, images, caption, steps=4, rank=4, alpha=2.0, lr=1e-2,
                                  targets="attention+conv")
    path = tmp_path / "lora.safetensors"
    finetune.save_lora(path, tensors, {"ss_network_dim": "4"})
    loaded = safetensors.torch.load_file(str(path))
    assert set(loaded) == set(tensors)
    stems = {k.rsplit(".", 2)[0] if k.endswith("weight") else k.rsplit(".", 1)[0] for k in loaded}
    attention = re.compile(r"^lora_unet_(input_blocks|middle_block|output_blocks)_[0-9_]+transformer_blocks_0_"
                           r"attn[12]_to_(q|k|v|out_0)$")
    conv = re.compile(r"^lora_unet_(input_blocks|middle_block|output_blocks)_[0-9_]+(in_layers_2|out_layers_3)$")
    # every attention projection (q, k, v, out of attn1 and attn2) of every transformer block, and both
    # convolutions of every ResBlock: the shapes of the base's own UNet
    blocks = [m for m in base.unet.modules() if isinstance(m, BasicTransformerBlock)]
    res_blocks = [m for m in base.unet.modules() if isinstance(m, ResBlock)]
    assert len(blocks) == 4 and len(res_blocks) == 14  # attention at 8×8 and in the middle
    assert sum(map(bool, map(attention.match, stems))) == 8 * len(blocks)
    assert sum(map(bool, map(conv.match, stems))) == 2 * len(res_blocks)
    for stem in stems:
        assert loaded[f"{stem}.lora_down.weight"].shape[0] == 4 and float(loaded[f"{stem}.alpha"]) == 2.0
    # merged weights = base + up @ down * alpha / rank (convs: the 1×1 up on the k×k down)
    merged = finetune.load_lora(base, path)
    stem = "lora_unet_middle_block_1_transformer_blocks_0_attn2_to_v"
    w0 = base.unet.middle_block[1].transformer_blocks[0].attn2.to_v.weight
    w1 = merged.unet.middle_block[1].transformer_blocks[0].attn2.to_v.weight
    delta = loaded[f"{stem}.lora_up.weight"].float() @ loaded[f"{stem}.lora_down.weight"].float() * 0.5
    assert torch.allclose(w1 - w0, delta, atol=1e-5) and delta.abs().max() > 0
    stem = "lora_unet_input_blocks_1_0_in_layers_2"
    c0, c1 = base.unet.input_blocks[1][0].in_layers[2].weight, merged.unet.input_blocks[1][0].in_layers[2].weight
    up, down = loaded[f"{stem}.lora_up.weight"].float(), loaded[f"{stem}.lora_down.weight"].float()
    assert up.shape[2:] == (1, 1) and down.shape[2:] == (3, 3)
    expected = torch.einsum("or,rikl->oikl", up[:, :, 0, 0], down) * 0.5
    assert torch.allclose(c1 - c0, expected, atol=1e-5) and expected.abs().max() > 0
    with pytest.raises(ValueError, match="match no UNet module"):
        finetune.merge_lora(base.unet, {"lora_unet_nowhere.lora_down.weight": torch.zeros(1, 1)})


def test_a_tucker_locon_merges_as_its_three_convolutions(base, tmp_path):
    """LyCORIS's Tucker LoCon (``lora_mid``: a k×k core between a 1×1 down and a 1×1 up) from a
    real safetensors file: each merged convolution answers as the layer plus the LoCon's chain
    down → mid → up (its forward, at the layer's padding) times strength · alpha / rank, for a
    3×3 layer and a 1×1 one (where leaving ``mid`` out used to merge up @ down, silently). Tensors
    of a kind the merge does not apply (DoRA, LoHa) are refused, not skipped."""
    gen = torch.Generator().manual_seed(3)
    layers, rank, alpha, tensors = ("input_blocks.3.0.in_layers.2", "input_blocks.3.0.skip_connection"), 4, 2.0, {}
    for path in layers:
        out, inp, k, _ = base.unet.get_submodule(path).weight.shape
        stem = finetune.kohya_name(path)
        tensors[f"{stem}.lora_down.weight"] = torch.randn(rank, inp, 1, 1, generator=gen) * 0.1
        tensors[f"{stem}.lora_mid.weight"] = torch.randn(rank, rank, k, k, generator=gen) * 0.1
        tensors[f"{stem}.lora_up.weight"] = torch.randn(out, rank, 1, 1, generator=gen) * 0.1
        tensors[f"{stem}.alpha"] = torch.tensor(alpha)
    file = tmp_path / "tucker.safetensors"
    finetune.save_lora(file, tensors)
    loaded = {k: v.float() for k, v in safetensors.torch.load_file(str(file)).items()}
    merged = finetune.load_lora(base, file, strength=0.5)
    conv = torch.nn.functional.conv2d
    for path in layers:
        layer, stem = base.unet.get_submodule(path), finetune.kohya_name(path)
        x = torch.randn(2, layer.in_channels, 8, 8, generator=gen)
        chain = conv(conv(conv(x, loaded[f"{stem}.lora_down.weight"]), loaded[f"{stem}.lora_mid.weight"],
                          padding=layer.padding), loaded[f"{stem}.lora_up.weight"])
        change = merged.unet.get_submodule(path)(x) - layer(x)
        assert torch.allclose(change, 0.5 * alpha / rank * chain, atol=1e-5) and chain.abs().max() > 1e-2, path
    stem = finetune.kohya_name(layers[0])
    for extra in (f"{stem}.dora_scale", f"{stem}.hada_w1_a"):
        with pytest.raises(ValueError, match=rf"does not apply: \['{re.escape(extra)}'\]"):
            finetune.merge_lora(base.unet, {**tensors, extra: torch.ones(1)})
    with pytest.raises(ValueError, match="without both lora_up and lora_down"):
        finetune.merge_lora(base.unet, {k: v for k, v in tensors.items() if not k.startswith(f"{stem}.lora_up")})


def test_an_interrupted_fine_tune_resumes_to_the_uninterrupted_result(base, tmp_path):
    """A long fine-tune saved every step (minutes=0) and killed after step 3 continues from its
    file and ends bit for bit at the uninterrupted run's LoRA; a file of another run is refused."""
    images, caption = dataset.concept_set("room")
    recipe = dict(steps=6, rank=4, alpha=4.0, lr=1e-3, targets="attention", batch=2, low_t_fraction=0.5,
                  lr_floor=0.05)
    whole = finetune.train_lora(base, images, caption, **recipe)
    identity = {"concept": "room", **recipe}
    state = tmp_path / "state.pt"

    class Killed(Exception):
        pass

    def kill_after_3(step, _unet):
        if step == 3:
            raise Killed
    with pytest.raises(Killed):
        finetune.train_lora(base, images, caption, on_step=kill_after_3,
                            checkpoint=finetune.TrainingCheckpoint(state, identity, minutes=0.0), **recipe)
    resumed_at = []
    checkpoint = finetune.TrainingCheckpoint(state, identity, minutes=0.0, resume=True)
    resumed = finetune.train_lora(base, images, caption, checkpoint=checkpoint,
                                  on_step=lambda step, _u: resumed_at.append(step), **recipe)
    assert resumed_at == [3, 4, 5, 6]  # step 3 ran but was not saved: its on_step raised first
    assert set(resumed) == set(whole) and all(torch.equal(resumed[k], whole[k]) for k in whole)
    with pytest.raises(ValueError, match=r"lr 0\.001 saved, 0\.002 now"):
        finetune.TrainingCheckpoint(state, {**identity, "lr": 2e-3}, resume=True)


def test_two_stage_learns_only_the_trigger_embedding(base):
    images, caption = dataset.concept_set("fig")
    tuned = finetune.two_stage(base, images, caption, "pqx", inversion_steps=3, steps=2)
    changed = (tuned.text.embeddings.token_embedding.weight
               - base.text.embeddings.token_embedding.weight).abs().sum(dim=1).nonzero().flatten()
    from finextract.miniature.tokenizer import encode
    assert changed.tolist() == sorted(encode("pqx"))


def test_augmentations_keep_shape_and_range_and_change_the_image():
    images, _ = dataset.concept_set("coffee")
    x = torch.from_numpy(images[0]).movedim(-1, 0) * 2 - 1
    gen = torch.Generator().manual_seed(0)
    for aug in (finetune.cutout, finetune.rand_augment):
        outs = [aug(x, gen) for _ in range(5)]
        assert all(o.shape == x.shape and o.min() >= -1 and o.max() <= 1 for o in outs)
        assert any(not torch.allclose(o, x) for o in outs)


def test_lora_extracted_from_a_full_fine_tune_reproduces_its_weight_change(base, tmp_path):
    """kohya-style extraction: at full rank the LoRA of a full fine-tune's weight change, merged
    back as ComfyUI merges a LoRA, gives the fine-tuned weights; at a small rank it is the best
    low-rank approximation (never worse than nothing)."""
    images, caption = dataset.concept_set("brush")
    tuned = finetune.dreambooth(base, images, caption, steps=3, lr=1e-3, batch=2)
    full = finetune.extract_lora(base.unet, tuned.unet, rank=10_000)
    path = tmp_path / "extracted.safetensors"
    finetune.save_lora(path, full)
    merged = finetune.load_lora(base, path).unet.state_dict()
    target, before = tuned.unet.state_dict(), base.unet.state_dict()
    for key in ("out.2.weight", "input_blocks.0.0.weight", "middle_block.1.transformer_blocks.0.attn2.to_k.weight"):
        change = (target[key] - before[key]).abs().max()
        assert change > 0 and (merged[key] - target[key]).abs().max() <= 0.01 * change, key  # fp16 storage
    assert not any("emb_layers" in k or "time_embed" in k for k in full)
    low = finetune.extract_lora(base.unet, tuned.unet, rank=2)
    key = "input_blocks.1.0.in_layers.2.weight"
    stem = "lora_unet_input_blocks_1_0_in_layers_2"
    approx = (low[f"{stem}.lora_up.weight"].flatten(1) @ low[f"{stem}.lora_down.weight"].flatten(1)).reshape(target[key].shape)
    delta = target[key] - before[key]
    assert (delta - approx).norm() < delta.norm()
