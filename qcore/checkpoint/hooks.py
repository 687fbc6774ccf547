"""qcore's own forward hooks, which a checkpoint records by name and qcore.load registers again.

prepare puts observer hooks on modules that observe their input or output;
convert puts a guard on float modules that follow the quantized part. A hook
is a function, so a manifest names it from this fixed table; any other hook
is not saved (qcore.save warns).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from torch import nn

__all__ = ["known_hooks", "hook_names", "register_hooks"]

FORWARD_PRE = "forward_pre"
FORWARD = "forward"


def known_hooks() -> dict[str, tuple[str, Callable[..., Any]]]:
    """{manifest name: (kind, function)} for qcore's hooks."""
    from qcore.flow.eager.convert import _reject_quantized_input
    from qcore.flow.eager.prepare import _observer_forward_hook, _observer_forward_pre_hook

    return {
        "qcore.reject_quantized_input": (FORWARD_PRE, _reject_quantized_input),
        "qcore.observe_input": (FORWARD_PRE, _observer_forward_pre_hook),
        "qcore.observe_output": (FORWARD, _observer_forward_hook),
    }


def hook_names(module: nn.Module, table: dict[str, tuple[str, Callable[..., Any]]]) -> tuple[list[dict[str, str]], bool]:
    """The module's known hooks as ``[{"kind", "name"}]`` in call order, and whether it has others too."""
    by_function = {(kind, fn): name for name, (kind, fn) in table.items()}
    recorded: list[dict[str, str]] = []
    other = bool(module._backward_hooks or module._backward_pre_hooks)
    for kind, hooks in ((FORWARD_PRE, module._forward_pre_hooks), (FORWARD, module._forward_hooks)):
        for handle, fn in hooks.items():
            name = by_function.get((kind, fn))
            with_kwargs = handle in getattr(module, f"_{kind}_hooks_with_kwargs", {})
            if name is None or with_kwargs:
                other = True
            else:
                recorded.append({"kind": kind, "name": name})
    return recorded, other


def register_hooks(module: nn.Module, hooks: list[dict[str, str]], table: dict[str, tuple[str, Callable[..., Any]]]) -> Optional[str]:
    """Register the named hooks (skipping ones already there); the name of an unknown one, else None."""
    for item in hooks:
        found = table.get(item.get("name", ""))
        if found is None or found[0] != item.get("kind"):
            return str(item.get("name"))
        kind, fn = found
        present = module._forward_pre_hooks if kind == FORWARD_PRE else module._forward_hooks
        if fn in present.values():
            continue
        if kind == FORWARD_PRE:
            module.register_forward_pre_hook(fn)
        else:
            module.register_forward_hook(fn)
    return None
