"""Packing qcore's stored weights for fbgemm: linear weights (int8, float16) and row-wise embedding tables.

Linear weights go through torch's deprecated ``qint8`` tensors only here,
silenced, under the ``fbgemm`` engine (restored after). Embedding tables need
no quantized tensor at all: fbgemm's row-wise format is plain bytes, each row
its integers (8-bit, or 4-bit two per byte, low nibble first as qcore packs
them) followed by the row's scale and bias (float32 for 8-bit, float16 for
4-bit), where ``value = q * scale + bias``.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor

from qcore import dtypes
from qcore.int4_packing import pack_int4, unpack_int4
from qcore.qtensor import QTensor

from qcore_fbgemm.torch_quantized import engine, quiet, quantize_weight

__all__ = ["PACKING_ENGINE", "pack_linear", "pack_rowwise_table", "unpack_stored_table"]

#: torch's quantized engine the weights are packed for (``x86`` packs linear weights for fbgemm too).
PACKING_ENGINE = "fbgemm"


def pack_linear(weight: Any, bias: Optional[Tensor]) -> Any:
    """torch's packed linear weight (``LinearPackedParamsBase``) for an int8 QTensor or a float16 tensor."""
    with quiet(), engine(PACKING_ENGINE):
        if isinstance(weight, QTensor):
            return torch.ops.quantized.linear_prepack(quantize_weight(weight), bias)
        return torch.ops.quantized.linear_prepack_fp16(weight.to(torch.float32), bias)


def pack_rowwise_table(q: Tensor, scale: Tensor, zero_point: Tensor, qdtype: dtypes.QDType) -> Tensor:
    """fbgemm's row-wise table for integers ``q`` (``[rows, dim]``, one value per element) with per-row qparams.

    Signed tables are shifted to unsigned (``u = q - quant_min``) and the
    shift folded into the bias: ``(q - zp) * s = u * s + (quant_min - zp) * s``.
    """
    rows = q.shape[0]
    unsigned = (q.to(torch.int16) - qdtype.quant_min).to(torch.uint8)
    s64 = scale.reshape(rows, 1).to(torch.float64)
    bias = (qdtype.quant_min - zero_point.reshape(rows, 1).to(torch.float64)) * s64
    if qdtype.bits == 4:
        values = pack_int4(unsigned, dtypes.uint4)
        qparams = (s64.to(torch.float16), bias.to(torch.float16))
    else:
        values = unsigned
        qparams = (s64.to(torch.float32), bias.to(torch.float32))
    return torch.cat([values, *(t.contiguous().view(torch.uint8) for t in qparams)], dim=1).contiguous()


def unpack_stored_table(stored: Tensor, dim: int, qdtype: dtypes.QDType) -> Tensor:
    """The integer values of a qcore table buffer (4-bit storage unpacked), one per element."""
    if qdtype.bits == 4:
        return unpack_int4(stored, dim, qdtype)
    return stored
