"""A stopped ``finextract audit`` resumes where it stopped and ends with the uninterrupted run's
report. Real processes, stopped for real: SIGKILL (no chance to clean up), a write that fails
(``RLIMIT_FSIZE``: the kernel refuses the chunk file with EFBIG, standing in for a full disk) and
SIGINT (Ctrl-C); then the same command finishes the run. Random-weight SD1.5 files of the harness,
64 px, 3 steps: each audit is mostly ComfyUI's import."""
import csv
import json
import resource
import shutil
import signal
import subprocess
import time

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from finextract import host

N, BATCH = 10, 2
RUN = ["--n", str(N), "--batch-size", str(BATCH), "--steps", "3", "--size", "64", "--sampler", "euler",
       "--scheduler", "normal", "--seed", "5", "--cpu"]


@pytest.fixture(scope="module")
def command(audit_model_args, tmp_path_factory):
    """The audit command line, without ``--out``."""
    shim = tmp_path_factory.mktemp("pythonpath")
    return {"env": host.pack_env(shim), "argv": [
        host.comfyui_python(), "-m", "finextract", "audit", "--comfyui", str(host.comfyui_path()),
        *audit_model_args, *RUN]}


def audit(command, out, *extra, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*command["argv"], "--out", str(out), *extra], capture_output=True, text=True,
                          env=command["env"], timeout=600, **kwargs)


def chunks(out) -> list:
    return sorted((out / "dog" / "generation").glob("chunk-*.safetensors"))


def stop_after(command, out, chunk_count: int, sig: int) -> subprocess.CompletedProcess:
    """Start the audit, send ``sig`` as soon as ``chunk_count`` chunk files exist, wait for it."""
    log = out.parent / f"{out.name}-{sig}.log"
    with open(log, "w") as stderr:
        # SIGINT at its default in the child: a runner that starts the suite in the background
        # (`cmd &` without job control) hands its children SIGINT ignored, and Python then never
        # raises KeyboardInterrupt — the audit would run to the end and this test could not stop it.
        proc = subprocess.Popen([*command["argv"], "--out", str(out)], stdout=subprocess.DEVNULL,
                                stderr=stderr, text=True, env=command["env"],
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        deadline = time.monotonic() + 300
        while len(chunks(out)) < chunk_count and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(sig)
        proc.wait(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, "", log.read_text())


def saved(out) -> dict:
    """Every saved chunk: name → (bytes, mtime, image indices)."""
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns, load_file(str(p))["indices"].tolist())
            for p in chunks(out)}


def temporary_files(out) -> list:
    return sorted((out / "dog" / "generation").glob(".*"))


def latents(out) -> torch.Tensor:
    parts = [load_file(str(p)) for p in chunks(out)]
    indices = torch.cat([p["indices"] for p in parts])
    assert sorted(indices.tolist()) == list(range(N)), "every image saved exactly once"
    return torch.cat([p["latents"] for p in parts])[indices.argsort()]


def report(out) -> dict:
    """The finished run's report, less what differs between any two runs (time stamps)."""
    (row,) = csv.DictReader(open(out / "summary.csv"))
    data = json.loads((out / row["report"]).read_text())
    data.pop("created_utc")
    data["clustering"].pop("seconds")
    return {"summary": row, "report": data,
            "extracted": [p.read_bytes() for p in sorted((out / "dog" / "extracted").glob("*.png"))]}


@pytest.fixture(scope="module")
def uninterrupted(command, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted") / "out"
    proc = audit(command, out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resuming" not in proc.stderr
    return out


def test_a_killed_audit_resumes_to_the_uninterrupted_report(command, uninterrupted, tmp_path):
    out = tmp_path / "out"
    killed = stop_after(command, out, 1, signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL
    before, leftovers = saved(out), temporary_files(out)  # a kill mid-write may leave one
    assert 1 <= len(before) < N // BATCH - 2, f"the kill came too late to test anything: {sorted(before)}"

    # A write that fails (the disk is full): says so, keeps every earlier chunk, leaves no half file.
    limit = len(next(iter(before.values()))[0]) // 2
    full = audit(command, out, preexec_fn=lambda: resource.setrlimit(
        resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1])))
    assert full.returncode == 1 and "Traceback" not in full.stderr, full.stderr[-3000:]
    kept = sum(len(v[2]) for v in before.values())
    assert f"could not save images {kept}..{kept + 1} in {out / 'dog' / 'generation'} (File too large): " \
           f"the {kept} of {N} images saved before are kept; free space (or fix the folder) and run the " \
           "same command to resume" in full.stderr
    assert saved(out) == before and temporary_files(out) == leftovers

    # Ctrl-C one chunk later: a short message, no traceback.
    interrupted = stop_after(command, out, len(before) + 1, signal.SIGINT)
    assert interrupted.returncode == 130, interrupted.stderr[-3000:]
    assert "Traceback" not in interrupted.stderr
    before = saved(out)
    kept = sum(len(v[2]) for v in before.values())
    assert kept < N, "the interrupt came too late to test anything"
    assert (f"interrupted: {kept} of {N} images kept in {out / 'dog' / 'generation'}; "
            "run the same command to resume") in interrupted.stderr

    resumed = audit(command, out)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming: {kept} of {N} images kept in {out / 'dog' / 'generation'}; generating the other {N - kept}" \
        in resumed.stderr
    after = saved(out)
    assert {k: after[k] for k in before} == before, "saved chunks are reused untouched, not made again"
    made = sorted(i for k, v in after.items() if k not in before for i in v[2])
    assert made == sorted(set(range(N)) - {i for v in before.values() for i in v[2]}), "only the missing images"
    assert torch.equal(latents(out), latents(uninterrupted))
    assert report(out) == report(uninterrupted)


def test_saved_images_of_other_settings_are_refused_not_mixed(command, uninterrupted, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(uninterrupted / "dog" / "generation", out / "dog" / "generation")
    before = saved(out)
    changed = audit(command, out, "--w", "4")
    assert changed.returncode == 1 and "Traceback" not in changed.stderr, changed.stderr[-3000:]
    assert (f"{out / 'dog' / 'generation'} holds images of another run than this command (w 5.0 saved, 4.0 now; "
            "in chunk-0000000.safetensors): they are not mixed in. Use a fresh --out, or add --restart to "
            "discard them and start over") in changed.stderr
    assert saved(out) == before and not (out / "summary.csv").exists()

    restarted = audit(command, out, "--w", "4", "--restart")
    assert restarted.returncode == 0, restarted.stderr[-3000:]
    assert f"--restart: discarded {N // BATCH} saved chunk(s)" in restarted.stderr
    assert "resuming" not in restarted.stderr
    assert not torch.equal(latents(out), latents(uninterrupted))
    for path in chunks(out):
        with safe_open(str(path), "pt") as f:
            assert json.loads(f.metadata()["run"])["w"] == 4.0
