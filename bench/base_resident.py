"""What keeping the base loaded saves per extra LoRA of a batch audit, side by side in one run.

    python -m finextract.bench.base_resident [--repeats 3] [--skip-sd15]

A platform audits many LoRAs of one base. Loading each model's pair with its base read, checked
and built again (what every model of a ``finextract audit`` manifest paid before the base was
kept: :func:`..nodes.pair.load_pair` without a resident base) is timed against the same pair on
a base kept loaded (:class:`..nodes.pair.ResidentBase`, which a manifest run and each ``--ray``
worker hold), interleaved, in one process, one thread, each LoRA in turn, after one warm-up load
(file hashes are cached per process either way, so neither side hashes the base again). Prints
the median seconds per extra LoRA, wall and CPU (CPU is what other jobs on the machine disturb
least), and their ratio. Worlds: the bundled miniature base (40 MB) with its LoRA at two
strengths and a copy with halved up weights; the host tests' random-weight SD1.5 file (628 MB:
CLIP-L and VAE at full size, a shrunk UNet) with its kohya, diffusers, PEFT and attention LoRAs
(built once, ~40 s, when missing).
"""
from __future__ import annotations

import argparse
import pathlib
import statistics
import tempfile
import time

import torch
from safetensors.torch import load_file, save_file

from .. import host
from . import test_fixture

MINI = pathlib.Path(__file__).resolve().parent.parent / "miniature" / "weights"


def timed(function) -> tuple[float, float]:
    """(wall, CPU) seconds of ``function()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    function()
    return time.perf_counter() - wall, time.process_time() - cpu


def compare(library, load_pair, ResidentBase, title: str, base: str, loras: list[tuple[str, float]],
            repeats: int) -> None:
    resident = ResidentBase()
    library.call(load_pair, base, None, loras[:1], resident)  # warm-up: file cache, hashes, the kept base
    times = {"reload": [], "resident": []}
    for _ in range(repeats):
        for lora in loras:
            times["reload"].append(timed(lambda: library.call(load_pair, base, None, [lora])))
            times["resident"].append(timed(lambda: library.call(load_pair, base, None, [lora], resident)))
    assert resident.loads == 1, "the kept base was loaded again"
    median = {side: [statistics.median(t[i] for t in rows) for i in (0, 1)] for side, rows in times.items()}
    print(f"{title}: per extra LoRA ({len(loras)} LoRAs x {repeats}), median wall / CPU seconds")
    print(f"  base read and built each time: {median['reload'][0]:.3f} / {median['reload'][1]:.3f}")
    print(f"  base kept loaded:              {median['resident'][0]:.3f} / {median['resident'][1]:.3f}")
    print(f"  ratio (each time / kept):      {median['reload'][0] / median['resident'][0]:.1f}x wall, "
          f"{median['reload'][1] / median['resident'][1]:.1f}x CPU", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-sd15", action="store_true", help="only the miniature world")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="finextract-bench-base-") as tmp:
        library = host.Library(cpu=True, output_dir=pathlib.Path(tmp))
        from ..nodes.pair import ResidentBase, load_pair

        lora = MINI / "mini_lora_cat.safetensors"
        half = pathlib.Path(tmp) / "mini_lora_half.safetensors"
        save_file({k: v * 0.5 if "lora_up" in k else v for k, v in load_file(str(lora)).items()}, str(half))
        loras = [(library.register_file("loras", lora), 1.0), (library.register_file("loras", lora), 0.8),
                 (library.register_file("loras", half), 1.0)]
        compare(library, load_pair, ResidentBase, "miniature",
                library.register_file("checkpoints", MINI / "mini_base.safetensors"), loras, args.repeats)
        if args.skip_sd15:
            return
        folder = test_fixture("host/sd15_models").model_folder(host.comfyui_path(), host.comfyui_python())
        files = test_fixture("host/sd15_models").manifest(folder)
        library.folder_paths.add_model_folder_path("checkpoints", str(folder / "checkpoints"))
        library.folder_paths.add_model_folder_path("loras", str(folder / "loras"))
        loras = [(files["loras"][kind], 1.0) for kind in ("kohya", "diffusers", "peft", "attention")]
        compare(library, load_pair, ResidentBase, "SD1.5 test model (628 MB)",
                files["checkpoints"]["base"]["file"], loras, args.repeats)


if __name__ == "__main__":
    main()
