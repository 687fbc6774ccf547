"""The ``qcore`` command: ``qcore plugins``, ``qcore backends``, ``qcore demo``, ``qcore explain``."""

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


QCONFIG_CHOICES = ("default", "qat", "dynamic")


def load_factory(spec: str) -> object:
    """The callable ``package.module:function`` names; the working directory is importable, as for ``python -m``."""
    import importlib

    from qcore.errors import ConfigError

    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ConfigError(f"expected MODULE:FACTORY such as 'mypackage.models:build', got {spec!r}")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import {module_name!r}: {exc}; run from the directory that holds it or put it on "
                          "PYTHONPATH") from exc
    factory: object = module
    for part in attribute.split("."):
        if not hasattr(factory, part):
            raise ConfigError(f"{module_name!r} has no attribute {attribute!r}")
        factory = getattr(factory, part)
    if not callable(factory):
        raise ConfigError(f"{spec!r} is a {type(factory).__name__}, not a function or class that builds the model")
    return factory


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(part) for part in text.replace("x", ",").split(",") if part.strip())
    except ValueError:
        shape = ()
    if not shape or any(n < 1 for n in shape):
        raise argparse.ArgumentTypeError(f"expected a shape such as 1,3,32,32, got {text!r}")
    return shape


def _explain_mapping(kind: str, backend: Optional[str]) -> object:
    """The qconfig mapping ``--qconfig`` names, for ``backend`` (the active one when None)."""
    import torch.nn.functional as F

    from qcore.flow.mappings import get_default_dynamic_quant_module_mappings
    from qcore.qconfig import get_default_dynamic_qconfig
    from qcore.qconfig_mapping import QConfigMapping, get_default_qat_qconfig_mapping, get_default_qconfig_mapping

    if kind == "default":
        return get_default_qconfig_mapping(backend)
    if kind == "qat":
        return get_default_qat_qconfig_mapping(backend)
    qconfig = get_default_dynamic_qconfig(backend)  # as quantize_dynamic: the modules with a dynamic form
    mapping = QConfigMapping().set_object_type(F.linear, qconfig)
    for cls in get_default_dynamic_quant_module_mappings():
        mapping.set_object_type(cls, qconfig)
    return mapping


def cmd_explain(args: argparse.Namespace, out: TextIO) -> int:
    """Import the user's model factory, explain what prepare_fx does to each node, print the table (or JSON)."""
    import json

    import torch
    from torch import nn

    from qcore.errors import ConfigError
    from qcore.fx.explain import explain

    factory = load_factory(args.factory)
    model = factory()  # type: ignore[operator]
    if not isinstance(model, nn.Module):
        raise ConfigError(f"{args.factory} returned a {type(model).__name__}, not a torch.nn.Module")
    dtype = getattr(torch, args.input_dtype)
    shapes = args.input_shape or []
    inputs = tuple(torch.randn(s) if dtype.is_floating_point else torch.zeros(s, dtype=dtype) for s in shapes)
    qat = args.qconfig == "qat"
    explanation = explain(model, _explain_mapping(args.qconfig, args.backend), inputs or None,
                          backend_config=args.backend, is_qat=qat)
    if args.json:
        print(json.dumps(explanation.to_dict(), indent=2), file=out)
    else:
        print(explanation, file=out)
        for message in explanation.warnings:
            print(f"\nwarning: {message}", file=out)
    for name in args.why or []:
        print(f"\nwhy {name}: {explanation.why(name)}", file=out)
    return 0


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
    explain = commands.add_parser(
        "explain", help="show, per node, how FX quantization treats a model and why (qconfig entry, pattern, observers)",
        description="Trace the model FACTORY builds and print, per node, the qconfig entry that matched, the backend "
                    "pattern that takes it or why it stays float, and the observers it gets. The model is not changed.")
    explain.add_argument("factory", metavar="MODULE:FACTORY",
                         help="a function (or class) building the model, e.g. mypackage.models:build")
    explain.add_argument("--input-shape", type=_shape, action="append", metavar="SHAPE",
                         help="shape of an example input, e.g. 1,3,32,32; repeat for several inputs")
    explain.add_argument("--input-dtype", choices=("float32", "int64"), default="float32",
                         help="dtype of the example inputs (int64: zeros, for token ids)")
    explain.add_argument("--backend", default=None, help="backend to explain for (default: the active one)")
    explain.add_argument("--qconfig", choices=QCONFIG_CHOICES, default="default",
                         help="the backend's default static mapping, its QAT mapping, or dynamic quantization")
    explain.add_argument("--why", action="append", metavar="NODE", help="also explain this node or module in words")
    explain.add_argument("--json", action="store_true", help="print the explanation as JSON")
    explain.set_defaults(run=cmd_explain)
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
