"""The chunked path from generated latents to N0 extracted images, with the real ONNX SSCD.

The "VAE" here is bilinear 8x upsampling of a 3-channel latent: a real decode callable with the
same contract as a ComfyUI VAE (latent chunk in, IMAGE batch B×H×W×3 in [0, 1] out)."""
import numpy as np
import pytest
import torch

from finextract.clustering import extraction as ex
from finextract.clustering.descriptors import load_descriptor, load_distilled

skdata = pytest.importorskip("skimage.data", reason="scikit-image (the test extra) ships the photos")


def _latents(per_photo=4, seed=0):
    """3 photos x ``per_photo`` noisy 40x40 'latents', interleaved so clusters are not contiguous."""
    g = torch.Generator().manual_seed(seed)
    photos = [skdata.astronaut(), skdata.chelsea(), skdata.rocket()]
    small = [torch.nn.functional.interpolate(torch.from_numpy(p).permute(2, 0, 1)[None].float() / 255,
                                             size=(40, 40), mode="area")[0] for p in photos]
    latents = torch.stack([small[i % 3] + 0.03 * torch.randn(3, 40, 40, generator=g)
                           for i in range(3 * per_photo)])
    return latents.clamp(0, 1), torch.arange(3 * per_photo) % 3


def _decoder(log):
    def decode(chunk):
        log.append(len(chunk))
        up = torch.nn.functional.interpolate(chunk, scale_factor=8, mode="bilinear", align_corners=False)
        return up.clamp(0, 1).permute(0, 2, 3, 1)
    return decode


@pytest.fixture(scope="module")
def sscd():
    return load_descriptor()


def test_latents_decoded_in_chunks_clustered_and_only_chosen_decoded_again(sscd):
    latents, labels = _latents()
    log = []
    decode = _decoder(log)
    stages = []
    out = ex.extract(lambda idx: decode(latents[list(idx)]), len(latents), 3, sscd, mode="fast",
                     chunk_size=5, progress=lambda s, d, t: stages.append(s))
    assert log == [5, 5, 2] and max(log) <= 5  # never more than one chunk of images alive
    groups = sorted(tuple(c) for c in out.result.clusters)
    assert groups == sorted(tuple(np.nonzero(labels.numpy() == k)[0].tolist()) for k in range(3))
    chosen = decode(latents[out.result.indices])
    assert chosen.shape == (3, 320, 320, 3) and log[-1] == 3
    assert out.descriptors.shape == (12, 512) and out.n_generated == 12
    assert {"embed", "cluster"} <= set(stages) and out.prefilter is None
    summary = out.summary()
    assert summary["descriptor"] == sscd.name and len(summary["reference_mean"]) == 512


def test_centred_clustering_and_the_distilled_prefilter(sscd):
    latents, labels = _latents(per_photo=4, seed=1)
    fetch = lambda idx: _decoder([])(latents[list(idx)])  # noqa: E731
    centred = ex.extract(fetch, len(latents), 3, sscd, centred=True, mode="faithful")
    assert sorted(labels[c].unique().numel() for c in map(torch.tensor, centred.result.clusters)) == [1, 1, 1]
    filtered = ex.extract(fetch, len(latents), 3, sscd, student=load_distilled(), keep=10)
    assert len(filtered.candidates) == 10 and filtered.descriptors.shape == (10, 512)
    assert "distilled" in filtered.prefilter and "distilled" not in filtered.descriptor
    assert set(filtered.result.indices) <= set(filtered.candidates)
    assert sorted(labels[filtered.result.indices].tolist()) == [0, 1, 2]


def test_dense_candidates_prefers_crowded_neighbourhoods():
    rng = np.random.default_rng(0)
    crowd = rng.normal(size=512) + 0.1 * rng.normal(size=(5, 512))
    loners = rng.normal(size=(5, 512))
    x = torch.nn.functional.normalize(torch.from_numpy(np.concatenate([loners, crowd])).float(), dim=1)
    assert ex.dense_candidates(x, 5, k=3) == [5, 6, 7, 8, 9]
    assert ex.dense_candidates(x, 20) == list(range(10))


def test_bad_inputs_and_interruption(sscd):
    latents, _ = _latents(per_photo=2)
    fetch = lambda idx: _decoder([])(latents[list(idx)])  # noqa: E731
    with pytest.raises(ValueError, match="N0 must be between 1"):
        ex.extract(fetch, len(latents), len(latents) + 1, sscd)
    with pytest.raises(ValueError, match="no generated images"):
        ex.extract(fetch, 0, 1, sscd)
    with pytest.raises(ValueError, match="keep at least N0"):
        ex.extract(fetch, len(latents), 4, sscd, student=sscd, keep=2)

    class Stop(Exception):
        pass

    def interrupt():
        raise Stop()

    with pytest.raises(Stop):
        ex.extract(fetch, len(latents), 2, sscd, check_interrupt=interrupt)
