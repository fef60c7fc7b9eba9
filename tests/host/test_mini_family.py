"""The miniature pixel-space family is the same model in both worlds: given one checkpoint file,
ComfyUI's own modules (loaded through its model detection, after ``nodes.mini_family.register()``)
and our plain torch modules give the same UNet ε, text context and pixel decode/encode (ComfyUI's
own ``PixelspaceConversionVAE``, chosen by the file's ``pixel_space_vae`` tensor); registering the
family replaces no ComfyUI code; and a real ComfyUI samples with the file through the stock
CheckpointLoaderSimple → KSampler → VAEDecode graph over HTTP.

In-process tests import ComfyUI as a library (through ``finextract.host``), so they run under an
interpreter with ComfyUI's requirements, as ``make test`` sets up.
"""
from __future__ import annotations

import io
import pathlib

import numpy as np
import pytest
import torch
from PIL import Image

from finextract.miniature import model as mini
from finextract.miniature.tokenizer import tokenize

SHIPPED = pathlib.Path(mini.__file__).with_name("weights") / "mini_base.safetensors"
PROMPTS = ["a photo of a sks dog", "", "A  Painting, of Trees at dusk!! 1984 café"]


def _comfy():
    """ComfyUI imported in this process on the CPU through the pack's one door (``finextract.host``),
    and the family registered."""
    from finextract import host

    try:
        host.import_comfyui(cpu=True)
    except host.HostError as exc:
        pytest.skip(str(exc))
    from finextract.nodes import mini_family

    mini_family.register()
    return host.module, mini_family


def _randomized_checkpoint(path: pathlib.Path, seed: int = 1) -> pathlib.Path:
    """A checkpoint whose every weight is random (the seeded init zeroes residual outputs, which
    would hide differences), stored in fp16 as the shipped base is."""
    models = mini.build_models(seed=0)
    gen = torch.Generator().manual_seed(seed)
    for module in models:
        for p in module.parameters():
            p.data = torch.randn(p.shape, generator=gen) * 0.15
    mini.save_checkpoint(path, *models, dtype=torch.float16)
    return path


@pytest.fixture(scope="module", params=["random", "shipped"])
def checkpoint(request, tmp_path_factory):
    if request.param == "shipped":
        if not SHIPPED.is_file():
            pytest.skip(f"{SHIPPED} not there yet (trained by the miniature training step)")
        return SHIPPED
    return _randomized_checkpoint(tmp_path_factory.mktemp("mini") / "mini_random.safetensors")


@pytest.fixture(scope="module")
def both_worlds(checkpoint):
    module, _ = _comfy()
    # ComfyUI holds text encoders in fp16 on the CPU by default; fp32 here compares the models,
    # not that policy (with fp32-stored weights it alone differs by ~3e-4).
    model, clip, vae, _ = module("comfy.sd").load_checkpoint_guess_config(
        str(checkpoint), te_model_options={"dtype": torch.float32})
    return mini.load_pipeline(checkpoint), model, clip, vae


def _close(actual, expected, rel=1e-4):
    scale = expected.abs().max().item()
    assert scale > 0
    assert (actual - expected).abs().max().item() <= rel * scale


def test_tokenizer_ids_equal_sd1tokenizer():
    module, _ = _comfy()
    reference = module("comfy.sd1_clip").SD1Tokenizer()
    prompts = PROMPTS[:2] + ["Hello, World!! 123 café", "a rare token xyzzq in a jungle of 2 ferns"]
    for prompt, ids in zip(prompts, tokenize(prompts)):
        assert [t for t, _ in reference.tokenize_with_weights(prompt)["l"][0]] == ids.tolist()


