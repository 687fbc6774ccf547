"""The fbgemm answers to the kernel-packing and kernel-selection hooks for static ops.

``pack_weight("linear" | "conv1d" | ... , weight, bias, params)`` packs an
int8 weight once; ``select_kernel(op, params)`` returns a callable running the
op on a QTensor with such a packed weight: ``kernel(x, packed, scale,
zero_point) -> QTensor``. The kernel modules use the same packing functions.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional

import torch

from qcore import dtypes
from qcore.errors import QuantizationError
from qcore.qtensor import QTensor

from qcore_fbgemm.static.packing import pack_conv, pack_linear
from qcore_fbgemm.torch_quantized import from_torch, output_qparams, to_torch

__all__ = ["pack_weight", "select_kernel", "STATIC_OPS"]

#: op name -> torch's kernel, for select_kernel (the packed weight comes from pack_weight).
STATIC_OPS: dict[str, Callable[..., Any]] = {
    "linear": torch.ops.quantized.linear,
    "linear_relu": torch.ops.quantized.linear_relu,
    "conv1d": torch.ops.quantized.conv1d,
    "conv1d_relu": torch.ops.quantized.conv1d_relu,
    "conv2d": torch.ops.quantized.conv2d,
    "conv2d_relu": torch.ops.quantized.conv2d_relu,
    "conv3d": torch.ops.quantized.conv3d,
    "conv3d_relu": torch.ops.quantized.conv3d_relu,
    "conv_transpose1d": torch.ops.quantized.conv_transpose1d,
    "conv_transpose2d": torch.ops.quantized.conv_transpose2d,
    "conv_transpose3d": torch.ops.quantized.conv_transpose3d,
}


def _as_qtensor(weight: Any, params: Mapping[str, Any]) -> QTensor:
    if isinstance(weight, QTensor):
        return weight
    axis = params.get("axis")
    axis = None if axis is None or int(axis) < 0 else int(axis)
    return QTensor.from_int(weight, params["scale"], params["zero_point"], params.get("dtype", dtypes.int8), axis=axis)


def pack_weight(op: str, weight: Any, bias: Any, params: Mapping[str, Any]) -> Optional[object]:
    """torch's packed weight for ``op`` (a QTensor, or integers with ``scale``/``zero_point``/``axis`` in params)."""
    base = op[: -len("_relu")] if op.endswith("_relu") else op
    if base == "linear":
        return pack_linear(_as_qtensor(weight, params), bias)
    if base not in ("conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d"):
        return None
    ndim = int(base[-2])
    ones, zeros = (1,) * ndim, (0,) * ndim
    return pack_conv(
        _as_qtensor(weight, params), bias, params.get("stride", ones), params.get("padding", zeros),
        params.get("dilation", ones), int(params.get("groups", 1)), base.startswith("conv_transpose"),
        params.get("output_padding", zeros), engine_name=params.get("engine", "fbgemm"),
    )


def select_kernel(op: str, params: Mapping[str, Any]) -> Optional[Callable[..., QTensor]]:
    """``kernel(x, packed, scale, zero_point) -> QTensor`` for a static op on uint8 activations, else None."""
    if params.get("is_dynamic") or op not in STATIC_OPS:
        return None
    if dtypes.qdtype(params.get("input_dtype", dtypes.uint8)) is not dtypes.uint8:
        return None
    torch_op = STATIC_OPS[op]

    def kernel(x: QTensor, packed: object, scale: float, zero_point: int) -> QTensor:
        tq = to_torch(x)
        if tq is None:
            raise QuantizationError(f"fbgemm {op}: expected a per-tensor uint8 QTensor input, got {type(x).__name__}")
        return from_torch(torch_op(tq, packed, float(scale), int(zero_point)), output_qparams(scale, zero_point))

    kernel.__name__ = f"fbgemm_{op}"
    return kernel
