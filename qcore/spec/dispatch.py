"""Dispatch hooks: the active backend's plugin answers, the others return None.

All are ``firstresult``: pluggy stops at the first implementation returning
something other than None. qcore's own defaults are registered ``trylast``,
so a backend plugin always gets the first word for its own backend. An
implementation must return None for a ``backend`` it does not own.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional

from qcore.spec.markers import hookspec


@hookspec(firstresult=True)
def qcore_pack_weight(
    backend: str, op: str, weight: Any, bias: Any, params: Mapping[str, Any]
) -> Optional[Any]:
    """Pack a quantized weight (and bias) for ``backend``'s kernel for ``op``.

    Receives the canonical backend name, the op name (e.g. ``"linear"``,
    ``"conv2d"``), the integer weight tensor, the float bias (or None) and the
    quantization parameters (``scale``, ``zero_point``, ``dtype``, ``axis``,
    op arguments such as ``stride``). Returns the backend's packed object, or
    None when this plugin does not pack for ``backend``/``op``. firstresult.
    """


@hookspec(firstresult=True)
def qcore_select_kernel(backend: str, op: str, params: Mapping[str, Any]) -> Optional[Callable[..., Any]]:
    """Choose the kernel that runs the quantized ``op`` on ``backend``.

    Receives the canonical backend name, the op name and the op's
    quantization parameters (dtypes, qschemes, whether it is dynamic).
    Returns a callable implementing the op, or None when this plugin has no
    kernel for it. firstresult.
    """


@hookspec(firstresult=True)
def qcore_lower_module(backend: str, module: Any) -> Optional[Any]:
    """Lower one reference quantized module to ``backend``'s kernels.

    Receives the canonical backend name and a reference quantized
    ``torch.nn.Module`` (integer weights plus qparams), or a float module
    that runs quantized tensors as they are (max pooling, flatten, ...: the
    types in ``qcore.flow.mappings.QTENSOR_PASSTHROUGH_MODULES``) inside the
    quantized region. Returns a kernel-backed replacement module computing
    the same function, or None to leave the module as it is. firstresult.
    """
