"""``finextract audit --ray`` on a real Ray cluster on this machine (a head with no CPU for work and
two worker nodes of one CPU each, started with ``ray start`` as a platform starts its nodes) ends
with the single-machine run's reports, bit for bit, when a worker process is killed mid-shard
(SIGKILL: Ray restarts it and retries the shard, which resumes from the chunks it saved) and when
the driver itself is killed (the same command again keeps every finished shard file untouched
and generates only the missing images).

The world: the bundled miniature base with the demo LoRA at strengths 1.0 and 0.8 and a copy of
it with every up weight halved (another file, another hash), audited against the cat concept
(N0 = 5), N = 12 in 4 shards, 3 DDIM steps at 64 px. ``--batch-size 1`` on the single-machine
side: a shard makes its round-robin images one per sampler call, and CPU kernels round in the
last bits differently per batch size (the driver's concern, not the shards')."""
import csv
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from finextract import host
from finextract.cli.shards import load_generation

N, SHARDS = 12, 4
RUN = ["--n", str(N), "--steps", "3", "--size", "64", "--batch-size", "1", "--seed", "3", "--cpu"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Environment of every process here: this checkout as ``finextract``, one thread each."""
    return {**host.pack_env(tmp_path_factory.mktemp("pythonpath")), "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def cluster(env, ray_cluster):
    """Head + two one-CPU worker nodes (``ray_cluster.local_cluster``); its exit checks that no
    process of the cluster is left."""
    with ray_cluster.local_cluster(env, workers=2) as address:
        yield address


@pytest.fixture(scope="module")
def manifest(ray_cluster, tmp_path_factory):
    return ray_cluster.write_world(tmp_path_factory.mktemp("world"))


def command(manifest, out, *extra) -> list[str]:
    return [sys.executable, "-m", "finextract", "audit", "--comfyui", str(host.comfyui_path()),
            "--manifest", str(manifest), *RUN, "--out", str(out), *extra]


def audit(env, argv) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=900)


@pytest.fixture(scope="module")
def single(env, manifest, tmp_path_factory):
    """The single-machine run of the manifest."""
    out = tmp_path_factory.mktemp("single") / "out"
    proc = audit(env, command(manifest, out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def outcome(out, models) -> dict:
    """What an audit produced, less what differs between any two runs (time stamps): the summary,
    each report, the extracted images."""
    rows = list(csv.DictReader(open(out / "summary.csv")))
    reports = {}
    for row in rows:
        data = json.loads((out / row["report"]).read_text())
        data.pop("created_utc")
        data["clustering"].pop("seconds")
        reports[row["model"]] = data
    return {"summary": rows, "summary.md": (out / "summary.md").read_text(), "reports": reports,
            "extracted": {m: [p.read_bytes() for p in sorted((out / m / "extracted").glob("*.png"))] for m in models}}


def single_latents(out, model) -> torch.Tensor:
    parts = [load_file(str(p)) for p in sorted((out / model / "generation").glob("chunk-*.safetensors"))]
    indices = torch.cat([p["indices"] for p in parts])
    return torch.cat([p["latents"] for p in parts])[indices.argsort()]


def assert_equal_to_single(out, single, models):
    assert outcome(out, models) == outcome(single, models)
    assert [r["model"] for r in outcome(out, models)["summary"]] == list(models)
    for model in models:
        merged, run = load_generation(out / model)
        assert torch.equal(merged, single_latents(single, model)), model
        assert run["n"] == N and len(list((out / model / "shards").glob("shard-*-of-0004.safetensors"))) == SHARDS


def chunks(out) -> dict:
    """Every saved chunk of every model: path → mtime."""
    return {p: p.stat().st_mtime_ns for p in out.glob("*/generation/chunk-*.safetensors")}


def shard_files(out) -> dict:
    """Every shard file of every model: path → (mtime, bytes)."""
    return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.glob("*/shards/shard-*")}


def mid_shard(out) -> str | None:
    """A shard of "cat" with exactly one image saved and no shard file yet (its number), if any."""
    for shard in range(SHARDS):
        saved = [i for i in range(shard, N, SHARDS) if (out / "cat" / "generation" / f"chunk-{i:07d}.safetensors").exists()]
        if len(saved) == 1 and not (out / "cat" / "shards" / f"shard-{shard:04d}-of-{SHARDS:04d}.safetensors").exists():
            return str(shard)
    return None


def test_a_worker_killed_mid_shard_is_retried_and_the_reports_are_the_single_machine_runs(
        env, cluster, manifest, single, ray_cluster, tmp_path):
    out = tmp_path / "out"
    with open(tmp_path / "driver.log", "w") as log:
        driver = subprocess.Popen(command(manifest, out, "--ray", cluster, "--shards", str(SHARDS)),
                                  stdout=subprocess.PIPE, stderr=log, text=True, env=env)
        # once a shard of "cat" has saved its first image (of 3), kill every worker: the one
        # making that shard dies mid-shard whichever it is
        deadline = time.monotonic() + 600
        while not (mid := mid_shard(out)) and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        victims = ray_cluster.shard_workers()
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        assert mid and mid_shard(out) == mid and len(victims) == 2, (mid, victims)
        stdout, _ = driver.communicate(timeout=900)
    stderr = (tmp_path / "driver.log").read_text()
    assert driver.returncode == 0, stderr[-5000:]
    assert "ray: 12 shards of 3 model(s) on 2 worker(s) (1 CPU each)" in stderr
    # the killed shard, retried: it resumes from the images the killed process saved
    resumed = dict(re.findall(r"  cat shard (\d)/4: ([12]) of 3 images resumed from an earlier attempt", stderr))
    assert resumed.get(mid) == "1", stderr[-5000:]
    assert (f"ray: 3 model(s), 12 shards (0 kept from an earlier run), {3 * N - sum(map(int, resumed.values()))} "
            "images generated") in stderr, stderr[-3000:]
    assert "| cat | 5 | 12 |" in stdout
    assert_equal_to_single(out, single, ray_cluster.MODELS)


def test_a_killed_driver_is_resumed_without_redoing_a_finished_shard(env, cluster, manifest, single, ray_cluster,
                                                                     tmp_path):
    out = tmp_path / "out"
    argv = command(manifest, out, "--ray", cluster, "--shards", str(SHARDS))
    driver = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 600
    while len(shard_files(out)) < 3 and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    driver.kill()
    driver.wait()
    deadline = time.monotonic() + 60
    while ray_cluster.shard_workers() and time.monotonic() < deadline:  # Ray ends the killed driver's workers
        time.sleep(0.2)
    assert not ray_cluster.shard_workers()
    before_shards, before_chunks = shard_files(out), chunks(out)
    assert 3 <= len(before_shards) < 3 * SHARDS, sorted(before_shards)

    again = audit(env, argv)
    assert again.returncode == 0, again.stderr[-5000:]
    assert {p: shard_files(out)[p] for p in before_shards} == before_shards, "finished shards are not redone"
    assert {p: chunks(out)[p] for p in before_chunks} == before_chunks, "saved images are not made again"
    assert (f"12 shards ({len(before_shards)} kept from an earlier run), {3 * N - len(before_chunks)} "
            "images generated") in again.stderr, again.stderr[-3000:]
    assert_equal_to_single(out, single, ray_cluster.MODELS)


def test_what_the_cluster_lacks_is_named(env, cluster, manifest, ray_cluster, tmp_path):
    # no GPU, and --cpu not given: refused at once, before any worker starts
    gpu = audit(env, [a for a in command(manifest, tmp_path / "gpu", "--ray", cluster) if a != "--cpu"])
    assert gpu.returncode == 2 and "Traceback" not in gpu.stderr, gpu.stderr[-3000:]
    assert "finextract audit --ray: the Ray cluster has no GPU for a worker (CPU 2, " in gpu.stderr
    assert "add GPU worker nodes, or add --cpu to generate on CPUs" in gpu.stderr
    # a model file the driver saw but the workers do not (moved away once the driver has checked
    # its inputs and started the workers, which import ComfyUI first): named, with the worker
    world = tmp_path / "world"
    driver = subprocess.Popen(command(ray_cluster.write_world(world), tmp_path / "out", "--ray", cluster),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    lines = [driver.stderr.readline()]
    while lines[-1] and not lines[-1].startswith("ray: "):
        lines.append(driver.stderr.readline())
    assert lines[-1].startswith("ray: 3 shards of 3 model(s) on 2 worker(s)"), "".join(lines) + driver.stderr.read()
    (world / "half.safetensors").rename(tmp_path / "moved.safetensors")
    stderr = "".join(lines) + driver.stderr.read()
    driver.wait(timeout=600)
    assert driver.returncode == 2 and "Traceback" not in stderr, stderr[-3000:]
    assert "finextract audit --ray: stopped at half" in stderr
    assert f"half lora {world / 'half.safetensors'}: no such file; check the path" in stderr
    assert f"on worker {socket.gethostname()} (" in stderr and "every node must see the models" in stderr
