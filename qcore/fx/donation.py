"""Which residual inputs of a converted graph a fused conv + add may overwrite.

onednn's ``conv2d_add`` writes its result into the residual (``extra_input``)
when it can; a module must not change its inputs, so the kernel copies the
residual first, unless the graph shows nobody can see the change. convert_fx
marks such calls on the module (``_qcore_donated_extra_input = True``) before
lowering; a backend's kernel may then skip the copy. A module outside an FX
graph (eager mode, a loaded checkpoint) is never marked.

A residual is donated when every other reader of it is a weighted quantized
module (they read it and return a new tensor, so none of them can hand out a
view of it), the fused call is its last reader in graph order, it is made by
such a module too (a new tensor, not a view of another value), and it is not
also the call's own input.
"""

from __future__ import annotations

from torch import fx, nn

from qcore.fx.common import module_calls
from qcore.nn.intrinsic.quantized.conv_add import CONV_ADD_CLASSES
from qcore.nn.quantized.base import QuantizedWeightMixin

__all__ = ["DONATED", "mark_donated_residuals"]

#: The attribute convert_fx sets on a fused conv + add module whose residual input nobody reads afterwards.
DONATED = "_qcore_donated_extra_input"

_CONV_ADD = tuple(CONV_ADD_CLASSES.values())


def _fresh(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """Whether ``node`` calls a weighted quantized module: it reads its inputs and returns a new tensor."""
    return node.op == "call_module" and isinstance(modules.get(node.target), QuantizedWeightMixin)


def mark_donated_residuals(gm: fx.GraphModule) -> list[str]:
    """Mark the fused conv + add modules of ``gm`` whose residual input may be overwritten; return their names."""
    modules = dict(gm.named_modules())
    order = {node: i for i, node in enumerate(gm.graph.nodes)}
    calls = module_calls(gm)
    marked = []
    for node in gm.graph.nodes:
        module = modules.get(node.target) if node.op == "call_module" else None
        if not isinstance(module, _CONV_ADD) or calls[node.target] != 1 or len(node.args) != 2 or node.kwargs:
            continue
        x, extra = node.args
        if not isinstance(extra, fx.Node) or extra is x or not _fresh(extra, modules):
            continue
        readers = list(extra.users)
        if any(r is not node and not _fresh(r, modules) for r in readers):
            continue
        if max(order[r] for r in readers) != order[node]:
            continue
        module.__dict__[DONATED] = True
        marked.append(node.target)
    return marked
