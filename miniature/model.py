"""The miniature text-to-image model: Stable Diffusion 1.x in miniature, in pixel space, plain torch.

Why SD1's exact layouts: one safetensors checkpoint must be the *same model* here and inside a real
ComfyUI (``nodes/mini_family.py`` registers the family). So every module below reproduces, key for
key and op for op, what ComfyUI builds for SD1.x, only narrower:

- ``MiniUNet``        = ``openaimodel.UNetModel`` (v prediction, linear-projection transformers),
  run on ``pixel_unshuffle(4)`` of the image: 64×64×3 pixels ↔ 16×16×48 inside the UNet, and
  ``pixel_shuffle`` back. The patching is an exact, orthogonal rearrangement — no learned
  autoencoder sits between the model and the image, so a memorised training image comes back as
  a copy (a learned 4× VAE returned this world's images at SSCD 0.18, putting every copy out of
  reach). ComfyUI runs it through its own pixel-space VAE (``comfy.pixel_space_convert``), which
  the ``first_stage_model.pixel_space_vae`` tensor of every checkpoint selects.
- ``MiniTextEncoder`` = ``clip_model.CLIPTextModel``'s ``text_model`` (SD1's "last" layer output)
  over the real CLIP BPE vocabulary, 256 wide and trained with the UNet on the world's captions
  (a frozen random 64-wide encoder made every token's direction look alike: contextual rows'
  mean cosine 0.56, which defeated caption recovery).

The UNet predicts v = √ᾱ·ε − √(1−ᾱ)·x0 (Salimans & Ho 2022; SD 2's "v" models, ComfyUI's
``V_PREDICTION``), not ε: SD1's schedule keeps √ᾱ_T = 0.068 of the signal at the last step, and
in pixel space (data std ≈ 0.5) an ε model's x0 estimate there is its ε error × 14.6 — measured on
this family after 781 steps, x0 estimates of std 5 and samples of pure speckle. A v model predicts
x0 directly at high noise and ε at low noise. :meth:`MiniPipeline.eps` converts, so everything
downstream (guidance, DDIM) stays in ε space as the paper's equations are written.

Shapes: images 64×64×3 in [-1, 1] are the latents; text context 77×256.
The ``nn.Dropout(0.0)`` entries only keep ComfyUI's Sequential indices (``out_layers.3``,
``to_out.0``, ``ff.net.2``) so the state-dict keys line up.
"""
from __future__ import annotations

import math

import safetensors.torch
import torch
import torch.nn.functional as F
from torch import nn

from ..modelfiles import load_safetensors
from .tokenizer import tokenize

FAMILY = "mini-pixel-64"
"""Value of the ``finextract.family`` metadata key in every checkpoint of this family."""

PATCH = 2
"""``pixel_unshuffle`` factor: the UNet sees (3·PATCH²) channels at (64/PATCH)² positions."""

CONFIG = {
    "unet": dict(in_channels=3 * PATCH * PATCH, out_channels=3 * PATCH * PATCH, model_channels=32,
                 channel_mult=(1, 2, 4, 4), num_res_blocks=1, attention_levels=(2,), num_head_channels=32,
                 context_dim=256),
    "text": dict(vocab_size=49408, hidden_size=256, num_layers=2, num_heads=4,
                 intermediate_size=1024, max_positions=77),
    "schedule": dict(beta_start=0.00085, beta_end=0.012, timesteps=1000),
    "image_size": 64,
}
"""The one place the family's sizes live. ``attention_levels``: UNet levels (ds = 2^level) carrying
one SpatialTransformer (8×8 tokens); the middle block (4×4) always carries one. 5.65 M UNet
parameters; the text encoder is 14.2 M, 12.6 M of them the token table.

Why a 2× patch and a slim top level (measured 2026-11-30, README "Known limits": each shape
trained from scratch 600 steps at t < 300, the regime that leaves pixel speckle): held-out v-loss
after 400 steps 0.338 for the first base's shape (patch 4, 64 channels at 16×16), 0.339 with two
res blocks per level, 0.259 at 96 channels, 0.150 at patch 2 with 64 channels (3.8× the sampling
cost) and 0.208 at patch 2 with 32 channels at 32×32 (this one, 1.6× the sampling cost). The
first base's samples carried colour speckle even on grey photos: 4×4 patches through 64 channels
could not denoise single pixels."""

