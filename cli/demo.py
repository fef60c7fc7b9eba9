"""``finextract demo``: the main job on the bundled default — audit the bundled miniature LoRA with
FineXtract end to end and write the report folder (see :mod:`finextract.miniature.demo`)."""
from __future__ import annotations

import argparse
import pathlib
import time


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="finextract demo", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=pathlib.Path, help="report folder (default: ./finextract-demo-<time>)")
    parser.add_argument("--concept", default="cat", help="which bundled LoRA/concept set to audit")
    parser.add_argument("-n", "--n", type=int, default=None, help="images to generate (default 50·N0)")
    parser.add_argument("--steps", type=int, default=None, help="DDIM steps (default: the demo's)")
    parser.add_argument("--w", type=float, default=5.0, help="guidance weight w' (paper: 5 for LoRA)")
    parser.add_argument("--k", type=float, default=-0.02, help="correction k of Eq. 13 (paper: -0.02)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-control", action="store_true", help="skip the base-model control run")
    parser.add_argument("--no-direct", action="store_true", help="skip Direct sampling of the same LoRA")
    args = parser.parse_args(argv)
    from ..miniature.demo import DEFAULT_DDIM_STEPS, run_demo

    out = args.out or pathlib.Path("finextract-demo-" + time.strftime("%Y%m%d-%H%M%S"))
    run_demo(out, concept=args.concept, n=args.n, steps=args.steps or DEFAULT_DDIM_STEPS, w=args.w, k=args.k,
             seed=args.seed, control=not args.no_control, direct=not args.no_direct)
    return 0
