"""Residual-add fusion: ``conv(x) + y`` (then ReLU) becomes one ``ConvAdd{1,2}d`` (``ConvAddReLU{1,2}d``) call.

A backend whose kernels add a second tensor inside the convolution (onednn's
``conv2d_add``) names ``qcore.nn.intrinsic.ConvAdd2d`` / ``ConvAddReLU2d``
(and the 1-d ones) in its patterns; a residual block then runs as one kernel, and the
convolution's output is never rounded onto a grid of its own.

A ``Conv1d`` / ``Conv2d`` is fused with the add that follows it when the backend names
the fused module, the conv is called once and its output has that one user,
the add has no other arguments (no ``alpha``), its other operand is a
computed float tensor (not a weight or constant), and the nodes share one
qconfig. Post-training only: in training mode the graph is left as it is.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import fx, nn
from torch.nn.utils.parametrize import type_before_parametrizations

from qcore.backend_config import BackendDescription
from qcore.fx import ops
from qcore.fx.common import FUSED_NODES, module_calls, set_submodule
from qcore.fx.values import VALUE, value_kind
from qcore.nn.intrinsic import modules as nni

__all__ = ["fuse_residual_adds"]

CanFuse = Callable[[list[fx.Node], type], bool]


def _other_operand(add: fx.Node, conv: fx.Node) -> Optional[fx.Node]:
    """The add's operand that is not the conv's output, when the add is a plain two-tensor add of it."""
    if add.op not in ("call_function", "call_method") or ops.BINARY_OPS.get(add.target) != "add":
        return None
    if add.kwargs or len(add.args) != 2:
        return None
    first, second = add.args
    other = second if first is conv else first if second is conv else None
    if not isinstance(other, fx.Node) or other is conv or other.op == "get_attr" or value_kind(other) != "float":
        return None
    return other


#: conv class -> (fused conv + add, fused conv + add + relu)
_FUSED = {nn.Conv1d: (nni.ConvAdd1d, nni.ConvAddReLU1d), nn.Conv2d: (nni.ConvAdd2d, nni.ConvAddReLU2d)}


def _residual(
    conv: fx.Node, modules: dict[str, nn.Module], calls: dict[str, int]
) -> Optional[tuple[list[fx.Node], fx.Node]]:
    """(conv, add[, relu]) nodes and the add's other operand, or None when ``conv`` does not start such a chain."""
    if conv.op != "call_module" or type_before_parametrizations(modules[conv.target]) not in _FUSED:
        return None
    if calls.get(conv.target, 0) != 1 or len(conv.args) != 1 or conv.kwargs or len(conv.users) != 1:
        return None
    add = next(iter(conv.users))
    other = _other_operand(add, conv)
    if other is None:
        return None
    chain = [conv, add]
    if len(add.users) == 1:
        user = next(iter(add.users))
        if ops.is_relu(user, modules) and user.args[0] is add:
            chain.append(user)
    return chain, other


def fuse_residual_adds(gm: fx.GraphModule, backend: BackendDescription, is_qat: bool,
                       can_fuse: Optional[CanFuse] = None) -> list[tuple[str, ...]]:
    """Fuse ``conv -> add (-> relu)`` chains of ``gm`` in place; return the fused groups as node names.

    The graph's nodes must carry their value kinds (:func:`qcore.fx.values.annotate_values`).
    """
    named = {fused for pair in _FUSED.values() for fused in pair if backend.supports(fused) is not None}
    if is_qat or not named:
        return []
    modules = dict(gm.named_modules())
    calls = module_calls(gm)
    fused_groups: list[tuple[str, ...]] = []
    for node in list(gm.graph.nodes):
        found = _residual(node, modules, calls)
        if found is None:
            continue
        chain, other = found
        plain, with_relu = _FUSED[type_before_parametrizations(modules[node.target])]
        if len(chain) == 3 and not (with_relu in named and (can_fuse is None or can_fuse(chain, with_relu))):
            chain = chain[:2]  # the add alone may still fuse; its relu then runs on the fused output
        if len(chain) == 2 and not (plain in named and (can_fuse is None or can_fuse(chain, plain))):
            continue
        conv, add = chain[0], chain[1]
        add_fn = add.target if add.op == "call_function" else _method(add.target)
        fused = (with_relu(modules[conv.target], add_fn, nn.ReLU()) if len(chain) == 3
                 else plain(modules[conv.target], add_fn))
        fused.train(modules[conv.target].training)
        set_submodule(gm, conv.target, fused)
        modules[conv.target] = fused
        # the conv node becomes the fused call, moved to the add's place (``other`` may be computed after the conv)
        add.prepend(conv)
        conv.args = (conv.args[0], other)
        conv.meta[VALUE] = chain[-1].meta.get(VALUE, conv.meta.get(VALUE, "float"))
        conv.meta.setdefault(FUSED_NODES, []).extend(n.name for n in chain[1:])
        chain[-1].replace_all_uses_with(conv)
        for extra in reversed(chain[1:]):
            gm.graph.erase_node(extra)
        fused_groups.append(tuple(n.target if n.op == "call_module" else n.name for n in chain))
    if fused_groups:
        gm.graph.lint()
        gm.delete_all_unused_submodules()
        gm.recompile()
    return fused_groups


def _method(name: str) -> Callable:
    """``Tensor.add`` for the method spelling ``x.add(y)``."""
    return getattr(torch.Tensor, name)
