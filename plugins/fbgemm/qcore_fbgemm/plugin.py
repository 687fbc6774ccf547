"""Entry point of the fbgemm plugin: checks the machine and torch, then registers the backend and its kernels."""

from __future__ import annotations

import platform
from typing import Any, Callable, Mapping, Optional

import torch

from qcore.errors import PluginUnavailable
from qcore.spec import hookimpl

X86_MACHINES = frozenset({"x86_64", "amd64", "i386", "i686", "x86"})

#: torch's quantized ops the static kernels need.
REQUIRED_OPS = (
    "linear_prepack", "linear", "linear_relu", "conv1d_prepack", "conv2d_prepack", "conv3d_prepack", "conv2d",
    "conv2d_relu", "add", "cat",
)

BACKEND = "fbgemm"


def unavailable_reason() -> Optional[str]:
    """Why fbgemm cannot run here, or None when it can."""
    machine = platform.machine().lower()
    if machine not in X86_MACHINES:
        return f"fbgemm needs an x86 CPU; this machine is {machine or 'unknown'}"
    if "fbgemm" not in torch.backends.quantized.supported_engines:
        return "this torch build has no fbgemm quantized engine"
    if not all(hasattr(torch, name) for name in ("quint8", "qint8", "_make_per_tensor_quantized_tensor")):
        return "this torch has no quantized tensors (torch.quint8), which its int8 kernels take"
    missing = [name for name in REQUIRED_OPS if not hasattr(torch.ops.quantized, name)]
    if missing:
        return f"this torch build lacks the quantized kernels {', '.join('quantized::' + m for m in missing)}"
    return None


_reason = unavailable_reason()
if _reason is not None:
    raise PluginUnavailable(_reason)


@hookimpl
def qcore_register_backends(registry) -> None:
    from qcore_fbgemm.backend import describe

    registry.add(describe())


@hookimpl
def qcore_lower_module(backend: str, module: Any) -> Optional[Any]:
    """The kernel-backed module replacing a reference quantized module on this backend (None to keep it)."""
    if backend != BACKEND:
        return None
    from qcore_fbgemm.lowering import lower_module

    return lower_module(module)


@hookimpl
def qcore_pack_weight(backend: str, op: str, weight: Any, bias: Any, params: Mapping[str, Any]) -> Optional[Any]:
    """torch's packed fbgemm weight for ``op`` ("linear", "conv2d", "conv_transpose2d", ...)."""
    if backend != BACKEND:
        return None
    from qcore_fbgemm.static.dispatch import pack_weight

    return pack_weight(op, weight, bias, params)


@hookimpl
def qcore_select_kernel(backend: str, op: str, params: Mapping[str, Any]) -> Optional[Callable[..., Any]]:
    """A callable running the static ``op`` on a QTensor with a packed weight (see qcore_fbgemm.static.dispatch)."""
    if backend != BACKEND:
        return None
    from qcore_fbgemm.static.dispatch import select_kernel

    return select_kernel(op, params)
