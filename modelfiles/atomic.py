"""Writing a file so that it is either the old one or the whole new one, never half of either.

Shard and chunk files of an audit, a fine-tune's training state and the base model's training
state are all rewritten while a job may be killed (SIGKILL, out of memory, a preempted node) or
the disk may fill up; a reader that then finds a truncated file loses hours of work or, worse,
reads a damaged one. So every such write goes through :func:`atomic_write`: the bytes go to a
temporary file in the same directory (a rename is atomic only within one filesystem), are flushed
and fsynced (so the rename never lands before the data does), and the temporary file is renamed
over the target with ``os.replace``. On any failure the temporary file is removed and the old file
is left as it was.
"""
from __future__ import annotations

import contextlib
import os
import pathlib
from typing import BinaryIO, Iterator


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary file to write ``path``'s new content to; ``path`` becomes that content when the
    block ends without an exception, and is untouched (no temporary file left) when it raises."""
    path = pathlib.Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
