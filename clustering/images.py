"""Training images read from a folder, or a refusal naming each file that cannot be: the one place
that opens them (the metrics node's training folder, the CLI's ``--train``).

An image counts by what it decodes to, not by its suffix: a text file named ``.png`` or a PNG cut
off mid-download would otherwise surface much later as ``image file is truncated`` with no file
name, or not at all (PIL decodes a truncated image's missing rows as grey if asked to). Every file
is verified (PIL's structure and checksum check) and then fully decoded; all the bad files of a
folder are reported at once, so a person fixes the folder in one pass.
"""
from __future__ import annotations

import os
import pathlib
import struct

from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")
"""Which files of a training folder are meant as images (the node's and the CLI's N0 alike); each
of them must then decode (:func:`read_image`)."""

_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, Image.DecompressionBombError)
"""What PIL raises for a file it cannot decode (its plugins raise all of these)."""


class ImageFileError(ValueError):
    """Image files that cannot be decoded; the message names each one and what to do."""


def image_files(folder: str | os.PathLike) -> list[pathlib.Path]:
    """The image files directly inside ``folder`` (suffix in :data:`IMAGE_SUFFIXES`, any case),
    sorted by name; raises ValueError when there is none."""
    folder = pathlib.Path(folder)
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return files


def read_image(path: str | os.PathLike) -> Image.Image:
    """The image at ``path`` as RGB, verified and fully decoded; raises :class:`ImageFileError`
    naming the file when it is not a whole image."""
    try:
        with Image.open(path) as im:
            im.verify()
        with Image.open(path) as im:
            im.load()
            return im.convert("RGB")
    except UnidentifiedImageError:
        reason = "not an image in any format PIL knows"
    except _DECODE_ERRORS as exc:
        reason = f"damaged or truncated image ({exc})"
    raise ImageFileError(f"{os.fspath(path)}: {reason}; re-export or copy it again, or remove it from the folder")


def read_images(files) -> list[Image.Image]:
    """Every file of ``files`` as RGB; one :class:`ImageFileError` listing all that fail."""
    images, problems = [], []
    for file in files:
        try:
            images.append(read_image(file))
        except ImageFileError as exc:
            problems.append(str(exc))
    if problems:
        raise ImageFileError("\n".join(problems))
    return images


def image_problems(files) -> list[str]:
    """Why each file of ``files`` that does not decode cannot (one line each), keeping no image:
    for checking a folder before the work that reads it."""
    problems = []
    for file in files:
        try:
            read_image(file).close()
        except ImageFileError as exc:
            problems.append(str(exc))
    return problems
