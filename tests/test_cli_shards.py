"""Sharded generation + merge gives exactly the unsharded run (core, no ComfyUI)."""
import pytest
import torch

from finextract.cli.shards import merge_shards, parse_shard, save_shard
from finextract.sampling.driver import generate, shard_indices

N, SHAPE, SEED = 11, (4, 8, 8), 1234
RUN = {"n": N, "seed": SEED, "method": "finextract", "base_sha256": "ab" * 32}


def denoiser():
    """A small fixed torch 'sampler': a few steps of a seeded non-linear map, image-wise (what
    is tested here is the shard bookkeeping; the driver's own tests cover batch invariance)."""
    weight = torch.randn((SHAPE[0], 1, 1), generator=torch.Generator().manual_seed(0))

    def sample(noise, seeds):
        x = noise
        for _ in range(3):
            x = x - 0.3 * torch.tanh(weight * x + x.roll(1, dims=-1))
        return x
    return sample


def run_shards(tmp_path, num_shards, batch_size):
    sample = denoiser()
    paths = []
    for shard in range(num_shards):
        latents = generate(shard_indices(N, shard, num_shards), batch_size, SEED, SHAPE, sample)
        paths.append(tmp_path / f"shard-{shard}.safetensors")
        save_shard(paths[-1], latents, RUN, shard, num_shards)
    return paths


@pytest.mark.parametrize("num_shards, batch_size", [(1, 4), (3, 2), (4, 5), (13, 1)])
def test_union_of_shards_is_the_unsharded_run(tmp_path, num_shards, batch_size):
    whole = generate(range(N), 3, SEED, SHAPE, denoiser())
    merged, run = merge_shards(run_shards(tmp_path, num_shards, batch_size)[::-1])
    assert run == RUN
    assert torch.equal(merged, whole)


def test_merge_refuses_incomplete_duplicate_and_foreign_shards(tmp_path):
    paths = run_shards(tmp_path, 3, 2)
    with pytest.raises(ValueError, match=r"missing \[1\], duplicated \[\]"):
        merge_shards([paths[0], paths[2]])
    with pytest.raises(ValueError, match=r"duplicated \[2\]"):
        merge_shards(paths + [paths[2]])
    other = tmp_path / "other.safetensors"
    save_shard(other, torch.zeros(4, *SHAPE), {**RUN, "seed": SEED + 1}, 0, 3)
    with pytest.raises(ValueError, match="belongs to another run"):
        merge_shards([other, paths[1], paths[2]])
    with pytest.raises(ValueError, match="has 4 images, got 3 latents"):
        save_shard(tmp_path / "bad.safetensors", torch.zeros(3, *SHAPE), RUN, 0, 3)


@pytest.mark.parametrize("text, expected", [("0/4", (0, 4)), ("3/4", (3, 4))])
def test_parse_shard(text, expected):
    assert parse_shard(text) == expected


@pytest.mark.parametrize("text", ["4/4", "1", "a/b", "-1/3"])
def test_parse_shard_rejects(text):
    with pytest.raises(ValueError):
        parse_shard(text)
