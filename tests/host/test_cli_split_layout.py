"""``finextract audit`` on a base in ComfyUI's split layout: the diffusion model alone, its text
encoders and VAE in files of their own (``--clip``, ``--clip-type``, ``--vae``), loaded by
ComfyUI's own CLIPLoader and VAELoader. The real command in a subprocess on the random-weight
files of ``family_models.py`` (FLUX.1-dev's split files hold its checkpoint's own tensors) and an
SD3.5 checkpoint cut here into its three parts; 4 images of 64 px, 2 steps.

- FLUX.1-dev (diffusion model + kohya LoRA + CLIP-L + VAE file) audits as the checkpoint of the
  same tensors does, to the latent and the pixel; its report and its saved chunks record each
  extra file's sha256 and the FluxGuidance value; another VAE file gives the same latents and
  other images; another guidance value other latents (a shard's identity records it).
- SD3.5 (diffusion model + CLIP-L with type sd3 + VAE cut out of the checkpoint) audits as the
  checkpoint does; sharded, its merge reports the files, and a merge given another VAE than the
  shards were made with is refused.
- SD1.5: a LoRA's text-encoder tensors, which the pair loader cannot apply on a UNet-only base,
  reach the ``--clip`` file's CLIP-L for the caption (ComfyUI's LoraLoader): the checkpoint's
  samples.
- Refused before any model loads: text-encoder types ComfyUI's loaders do not take (named per
  manifest row, with the loader's own list), a guidance value outside FluxGuidance's range;
  after the base loads: text-encoder files beside a checkpoint's own text encoders.

The one fake, as in ``test_split_layout``: FLUX.1 reads CLIP-L + T5-XXL (DualCLIPLoader, type
flux); T5-XXL cannot exist here, so the test FLUX's ``txt_in`` is 768 wide and ``--clip`` is the
builder's real-size CLIP-L alone with ComfyUI's type ``stable_diffusion`` (its CLIPLoader has no
flux type for one file)."""
import hashlib
import json
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from finextract import host
from finextract.cli.resume import FORMAT as CHUNK_FORMAT
from finextract.cli.shards import load_latents, merge_shards

SMALL = ["--n", "4", "--steps", "2", "--size", "64", "--sampler", "euler", "--batch-size", "2", "--seed", "5",
         "--cpu", "--caption", "a photo of sks dog", "--max-aesr", "1.0"]


@pytest.fixture(scope="module")
def run(family_models, tmp_path_factory):
    """``run(out, *argv)``: ``python -m finextract audit`` with this checkout as ``finextract``, the
    small settings and two random 64 px training images; returns the finished process."""
    shim = tmp_path_factory.mktemp("pythonpath")
    train = tmp_path_factory.mktemp("train")
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(train / f"t{i}.png")

    def audit(out, *argv):
        return subprocess.run([host.comfyui_python(), "-m", "finextract", "audit", "--comfyui",
                               str(host.comfyui_path()), "--train", str(train), *SMALL, *argv, "--out", str(out)],
                              capture_output=True, text=True, env=host.pack_env(shim), timeout=900)
    return audit


def ok(proc):
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def saved(out, name="model"):
    """(latents in image order, run identity) of the chunks a run saved."""
    parts = [load_latents(p, CHUNK_FORMAT) for p in sorted((out / name / "generation").glob("chunk-*.safetensors"))]
    runs = {m["run"] for _, _, m in parts}
    assert len(runs) == 1, runs
    order = torch.tensor([i for _, indices, _ in parts for i in indices]).argsort()
    return torch.cat([latents for latents, _, _ in parts])[order], json.loads(runs.pop())


def report(out, name="model") -> dict:
    (path,) = (out / name).glob("report_*.json")
    return json.loads(path.read_text())


def extracted(out, name="model") -> np.ndarray:
    return np.stack([np.asarray(Image.open(p)) for p in sorted((out / name / "extracted").glob("*.png"))])


