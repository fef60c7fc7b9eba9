"""``finextract audit`` checks every input before any work (before ComfyUI is even imported) and
reports every problem at once, naming the argument or manifest line, the file, what is wrong and
what to do; nothing is written when it refuses (issue: first contact). Real files throughout: real
safetensors files, real PNGs, the real command through ``main(argv)`` or a subprocess."""
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from finextract.__main__ import main
from finextract.cli import UsageError
from finextract.cli.audit import build_parser
from finextract.cli.audit_inputs import AuditArgumentError, check
from finextract.cli.pipeline import ModelSpec

ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent


@pytest.fixture
def files(tmp_path):
    """A sound model: ComfyUI-shaped folder (main.py, comfy/model_management.py), a base and a LoRA
    safetensors file, and a training folder of two PNGs."""
    comfyui = tmp_path / "ComfyUI"
    (comfyui / "comfy").mkdir(parents=True)
    (comfyui / "main.py").write_text("")
    (comfyui / "comfy" / "model_management.py").write_text("")
    save_file({"model.diffusion_model.w": torch.ones(4, 4)}, str(tmp_path / "base.safetensors"))
    save_file({"lora_unet_x.lora_up.weight": torch.ones(4, 1),
               "lora_unet_x.lora_down.weight": torch.ones(1, 4)}, str(tmp_path / "lora.safetensors"))
    train = tmp_path / "train"
    train.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(train / f"t{i}.png")
    return tmp_path


def audit(files, *argv, out=None):
    """``finextract audit`` on the sound model of ``files`` with ``argv`` appended (later flags win)."""
    return main(["audit", "--comfyui", str(files / "ComfyUI"), "--base", str(files / "base.safetensors"),
                 "--lora", str(files / "lora.safetensors"), "--train", str(files / "train"),
                 "--out", str(out or files / "out"), *argv])


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def refusal(capsys) -> str:
    err = capsys.readouterr().err
    assert "nothing was run" in err and "Traceback" not in err, err
    return err


def test_the_reproduction_reports_every_problem_and_writes_nothing(tmp_path):
    """The issue's command: it reported only the first problem and left ``audit-out`` behind."""
    run = subprocess.run(
        [sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); import conftest; "
         "from finextract.__main__ import main; code = main(sys.argv[2:]); "
         "assert 'comfy.model_management' not in sys.modules, 'ComfyUI imported before the check'; "
         "sys.exit(code)", str(ROOT / "tests"),
         "audit", "--comfyui", "/x", "--base", "/nope", "--lora", "/nope", "--train", "/nope",
         "--out", "audit-out", "--n", "-5"], cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr and "nothing was run" in run.stderr
    for expected in ("--comfyui /x: not a ComfyUI checkout", "--base /nope: no such file",
                     "--lora /nope: no such file", "--train /nope: no such folder",
                     "--n -5: the number of images to generate must be positive"):
        assert expected in run.stderr, run.stderr
    assert not (tmp_path / "audit-out").exists()


def test_sound_inputs_pass_the_check(files):
    args = build_parser().parse_args(["--comfyui", str(files / "ComfyUI"), "--base", str(files / "base.safetensors"),
                                      "--lora", str(files / "lora.safetensors") + ":0.8",
                                      "--train", str(files / "train"), "--out", str(files / "out"),
                                      "--shard", "1/2"])
    (spec,) = check(args)
    assert spec.loras == [(files / "lora.safetensors", 0.8)] and args.shard == (1, 2)
    assert spec.training_images() == [files / "train" / "t0.png", files / "train" / "t1.png"]
    assert spec.n0 == 2, "the check's count goes with the spec: no later step decodes the folder to count it"
    assert not (files / "out").exists()


