"""ConvAdd1d/2d, ConvAddReLU1d/2d (conv + residual add, + ReLU) on onednn's fused ``quantized::conv2d_add(_relu)``.

The fused kernel adds the extra input to the convolution's float accumulator
before rounding, which is the reference numerics (the conv's result is never
put on a grid of its own). onednn only: fbgemm has no such kernel, so modules
whose weights onednn cannot pack (asymmetric, many groups) or whose padding
mode is not zeros stay on the reference module. Inputs the kernel does not
take (not quint8 per tensor, not of the convolution's rank, an extra input of
another shape than the conv's output, e.g. broadcasting) run the reference
forward. A 1-d convolution runs as a 2-d one of height 1.

TorchScript gets the reference twin (:class:`qcore.nn.intrinsic.quantized.ConvAddTwin`):
torch runs these ops only while its global quantized engine is "onednn",
which a scripted model cannot set, so a kernel twin would fail under the
default engine. The scripted model is the reference numerics, within one
quantization step of the eager kernel.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn

from qcore.fx.donation import DONATED
from qcore.nn.intrinsic.quantized import conv_add as _ref

from qcore_fbgemm.static import ops
from qcore_fbgemm.static.conv import _ConvKernel, _explicit_padding
from qcore_fbgemm.static.kernel import KernelModule
from qcore_fbgemm.static.packing import onednn_can_pack, pack_conv
from qcore_fbgemm.torch_quantized import from_torch, to_torch

__all__ = ["ConvAdd1d", "ConvAddReLU1d", "ConvAdd2d", "ConvAddReLU2d"]

_SIZES_KEPT = 64  # input shapes whose output size a module remembers


class _ConvAddKernel(_ConvKernel):
    """The fused conv + add kernel module; the reference class after it says whether ReLU follows the add."""

    @classmethod
    def supports(cls, ref: nn.Module) -> bool:
        """As the kernel Conv2d, weights onednn packs (symmetric: conv2d_add has no fbgemm kernel), and padding
        smaller than the kernel's (dilated) span: onednn's conv2d_add leaves garbage in output pixels whose
        window lies wholly in the padding (about 1 call in 20 on this torch; its plain conv2d does not)."""
        if not (super().supports(ref) and onednn_can_pack(ref.weight(), ref.groups, False)):
            return False
        padding = _explicit_padding(ref)
        return all(p < d * (k - 1) + 1 for p, d, k in zip(padding, ref.dilation, ref.kernel_size))

    def _make_op(self) -> nn.Module:
        weight, padding = self.weight(), _explicit_padding(self)
        kernel_size, stride, dilation = self.kernel_size, self.stride, self.dilation
        if self._NDIM == 1:  # a 1-d convolution is a 2-d one of height 1 (torch's quantized conv1d does the same)
            weight = weight.unsqueeze(2)
            kernel_size, stride, padding, dilation = (1, *kernel_size), (1, *stride), (0, *padding), (1, *dilation)
        repack = functools.partial(pack_conv, weight, self._bias, stride, padding, dilation, self.groups,
                                   engine_name="onednn")
        kind = ops.CONV2D_ADD_RELU if self._RELU_AFTER_ADD else ops.CONV2D_ADD
        return ops.QConvAddOp(repack(), kind, float(self.scale), int(self.zero_point), self.out_channels,
                              kernel_size, stride, padding, dilation, repack,
                              donated=self.__dict__.get(DONATED, False))

    def _refresh(self) -> None:
        super()._refresh()
        self.__dict__["_kernel_sizes"] = {}  # input shape -> the size the extra input must have

    def forward(self, input: Any, extra_input: Any) -> Any:  # type: ignore[override]
        d = self.__dict__
        if d.get("_kernel_stale", True):
            self._refresh()
        run = d["_kernel_run"]
        tx = to_torch(input) if run is not None else None
        te = to_torch(extra_input) if tx is not None else None
        rank = self._NDIM + 2
        if te is None or tx.dim() != rank or te.dim() != rank:
            return super(KernelModule, self).forward(input, extra_input)
        if rank == 3:
            tx, te = tx.unsqueeze(2), te.unsqueeze(2)
        sizes = d["_kernel_sizes"]
        want = sizes.get(tx.shape)
        if want is None:
            want = torch.Size(d["_kernel_op"].output_size(tx))
            if len(sizes) < _SIZES_KEPT:
                sizes[tx.shape] = want
        if te.shape != want:  # broadcasting, or a wrong shape whose error the reference gives
            return super(KernelModule, self).forward(input, extra_input)
        out = run(tx, te)
        return from_torch(out.squeeze(2) if rank == 3 else out, d["_kernel_out_qp"])

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state.pop("_kernel_sizes", None)
        return state

    def extra_repr(self) -> str:
        return f"{super(KernelModule, self).extra_repr()}, engine=onednn"

    def __prepare_scriptable__(self) -> nn.Module:
        """The reference twin (see the module docstring: a scripted model cannot select torch's onednn engine)."""
        return super(KernelModule, self).__prepare_scriptable__()


class ConvAdd1d(_ConvAddKernel, _ref.ConvAdd1d):
    """qcore's quantized ConvAdd1d on onednn's ``quantized::conv2d_add`` (as a 2-d convolution of height 1)."""


class ConvAddReLU1d(_ConvAddKernel, _ref.ConvAddReLU1d):
    """qcore's quantized ConvAddReLU1d on onednn's ``quantized::conv2d_add_relu`` (height 1)."""


class ConvAdd2d(_ConvAddKernel, _ref.ConvAdd2d):
    """qcore's quantized ConvAdd2d on onednn's fused ``quantized::conv2d_add``."""


class ConvAddReLU2d(_ConvAddKernel, _ref.ConvAddReLU2d):
    """qcore's quantized ConvAddReLU2d on onednn's fused ``quantized::conv2d_add_relu``."""
