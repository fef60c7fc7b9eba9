"""``host.Library.register_file``, the names the headless audit hands ComfyUI's loaders: in this
process, ComfyUI as a library (CPU). Each test works on a copy of ComfyUI's folder table, so the
folders it adds are gone afterwards. The audit itself through these names: ``test_cli_audit.py``."""
import copy
import errno
import os

import pytest

from finextract import host


@pytest.fixture(scope="module")
def library(comfyui):
    return host.Library(comfyui, cpu=True)


@pytest.fixture
def folder_paths(library, monkeypatch):
    """ComfyUI's ``folder_paths``, its folder table restored after the test."""
    module = library.folder_paths
    monkeypatch.setattr(module, "folder_names_and_paths", copy.deepcopy(module.folder_names_and_paths))
    return module


def files(tmp_path, name="lora.safetensors"):
    """Two different files of one name in two folders."""
    paths = []
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        paths.append(tmp_path / folder / name)
        paths[-1].write_bytes(folder.encode() * 8)
    return paths


def test_files_of_one_name_get_names_that_resolve_to_each(library, folder_paths, tmp_path):
    a, b = files(tmp_path)
    names = [library.register_file("loras", path) for path in (a, b)]
    assert names == [str(a).lstrip("/"), str(b).lstrip("/")]  # the absolute path, as a subfolder name
    for name, path in zip(names, (a, b)):
        assert os.path.samefile(folder_paths.get_full_path("loras", name), path)
    assert library.register_file("loras", a) == names[0]  # again: the same name
    assert library.register_file("checkpoints", tmp_path / "b" / ".." / "a" / "lora.safetensors") == names[0]


def test_a_name_another_file_answers_to_is_refused(library, folder_paths, tmp_path):
    """A file at the name's subfolder path in a folder ComfyUI searches first (its own
    ``models/loras`` holding ``home/…/lora.safetensors``): registering must fail, naming both."""
    (path,) = files(tmp_path)[:1]
    shadow = tmp_path / "comfy-loras"
    (shadow / str(path).lstrip("/")).parent.mkdir(parents=True)
    (shadow / str(path).lstrip("/")).write_bytes(b"another file")
    folder_paths.add_model_folder_path("loras", str(shadow), is_default=True)
    with pytest.raises(host.HostError, match=r"resolve its name .* to .*comfy-loras.*, not to this file, and would "
                                             r"load that instead; move or rename that file"):
        library.register_file("loras", path)


def test_without_symlinks_a_second_file_of_the_name_is_refused(library, folder_paths, tmp_path, monkeypatch):
    """Where no symlink can be made (Windows without Developer Mode, which this Linux machine
    cannot be: ``os.symlink`` is made to fail as Windows' does), a file is named by its file name:
    the first of two resolves to itself, the second would resolve to the first and is refused."""
    def no_symlinks(*args, **kwargs):
        raise OSError(errno.EPERM, "A required privilege is not held by the client")

    monkeypatch.setattr(os, "symlink", no_symlinks)
    a, b = files(tmp_path)
    assert library.register_file("loras", a) == "lora.safetensors"
    assert os.path.samefile(folder_paths.get_full_path("loras", "lora.safetensors"), a)
    with pytest.raises(host.HostError, match=r"b/lora.safetensors: .* resolve its name 'lora.safetensors' to "
                                             r".*a/lora.safetensors, not to this file.*cannot make symlinks "
                                             r"\(A required privilege is not held by the client; on Windows"):
        library.register_file("loras", b)