@pytest.mark.parametrize("bad, expected", [
    (["--shard", "3/2"], "--shard 3/2: shard must satisfy 0 <= shard < num_shards, got 3/2"),
    (["--shard", "one"], "--shard one: --shard takes i/n with integers"),
    (["--shard", "0/2", "--merge"], "--shard and --merge: separate steps"),
    (["--n", "1"], "--n 1: must be at least N0 = 2 (the training images of model"),
    (["--steps", "0"], "--steps 0: must be between 1 and 1000"),
    (["--batch-size", "0"], "--batch-size 0: must be between 1 and 256"),
    (["--size", "100"], "--size 100: must be a multiple of 8"),
    (["--tau", "0"], "--tau 0: A-ESR's similarity threshold must be in (0, 1]"),
    (["--tau", "1.5"], "--tau 1.5: A-ESR's similarity threshold must be in (0, 1]"),
    (["--max-aesr", "-1"], "--max-aesr -1: A-ESR is a fraction"),
    (["--lora", "x.safetensors:strong"], "--lora x.safetensors:strong: strength 'strong' is not a number"),
    (["--merge"], "--merge: no shard files in"),
    (["--ray", "--shard", "0/2"], "--ray with --shard: --ray runs every shard and the merge itself"),
    (["--ray", "--merge"], "--ray with --merge: --ray runs every shard and the merge itself"),
    (["--ray", "--shards", "0"], "--shards 0: must be at least 1"),
    (["--shards", "4"], "--shards: only with --ray"),
    (["--workers", "2"], "--workers: only with --ray"),
])
def test_each_bad_argument_alone(files, capsys, bad, expected):
    assert audit(files, *bad) == 2
    assert expected in refusal(capsys)
    assert not (files / "out").exists()