def test_detected_as_mini_family_and_registration_is_idempotent(both_worlds):
    module, mini_family = _comfy()
    supported_models = module("comfy.supported_models")
    before = list(supported_models.models)
    mini_family.register()
    assert supported_models.models == before
    assert before.count(mini_family.MiniPixel) == 1 and before[-1] is mini_family.MiniPixel
    _, model, _, vae = both_worlds
    assert type(model.model.model_config) is mini_family.MiniPixel
    assert type(model.model.diffusion_model) is mini_family.PixelUNet
    assert model.model.model_type.name == "V_PREDICTION"
    assert model.model.latent_format.scale_factor == 1.0 and model.model.latent_format.latent_channels == 3
    assert not model.model.concat_keys  # not mistaken for an inpainting model (48 input channels)
    assert isinstance(vae.first_stage_model, module("comfy.pixel_space_convert").PixelspaceConversionVAE)
    assert vae.downscale_ratio == vae.upscale_ratio == 1
    # the pack's sampler sizes latents from the model: 64 px is the family's 3×64×64 pixel latent
    from finextract.nodes.sampler import latent_shape
    assert latent_shape(model, 64, 64) == (3, 64, 64)


def test_registering_replaces_no_comfyui_code():
    """The family is added through ComfyUI's extension points only: the VAE class and the model
    classes are ComfyUI's own objects after ``register()``, untouched."""
    module, _ = _comfy()
    sd, model_base = module("comfy.sd"), module("comfy.model_base")
    for owner, name in ((sd.VAE, "__init__"), (sd, "load_checkpoint_guess_config"),
                        (model_base.BaseModel, "__init__"), (sd.VAE, "decode")):
        assert getattr(owner, name).__module__.startswith("comfy."), (owner, name)
    assert not hasattr(sd.VAE.__init__, "finextract_mini")


def test_schedule_equal(both_worlds):
    pipe, model, _, _ = both_worlds
    sigmas = model.model.model_sampling.sigmas.double()  # ComfyUI keeps σ_t = √((1 − ᾱ_t) / ᾱ_t)
    torch.testing.assert_close(1 / (1 + sigmas ** 2), pipe.alphas_cumprod.double(), rtol=1e-6, atol=0)


def test_text_context_equal(both_worlds):
    pipe, _, clip, _ = both_worlds
    ours = pipe.encode_text(PROMPTS)
    for i, prompt in enumerate(PROMPTS):
        theirs = clip.encode_from_tokens(clip.tokenize(prompt))
        assert theirs.shape == (1, 77, mini.CONFIG["text"]["hidden_size"])
        _close(theirs[0].float(), ours[i])


def test_unet_output_and_denoised_equal(both_worlds):
    """The raw UNet (v) is the same function in both worlds, and ComfyUI's V_PREDICTION sampling
    object turns it into the same clean-image estimate as our ε conversion: x0 = (x_t − √(1−ᾱ) ε) / √ᾱ."""
    pipe, model, _, _ = both_worlds
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(3, *mini.LATENT_SHAPE, generator=gen)
    t = torch.tensor([1.0, 400.0, 999.0])
    context = pipe.encode_text(PROMPTS)
    with torch.no_grad():
        theirs = model.model.diffusion_model(x, timesteps=t, context=context, transformer_options={})
        ours = pipe.unet(x, t, context)
    assert theirs.shape == x.shape
    _close(theirs.float(), ours)
    assert model.model.model_type.name == "V_PREDICTION"
    a = pipe.alphas_cumprod[t.long()].view(-1, 1, 1, 1)
    sigma = ((1 - a) / a).sqrt()
    x0 = torch.rand(3, *mini.LATENT_SHAPE, generator=gen) * 2 - 1
    noise = torch.randn(x0.shape, generator=gen)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise  # ours (VP); ComfyUI's input is x0 + σ·noise
    with torch.no_grad():
        denoised = model.model.apply_model(x0 + sigma * noise, sigma.flatten(), c_crossattn=context)
        ours_x0 = (x_t - (1 - a).sqrt() * pipe.eps(x_t, t, context)) / a.sqrt()
    _close(denoised.float(), ours_x0, rel=1e-3)


