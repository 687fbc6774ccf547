"""Packing qcore's int8 weights for torch's fbgemm and onednn kernels (done once per module, at lowering).

Also the choice between the two for convolutions: onednn's kernels are faster
on large convolutions on this kind of machine, fbgemm's on small ones, where
onednn's fixed cost per call dominates (see benchmarks/RESULTS.md).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

from qcore.qtensor import QTensor

from qcore_fbgemm.torch_quantized import engine, quantize_weight, quiet

__all__ = ["pack_linear", "pack_conv", "onednn_can_pack", "ONEDNN_MIN_MACS", "ONEDNN_MIN_PIXELS", "FBGEMM"]

FBGEMM = "fbgemm"

#: Convolutions of at least this many multiply-accumulates, or this many output pixels, per call run on
#: onednn where it can pack them: where onednn (packed for the input's shape) beat fbgemm on the digits CNN
#: and ResNet-18 shapes, 1 and 2 threads (benchmarks/RESULTS.md, "Convolution kernels").
ONEDNN_MIN_MACS = 2e6
ONEDNN_MIN_PIXELS = 512

_CONV_PREPACK = {
    (1, False): "conv1d_prepack", (2, False): "conv2d_prepack", (3, False): "conv3d_prepack",
    (1, True): "conv_transpose1d_prepack", (2, True): "conv_transpose2d_prepack", (3, True): "conv_transpose3d_prepack",
}


def _bias(bias: Optional[Tensor]) -> Optional[Tensor]:
    """A private float32 copy: the packed weights keep the bias tensor they are given, and must not follow
    later in-place changes of the module's buffer (a TorchScript twin keeps the packing it was made with)."""
    return None if bias is None else bias.detach().to(torch.float32, copy=True)


def pack_linear(weight: QTensor, bias: Optional[Tensor], engine_name: str = FBGEMM) -> object:
    """``quantized::linear_prepack`` of an int8 weight (out, in) and float bias for ``engine_name``."""
    with quiet(), engine(engine_name):
        return torch.ops.quantized.linear_prepack(quantize_weight(weight), _bias(bias))


def pack_conv(
    weight: QTensor,
    bias: Optional[Tensor],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
    transposed: bool = False,
    output_padding: Sequence[int] = (),
    engine_name: str = FBGEMM,
) -> object:
    """``quantized::convNd_prepack`` (or ``conv_transposeNd_prepack``) of an int8 weight for ``engine_name``."""
    ndim = weight.dim() - 2
    prepack = getattr(torch.ops.quantized, _CONV_PREPACK[(ndim, transposed)])
    args = [list(stride), list(padding)]
    if transposed:
        args.append(list(output_padding))
    args += [list(dilation), int(groups)]
    with quiet(), engine(engine_name):
        return prepack(quantize_weight(weight), _bias(bias), *args)


def onednn_can_pack(weight: QTensor, groups: int, transposed: bool) -> bool:
    """Whether onednn takes this convolution weight: symmetric (zero points 0), few groups, not transposed."""
    if transposed or groups > 100 or "onednn" not in torch.backends.quantized.supported_engines:
        return False
    if weight.qscheme().is_per_channel:
        return not bool(weight.q_per_channel_zero_points().any())
    return weight.q_zero_point() == 0
