"""``python -m finextract <command>``: the headless CLI.

- ``demo``: the main job on the bundled default — audit the bundled miniature LoRA with FineXtract
  end to end and write the report folder (see :mod:`finextract.miniature.demo`).
"""
from __future__ import annotations

import argparse
import pathlib
import sys
import time


def _demo(args: argparse.Namespace) -> None:
    from .miniature.demo import run_demo
    out = args.out or pathlib.Path("finextract-demo-" + time.strftime("%Y%m%d-%H%M%S"))
    run_demo(out, concept=args.concept, n=args.n, steps=args.steps, w=args.w, k=args.k, seed=args.seed,
             control=not args.no_control)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="finextract", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="audit the bundled miniature LoRA with FineXtract (CPU, minutes)")
    demo.add_argument("--out", type=pathlib.Path, help="report folder (default: ./finextract-demo-<time>)")
    demo.add_argument("--concept", default="mosaic", help="which bundled LoRA/concept set to audit")
    demo.add_argument("-n", "--n", type=int, default=None, help="images to generate (default 50·N0)")
    demo.add_argument("--steps", type=int, default=20, help="DDIM steps")
    demo.add_argument("--w", type=float, default=5.0, help="guidance weight w' (paper: 5 for LoRA)")
    demo.add_argument("--k", type=float, default=-0.02, help="correction k of Eq. 13 (paper: -0.02)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--no-control", action="store_true", help="skip the base-model control run")
    demo.set_defaults(run=_demo)
    args = parser.parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    main(sys.argv[1:])
