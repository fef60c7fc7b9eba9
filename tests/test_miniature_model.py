"""The miniature family in plain torch: tokenizer ids, shapes, seeded init, checkpoint round trip."""
import pytest
import safetensors
import torch

from finextract.miniature import model as mini
from finextract.miniature.tokenizer import END, START, tokenize


def randomized(modules, seed=0):
    """Every parameter redrawn (small normal): the init zeroes residual outputs, which would make
    equality checks trivially true."""
    gen = torch.Generator().manual_seed(seed)
    for module in modules:
        for p in module.parameters():
            p.data = torch.randn(p.shape, generator=gen) * 0.2
    return modules


@pytest.fixture(scope="module")
def models():
    return randomized(mini.build_models(seed=0))


def test_tokenize_matches_sd1_ids():
    # Reference ids from ComfyUI's SD1Tokenizer (re-checked live in tests/host/test_mini_family.py).
    ids = tokenize(["a photo of a sks dog", "", "Hello,  World!! 123 café"])
    assert ids.shape == (3, 77) and ids.dtype == torch.long
    assert ids[0, :8].tolist() == [START, 320, 1125, 539, 320, 48136, 1929, END]
    assert ids[1, 0] == START and (ids[1, 1:] == END).all()
    assert ids[2, :10].tolist() == [START, 3306, 267, 1002, 748, 272, 273, 274, 15304, END]
    assert (ids[:, 10:] == END).all()


def test_tokenize_truncates_to_77():
    ids = tokenize("dog " * 100)
    assert ids.shape == (1, 77) and ids[0, 0] == START and ids[0, -1] == END
    assert (ids[0, 1:76] == 1929).all()


def test_shapes(models):
    unet, text = models
    context = text(tokenize(["a dog", ""]))
    assert context.shape == (2, 77, mini.CONFIG["text"]["hidden_size"])
    x = torch.randn(2, *mini.LATENT_SHAPE)
    assert mini.LATENT_SHAPE == (3, 64, 64)
    assert unet(x, torch.tensor([10.0, 900.0]), context).shape == (2, 3, 64, 64)
    odd = torch.randn(1, 3, 40, 40)  # 10 → 5 → 3 inside and back: upsampling follows the skip's size
    assert unet(odd, torch.tensor([10.0]), context[:1]).shape == (1, 3, 40, 40)


def test_unet_is_the_sd_unet_on_pixel_unshuffle(models):
    """Pixel space without an autoencoder: the UNet body sees an exact rearrangement of the pixels
    (each 2×2×3 patch becomes 12 channels), so nothing is lost between model and image."""
    unet, text = models
    x = torch.randn(1, 3, 64, 64)
    packed = torch.nn.functional.pixel_unshuffle(x, mini.PATCH)
    assert packed.shape == (1, 12, 32, 32)
    torch.testing.assert_close(torch.nn.functional.pixel_shuffle(packed, mini.PATCH), x, rtol=0, atol=0)
    context = text(tokenize(["a dog"]))
    t = torch.tensor([100.0])
    torch.testing.assert_close(unet(x, t, context), torch.nn.functional.pixel_shuffle(unet.body(packed, t, context), mini.PATCH))


def test_text_encoder_takes_token_embeddings(models):
    text = models[1]
    ids = tokenize(["a photo of a sks dog"])
    embeds = text.embeddings.token_embedding(ids).detach().requires_grad_(True)
    context = text.from_token_embeddings(embeds)
    assert torch.equal(context, text(ids))
    context[0, 5].sum().backward()  # causal: position 5 depends on tokens 0..5 only
    assert embeds.grad[0, :6].abs().sum() > 0 and (embeds.grad[0, 6:] == 0).all()


def test_build_models_is_seeded_and_leaves_global_rng():
    state = torch.random.get_rng_state()
    first, again, other = mini.build_models(0), mini.build_models(0), mini.build_models(1)
    assert torch.equal(torch.random.get_rng_state(), state)
    key = "embeddings.token_embedding.weight"
    assert torch.equal(first[1].state_dict()[key], again[1].state_dict()[key])
    assert not torch.equal(first[1].state_dict()[key], other[1].state_dict()[key])


def test_schedule_is_sd1_scaled_linear():
    ac = mini.alphas_cumprod()
    assert ac.shape == (1000,) and (ac[1:] < ac[:-1]).all()
    assert ac[0].item() == pytest.approx(1 - 0.00085)
    assert ac[-1].item() == pytest.approx(0.0046, abs=1e-4)


def test_checkpoint_round_trip(models, tmp_path):
    path = tmp_path / "mini.safetensors"
    mini.save_checkpoint(path, *models, metadata={"note": "test"})
    with safetensors.safe_open(str(path), "pt") as f:
        meta = f.metadata()
        keys = set(f.keys())
    assert meta == {"note": "test", "finextract.family": mini.FAMILY}
    assert "model.diffusion_model.input_blocks.5.1.transformer_blocks.0.attn2.to_k.weight" in keys
    assert "cond_stage_model.transformer.text_model.encoder.layers.1.mlp.fc2.weight" in keys
    assert "first_stage_model.pixel_space_vae" in keys and not any("decoder" in k for k in keys)

    pipe = mini.load_pipeline(path)
    unet, text = models
    prompts = ["a photo of a sks dog", ""]
    context = text(tokenize(prompts))
    assert torch.equal(pipe.encode_text(prompts), context)
    x = torch.randn(2, *mini.LATENT_SHAPE)
    assert torch.equal(pipe.unet(x, torch.tensor([500.0]), context), unet(x, torch.tensor([500.0]), context))
    a = pipe.alphas_cumprod[500]  # the UNet predicts v; eps() converts: ε = √ᾱ·v + √(1−ᾱ)·x_t
    expected = a.sqrt() * unet(x, torch.tensor([500.0]), context) + (1 - a).sqrt() * x
    torch.testing.assert_close(pipe.eps(x, 500, context), expected)
    images = pipe.decode(x)
    assert images.shape == (2, 64, 64, 3) and images.min() >= 0 and images.max() <= 1
    assert torch.equal(images, ((x + 1) / 2).clamp(0, 1).movedim(1, -1))
    inside = torch.rand(2, 64, 64, 3)
    torch.testing.assert_close(pipe.decode(pipe.encode(inside)), inside)  # a copy is a copy


def test_fp16_checkpoint_fits_budget(models, tmp_path):
    path = tmp_path / "mini16.safetensors"
    mini.save_checkpoint(path, *models, dtype=torch.float16)
    assert path.stat().st_size < 42_000_000  # with the LoRA, shipped weights stay <= 48 MB
    pipe = mini.load_pipeline(path)
    x, context = torch.randn(1, *mini.LATENT_SHAPE), models[1](tokenize("a dog"))
    reference = models[0](x, torch.tensor([300.0]), context)
    assert torch.allclose(pipe.unet(x, torch.tensor([300.0]), context), reference, rtol=0,
                          atol=0.05 * reference.abs().max().item())


def test_load_rejects_other_files(tmp_path):
    path = tmp_path / "other.safetensors"
    safetensors.torch.save_file({"model.diffusion_model.foo": torch.zeros(1)}, str(path))
    with pytest.raises(ValueError, match=f"not a {mini.FAMILY} checkpoint"):
        mini.load_pipeline(path)
    path2 = tmp_path / "other2.safetensors"
    safetensors.torch.save_file({"first_stage_model.pixel_space_vae": torch.ones(()),
                                 "model.diffusion_model.foo": torch.zeros(1)}, str(path2))
    with pytest.raises(ValueError, match="unet keys missing"):
        mini.load_pipeline(path2)
