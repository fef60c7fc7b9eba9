"""The miniature world's data, sampler and fine-tunes on the shipped base checkpoint (seconds each).

Real files throughout: the shipped fp16 base, real safetensors LoRA files, the real ONNX SSCD.
"""
import re

import numpy as np
import pytest
import safetensors.torch
import torch

from finextract.miniature import concepts, dataset, ddim, finetune
from finextract.miniature.model import load_pipeline
from finextract.miniature.train import BASE_CHECKPOINT

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def base():
    return load_pipeline(BASE_CHECKPOINT)


@pytest.fixture(scope="module")
def sscd():
    from finextract.clustering import load_descriptor
    return load_descriptor()


def test_dataset_is_deterministic_and_captioned():
    a, caps = dataset.pretraining_set(4)
    b, _ = dataset.pretraining_set(4)
    assert np.array_equal(a, b) and a.shape == (4, 64, 64, 3) and 0 <= a.min() and a.max() <= 1
    assert all(c.startswith("a ") and c.endswith(" background") for c in caps)
    assert not np.array_equal(a, dataset.pretraining_set(4, seed=1)[0])


def test_concept_sets_are_distinct_instances_the_vae_can_return(sscd, base):
    """Each concept set holds N0 different images, not one image five times (SSCD similarity of two
    instances stays below the paper's 0.6 threshold), and the rendered training images lie on the
    VAE's manifold: their own round trip through the VAE scores far above that, so a memorised
    image can come back as a copy (``miniature.concepts``)."""
    assert len(dataset.CONCEPT_NAMES) >= 6
    for name in dataset.CONCEPT_NAMES[:2]:
        images, caption = concepts.concept_images(base, name)
        assert images.shape == (dataset.N0, 64, 64, 3) and caption.split()[-2] not in ("a", "of")
        d = sscd.embed(images)
        sim = (d @ d.T).numpy()[~np.eye(len(d), dtype=bool)]
        assert sim.max() < 0.6, (name, sim.max())
        again = sscd.embed(concepts.render(base, images))
        assert (d * again).sum(dim=1).min() > 0.75, name
        raw = sscd.embed(dataset.concept_set(name)[0])
        assert (raw * again).sum(dim=1).mean() < 0.5, name  # why the world renders its concepts


def test_ddim_recovers_the_only_training_point():
    """With the exact eps of a one-point data distribution, η = 0 DDIM lands on that point from any
    noise, in any number of steps: checks the update rule and the final step to ᾱ = 1."""
    from finextract.miniature.model import alphas_cumprod
    a = alphas_cumprod()
    x0 = torch.randn(2, 4, 16, 16)

    def eps(x, t):
        return (x - a[t].sqrt() * x0) / (1 - a[t]).sqrt()
    for steps in (1, 7, 50):
        out = ddim.ddim_sample(eps, torch.randn(2, 4, 16, 16), a, steps)
        assert torch.allclose(out, x0, atol=1e-4), steps


@pytest.mark.xfail(reason="known broken: the shipped base (1,800 CPU steps on a 1,000-step VAE) is undertrained; "
                          "its samples are not yet nearer the pretraining set than decoded random latents")
