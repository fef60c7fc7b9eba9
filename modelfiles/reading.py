"""Reading a safetensors file, or saying why not: the one place that opens them.

A safetensors file is an 8-byte little-endian header length, that many bytes of JSON (tensor name →
dtype, shape, data offsets; ``__metadata__`` → strings), then the tensor bytes. The safetensors
library's own errors (``header too large``, ``invalid header length``) name neither the file nor a
cause a person can act on: a text or pickle file renamed ``.safetensors``, a download that stopped
half-way. So every file is checked here first, from its header alone (no tensor is read), and
every refusal names the file, what is wrong with it and what to do.
"""
from __future__ import annotations

import json
import os
import struct
from typing import Iterator, Mapping

MAX_HEADER_BYTES = 100 * 1024 * 1024
"""safetensors' own limit on the JSON header; a larger length prefix means a corrupt file."""

SAFETENSORS_SUFFIXES = (".safetensors", ".sft")
"""Suffixes ComfyUI reads as safetensors (anything else it unpickles with torch)."""

_FIX = "download or copy it again, or pick another file"


class NotSafetensorsError(ValueError):
    """The file is not a readable safetensors file (truncated, corrupt, or another format); the
    message names the file and what to do."""


def read_header(path: str | os.PathLike) -> dict:
    """The parsed JSON header of a safetensors file: 8-byte little-endian length, then that many
    bytes of JSON. Reads only those bytes, never the tensors."""
    return _header(os.fspath(path))[0]


def _header(path: str) -> tuple[dict, int]:
    """The header and its length in bytes."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise NotSafetensorsError(f"{path}: {size} bytes, too short for a safetensors header; {_FIX}")
        (length,) = struct.unpack("<Q", prefix)
        if length > min(MAX_HEADER_BYTES, size - 8):
            raise NotSafetensorsError(
                f"{path}: not a safetensors file: the header length in its first 8 bytes does not fit "
                f"the {size}-byte file (a text file or a .ckpt/.pt pickle renamed, or cut off); {_FIX}")
        raw = f.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise NotSafetensorsError(f"{path}: header is not JSON ({exc}); not a safetensors file; {_FIX}") from None
    if not isinstance(header, dict):
        raise NotSafetensorsError(f"{path}: header is {type(header).__name__}, not a JSON object; {_FIX}")
    return header, length


def check_safetensors(path: str | os.PathLike) -> dict:
    """The header of ``path`` once the file is known whole: every tensor's bytes lie inside the
    file and the tensors fill it exactly. Catches a truncated download, which the header alone
    does not show. Raises :class:`NotSafetensorsError`."""
    path = os.fspath(path)
    header, length = _header(path)
    data = os.path.getsize(path) - 8 - length
    ends = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            raise NotSafetensorsError(f"{path}: tensor {name!r} has no valid data_offsets in its header; {_FIX}")
        ends.append(offsets[1])
    needed = max(ends, default=0)
    if needed > data:
        raise NotSafetensorsError(
            f"{path}: truncated: its header describes {needed} bytes of tensors but the file holds {data} "
            f"({needed - data} missing, an interrupted download or copy?); {_FIX}")
    return header


def model_file_problem(path: str | os.PathLike, what: str) -> str | None:
    """Why ``path`` cannot be read as a model file (``what``: "--base", "LoRA" …), or None.
    Safetensors files are checked whole (:func:`check_safetensors`); other suffixes (pickled
    ``.ckpt``/``.pt``) only for being a file, as reading them means unpickling."""
    path = os.fspath(path)
    if not os.path.exists(path):
        return f"{what} {path}: no such file; check the path"
    if not os.path.isfile(path):
        return f"{what} {path}: a folder, not a model file; give the .safetensors file inside it"
    if path.lower().endswith(SAFETENSORS_SUFFIXES):
        try:
            check_safetensors(path)
        except NotSafetensorsError as exc:
            return f"{what} {path} cannot be read: {str(exc).removeprefix(path + ': ')}"
        except OSError as exc:
            return f"{what} {path}: cannot be read ({exc.strerror}); check its permissions"
    return None


class TensorFile(Mapping):
    """The tensors of a safetensors file by name, each read from the file when asked for, with a
    plain read into memory of its own. ``safe_open`` maps the whole file instead, and every page
    it touches counts in the process's resident memory until the file is closed: comparing two
    1 GB files tensor by tensor beside two loaded models then costs 2 GB more at the peak. Use as a
    context manager (the file stays open inside it)."""

    DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "F8_E4M3": "float8_e4m3fn",
              "F8_E5M2": "float8_e5m2", "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8",
              "U8": "uint8", "BOOL": "bool"}

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        header, length = _header(self.path)
        self._start = 8 + length
        self._info = {k: v for k, v in header.items() if k != "__metadata__"}
        self._file = None

    def __enter__(self) -> "TensorFile":
        self._file = open(self.path, "rb")
        return self

    def __exit__(self, *exc) -> None:
        self._file.close()

    def __getitem__(self, key: str):
        import torch

        info = self._info[key]
        dtype = getattr(torch, self.DTYPES.get(info["dtype"], ""), None)
        if dtype is None:
            raise NotSafetensorsError(f"{self.path}: tensor {key!r} has dtype {info['dtype']}, which this "
                                      f"reader does not know")
        begin, end = info["data_offsets"]
        if end == begin:
            return torch.empty(info["shape"], dtype=dtype)
        self._file.seek(self._start + begin)
        return torch.frombuffer(bytearray(self._file.read(end - begin)), dtype=dtype).reshape(info["shape"])

    def __iter__(self) -> Iterator[str]:
        return iter(self._info)

    def __len__(self) -> int:
        return len(self._info)


def load_safetensors(path: str | os.PathLike, device: str = "cpu") -> dict:
    """All tensors of a safetensors file, after :func:`check_safetensors`."""
    from safetensors.torch import load_file

    check_safetensors(path)
    return load_file(os.fspath(path), device=device)
