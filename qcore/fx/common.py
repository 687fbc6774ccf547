"""Small helpers the FX flows share: the backend to use, submodule surgery, preserved attributes, custom swaps."""

from __future__ import annotations

from typing import Any, Iterable, Optional

import torch
from torch import fx, nn

from qcore.backend_config import BackendDescription
from qcore.errors import ConfigError

__all__ = [
    "resolve_backend", "set_submodule", "fresh_name", "preserve_attributes", "model_device", "custom_module_swaps",
]

_PRESERVED = "_user_preserved_attributes"  # torch.fx's GraphModule.meta key; deepcopy restores these



#: ``node.meta`` key of a fused node: the names of the nodes fused into it (read by ``explain``).
FUSED_NODES = "qcore_fused_nodes"

def resolve_backend(backend_config: Any, api: str) -> BackendDescription:
    """The BackendDescription to follow: the one given, the backend named, or the active backend when None."""
    from qcore.backend_selection import get_backend_description

    if backend_config is None or isinstance(backend_config, str):
        return get_backend_description(backend_config)
    if isinstance(backend_config, BackendDescription):
        return backend_config
    raise ConfigError(
        f"{api}: backend_config must be a qcore BackendDescription, a backend name such as 'fbgemm', or None for the "
        f"active backend; got {type(backend_config).__name__}"
    )


def module_calls(gm: fx.GraphModule) -> dict[str, int]:
    """How many ``call_module`` nodes call each submodule (a module called twice cannot be fused into one call)."""
    calls: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    return calls


def set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    """Put ``module`` at the dotted path ``name`` under ``root``."""
    parent_name, _, leaf = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    parent._modules[leaf] = module


def fresh_name(root: nn.Module, base: str) -> str:
    """``base`` made a valid attribute name not yet used on ``root`` (``base``, then ``base_1``, ...)."""
    base = "".join(c if c.isalnum() or c == "_" else "_" for c in base) or "module"
    if base[0].isdigit():
        base = "_" + base
    if not hasattr(root, base):
        return base
    index = 1
    while hasattr(root, f"{base}_{index}"):
        index += 1
    return f"{base}_{index}"


def preserve_attributes(gm: fx.GraphModule, source: nn.Module, names: Iterable[str], api: str) -> None:
    """Copy ``source``'s attributes ``names`` onto ``gm``, kept through deepcopy (GraphModule drops the rest)."""
    preserved = gm.meta.setdefault(_PRESERVED, {})
    for name in names:
        if not hasattr(source, name):
            raise ConfigError(f"{api}: preserved_attributes names {name!r}, which the model does not have")
        value = getattr(source, name)
        setattr(gm, name, value)
        preserved[name] = value


def model_device(model: nn.Module) -> Optional[torch.device]:
    """The one device the model's parameters and buffers are on (None when it has none)."""
    devices = {t.device for t in model.parameters()} | {t.device for t in model.buffers()}
    devices.discard(torch.device("meta"))
    if len(devices) > 1:
        raise ConfigError(f"FX quantization works on a model on one device; this one is on {sorted(map(str, devices))}")
    return next(iter(devices), None)


def custom_module_swaps(registered: dict[type, type], user: dict[str, dict[type, type]], method: str,
                        config_name: str) -> dict[str, dict[type, type]]:
    """{quant type: {class: replacement}}: the registry's static swaps, then the user's (which win).

    Every replacement must have ``method`` (``from_float`` or ``from_observed``), as ``config_name`` promises.
    """
    from qcore.flow.eager.custom_modules import _check_method

    swaps: dict[str, dict[type, type]] = {"static": dict(registered)}
    for quant_type, entries in user.items():
        swaps.setdefault(quant_type, {}).update(entries)
    for entries in swaps.values():
        for replacement in entries.values():
            _check_method(replacement, method, config_name)
    return swaps
