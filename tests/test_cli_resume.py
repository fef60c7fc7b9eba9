"""The store that keeps an audit's generations on disk (core, no ComfyUI): real safetensors files,
a real failing write. The killed and resumed audit itself runs in tests/host/test_cli_resume.py."""
import resource

import pytest
import torch

from finextract.cli.resume import GenerationStore
from finextract.cli.shards import load_latents, save_latents

RUN = {"n": 6, "caption": "a photo of sks dog", "seed": 5, "w": 5.0, "models": {"base": {"sha256": "ab" * 32}}}


def latents(indices):
    return torch.stack([torch.full((4, 2, 2), float(i)) for i in indices])


def test_a_store_gives_back_the_wanted_images_of_its_run(tmp_path):
    store = GenerationStore(tmp_path / "generation", RUN)
    assert store.load(list(range(6))) == {}
    for chunk in ([0, 2], [4], [1, 3]):  # as a shard's round-robin indices are saved
        store.save(chunk, latents(chunk))
    kept = GenerationStore(tmp_path / "generation", dict(RUN)).load([1, 2, 4, 5])
    assert sorted(kept) == [1, 2, 4]
    assert all(torch.equal(kept[i], latents([i])[0]) for i in kept)


@pytest.mark.parametrize("change, words", [
    ({"caption": "a photo of sks cat"}, "caption 'a photo of sks dog' saved, 'a photo of sks cat' now"),
    ({"w": 4.0, "seed": 6}, "seed 5 saved, 6 now; w 5.0 saved, 4.0 now"),
    ({"models": {"base": {"sha256": "cd" * 32}}}, "(models; in"),
])
def test_images_of_another_run_are_refused_saying_what_differs(tmp_path, change, words):
    GenerationStore(tmp_path, RUN).save([0, 1], latents([0, 1]))
    with pytest.raises(SystemExit) as refused:
        GenerationStore(tmp_path, {**RUN, **change}).load([0, 1])
    assert words in str(refused.value) and "add --restart to discard them" in str(refused.value)
    assert GenerationStore(tmp_path, {**RUN, **change}).discard() == 1
    assert GenerationStore(tmp_path, {**RUN, **change}).load([0, 1]) == {}


def test_an_unreadable_chunk_is_named_with_what_to_do(tmp_path):
    (tmp_path / "chunk-0000000.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(SystemExit, match=r"chunk-0000000.safetensors is not a readable chunk .* add --restart"):
        GenerationStore(tmp_path, RUN).load([0])


def test_a_failed_write_leaves_the_earlier_file_and_no_half_file(tmp_path):
    path = tmp_path / "chunk.safetensors"
    save_latents(path, latents([0]), [0], {"format": "f"})
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (path.stat().st_size // 2, hard))  # the "disk" fills up
    try:
        with pytest.raises(OSError):
            save_latents(path, latents([7]), [7], {"format": "f"})
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    kept, indices, _ = load_latents(path, "f")
    assert indices == [0] and torch.equal(kept, latents([0]))
    assert [p.name for p in tmp_path.iterdir()] == ["chunk.safetensors"]