def test_pixel_vae_decode_and_encode_equal(both_worlds):
    pipe, _, _, vae = both_worlds
    latents = torch.rand(2, *mini.LATENT_SHAPE, generator=torch.Generator().manual_seed(3)) * 2.4 - 1.2
    theirs = vae.decode(latents)
    assert theirs.shape == (2, 64, 64, 3)
    _close(theirs.float(), pipe.decode(latents), rel=1e-3)
    images = torch.rand(2, 64, 64, 3, generator=torch.Generator().manual_seed(4))
    _close(vae.encode(images).float(), pipe.encode(images), rel=1e-3)


@pytest.fixture(scope="module")
def host_checkpoints(comfy):
    """Two random mini checkpoints (a "base" and a "fine-tune") in the running ComfyUI's folder."""
    folder = comfy.base_dir / "models" / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    names = {"base": "finextract_mini_base_random.safetensors", "finetuned": "finextract_mini_ft_random.safetensors"}
    for seed, name in enumerate(names.values(), start=1):
        _randomized_checkpoint(folder / name, seed)
    return names


def test_stock_graph_samples_over_http(comfy, host_checkpoints, stock_txt2img):
    """CheckpointLoaderSimple + CLIPTextEncode + KSampler + VAEDecode on a mini checkpoint in a real
    ComfyUI, with ComfyUI's own pixel-space empty latent (``EmptyChromaRadianceLatentImage``: the
    stock EmptyLatentImage makes SD's 4-channel H/8 latents)."""
    name = host_checkpoints["base"]
    graph = stock_txt2img(name, "a photo of a sks dog", 64, 2, 3, "ddim", "mini")
    graph["4"] = {"class_type": "EmptyChromaRadianceLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 2}}
    outputs = comfy.run(graph)
    images = [Image.open(io.BytesIO(comfy.view(item))) for item in outputs["7"]["images"]]
    assert [im.size for im in images] == [(64, 64), (64, 64)]
    assert np.asarray(images[0]).std() > 0


def test_kohya_lora_names_map_onto_the_unet(both_worlds):
    """ComfyUI's LoRA loader finds every layer the family's LoRAs adapt — attention projections,
    ResBlock convolutions (LoCon) and, for the demo LoRA's ``all``, every other Linear / Conv2d
    but the time embedding — under the kohya names (``lora_unet_<path with _>``)."""
    module, _ = _comfy()
    from finextract.miniature.finetune import LORA_TARGETS

    pipe, model, _, _ = both_worlds
    key_map = module("comfy.lora").model_lora_keys_unet(model.model, {})
    layers = {p for p, m in pipe.unet.named_modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))}
    chosen = {kind: sorted(p for p in layers if LORA_TARGETS[kind].search("." + p)) for kind in LORA_TARGETS}
    unet = mini.CONFIG["unet"]
    levels, blocks = len(unet["channel_mult"]), unet["num_res_blocks"]
    transformers = len(unet["attention_levels"]) * (2 * blocks + 1) + 1  # down, up (one more), middle
    res_blocks = levels * blocks + 2 + levels * (blocks + 1)
    assert len([p for p in chosen["attention+conv"] if ".attn" in p]) == transformers * 2 * 4  # attn1/2 × q/k/v/out
    assert len(chosen["attention+conv"]) == transformers * 8 + 2 * res_blocks  # + ResBlocks × in/out conv
    assert "out.2" in chosen["all"] and "input_blocks.0.0" in chosen["all"]
    assert not any("emb" in p for p in chosen["all"])
    for name in chosen["all"]:
        assert key_map["lora_unet_" + name.replace(".", "_")] == f"diffusion_model.{name}.weight"


def test_dual_model_loader_reads_the_family_over_http(comfy, host_checkpoints):
    graph = {
        "1": {"class_type": "FineXtractDualModelLoader", "inputs": {
            "base_checkpoint": host_checkpoints["base"], "finetuned_checkpoint": host_checkpoints["finetuned"],
            **{f"lora_{i}": "none" for i in (1, 2, 3)}, **{f"strength_{i}": 1.0 for i in (1, 2, 3)}}},
        "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 4]}},
    }
    report = "".join(comfy.run(graph)["2"]["text"])
    assert report.count("MiniPixel") >= 2, report