LATENT_SHAPE = (3, CONFIG["image_size"], CONFIG["image_size"])
"""The family's latents are the images: (3, 64, 64) in [-1, 1]."""

PREFIXES = {"unet": "model.diffusion_model.", "text": "cond_stage_model.transformer.text_model."}
"""Checkpoint key prefixes of SD1's single-file layout."""
PIXEL_SPACE_KEY = "first_stage_model.pixel_space_vae"
"""The tensor that makes ``comfy.sd`` build its identity pixel-space VAE for a checkpoint."""


def alphas_cumprod(beta_start=0.00085, beta_end=0.012, timesteps=1000) -> torch.Tensor:
    """SD1's "scaled linear" schedule: β linear in √β; ᾱ_t = Π(1 − β). Float64 → float32 as ComfyUI."""
    betas = torch.linspace(beta_start ** 0.5, beta_end ** 0.5, timesteps, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0).float()


def v_target(x0: torch.Tensor, noise: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """The training target of this family: v = √ᾱ·ε − √(1−ᾱ)·x0 (``a`` = ᾱ_t, broadcastable)."""
    return a.sqrt() * noise - (1 - a).sqrt() * x0


def training_timesteps(batch: int, gen: torch.Generator, low_fraction: float = 0.0, low_max: int = 300,
                       timesteps: int = 1000) -> torch.Tensor:
    """The t of one training batch: uniform over [0, ``timesteps``), except a ``low_fraction`` share
    drawn below ``low_max`` (the low-noise steps leave pixel speckle when undertrained). One owner
    for the base's pretraining and every fine-tune, drawing from ``gen`` in a fixed order."""
    t = torch.randint(0, timesteps, (batch,), generator=gen)
    low = torch.rand(batch, generator=gen) < low_fraction
    t[low] = torch.randint(0, low_max, (int(low.sum()),), generator=gen)
    return t


def eps_from_v(v: torch.Tensor, x_t: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """ε = √ᾱ·v + √(1−ᾱ)·x_t, for x_t = √ᾱ·x0 + √(1−ᾱ)·ε."""
    return a.sqrt() * v + (1 - a).sqrt() * x_t


def _zero(module: nn.Module) -> nn.Module:
    """Zero a residual branch's last layer so every block starts as the identity (as LDM does)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def _attention(q, k, v, heads, mask=None):
    """Multi-head scaled dot-product attention on (B, N, heads·d) tensors."""
    b, n, _ = q.shape
    q, k, v = (t.reshape(b, t.shape[1], heads, -1).transpose(1, 2) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return out.transpose(1, 2).reshape(b, n, -1)


# ---------------------------------------------------------------- UNet (openaimodel.UNetModel)

def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding, [cos | sin] halves (openaimodel's order)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class ResBlock(nn.Module):
    """GroupNorm–SiLU–conv, + time embedding, GroupNorm–SiLU–conv, residual (1×1 skip if widths differ)."""

    def __init__(self, channels: int, emb_channels: int, out_channels: int):
        super().__init__()
        self.in_layers = nn.Sequential(nn.GroupNorm(32, channels), nn.SiLU(),
                                       nn.Conv2d(channels, out_channels, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, out_channels))
        self.out_layers = nn.Sequential(nn.GroupNorm(32, out_channels), nn.SiLU(), nn.Dropout(0.0),
                                        _zero(nn.Conv2d(out_channels, out_channels, 3, padding=1)))
        self.skip_connection = (nn.Identity() if channels == out_channels
                                else nn.Conv2d(channels, out_channels, 1))

    def forward(self, x, emb):
        h = self.in_layers(x) + self.emb_layers(emb)[:, :, None, None]
        return self.skip_connection(x) + self.out_layers(h)


class CrossAttention(nn.Module):
    """Attention of queries ``x`` over ``context`` (itself when None); q/k/v without bias."""

    def __init__(self, dim: int, heads: int, context_dim: int | None = None):
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(context_dim or dim, dim, bias=False)
        self.to_v = nn.Linear(context_dim or dim, dim, bias=False)
        self.to_out = nn.Sequential(nn.Linear(dim, dim), nn.Dropout(0.0))

    def forward(self, x, context=None):
        context = x if context is None else context
        return self.to_out(_attention(self.to_q(x), self.to_k(context), self.to_v(context), self.heads))


class GEGLU(nn.Module):
    """Gated GELU projection: one Linear to 2× width, value · GELU(gate)."""

    def __init__(self, dim: int, inner: int):
        super().__init__()
        self.proj = nn.Linear(dim, inner * 2)

    def forward(self, x):
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * F.gelu(gate)


class FeedForward(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.net = nn.Sequential(GEGLU(dim, dim * 4), nn.Dropout(0.0), nn.Linear(dim * 4, dim))

    def forward(self, x):
        return self.net(x)


class BasicTransformerBlock(nn.Module):
    """Self-attention, cross-attention on the text context, gated feed-forward; pre-LayerNorm residuals."""

    def __init__(self, dim: int, heads: int, context_dim: int):
        super().__init__()
        self.attn1 = CrossAttention(dim, heads)
        self.ff = FeedForward(dim)
        self.attn2 = CrossAttention(dim, heads, context_dim)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)

    def forward(self, x, context):
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))


class SpatialTransformer(nn.Module):
    """GroupNorm, Linear in, one transformer block over the H·W tokens, Linear out, residual."""

    def __init__(self, channels: int, heads: int, context_dim: int):
        super().__init__()
        self.norm = nn.GroupNorm(32, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, channels)
        self.transformer_blocks = nn.ModuleList([BasicTransformerBlock(channels, heads, context_dim)])
        self.proj_out = _zero(nn.Linear(channels, channels))

    def forward(self, x, context):
        b, c, h, w = x.shape
        tokens = self.proj_in(self.norm(x).movedim(1, 3).reshape(b, h * w, c))
        tokens = self.proj_out(self.transformer_blocks[0](tokens, context))
        return tokens.reshape(b, h, w, c).movedim(3, 1) + x


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x):
        return self.op(x)


class Upsample(nn.Module):
    """Nearest upsampling to the matching skip's size, then a 3×3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x, size):
        return self.conv(F.interpolate(x, size=size, mode="nearest"))


class TimestepEmbedSequential(nn.ModuleList):
    """A UNet block: routes the time embedding to ResBlocks, the context to transformers."""

    def forward(self, x, emb, context, skip_size=None):
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, emb)
            elif isinstance(layer, SpatialTransformer):
                x = layer(x, context)
            elif isinstance(layer, Upsample):
                x = layer(x, skip_size)
            else:
                x = layer(x)
        return x


class MiniUNet(nn.Module):
    """Noise predictor ε(x_t, t, context): the openaimodel UNet with CONFIG["unet"]'s sizes."""

    def __init__(self, in_channels, out_channels, model_channels, channel_mult, num_res_blocks,
                 attention_levels, num_head_channels, context_dim, patch=PATCH):
        super().__init__()
        self.model_channels, self.patch = model_channels, patch
        emb = model_channels * 4
        self.time_embed = nn.Sequential(nn.Linear(model_channels, emb), nn.SiLU(), nn.Linear(emb, emb))

        def attention(ch):
            return SpatialTransformer(ch, ch // num_head_channels, context_dim)

        self.input_blocks = nn.ModuleList([TimestepEmbedSequential([nn.Conv2d(in_channels, model_channels, 3, padding=1)])])
        skips, ch = [model_channels], model_channels
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers = [ResBlock(ch, emb, mult * model_channels)]
                ch = mult * model_channels
                if level in attention_levels:
                    layers.append(attention(ch))
                self.input_blocks.append(TimestepEmbedSequential(layers))
                skips.append(ch)
            if level != len(channel_mult) - 1:
                self.input_blocks.append(TimestepEmbedSequential([Downsample(ch)]))
                skips.append(ch)
        self.middle_block = TimestepEmbedSequential([ResBlock(ch, emb, ch), attention(ch), ResBlock(ch, emb, ch)])
        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(num_res_blocks + 1):
                layers = [ResBlock(ch + skips.pop(), emb, mult * model_channels)]
                ch = mult * model_channels
                if level in attention_levels:
                    layers.append(attention(ch))
                if level and i == num_res_blocks:
                    layers.append(Upsample(ch))
                self.output_blocks.append(TimestepEmbedSequential(layers))
        self.out = nn.Sequential(nn.GroupNorm(32, ch), nn.SiLU(), _zero(nn.Conv2d(model_channels, out_channels, 3, padding=1)))

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """x (B,3,64,64) noisy images, t (B,) timesteps in [0, 1000), context (B,77,256) → ε (B,3,64,64)."""
        return F.pixel_shuffle(self.body(F.pixel_unshuffle(x, self.patch), t, context), self.patch)

    def body(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """The openaimodel UNet on the unshuffled (B,48,16,16) tensor."""
        emb = self.time_embed(timestep_embedding(t.expand(x.shape[0]), self.model_channels).to(x.dtype))
        hs, h = [], x
        for block in self.input_blocks:
            h = block(h, emb, context)
            hs.append(h)
        h = self.middle_block(h, emb, context)
        for block in self.output_blocks:
            h = torch.cat([h, hs.pop()], dim=1)
            h = block(h, emb, context, hs[-1].shape[-2:] if hs else None)
        return self.out(h)


# ---------------------------------------------------------------- text encoder (CLIPTextModel)

class CLIPAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, x, mask):
        return self.out_proj(_attention(self.q_proj(x), self.k_proj(x), self.v_proj(x), self.heads, mask))


class CLIPMLP(nn.Module):
    def __init__(self, dim: int, inner: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, inner), nn.Linear(inner, dim)

    def forward(self, x):
        h = self.fc1(x)
        return self.fc2(h * torch.sigmoid(1.702 * h))  # quick_gelu


class CLIPLayer(nn.Module):
    def __init__(self, dim: int, heads: int, inner: int):
        super().__init__()
        self.layer_norm1, self.layer_norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.self_attn, self.mlp = CLIPAttention(dim, heads), CLIPMLP(dim, inner)

    def forward(self, x, mask):
        x = x + self.self_attn(self.layer_norm1(x), mask)
        return x + self.mlp(self.layer_norm2(x))


class CLIPEmbeddings(nn.Module):
    """Holder of the token and (learned) position tables; MiniTextEncoder adds them."""

    def __init__(self, vocab_size: int, dim: int, positions: int):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab_size, dim)
        self.position_embedding = nn.Embedding(positions, dim)


class CLIPEncoder(nn.Module):
    def __init__(self, num_layers: int, dim: int, heads: int, inner: int):
        super().__init__()
        self.layers = nn.ModuleList(CLIPLayer(dim, heads, inner) for _ in range(num_layers))

    def forward(self, x, mask):
        for layer in self.layers:
            x = layer(x, mask)
        return x


class MiniTextEncoder(nn.Module):
    """CLIP text transformer: ids (B,77) → context (B,77,hidden) = final LayerNorm of the last layer,
    causal self-attention, every position kept (SD1's conditioning). Trained with the base UNet."""

    def __init__(self, vocab_size, hidden_size, num_layers, num_heads, intermediate_size, max_positions):
        super().__init__()
        self.embeddings = CLIPEmbeddings(vocab_size, hidden_size, max_positions)
        self.encoder = CLIPEncoder(num_layers, hidden_size, num_heads, intermediate_size)
        self.final_layer_norm = nn.LayerNorm(hidden_size)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.from_token_embeddings(self.embeddings.token_embedding(ids))

    def from_token_embeddings(self, embeds: torch.Tensor) -> torch.Tensor:
        """(B,T,hidden) token embeddings → context (B,T,hidden): ``forward`` after the table lookup,
        for continuous prompts (PEZ's projected embeddings, textual inversion), differentiable.
        ComfyUI's CLIPTextModel does the same with ``embeds=``."""
        n = embeds.shape[1]
        x = embeds + self.embeddings.position_embedding.weight[:n]
        causal = torch.full((n, n), -torch.finfo(x.dtype).max, dtype=x.dtype, device=x.device).triu_(1)
        return self.final_layer_norm(self.encoder(x, causal))


# ---------------------------------------------------------------- building, files, pipeline

def build_models(seed: int = 0) -> tuple[MiniUNet, MiniTextEncoder]:
    """Fresh (unet, text encoder) with a deterministic initialisation drawn from ``seed``
    (the global RNG is left untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = MiniUNet(**CONFIG["unet"])
        text = MiniTextEncoder(**CONFIG["text"])
    return unet, text


def save_checkpoint(path, unet: MiniUNet, text: MiniTextEncoder,
                    metadata: dict[str, str] | None = None, dtype: torch.dtype | None = None) -> None:
    """Write one SD1-layout safetensors file (prefixes of PREFIXES, plus the pixel-space marker),
    tagged with the family. ``dtype`` (e.g. torch.float16 for the shipped base) casts floating
    tensors before writing."""
    tensors = {PIXEL_SPACE_KEY: torch.tensor(1.0)}
    for part, module in (("unet", unet), ("text", text)):
        for key, value in module.state_dict().items():
            value = value.detach().cpu()
            tensors[PREFIXES[part] + key] = (value.to(dtype) if dtype is not None else value).contiguous()
    safetensors.torch.save_file(tensors, str(path), metadata={**(metadata or {}), "finextract.family": FAMILY})


def split_checkpoint(state_dict: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """{"unet"|"text": state dict without prefix} of a checkpoint's flat state dict."""
    parts = {part: {} for part in PREFIXES}
    for key, value in state_dict.items():
        for part, prefix in PREFIXES.items():
            if key.startswith(prefix):
                parts[part][key[len(prefix):]] = value
    return parts


def to_latents(images: torch.Tensor) -> torch.Tensor:
    """Images (B, H, W, 3) in [0, 1] → latents (B, 3, H, W) in [-1, 1] (ComfyUI's pixel-space VAE)."""
    return images.movedim(-1, 1) * 2.0 - 1.0


def to_images(latents: torch.Tensor) -> torch.Tensor:
    """Latents (B, 3, H, W) → images (B, H, W, 3) in [0, 1], clamped."""
    return ((latents + 1.0) / 2.0).clamp(0.0, 1.0).movedim(1, -1)


class MiniPipeline:
    """The two models plus SD1's noise schedule, with ComfyUI-like image conventions
    (images (B,H,W,3) in [0,1]). ``eps`` works on any batch; nothing here samples."""

    def __init__(self, unet: MiniUNet, text: MiniTextEncoder):
        self.unet, self.text = unet.eval(), text.eval()
        self.alphas_cumprod = alphas_cumprod(**CONFIG["schedule"])

    @torch.no_grad()
    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        """Prompts → context (B, 77, 256); "" is the unconditional branch."""
        return self.text(tokenize(prompts).to(self.text.embeddings.token_embedding.weight.device))

    def eps(self, x_t: torch.Tensor, t: torch.Tensor | float, context: torch.Tensor) -> torch.Tensor:
        """ε of the UNet's v prediction; ``t`` a scalar or (B,) integer timesteps in [0, 1000).
        Differentiable (caption inversion backpropagates through it): samplers wrap it in no_grad."""
        t = torch.as_tensor(t, dtype=torch.float32, device=x_t.device).reshape(-1)
        a = self.alphas_cumprod.to(x_t.device)[t.round().long()].view(-1, *[1] * (x_t.dim() - 1))
        return eps_from_v(self.unet(x_t, t, context), x_t, a)

    @staticmethod
    def decode(latents: torch.Tensor) -> torch.Tensor:
        """Latents (B,3,64,64) → images (B,64,64,3) in [0,1]: the pixel-space "VAE"."""
        return to_images(latents)

    @staticmethod
    def encode(images: torch.Tensor) -> torch.Tensor:
        """Images (B,64,64,3) in [0,1] → latents (B,3,64,64) in [-1,1]."""
        return to_latents(images)


def load_pipeline(path, device: str | torch.device = "cpu") -> MiniPipeline:
    """Load a checkpoint of this family (any stored dtype) as a float32 MiniPipeline on ``device``."""
    state = load_safetensors(path)
    if PIXEL_SPACE_KEY not in state:
        raise ValueError(f"{path} is not a {FAMILY} checkpoint: no {PIXEL_SPACE_KEY} tensor")
    parts = split_checkpoint(state)
    unet, text = build_models()
    for part, module in (("unet", unet), ("text", text)):
        missing, unexpected = module.load_state_dict({k: v.float() for k, v in parts[part].items()}, strict=False)
        if missing or unexpected:
            raise ValueError(f"{path} is not a {FAMILY} checkpoint: {part} keys missing {missing[:3]}"
                             f"{'…' if len(missing) > 3 else ''}, unexpected {unexpected[:3]}")
    return MiniPipeline(unet.to(device), text.to(device))