def test_flux_split_files_audit_as_the_checkpoint_and_are_recorded(run, family_models, tmp_path):
    folder, manifest = family_models
    entry = manifest["flux"]
    unet = folder / "diffusion_models" / entry["diffusion_models"]["base"]
    clip, vae = folder / "text_encoders" / entry["clip"], folder / "vae" / entry["vae"]
    lora = ["--lora", str(folder / "loras" / entry["loras"]["kohya"]), "--scheduler", "simple"]
    split = ["--base", str(unet), *lora, "--clip", str(clip), "--clip-type", "stable_diffusion"]

    proc = ok(run(tmp_path / "split", *split, "--vae", str(vae)))
    assert "text encoders: CLIPLoader (stable_diffusion) of fx-clip-l.safetensors; VAE: VAELoader of " \
           "fx-flux-ae.safetensors; FluxGuidance 3.5 on both prompts" in proc.stderr, proc.stderr[-3000:]
    provenance = report(tmp_path / "split")["provenance"]
    models = provenance["models"]["finetuned"]
    assert models["base"]["folder"] == "diffusion_models" and models["base"]["sha256"] == sha256(unet), models
    conditioning = provenance["conditioning"]
    (te,) = conditioning["text_encoders"]["files"]
    assert te["sha256"] == sha256(clip) and te["file"] == str(clip).lstrip("/"), te
    assert (conditioning["text_encoders"]["loader"], conditioning["text_encoders"]["type"]) == \
           ("CLIPLoader", "stable_diffusion")
    assert conditioning["vae"]["sha256"] == sha256(vae) and conditioning["flux_guidance"] == 3.5, conditioning
    latents, identity = saved(tmp_path / "split")
    assert identity == provenance, "the saved chunks' run identity is the report's provenance"

    # the all-in-one checkpoint of the same tensors (diffusion model + VAE; no text encoder in
    # it, so the same CLIP-L file): the same latents, the same decoded images
    whole = ok(run(tmp_path / "whole", "--base", str(folder / "checkpoints" / entry["checkpoints"]["base"]), *lora,
                   "--clip", str(clip), "--clip-type", "stable_diffusion"))
    assert "VAE: the base checkpoint's" in whole.stderr, whole.stderr[-3000:]
    whole_latents, whole_identity = saved(tmp_path / "whole")
    assert "vae" not in whole_identity["conditioning"]
    torch.testing.assert_close(latents, whole_latents, rtol=1e-6, atol=1e-6)
    assert np.array_equal(extracted(tmp_path / "split"), extracted(tmp_path / "whole"))

    # another VAE file: the same generation, other images, its own hash in the report
    other_vae = tmp_path / "other-ae.safetensors"
    tensors = load_file(str(vae))
    tensors["decoder.conv_out.weight"] = -tensors["decoder.conv_out.weight"]
    save_file(tensors, str(other_vae))
    ok(run(tmp_path / "other-vae", *split, "--vae", str(other_vae)))
    other_latents, other_identity = saved(tmp_path / "other-vae")
    assert other_identity["conditioning"]["vae"]["sha256"] == sha256(other_vae)
    assert torch.equal(other_latents, latents)
    assert not np.array_equal(extracted(tmp_path / "other-vae"), extracted(tmp_path / "split"))

    # another distilled-guidance value reaches the prompts, and a shard's identity records it
    ok(run(tmp_path / "guidance", *split, "--vae", str(vae), "--flux-guidance", "1.5", "--shard", "0/1"))
    shard, shard_run = merge_shards(sorted((tmp_path / "guidance" / "model" / "shards").glob("*.safetensors")))
    assert shard_run["conditioning"] == {**conditioning, "flux_guidance": 1.5}
    assert (shard - latents).abs().max() > 1e-3 * latents.abs().max(), "the guidance value changed nothing"


def cut_sd3(checkpoint, out) -> dict:
    """The SD3.5 checkpoint as ComfyUI's split files: the diffusion model alone (bare keys), its
    CLIP-L and its VAE, each with the checkpoint's own tensors."""
    tensors = load_file(str(checkpoint))
    files = {}
    for part, prefix in (("unet", "model.diffusion_model."), ("clip_l", "text_encoders.clip_l.transformer."),
                         ("vae", "first_stage_model.")):
        files[part] = out / f"sd3-{part}.safetensors"
        save_file({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}, str(files[part]))
    return files


def test_sd3_split_files_audit_as_the_checkpoint(run, family_models, tmp_path):
    folder, manifest = family_models
    entry = manifest["sd3"]
    checkpoint = folder / "checkpoints" / entry["checkpoints"]["base"]
    parts = cut_sd3(checkpoint, tmp_path)
    lora = ["--lora", str(folder / "loras" / entry["loras"]["kohya"]), "--scheduler", "simple"]
    proc = ok(run(tmp_path / "split", "--base", str(parts["unet"]), *lora, "--clip", str(parts["clip_l"]),
                  "--clip-type", "sd3", "--vae", str(parts["vae"])))
    assert "FluxGuidance" not in proc.stderr, "SD3 takes no distilled guidance value"
    conditioning = report(tmp_path / "split")["provenance"]["conditioning"]
    assert conditioning["text_encoders"]["files"][0]["sha256"] == sha256(parts["clip_l"])
    assert conditioning["vae"]["sha256"] == sha256(parts["vae"]) and "flux_guidance" not in conditioning
    ok(run(tmp_path / "whole", "--base", str(checkpoint), *lora))
    (latents, _), (whole, identity) = saved(tmp_path / "split"), saved(tmp_path / "whole")
    assert "conditioning" not in identity, "a checkpoint's run keeps the identity it had"
    torch.testing.assert_close(latents, whole, rtol=1e-6, atol=1e-6)
    assert np.array_equal(extracted(tmp_path / "split"), extracted(tmp_path / "whole"))

    # across machines: a merge with the shards' files reports them; one with another VAE is
    # refused (its report would name a VAE that did not decode its images, or the other way)
    split = ["--base", str(parts["unet"]), *lora, "--clip", str(parts["clip_l"]), "--clip-type", "sd3"]
    ok(run(tmp_path / "sharded", *split, "--vae", str(parts["vae"]), "--shard", "0/1"))
    ok(run(tmp_path / "sharded", *split, "--vae", str(parts["vae"]), "--merge"))
    assert report(tmp_path / "sharded")["provenance"]["conditioning"] == conditioning
    other = run(tmp_path / "sharded", *split, "--vae", str(folder / "vae" / manifest["flux"]["vae"]), "--merge")
    assert other.returncode == 2 and "Traceback" not in other.stderr, other.stderr[-3000:]
    assert f"model: --merge: the shards in {tmp_path / 'sharded' / 'model' / 'shards'} were made by another run " \
           "than this command (conditioning)" in other.stderr, other.stderr[-3000:]


