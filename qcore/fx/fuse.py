"""fuse_fx and the graph fusion prepare_fx runs: module chains such as (conv, bn, relu) become one fused module.

A chain is fused when the registry has a fuser for its module types (the
same fusers as eager ``fuse_modules``), the backend names the pattern
(``F.relu`` / ``x.relu()`` count as ``nn.ReLU``), every intermediate value
has that one user, and each module is called once (a stateless ReLU may
be called elsewhere too: torchvision's blocks call one ReLU twice). In eval
mode BatchNorm is folded (post-training); in training mode conv + bn stays a
trainable ``ConvBn2d`` for quantization-aware training.
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Optional

from torch import fx, nn
from torch.nn.utils.parametrize import type_before_parametrizations

from qcore.backend_config import BackendDescription
from qcore.errors import ConfigError
from qcore.fx import ops
from qcore.fx.common import FUSED_NODES, module_calls, preserve_attributes, resolve_backend, set_submodule
from qcore.fx.custom_config import as_fuse_custom_config
from qcore.fx.fuse_add import fuse_residual_adds
from qcore.fx.tracer import QcoreTracer, trace
from qcore.fx.values import annotate_values

__all__ = ["fuse_fx", "fuse_graph"]

CanFuse = Callable[[list[fx.Node], tuple[type, ...]], bool]


def _registry_patterns(is_qat: bool) -> list[tuple[type, ...]]:
    from qcore.registry import get_registry

    patterns = get_registry().fusion_patterns.patterns(qat=is_qat)
    return sorted(patterns, key=len, reverse=True)


def _backend_has(backend: BackendDescription, pattern: tuple[type, ...]) -> bool:
    return any(backend.supports(spelled) is not None for spelled in ops.pattern_spellings(pattern))


def _chain(node: fx.Node, pattern: tuple[type, ...], modules: dict[str, nn.Module], calls: dict[str, int]) -> Optional[list[fx.Node]]:
    """The nodes of ``pattern`` starting at ``node``, or None when the graph there is not that chain."""
    if node.op != "call_module" or type_before_parametrizations(modules[node.target]) is not pattern[0]:
        return None
    chain = [node]
    for part in pattern[1:]:
        current = chain[-1]
        if len(current.users) != 1:
            return None
        user = next(iter(current.users))
        if not user.args or user.args[0] is not current:
            return None
        if part is nn.ReLU and ops.is_relu(user, modules):
            pass
        elif user.op == "call_module" and type_before_parametrizations(modules[user.target]) is part and len(user.args) == 1:
            pass
        else:
            return None
        chain.append(user)
    if any(n.op == "call_module" and calls[n.target] != 1 and type(modules[n.target]) is not nn.ReLU for n in chain):
        return None  # a module called at several places cannot be fused into one of them (a stateless ReLU can)
    return chain


def fuse_graph(
    gm: fx.GraphModule, backend: BackendDescription, is_qat: bool, can_fuse: Optional[CanFuse] = None,
    api: str = "fuse_fx",
) -> list[tuple[str, ...]]:
    """Fuse the module chains of ``gm`` in place; return the fused groups as node names."""
    from qcore.flow.eager.fuse import _fuse_group

    patterns = [p for p in _registry_patterns(is_qat) if _backend_has(backend, p)]
    modules = dict(gm.named_modules())
    calls = module_calls(gm)
    fused_groups: list[tuple[str, ...]] = []
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or node.graph is None or node.target not in modules:
            continue
        for pattern in patterns:
            chain = _chain(node, pattern, modules, calls)
            if chain is None or (can_fuse is not None and not can_fuse(chain, pattern)):
                continue
            # a relu part is always a fresh ReLU: the graph's ReLU module may serve other calls
            parts = [nn.ReLU() if ops.is_relu(n, modules) else modules[n.target] for n in chain]
            names = [n.target if n.op == "call_module" else n.name for n in chain]
            try:
                fused = _fuse_group(parts, names, is_qat, {})
            except ConfigError as exc:
                raise ConfigError(f"{api}: {exc}") from exc
            set_submodule(gm, node.target, fused)
            modules[node.target] = fused
            last = chain[-1]
            node.meta.setdefault(FUSED_NODES, []).extend(n.name for n in chain[1:])
            last.replace_all_uses_with(node)
            for extra in reversed(chain[1:]):
                gm.graph.erase_node(extra)
            fused_groups.append(tuple(names))
            break
    if fused_groups:
        gm.graph.lint()
        gm.delete_all_unused_submodules()
        gm.recompile()
    return fused_groups


def fuse_fx(model: nn.Module, fuse_custom_config: Any = None, backend_config: Any = None) -> fx.GraphModule:
    """A traced copy of ``model`` with conv/linear/bn/relu chains (and, where the backend fuses them,
    conv + add residuals) fused, as the backend wants them.

    In eval mode BatchNorm is folded into the conv or linear before it; in
    training mode conv + bn stays a ``ConvBn`` module for QAT.
    ``fuse_custom_config`` (a FuseCustomConfig or ``{"preserved_attributes":
    [...]}``) names attributes to keep; ``backend_config`` a backend (the
    active one by default).
    """
    if not isinstance(model, nn.Module):
        raise ConfigError(f"fuse_fx expects an nn.Module, got {type(model).__name__}")
    config = as_fuse_custom_config(fuse_custom_config)
    backend = resolve_backend(backend_config, "fuse_fx")
    model = copy.deepcopy(model)
    gm = trace(model, QcoreTracer(), api="fuse_fx")
    fuse_graph(gm, backend, is_qat=model.training, api="fuse_fx")
    annotate_values(gm, None)
    fuse_residual_adds(gm, backend, is_qat=model.training)
    preserve_attributes(gm, model, config.preserved_attributes, "fuse_fx")
    return gm