def test_ray_asked_for_where_it_is_not_installed(files):
    """``--ray`` in an environment without Ray (``sys.modules["ray"] = None`` is Python's own way
    of making a package unimportable): refused with the install command, before any work."""
    proc = subprocess.run([sys.executable, "-c", "import sys; sys.modules['ray'] = None\n"
                           "from finextract.__main__ import main; sys.exit(main(sys.argv[1:]))",
                           "audit", "--comfyui", str(files / "ComfyUI"), "--base", str(files / "base.safetensors"),
                           "--lora", str(files / "lora.safetensors"), "--train", str(files / "train"),
                           "--out", str(files / "out"), "--ray"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert ("--ray: Ray is not installed in this Python environment; install it with pip install "
            "'finextract[ray]'") in proc.stderr
    assert not (files / "out").exists()


def test_out_that_cannot_be_written_is_found_before_any_work(files, capsys):
    assert audit(files, out="/proc/nope/audit") == 2
    assert "--out /proc/nope/audit: cannot write in /proc" in refusal(capsys)


def test_a_fine_tune_is_one_checkpoint_or_loras(files, capsys):
    assert audit(files, "--finetuned", str(files / "base.safetensors")) == 2
    assert "--finetuned / --lora: give exactly one of --finetuned (a fine-tuned checkpoint) or --lora " \
           "(LoRAs), not both" in refusal(capsys)


def test_damaged_model_files_are_named_with_the_cause(files, capsys):
    """A text file renamed .safetensors (was: SafetensorError: header too large, no file name) and
    a truncated LoRA (was: invalid header length)."""
    text = files / "notes.safetensors"
    text.write_text("these are my notes, not a model\n" * 10)
    truncated = files / "cut.safetensors"
    truncated.write_bytes((files / "lora.safetensors").read_bytes()[:-10])
    assert audit(files, "--base", str(text), "--lora", str(truncated)) == 2
    err = refusal(capsys)
    assert f"--base {text} cannot be read: not a safetensors file" in err
    assert f"--lora {truncated} cannot be read: truncated" in err and "10 missing" in err
    assert f"--lora {files / 'lora.safetensors'}" not in err  # the sound LoRA passed


def test_training_images_are_checked_by_decoding(files, capsys):
    """A truncated PNG (was: OSError: image file is truncated, no file name), a PNG whose pixels
    decode but whose checksum fails (PIL's verify() finds it), one whose chunks are whole but whose
    pixel data is short (only decoding finds it), and a non-image with an image suffix are refused,
    each named; ModelSpec.training_images refuses them too."""
    train = files / "train"
    whole = (train / "t0.png").read_bytes()
    (train / "t2.png").write_bytes(whole[: len(whole) // 2])
    end = whole.rindex(b"IEND") - 4
    broken_crc = png_chunk(b"tEXt", b"Comment\x00hello")[:-1] + b"?"
    (train / "t4.png").write_bytes(whole[:end] + broken_crc + whole[end:])
    raw = b"".join(b"\x00" + bytes(range(48)) for _ in range(16))  # 16 rows of 16 RGB pixels
    (train / "t5.png").write_bytes(  # every chunk whole, its pixel data cut short: verify() passes
        b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 16, 16, 8, 2, 0, 0, 0))
        + png_chunk(b"IDAT", zlib.compress(raw)[:20]) + png_chunk(b"IEND", b""))
    (train / "t3.jpg").write_text("not a picture")
    (train / "notes.txt").write_text("ignored: not meant as an image")
    assert audit(files) == 2
    err = refusal(capsys)
    assert f"--train {train / 't2.png'}: damaged or truncated image" in err
    assert f"--train {train / 't3.jpg'}: not an image in any format PIL knows" in err
    assert f"--train {train / 't5.png'}: damaged or truncated image (image file is truncated" in err
    assert f"--train {train / 't4.png'}: damaged or truncated image (broken PNG file (bad header checksum" in err
    assert "t0.png" not in err and "notes.txt" not in err
    with pytest.raises(UsageError, match="t2.png"):
        ModelSpec("m", files / "base.safetensors", train, "").training_images()


def test_manifest_rows_are_checked_all_at_once(files, capsys):
    manifest = files / "models.csv"
    manifest.write_text("name,base,finetuned,lora,train,caption\n"
                        "dog,base.safetensors,,lora.safetensors,train,a dog\n"
                        "dog,base.safetensors,,lora.safetensors,train,again\n"
                        "both,base.safetensors,base.safetensors,lora.safetensors,train,\n"
                        "neither,base.safetensors,,,train,\n"
                        "gone,missing.safetensors,,lora.safetensors:x,train,\n")
    assert main(["audit", "--comfyui", str(files / "ComfyUI"), "--manifest", str(manifest),
                 "--out", str(files / "out")]) == 2
    err = refusal(capsys)
    assert "--manifest models.csv line 3 (dog) name: 'dog' is already the name of line 2" in err
    assert "--manifest models.csv line 4 (both): give exactly one of column finetuned (a fine-tuned " \
           "checkpoint) or column lora (LoRAs), not both" in err
    assert "--manifest models.csv line 5 (neither): give exactly one" in err and "not neither" in err
    assert f"--manifest models.csv line 6 (gone) base {files / 'missing.safetensors'}: no such file" in err
    assert "--manifest models.csv line 6 (gone) lora lora.safetensors:x: strength 'x' is not a number" in err
    assert "line 2 (dog)" not in err


def test_manifest_rows_become_models(files):
    """Relative paths are relative to the manifest; ``lora`` lists ``file[:strength]`` by ``;``."""
    (files / "imgs").mkdir()
    (files / "train").rename(files / "imgs" / "dog")
    (files / "db.safetensors").write_bytes((files / "base.safetensors").read_bytes())
    (files / "m.csv").write_text(
        "name,base,finetuned,lora,train,caption\n"
        "dog,base.safetensors,,lora.safetensors:0.8;lora.safetensors,imgs/dog,a photo of sks dog\n"
        "db,base.safetensors,db.safetensors,,imgs/dog,\n")
    dog, db = check(build_parser().parse_args(["--comfyui", str(files / "ComfyUI"), "--manifest",
                                                str(files / "m.csv"), "--out", str(files / "o")]))
    assert dog.loras == [(files / "lora.safetensors", 0.8), (files / "lora.safetensors", 1.0)]
    assert dog.train == files / "imgs/dog" and dog.caption == "a photo of sks dog"
    assert db.finetuned == files / "db.safetensors" and db.loras == []
    assert dog.n0 == db.n0 == 2  # one training folder, decoded once for both


def test_manifest_without_its_columns(files, capsys):
    manifest = files / "models.csv"
    manifest.write_text("model,checkpoint\nx,y\n")
    assert main(["audit", "--comfyui", str(files / "ComfyUI"), "--manifest", str(manifest),
                 "--out", str(files / "out")]) == 2
    assert "missing column(s) name, base, train, finetuned or lora" in refusal(capsys)


def test_debug_shows_the_traceback(files):
    with pytest.raises(AuditArgumentError, match="--tau 2"):
        audit(files, "--debug", "--tau", "2")


def test_a_truncated_file_is_caught_from_its_header_alone(tmp_path):
    """The whole-file check that every loader goes through: tensor bytes past the end of the file."""
    from finextract.modelfiles import NotSafetensorsError, check_safetensors, load_safetensors

    path = tmp_path / "x.safetensors"
    save_file({"w": torch.arange(6.0)}, str(path))
    assert torch.equal(load_safetensors(path)["w"], torch.arange(6.0))
    path.write_bytes(path.read_bytes()[:-4])
    with pytest.raises(NotSafetensorsError, match=r"x.safetensors: truncated.*4 missing"):
        load_safetensors(path)
    header = struct.pack("<Q", 2) + b"{}"
    path.write_bytes(header)
    assert check_safetensors(path) == {}


@pytest.fixture
def split(files):
    """``files`` plus the split layout's parts, each with a real layout's tensor names (tiny
    tensors): a FLUX diffusion model alone (BFL's bare keys), a CLIP-L, a T5 and a VAE file."""
    parts = {"unet": {"double_blocks.0.img_attn.qkv.weight": torch.ones(6, 2), "img_in.weight": torch.ones(2, 2)},
             "clip_l": {"text_model.encoder.layers.0.mlp.fc1.weight": torch.ones(2, 2)},
             "t5xxl": {"encoder.block.0.layer.0.SelfAttention.k.weight": torch.ones(2, 2)},
             "ae": {"decoder.conv_in.weight": torch.ones(2, 2, 1, 1), "encoder.conv_in.weight": torch.ones(2, 2, 1, 1)}}
    for name, tensors in parts.items():
        save_file(tensors, str(files / f"{name}.safetensors"))
    return files


def test_a_split_base_needs_its_text_encoders_and_vae(split, capsys):
    """A diffusion model alone (BFL's flux1-dev.safetensors) has neither: said before any work,
    with what to pass; each missing one named, the given one not."""
    unet = split / "unet.safetensors"
    assert audit(split, "--base", str(unet)) == 2
    err = refusal(capsys)
    assert f"--base {unet}: a diffusion model only" in err
    assert "give its text encoders with --clip FILE[,FILE2[,FILE3]] --clip-type TYPE" in err
    assert "t5xxl_fp16.safetensors,clip_l.safetensors with type flux" in err
    assert "and its VAE with --vae FILE" in err and "ae.safetensors" in err
    assert audit(split, "--base", str(unet), "--clip", f"{split / 't5xxl.safetensors'},{split / 'clip_l.safetensors'}",
                 "--clip-type", "flux") == 2
    err = refusal(capsys)
    assert "give its VAE with --vae FILE" in err and "its text encoders" not in err
    args = build_parser().parse_args([
        "--comfyui", str(split / "ComfyUI"), "--base", str(unet), "--lora", str(split / "lora.safetensors"),
        "--train", str(split / "train"), "--out", str(split / "out"),
        "--clip", f"{split / 't5xxl.safetensors'}, {split / 'clip_l.safetensors'}", "--clip-type", "flux",
        "--vae", str(split / "ae.safetensors")])
    (spec,) = check(args)
    assert spec.clip == (split / "t5xxl.safetensors", split / "clip_l.safetensors")
    assert (spec.clip_type, spec.vae) == ("flux", split / "ae.safetensors")


def test_a_file_that_is_not_what_its_flag_takes_is_named(split, capsys):
    """Each file's header says what it holds: a VAE or a LoRA given as a text encoder, a text
    encoder as the VAE, a LoRA as the base; each named with what it holds and its flag."""
    assert audit(split, "--base", str(split / "lora.safetensors"),
                 "--clip", f"{split / 'ae.safetensors'},{split / 'lora.safetensors'},{split / 'base.safetensors'}",
                 "--vae", str(split / "clip_l.safetensors")) == 2
    err = refusal(capsys)
    assert f"--base {split / 'lora.safetensors'}: holds a LoRA (e.g. lora_unet_x.lora_down.weight), not a base " \
           "model; give it as --lora" in err
    assert f"--clip {split / 'ae.safetensors'}: holds a VAE (e.g. decoder.conv_in.weight), not a text encoder; " \
           "give it as --vae" in err
    assert f"--clip {split / 'lora.safetensors'}: holds a LoRA" in err
    assert f"--clip {split / 'base.safetensors'}: holds a checkpoint (a diffusion model with its text encoders " \
           "and VAE) (e.g. model.diffusion_model.w), not a text encoder; give it as --base" in err
    assert f"--vae {split / 'clip_l.safetensors'}: holds a text encoder (e.g. text_model.encoder.layers.0.mlp." \
           "fc1.weight), not a VAE; give it as --clip" in err
    assert "--clip-type: missing; ComfyUI's TripleCLIPLoader" not in err  # three files: SD3's, no type
    assert audit(split, "--clip", str(split / "unet.safetensors"), "--clip-type", "flux") == 2
    assert f"--clip {split / 'unet.safetensors'}: holds none of the text encoders or VAEs ComfyUI's loaders " \
           "read" in refusal(capsys)


@pytest.mark.parametrize("bad, expected", [
    (["--clip-type", "flux"], "--clip-type flux: only with --clip"),
    (["--clip", "C"], "--clip-type: missing; ComfyUI's CLIPLoader needs the type of its file(s): flux"),
    (["--clip", "C,C"], "--clip-type: missing; ComfyUI's DualCLIPLoader needs the type"),
    (["--clip", "C,C,C,C", "--clip-type", "sd3"], "--clip: 4 files; ComfyUI's loaders take 1 to 3 text encoders"),
    (["--clip", "/nope.safetensors", "--clip-type", "flux"], "--clip /nope.safetensors: no such file"),
    (["--vae", "/nope.safetensors"], "--vae /nope.safetensors: no such file"),
])
def test_each_bad_text_encoder_argument_alone(split, capsys, bad, expected):
    bad = [a.replace("C", str(split / "clip_l.safetensors")) if a.startswith("C") else a for a in bad]
    assert audit(split, *bad) == 2
    assert expected in refusal(capsys)
    assert not (split / "out").exists()


def test_manifest_columns_give_each_model_its_text_encoders_and_vae(split, capsys):
    """``clip`` lists its files by ``;`` (as ``lora``), relative to the manifest like every path;
    the flags are for a model given by flags, refused beside a manifest."""
    (split / "m.csv").write_text(
        "name,base,lora,train,clip,clip_type,vae\n"
        "flux,unet.safetensors,lora.safetensors,train,t5xxl.safetensors;clip_l.safetensors,flux,ae.safetensors\n"
        "sd15,base.safetensors,lora.safetensors,train,,,ae.safetensors\n")
    args = ["--comfyui", str(split / "ComfyUI"), "--manifest", str(split / "m.csv"), "--out", str(split / "o")]
    flux, sd15 = check(build_parser().parse_args(args))
    assert flux.clip == (split / "t5xxl.safetensors", split / "clip_l.safetensors") and flux.clip_type == "flux"
    assert flux.vae == sd15.vae == split / "ae.safetensors" and sd15.clip == () and sd15.clip_type is None
    (split / "m.csv").write_text("name,base,lora,train,clip\nflux,unet.safetensors,lora.safetensors,train,ae.safetensors\n")
    assert main(["audit", *args, "--clip", "x", "--vae", "y"]) == 2
    err = refusal(capsys)
    assert "--manifest with --clip, --vae: give the models either in the manifest or by flags" in err
    assert "--manifest m.csv line 2 (flux) clip " + str(split / "ae.safetensors") + ": holds a VAE" in err
    assert "--manifest m.csv line 2 (flux) base " + str(split / "unet.safetensors") + ": a diffusion model only" in err
    assert "--manifest m.csv line 2 (flux) clip_type: missing" in err
