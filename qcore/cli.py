"""The ``qcore`` command: ``qcore plugins``, ``qcore backends``, ``qcore demo``."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence, TextIO

from qcore.errors import QcoreError


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns separated by two spaces, with a dashed rule under the header."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def _short_hook(name: str) -> str:
    return name[len("qcore_"):] if name.startswith("qcore_") else name


def cmd_plugins(args: argparse.Namespace, out: TextIO) -> int:
    """Print every discovered plugin; exit 1 when the selection or the registry has a problem."""
    from qcore.registry import get_registry, list_plugins

    rows = [
        (p.name, p.distribution, p.version, ",".join(_short_hook(h) for h in p.hooks) or "-", p.status, p.reason or "")
        for p in list_plugins()
    ]
    print(format_table(("name", "distribution", "version", "hooks", "status", "reason"), rows), file=out)
    try:
        get_registry()
    except QcoreError as exc:
        print(f"\nerror: {exc}", file=out)
        return 1
    return 0


def cmd_backends(args: argparse.Namespace, out: TextIO) -> int:
    """Print every registered backend, marking the active one with '*'."""
    from qcore.backend_selection import get_backend, get_backend_description, list_backends

    active = get_backend()
    rows = []
    for name in list_backends():
        description = get_backend_description(name)
        reason = description.unavailable_reason()
        rows.append((
            "*" if name == active else "",
            name,
            ",".join(description.aliases) or "-",
            str(description.priority),
            "yes" if reason is None else f"no: {reason}",
            description.summary,
        ))
    print(format_table(("", "name", "aliases", "priority", "available", "summary"), rows), file=out)
    print(f"\n* active backend: {active}", file=out)
    return 0


def cmd_demo(args: argparse.Namespace, out: TextIO) -> int:
    """Run the demo (``qcore.demo.main``) with the remaining arguments."""
    from qcore import demo

    result = demo.main(list(args.demo_args))
    return int(result or 0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qcore", description="qcore: quantization for PyTorch models.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    plugins = commands.add_parser("plugins", help="list discovered plugins and their status")
    plugins.set_defaults(run=cmd_plugins)
    backends = commands.add_parser("backends", help="list registered backends and the active one")
    backends.set_defaults(run=cmd_backends)
    demo = commands.add_parser("demo", help="quantize a small model end to end (qcore demo --help)", add_help=False)
    demo.add_argument("demo_args", nargs=argparse.REMAINDER)
    demo.set_defaults(run=cmd_demo)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``qcore`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if argv[:1] == ["demo"]:
        # Everything after "demo" belongs to the demo, options included.
        args = argparse.Namespace(command="demo", run=cmd_demo, demo_args=argv[1:])
    else:
        args = parser.parse_args(argv)
    try:
        return args.run(args, sys.stdout)
    except QcoreError as exc:
        print(f"qcore {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # `qcore demo | head`: the reader left. Point stdout at devnull so the flush at exit stays quiet.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
