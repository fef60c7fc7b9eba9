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


def usage(file=sys.stdout) -> None:
    print("usage: finextract <command> [options]   (--debug: show tracebacks)\n\ncommands:", file=file)
    for name, (_, help_text) in COMMANDS.items():
        print(f"  {name:<8} {help_text}", file=file)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    if not argv or argv[0] in ("-h", "--help"):
        usage()
        return 0 if argv else 2
    if argv[0] not in COMMANDS:
        print(f"finextract: unknown command {argv[0]!r}; the commands are {', '.join(COMMANDS)}", file=sys.stderr)
        usage(sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[argv[0]][0], __package__ or "finextract")
    from .cli import UsageError

    try:
        return module.main(argv[1:])
    except UsageError as exc:
        if debug:
            raise
        print(f"finextract {argv[0]}: nothing was run:\n  " + str(exc).replace("\n", "\n  "), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
