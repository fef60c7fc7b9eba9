"""The N-image driver: per-image seeds make image i independent of batch size, N and sharding."""
import pytest
import torch

from finextract.sampling import PerImageNoise, derive_seed, generate, image_noise, shard_indices


class TinyDenoiser(torch.nn.Module):
    """A real (small) torch denoiser with convolutions, so batching goes through real kernels."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Conv2d(4, 16, 3, padding=1), torch.nn.SiLU(),
                                       torch.nn.Conv2d(16, 4, 3, padding=1))

    @torch.no_grad()
    def sample(self, noise, seeds):
        x = noise
        for _ in range(4):
            x = x - 0.25 * self.net(x)
        return x


def test_image_i_is_the_same_whatever_batch_size_and_n():
    model = TinyDenoiser()
    shape = (4, 8, 8)
    full = generate(range(12), batch_size=5, seed=7, shape=shape, sample=model.sample)
    alone = generate([9], batch_size=1, seed=7, shape=shape, sample=model.sample)
    shorter = generate(range(10), batch_size=3, seed=7, shape=shape, sample=model.sample)
    assert full.shape == (12, *shape)
    assert torch.allclose(full[9], alone[0], atol=1e-5)
    assert torch.allclose(full[:10], shorter, atol=1e-5)
    other_seed = generate([9], batch_size=1, seed=8, shape=shape, sample=model.sample)
    assert not torch.allclose(alone, other_seed)


def test_shards_partition_the_run_and_reproduce_it():
    model = TinyDenoiser()
    shape = (4, 8, 8)
    whole = generate(range(10), batch_size=4, seed=3, shape=shape, sample=model.sample)
    parts = {}
    for s in range(3):
        idx = shard_indices(10, s, 3)
        for i, img in zip(idx, generate(idx, batch_size=2, seed=3, shape=shape, sample=model.sample)):
            parts[i] = img
    assert sorted(parts) == list(range(10))
    assert torch.allclose(torch.stack([parts[i] for i in range(10)]), whole, atol=1e-5)
    with pytest.raises(ValueError):
        shard_indices(10, 3, 3)


def test_adjacent_seeds_share_no_image():
    assert derive_seed(1, 0) != derive_seed(0, 1)
    assert not torch.allclose(image_noise(1, 0, (8,)), image_noise(0, 1, (8,)))


def test_progress_and_interrupt_between_chunks():
    seen = []
    calls = {"n": 0}

    def interrupt():
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("stop")

    with pytest.raises(KeyboardInterrupt):
        generate(range(10), 2, 0, (1, 2, 2), lambda n, s: n, progress=lambda d, t: seen.append((d, t)),
                 check_interrupt=interrupt)
    assert seen == [(2, 10), (4, 10)]


def test_bad_batch_size():
    with pytest.raises(ValueError):
        generate(range(2), 0, 0, (1,), lambda n, s: n)


def test_stochastic_sampler_with_per_image_noise_is_batch_independent():
    """An ancestral-style sampler drawing fresh noise every step still reproduces image i alone."""
    model = TinyDenoiser()
    shape = (4, 8, 8)

    @torch.no_grad()
    def ancestral(noise, seeds):
        fresh = PerImageNoise(seeds, shape, noise.dtype)
        x = noise
        for _ in range(4):
            x = x - 0.25 * model.net(x) + 0.1 * fresh(1.0, 0.5)
        return x

    batch = generate(range(6), batch_size=4, seed=3, shape=shape, sample=ancestral)
    alone = generate([5], batch_size=1, seed=3, shape=shape, sample=ancestral)
    assert torch.allclose(batch[5], alone[0], atol=1e-5)
    # the fresh noise is not the starting noise's stream, and differs per image
    draws = PerImageNoise([derive_seed(3, 0), derive_seed(3, 1)], shape, torch.float32)()
    assert not torch.allclose(draws[0], image_noise(3, 0, shape))
    assert not torch.allclose(draws[0], draws[1])