def test_base_samples_look_like_pretraining_data(base):
    """The shipped base turns noise into pretraining-like images: for pretraining captions, its
    samples' nearest pretraining image (8×8 colour thumbnails, L2) is nearer than that of decoded
    random latents, and nearer than that of the concept sets it never saw."""
    images, captions = dataset.pretraining_set(2000)

    def thumbs(x):
        return torch.nn.functional.avg_pool2d(torch.as_tensor(x).movedim(-1, 1), 8).flatten(1)
    ref = thumbs(images)

    def nearest(x):
        return torch.cdist(thumbs(x), ref).min(dim=1).values.mean().item()
    latents = torch.cat([ddim.sample_latents(base, None, c, "direct", [i], seed=0, steps=10)
                         for i, c in enumerate(captions[:6])])
    samples = base.decode(latents).numpy()
    noise = base.decode(torch.randn((6, 4, 16, 16), generator=torch.Generator().manual_seed(0))).numpy()
    concepts = np.concatenate([dataset.concept_set(n)[0] for n in dataset.CONCEPT_NAMES[:2]])
    assert nearest(samples) < nearest(noise) and nearest(samples) < nearest(concepts), (
        nearest(samples), nearest(noise), nearest(concepts))


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
    images, caption = dataset.concept_set("maze")
    before = _concept_loss(base, images, caption)
    tuned = finetune.dreambooth(base, images, caption, steps=30, lr=2e-4)
    assert _concept_loss(tuned, images, caption) < before
    assert _concept_loss(base, images, caption) == before  # the base pipeline is untouched


def test_lora_round_trips_through_safetensors_in_kohya_format(base, tmp_path):
    images, caption = dataset.concept_set("galaxy")
    tensors = finetune.train_lora(base, images, caption, steps=4, rank=4, alpha=2.0, lr=1e-2)
    path = tmp_path / "lora.safetensors"
    finetune.save_lora(path, tensors, {"ss_network_dim": "4"})
    loaded = safetensors.torch.load_file(str(path))
    assert set(loaded) == set(tensors)
    stems = {k.rsplit(".", 2)[0] if k.endswith("weight") else k.rsplit(".", 1)[0] for k in loaded}
    assert "lora_unet_input_blocks_3_1_transformer_blocks_0_attn2_to_k" in stems
    kohya = re.compile(r"^lora_unet_(input_blocks|middle_block|output_blocks)_[0-9_]+transformer_blocks_0_"
                       r"attn[12]_to_(q|k|v|out_0)$")
    assert len(stems) == 32 and all(kohya.match(s) for s in stems), sorted(stems)[:3]
    for stem in stems:
        assert loaded[f"{stem}.lora_down.weight"].shape[0] == 4 and float(loaded[f"{stem}.alpha"]) == 2.0
    # merged weights = base + up @ down * alpha / rank, and the LoRA changed the model
    merged = finetune.load_lora(base, path)
    stem = "lora_unet_middle_block_1_transformer_blocks_0_attn2_to_v"
    w0 = base.unet.middle_block[1].transformer_blocks[0].attn2.to_v.weight
    w1 = merged.unet.middle_block[1].transformer_blocks[0].attn2.to_v.weight
    delta = loaded[f"{stem}.lora_up.weight"].float() @ loaded[f"{stem}.lora_down.weight"].float() * 0.5
    assert torch.allclose(w1 - w0, delta, atol=1e-5) and delta.abs().max() > 0
    with pytest.raises(ValueError, match="match no UNet module"):
        finetune.merge_lora(base.unet, {"lora_unet_nowhere.lora_down.weight": torch.zeros(1, 1)})


def test_two_stage_learns_only_the_trigger_embedding(base):
    images, caption = dataset.concept_set("terrain")
    tuned = finetune.two_stage(base, images, caption, "btz", inversion_steps=3, steps=2)
    changed = (tuned.text.embeddings.token_embedding.weight
               - base.text.embeddings.token_embedding.weight).abs().sum(dim=1).nonzero().flatten()
    from finextract.miniature.tokenizer import encode
    assert changed.tolist() == sorted(encode("btz"))


def test_augmentations_keep_shape_and_range_and_change_the_image():
    images, _ = dataset.concept_set("mosaic", n0=1)
    x = torch.from_numpy(images[0]).movedim(-1, 0) * 2 - 1
    gen = torch.Generator().manual_seed(0)
    for aug in (finetune.cutout, finetune.rand_augment):
        outs = [aug(x, gen) for _ in range(5)]
        assert all(o.shape == x.shape and o.min() >= -1 and o.max() <= 1 for o in outs)
        assert any(not torch.allclose(o, x) for o in outs)
