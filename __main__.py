"""``finextract <command> …`` (or ``python -m finextract <command> …``): a tiny dispatcher; each
command lives in its own module and exposes ``main(argv) -> int``."""
from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "demo": (".cli.demo", "audit the bundled miniature LoRA with FineXtract (CPU, minutes)"),
    "audit": (".cli.audit", "audit checkpoints/LoRAs headless through ComfyUI as a library"),
}
"""command → (module relative to this package, one-line help)."""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print("usage: finextract <command> [options]\n\ncommands:")
        for name, (_, help_text) in COMMANDS.items():
            print(f"  {name:<8} {help_text}")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    module = importlib.import_module(COMMANDS[argv[0]][0], __package__ or "finextract")
    return module.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