def test_a_loras_text_encoder_tensors_reach_the_clip_file_on_a_split_base(run, family_models, tmp_path):
    """An SD1.5 kohya LoRA on 4 UNet and 2 CLIP-L layers: on the UNet-only base the pair loader
    applies the UNet part and sets the CLIP-L part aside (it owns no text encoder); the audit puts
    it on the ``--clip`` file's CLIP-L with ComfyUI's LoraLoader for the caption, and so samples as
    on the checkpoint of the same tensors (whose CLIP-L is that file's)."""
    folder, manifest = family_models
    entry = manifest["sd15"]
    lora = ["--lora", str(folder / "loras" / entry["loras"]["kohya"]), "--scheduler", "normal"]
    proc = ok(run(tmp_path / "split", "--base", str(folder / "diffusion_models" / entry["diffusion_models"]["base"]),
                  *lora, "--clip", str(folder / "text_encoders" / entry["clip"]), "--clip-type", "stable_diffusion",
                  "--vae", str(folder / "vae" / entry["vae"])))
    assert "its 6 text-encoder tensors are NOT applied" in proc.stderr, proc.stderr[-3000:]  # by the pair loader
    assert "the caption's with the LoRA's text-encoder tensors on 2 layers" in proc.stderr, proc.stderr[-3000:]
    ok(run(tmp_path / "whole", "--base", str(folder / "checkpoints" / entry["checkpoints"]["base"]), *lora))
    (latents, identity), (whole, _) = saved(tmp_path / "split"), saved(tmp_path / "whole")
    assert identity["conditioning"]["text_encoders"]["lora_layers"] == 2
    torch.testing.assert_close(latents, whole, rtol=1e-6, atol=1e-6)


def test_text_encoder_types_and_files_comfyui_would_not_take_are_refused(run, family_models, tmp_path):
    folder, manifest = family_models
    flux, sd3 = manifest["flux"], manifest["sd3"]
    unet = folder / "diffusion_models" / flux["diffusion_models"]["base"]
    clip, vae = folder / "text_encoders" / flux["clip"], folder / "vae" / flux["vae"]
    lora = folder / "loras" / flux["loras"]["kohya"]
    train = tmp_path / "train"
    train.mkdir()
    Image.fromarray(np.zeros((64, 64, 3), dtype=np.uint8)).save(train / "t0.png")
    table = tmp_path / "models.csv"
    table.write_text("name,base,lora,train,clip,clip_type,vae\n"
                     f"bogus,{unet},{lora},{train},{clip},bogus,{vae}\n"
                     f"one-flux,{unet},{lora},{train},{clip},flux,{vae}\n"
                     f"triple,{unet},{lora},{train},{clip};{clip};{clip},sdxl,{vae}\n")
    proc = subprocess.run([host.comfyui_python(), "-m", "finextract", "audit", "--comfyui", str(host.comfyui_path()),
                           "--manifest", str(table), "--cpu", "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, env=host.pack_env(tmp_path), timeout=900)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "bogus: text-encoder type 'bogus' (--clip-type, manifest column clip_type): ComfyUI's CLIPLoader " \
           "of 1 file takes none of that name; choose one of stable_diffusion, stable_cascade, sd3," in proc.stderr
    assert "one-flux: text-encoder type 'flux'" in proc.stderr  # FLUX.1's two files: DualCLIPLoader
    assert "triple: text-encoder type 'sdxl' (--clip-type, manifest column clip_type): ComfyUI's " \
           "TripleCLIPLoader of 3 files takes none of that name; choose one of sd3" in proc.stderr
    assert "[1/3]" not in proc.stderr and "base " not in proc.stderr, "refused before any model loads"
    proc = run(tmp_path / "g", "--base", str(folder / "checkpoints" / sd3["checkpoints"]["base"]),
               "--lora", str(folder / "loras" / sd3["loras"]["kohya"]), "--flux-guidance", "200")
    assert proc.returncode == 2 and "--flux-guidance 200: ComfyUI's FluxGuidance takes 0 to 100" in proc.stderr, \
        proc.stderr[-3000:]

    # a checkpoint with its own text encoder: the fine-tune's text-encoder change would be dropped
    proc = run(tmp_path / "own", "--base", str(folder / "checkpoints" / sd3["checkpoints"]["base"]),
               "--lora", str(folder / "loras" / sd3["loras"]["kohya"]), "--clip", str(clip), "--clip-type", "sd3")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "holds its own text encoders, to which the fine-tune's text-encoder change is applied" in proc.stderr
    assert not (tmp_path / "own" / "model" / "generation").exists()
