"""``modelfiles.atomic_write``, the one way the project rewrites a file a killed job must not damage:
shard and chunk files (``cli.shards.save_latents``), a fine-tune's training state
(``miniature.finetune.TrainingCheckpoint``) and the base's (``miniature.train``)."""
import errno
import os
import resource
import signal

import pytest
import torch

from finextract.cli.shards import load_latents, save_latents
from finextract.miniature.finetune import TrainingCheckpoint
from finextract.modelfiles import atomic_write

FORMAT = "test/1"


def test_the_new_content_appears_whole_and_only_at_the_end(tmp_path):
    path = tmp_path / "state.bin"
    path.write_bytes(b"old")
    inode = path.stat().st_ino
    with atomic_write(path) as f:
        f.write(b"new content")
        assert path.read_bytes() == b"old", "a reader meanwhile sees the old file, never a part of the new"
    assert path.read_bytes() == b"new content"
    assert path.stat().st_ino != inode, "renamed over the old file, not rewritten in place"
    assert os.listdir(tmp_path) == ["state.bin"]


def test_a_failure_inside_the_block_keeps_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "state.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_write(path) as f:
            f.write(b"half of the ")
            raise RuntimeError("killed mid-write")
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["state.bin"]
    with pytest.raises(RuntimeError):  # a first write of a path that did not exist leaves nothing
        with atomic_write(tmp_path / "fresh.bin") as f:
            raise RuntimeError
    assert os.listdir(tmp_path) == ["state.bin"]


def test_a_disk_refusing_mid_write_keeps_the_old_shard(tmp_path):
    """A real failed write(2): for the length of one save this process may write at most 4 KiB
    per file (RLIMIT_FSIZE; a full disk or a quota stops a write part-way the same way, with
    ENOSPC/EDQUOT instead of EFBIG), so saving 64 KiB of latents fails after the first 4 KiB.
    The earlier file stays readable and no temporary is left."""
    path = tmp_path / "chunk.safetensors"
    save_latents(path, torch.ones(2, 4), [0, 1], {"format": FORMAT})
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write then fails instead of killing us
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))
    try:
        with pytest.raises(OSError) as refused:
            save_latents(path, torch.zeros(16, 1024), list(range(16)), {"format": FORMAT})
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)
    assert refused.value.errno == errno.EFBIG
    latents, indices, _ = load_latents(path, FORMAT)
    assert torch.equal(latents, torch.ones(2, 4)) and indices == [0, 1]
    assert os.listdir(tmp_path) == ["chunk.safetensors"]


def test_a_training_state_that_fails_to_save_keeps_the_last_one(tmp_path):
    """``torch.save`` raising part-way (here: something unpicklable in the state) leaves the state
    saved before, loadable, and no temporary file."""
    net = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(net.parameters())
    gen = torch.Generator().manual_seed(0)
    extra = {"rows": [1, 2]}
    checkpoint = TrainingCheckpoint(tmp_path / "run" / "state.pt", {"run": 1}, extra=lambda: extra)
    checkpoint.save(3, list(net.parameters()), opt, gen, [0.5])
    extra["rows"] = lambda: None  # not picklable: torch.save fails after it began writing
    with pytest.raises(Exception, match="pickle"):
        checkpoint.save(4, list(net.parameters()), opt, gen, [0.5, 0.4])
    assert TrainingCheckpoint(tmp_path / "run" / "state.pt", {"run": 1}, resume=True).step == 3
    assert os.listdir(tmp_path / "run") == ["state.pt"]
