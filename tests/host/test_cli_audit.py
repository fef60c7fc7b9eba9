"""``finextract audit`` end to end with ComfyUI as a library (real nodes, real model files built by
the harness, real SSCD), run as a subprocess exactly as a user's release script would."""
import csv
import hashlib
import json
import re
import subprocess

import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from finextract import host
from finextract.cli.shards import merge_shards
SMALL = ["--n", "4", "--steps", "2", "--size", "64", "--sampler", "euler", "--scheduler", "normal",
         "--batch-size", "2", "--seed", "5", "--cpu"]


def audit(tmp_path, *argv, check=True):
    """Run ``python -m finextract audit`` with this checkout importable as ``finextract``."""
    shim = tmp_path / "pythonpath"
    shim.mkdir(exist_ok=True)
    proc = subprocess.run([host.comfyui_python(), "-m", "finextract", "audit",
                           "--comfyui", str(host.comfyui_path()), *argv],
                          capture_output=True, text=True, env=host.pack_env(shim), timeout=900)
    if check and proc.returncode not in (0, 1):
        raise AssertionError(f"audit exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def test_shards_merge_to_the_unsharded_run(tmp_path, audit_model_args):
    # batch size 1 on both sides: CPU kernels round differently per batch size (~1e-5 relative
    # here), which is the driver's concern, not the shards'.
    for shard in ("0/2", "1/2"):
        audit(tmp_path, *audit_model_args, *SMALL, "--batch-size", "1", "--shard", shard, "--out", str(tmp_path / "two"))
    audit(tmp_path, *audit_model_args, *SMALL, "--batch-size", "1", "--shard", "0/1", "--out", str(tmp_path / "one"))
    two, run_two = merge_shards(sorted((tmp_path / "two" / "dog" / "shards").glob("*.safetensors")))
    one, run_one = merge_shards(sorted((tmp_path / "one" / "dog" / "shards").glob("*.safetensors")))
    assert run_two == run_one and run_one["n"] == 4 and run_one["models"]["finetuned"]["finetune"]["kind"] == "lora"
    assert two.shape == (4, 4, 8, 8)
    assert torch.equal(two, one), "image i must not depend on the shard making it"
    assert two.std() > 0
    # the same shard command again: its file, of the same run, is kept untouched, nothing generated
    path = tmp_path / "two" / "dog" / "shards" / "shard-0000-of-0002.safetensors"
    before = (path.stat().st_mtime_ns, path.read_bytes())
    again = audit(tmp_path, *audit_model_args, *SMALL, "--batch-size", "1", "--shard", "0/2", "--out", str(tmp_path / "two"))
    assert f"{path} saved by an earlier run of this command: kept" in again.stderr, again.stderr[-3000:]
    assert "generating" not in again.stderr and (path.stat().st_mtime_ns, path.read_bytes()) == before


def test_audit_reports_and_fails_a_leaking_model(tmp_path, audit_model_args, comfy_models):
    out = tmp_path / "clean"
    proc = audit(tmp_path, *audit_model_args, *SMALL, "--out", str(out), "--max-aesr", "1.0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = list(csv.DictReader(open(out / "summary.csv")))
    assert [r["model"] for r in summary] == ["dog"] and summary[0]["verdict"] == "ok"
    report = json.loads((out / summary[0]["report"]).read_text())
    lora = comfy_models.root / "loras" / comfy_models.loras["kohya"]
    assert report["provenance"]["models"]["finetuned"]["finetune"]["loras"][0]["sha256"] == \
        hashlib.sha256(lora.read_bytes()).hexdigest()
    extracted = sorted((out / "dog" / "extracted").glob("*.png"))
    assert len(extracted) == 2  # N0 = the two training images
    assert "| dog | 2 | 4 |" in (out / "summary.md").read_text()
    assert Image.open(out / "dog" / "report.png").size[0] > 64
    assert " of 2 training images recovered above tau = 0.6" in report["verdict"]  # also drawn on report.png
    # progress of each stage, as whole lines (stderr is a pipe here): count, time left, rate
    lines = proc.stderr.splitlines()
    assert "\r" not in proc.stderr
    for stage in ("  generating 4 images (0 resumed): 4.0/4 images [", "  embedding 4 images with SSCD: 4/4 images [",
                  "  clustering into 2 cliques: "):
        assert any(line.startswith(stage) and " left, " in line and "/s]" in line for line in lines), (stage, lines)
    # The same run audited against its own extracted images as the "training set": every
    # training image is recovered, A-ESR@0.6 = 1 exceeds 0.5, the command must fail.
    leaked = tmp_path / "leaked_train"
    leaked.mkdir()
    for path in extracted:
        (leaked / path.name).write_bytes(path.read_bytes())
    args = [a if a != audit_model_args[audit_model_args.index("--train") + 1] else str(leaked) for a in audit_model_args]
    proc = audit(tmp_path, *args, *SMALL, "--out", str(tmp_path / "leaky"), "--max-aesr", "0.5")
    assert proc.returncode == 1, proc.stderr[-3000:]
    (row,) = csv.DictReader(open(tmp_path / "leaky" / "summary.csv"))
    assert float(row["a_esr@0.6"]) == 1.0 and row["verdict"] == "LEAKS"
    assert "A-ESR@0.6 above 0.5 for: dog" in proc.stderr


def test_a_lora_of_another_size_is_refused_before_sampling(tmp_path, audit_model_args, comfy_models):
    """A LoRA with the right family's key names but other shapes (every down matrix twice as wide):
    it used to reach the sampler and fail there with ``size of tensor a … must match``. The loader
    names the file, the first misfit and both shapes; no traceback, nothing written."""
    lora = load_file(str(comfy_models.root / "loras" / comfy_models.loras["kohya"]))
    wide = {k: torch.cat([v, v], dim=1) if k.endswith("lora_down.weight") else v for k, v in lora.items()}
    path = tmp_path / "wide.safetensors"
    save_file(wide, str(path))
    args = list(audit_model_args)
    args[args.index("--lora") + 1] = str(path)
    proc = audit(tmp_path, *args, *SMALL, "--out", str(tmp_path / "out"), check=False)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "nothing was run" in proc.stderr
    # the LoRA is named by its absolute path (host.Library.register_file: a name only it can have)
    match = re.search(rf"dog: LoRA '{re.escape(str(path).lstrip('/'))}' does not fit base checkpoint '[^']+': its tensors "
                     r"(lora_unet_\w+)\.lora_up\.weight \((\d+), 4\), \1\.lora_down\.weight \(4, (\d+)\) make "
                     r"a change of shape \(\2, \3\), but the model's weight diffusion_model\.[\w.]+\.weight "
                     r"has shape \(\2, (\d+)\)\.", proc.stderr)
    assert match and int(match[3]) == 2 * int(match[4]), proc.stderr[-3000:]
    assert not (tmp_path / "out").exists()


def test_unknown_sampler_and_scheduler_are_refused_before_loading(tmp_path, audit_model_args):
    proc = audit(tmp_path, *audit_model_args, *SMALL, "--sampler", "bogus", "--scheduler", "nope",
                 "--out", str(tmp_path / "out"), check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "--sampler bogus: ComfyUI has no sampler of that name; choose one of euler," in proc.stderr
    assert "--scheduler nope: ComfyUI has no scheduler of that name; choose one of" in proc.stderr
    assert "[1/1] dog" not in proc.stderr and not (tmp_path / "out").exists()


MINI = host.PACK_ROOT / "miniature"


def test_a_batch_keeps_its_base_loaded_and_audits_each_model_as_alone(tmp_path):
    """A manifest of LoRAs of one base reads, hashes and builds that base once (a platform audits
    thousands of LoRAs of a few bases), and a LoRA of another base gets that base. The samples
    must be those of each model audited alone in its own process, bit for bit: ``--method cfg``
    samples the fine-tuned model with its LoRA patched into the weights the models of one base
    share, so a patch left behind by the model before (or a base changed by its fine-tune) would
    show in the next model's images. The bundled miniature base and demo LoRA, a copy of the LoRA
    with halved up weights, and a copy of the base with its output convolution halved."""
    world = tmp_path / "world"
    world.mkdir()
    base, lora = MINI / "weights" / "mini_base.safetensors", MINI / "weights" / "mini_lora_cat.safetensors"
    with safe_open(str(base), "pt") as f:
        metadata = f.metadata()
    other = load_file(str(base))
    other["model.diffusion_model.out.2.weight"] *= 0.5
    save_file(other, str(world / "other_base.safetensors"), metadata=metadata)
    save_file({k: v * 0.5 if "lora_up" in k else v for k, v in load_file(str(lora)).items()},
              str(world / "half.safetensors"))
    rows = {"cat": (base, lora), "half": (base, world / "half.safetensors"), "other": (world / "other_base.safetensors", lora)}

    def manifest(names):
        path = world / f"{'-'.join(names)}.csv"
        path.write_text("name,base,finetuned,lora,train,caption\n" + "".join(
            f"{n},{rows[n][0]},,{rows[n][1]},{MINI / 'concepts' / 'cat'},a photo of sks cat\n" for n in names))
        return str(path)

    run = ["--n", "5", "--steps", "2", "--size", "64", "--batch-size", "5", "--seed", "1", "--cpu",
           "--method", "cfg", "--shard", "0/1"]
    batch = audit(tmp_path, "--manifest", manifest(["cat", "half", "other"]), *run, "--out", str(tmp_path / "batch"))
    assert batch.returncode == 0, batch.stderr[-3000:]
    said = [line.strip() for line in batch.stderr.splitlines() if line.startswith("  base ") and line.endswith("loaded")]
    assert said == ["base mini_base.safetensors: loaded", "base mini_base.safetensors: kept loaded",
                    "base other_base.safetensors: loaded"], batch.stderr[-3000:]
    shards = {}
    for name in ("half", "other"):
        alone = audit(tmp_path, "--manifest", manifest([name]), *run, "--out", str(tmp_path / name))
        assert alone.returncode == 0, alone.stderr[-3000:]
        shards[name] = [merge_shards([out / name / "shards" / "shard-0000-of-0001.safetensors"])
                        for out in (tmp_path / "batch", tmp_path / name)]
    for name, ((in_batch, run_in_batch), (alone, run_alone)) in shards.items():
        assert run_in_batch == run_alone, name  # the same files (hashes), settings, caption
        assert torch.equal(in_batch, alone), f"{name}: the batch's samples differ from the model's alone"
    cat, _ = merge_shards([tmp_path / "batch" / "cat" / "shards" / "shard-0000-of-0001.safetensors"])
    (other_batch, run_other), _ = shards["other"]
    assert run_other["models"]["base"]["base"]["sha256"] == hashlib.sha256(
        (world / "other_base.safetensors").read_bytes()).hexdigest()
    assert not torch.equal(other_batch, cat), "the LoRA on the other base must sample from that base"


def test_files_of_one_name_in_different_folders_are_each_audited(tmp_path):
    """A manifest often holds files of one name in different folders (every upload's
    ``lora.safetensors``, bases all called ``model.safetensors``). ComfyUI resolves a name in the
    first of its folders that holds it, so registering each file's folder and its bare name made
    the second model load the first one's files, silently, with their hashes in its report. Two
    models here: the miniature base and demo LoRA under ``a/``, another base and another LoRA
    under ``b/``, of the same two names; each report must record its own files' hashes."""
    base, lora = MINI / "weights" / "mini_base.safetensors", MINI / "weights" / "mini_lora_cat.safetensors"
    with safe_open(str(base), "pt") as f:
        metadata = f.metadata()
    other = load_file(str(base))
    other["model.diffusion_model.out.2.weight"] *= 0.5
    files = {"a": (tmp_path / "a" / "model.safetensors", tmp_path / "a" / "lora.safetensors"),
             "b": (tmp_path / "b" / "model.safetensors", tmp_path / "b" / "lora.safetensors")}
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
    files["a"][0].write_bytes(base.read_bytes())
    files["a"][1].write_bytes(lora.read_bytes())
    save_file(other, str(files["b"][0]), metadata=metadata)
    save_file({k: v * 0.5 if "lora_up" in k else v for k, v in load_file(str(lora)).items()}, str(files["b"][1]))
    manifest = tmp_path / "uploads.csv"
    manifest.write_text("name,base,finetuned,lora,train,caption\n" + "".join(
        f"{name},{b},,{lo},{MINI / 'concepts' / 'cat'},a photo of sks cat\n" for name, (b, lo) in files.items()))
    out = tmp_path / "out"
    proc = audit(tmp_path, "--manifest", str(manifest), "--n", "5", "--steps", "1", "--size", "64",
                 "--batch-size", "5", "--seed", "1", "--cpu", "--out", str(out), "--max-aesr", "1.0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name, (base_file, lora_file) in files.items():
        (row,) = [r for r in csv.DictReader(open(out / "summary.csv")) if r["model"] == name]
        models = json.loads((out / row["report"]).read_text())["provenance"]["models"]["finetuned"]
        assert models["base"]["sha256"] == hashlib.sha256(base_file.read_bytes()).hexdigest(), name
        assert models["finetune"]["loras"][0]["sha256"] == hashlib.sha256(lora_file.read_bytes()).hexdigest(), name
