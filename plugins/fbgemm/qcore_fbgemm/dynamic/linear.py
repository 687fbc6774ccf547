"""Dynamic Linear and LinearReLU on fbgemm: ``quantized::linear_dynamic`` (int8) and ``linear_dynamic_fp16``.

fbgemm quantizes each input per tensor from its own min/max exactly as the
reference does (the same ChooseQuantizationParams, the halved range when
``reduce_range``), multiplies the integers exactly in int32 and scales once in
float32. The result equals the reference's float32 ``F.linear`` on the
dequantized input and weight up to float32 summation order: relative error
about 1e-6 of ``|x| @ |W|.T``, far inside one input quantization step
(``input_scale * max|W|``), the bound the tests use.

NaN and infinite inputs: the reference raises QuantizationError. The kernels
do not spend a pass over every input looking for them (torch.ao does not
either; at batch 1 the check would cost ~15% of a 384x384 linear): when
fbgemm's range computation rejects the input, the error is the reference's
QuantizationError, otherwise the output is meaningless.

Per-token modules (``per_token=True``) quantize each row themselves and sum
the integers on fbgemm (or ``torch._int_mm`` for large inputs on VNNI CPUs;
:mod:`qcore_fbgemm.dynamic.per_token`): ``torch.equal`` to the reference,
NaN/inf inputs raise the reference's QuantizationError. Where no kernel can
be exact (8-bit weights on a CPU without VNNI, more than 65793 input
features) lowering keeps the reference module, and a kernel module that is
given such weights later computes the reference's numbers itself.
"""

from __future__ import annotations

from typing import Any, List, Optional

import torch
from torch import Tensor

from qcore import dtypes
from qcore.errors import ConfigError, QuantizationError
from qcore.nn.quantized.base import module_label
from qcore.nn.quantized.dynamic import linear as reference
from qcore.nn.quantized.dynamic.functional import linear_dynamic_per_token
from qcore.nn.quantized.dynamic.linear import check_float_input
from qcore.nn.quantized.weight_only.functional import dequantize_weight

from qcore_fbgemm.dynamic import per_token
from qcore_fbgemm.dynamic.base import KernelModule, cpu_only_reason
from qcore_fbgemm.dynamic.packing import pack_linear

__all__ = [
    "FbgemmDynamicLinear", "FbgemmDynamicLinearReLU", "linear_unsupported_reason", "check_kernel_settings", "kernel_failure",
]


def linear_unsupported_reason(ref: Any, allow_per_token: bool = True) -> Optional[str]:
    """Why fbgemm's dynamic linear cannot compute the reference dynamic Linear ``ref`` (None when it can).

    ``allow_per_token=False``: for the projections of recurrent modules, whose kernels quantize per tensor.
    """
    reason = cpu_only_reason(ref)
    if reason is not None:
        return reason
    if ref.weight_dtype is dtypes.float16:
        return None
    if getattr(ref, "per_token", False):
        if not allow_per_token:
            return "fbgemm's recurrent kernels quantize activations per tensor, not per token"
        return per_token.unsupported_reason(ref.in_features, ref._qweight)
    if ref.weight_dtype is not dtypes.int8:
        return f"fbgemm's dynamic linear takes int8 or float16 weights, not {ref.weight_dtype.name}"
    if ref.group_size > 0 or int(ref.weight_axis) > 0:
        return "fbgemm quantizes weights per tensor or per output channel (axis 0) only"
    if ref.act_dtype is not dtypes.uint8 or (ref.act_quant_min, ref.act_quant_max) != (0, 255):
        return (f"fbgemm quantizes activations to uint8 [0, 255] (halved by reduce_range), not "
                f"{ref.act_dtype.name} [{ref.act_quant_min}, {ref.act_quant_max}]")
    return None


def check_kernel_settings(module: Any, weight_dtype: dtypes.QDType, settings: Any, allow_per_token: bool = True) -> None:
    """Raise ConfigError unless fbgemm can quantize activations as ``settings`` (a DynamicQuantSettings) asks."""
    if settings.per_token and not allow_per_token:
        raise ConfigError(
            f"{type(module).__name__}: fbgemm's recurrent kernels quantize activations per tensor, not per token; use "
            "qcore's reference module for these (convert with is_reference=True, or run under qcore.backend('reference'))"
        )
    if weight_dtype is dtypes.float16 or (settings.act_dtype is dtypes.uint8 and settings.quant_range == (0, 255)):
        return
    lo, hi = settings.quant_range
    raise ConfigError(
        f"{type(module).__name__}: fbgemm quantizes activations to uint8 [0, 255] (halved by reduce_range), not "
        f"{settings.act_dtype.name} [{lo}, {hi}]; use qcore's reference module for these (convert with "
        "is_reference=True, or run under qcore.backend('reference'))"
    )


def kernel_failure(module: Any, x: Tensor, exc: RuntimeError) -> Exception:
    """The error for an input fbgemm rejects: QuantizationError for NaN/inf, else the kernel's own error."""
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        return QuantizationError(
            f"{module_label(module)}: dynamic quantization: the input has NaN or infinite values, which have no "
            "quantized value; find where they come from (torch.isfinite(x)) before this module"
        )
    return exc


class FbgemmDynamicLinear(KernelModule, reference.Linear):
    """qcore's dynamic Linear (``qcore.nn.quantized.dynamic.Linear``) running fbgemm's kernels.

    The weight is packed once (construction, ``set_weight_bias``,
    ``load_state_dict``, a change of ``per_token``); no float copy of it is
    kept. Float inputs of any float dtype are computed in float32 and
    returned in their dtype, as the reference does.

    Per tensor: fbgemm's packed weight (``_packed``). Per token: fbgemm's
    packing with unit scales (``_packed``), and the weight transposed, its
    column sums and float32 scales for ``torch._int_mm`` and the epilogue.
    """

    _KERNEL_RELU = False

    def _refresh(self) -> None:
        self.cache_dequantized = False
        super()._refresh()
        self._cached = False
        self._weight_float = self._weight_float.new_zeros(0)
        self._relu = self._KERNEL_RELU
        self._prepare()

    def _prepare(self) -> None:
        """Pack the weight for the path the settings choose: fbgemm's per-tensor kernel, or the per-token kernels."""
        self._per_token = bool(getattr(self, "per_token", False))
        if self._per_token:
            w_kn, colsum, w_scale, self._packed = per_token.prepare_weight(self._qweight, self.weight_scale)
            reason, fbgemm_exact, int_mm_rows = per_token.kernel_plan(self.in_features, self._qweight)
            self._kernel_exact = reason is None  # a kernel is exact: fbgemm below int_mm_rows rows, _int_mm from there
            self._int_mm_min_rows = int_mm_rows if fbgemm_exact else 0
        else:
            self._packed = pack_linear(self.weight(), self._bias)
            w_kn, colsum, w_scale = torch.zeros(0, 0, dtype=torch.int8), torch.zeros(0, dtype=torch.int32), torch.zeros(0)
            self._kernel_exact = False
            self._int_mm_min_rows = 0
        buffers = (("_w_kn", w_kn), ("_w_colsum", colsum), ("_w_colsum32", colsum.to(torch.float32)), ("_w_scale32", w_scale))
        for name, value in buffers:
            if name in self._buffers:
                setattr(self, name, value)
            else:
                self.register_buffer(name, value, persistent=False)

    def apply_settings(self, settings: Any) -> None:
        """Set how inputs are quantized; fbgemm takes uint8 [0, 255], halved or not (``reduce_range``), or per token."""
        check_kernel_settings(self, self.weight_dtype, settings)
        super().apply_settings(settings)
        if getattr(self, "_per_token", None) is not None and self._per_token != self.per_token:
            self._prepare()

    def dequantized_weight(self) -> Tensor:
        """The float32 weight (computed now: kernel modules keep only the integer or float16 weight)."""
        if self._bits == 16:
            return self._qweight.to(torch.float32)
        return dequantize_weight(
            self._qweight, self.weight_scale, self.weight_zero_point, self._axis, self._group_size, self._bits,
            self._signed, self._length,
        )

    def forward(self, x: Tensor) -> Tensor:
        if torch.jit.is_scripting():
            return self._kernel(x)
        return self._checked(x)

    @torch.jit.unused
    def _checked(self, x: Tensor) -> Tensor:
        """Eager mode: a float input is required, and a NaN/inf input is named as such."""
        check_float_input(self, x)
        try:
            return self._kernel(x)
        except QuantizationError as exc:  # the per-token path checks its qparams itself
            raise QuantizationError(f"{module_label(self)}: {exc}") from None
        except RuntimeError as exc:
            raise kernel_failure(self, x, exc) from exc

    def _kernel(self, x: Tensor) -> Tensor:
        if x.numel() == 0:
            return self._empty_output(x)
        if self._per_token:
            if self._kernel_exact:
                y = per_token.linear_per_token(x, self._w_kn, self._w_colsum, self._w_scale32, self._bias, self._packed,
                                               self._int_mm_min_rows, self._w_colsum32)
            else:  # weights no int8 kernel multiplies exactly here: the reference's numbers, computed its way
                y = linear_dynamic_per_token(x, self._qweight, self._w_scale32, self._bias)
            return torch.relu_(y) if self._relu else y
        xf = x if x.dtype == torch.float32 else x.to(torch.float32)
        if self._bits == 16:
            if self._relu:
                y = torch.ops.quantized.linear_relu_dynamic_fp16(xf, self._packed)
            else:
                y = torch.ops.quantized.linear_dynamic_fp16(xf, self._packed)
        elif self._relu:
            y = torch.ops.quantized.linear_relu_dynamic(xf, self._packed, self.reduce_range)
        else:
            y = torch.ops.quantized.linear_dynamic(xf, self._packed, self.reduce_range)
        return y if x.dtype == torch.float32 else y.to(x.dtype)

    def _empty_output(self, x: Tensor) -> Tensor:
        shape: List[int] = list(x.shape[:-1])
        shape.append(self.out_features)
        y = torch.zeros(shape, dtype=x.dtype, device=x.device)
        bias = self._bias
        if bias is not None:
            y = y + bias.to(x.dtype)
        return torch.relu(y) if self._relu else y

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, kernel=fbgemm"

    @classmethod
    def unsupported_reason(cls, ref: Any) -> Optional[str]:
        return linear_unsupported_reason(ref)

    @staticmethod
    def _constructor_args(m: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return (m.in_features, m.out_features, m.bias() is not None, m.weight_dtype), {}


class FbgemmDynamicLinearReLU(FbgemmDynamicLinear, reference.LinearReLU):
    """qcore's dynamic LinearReLU on fbgemm's fused ``linear_relu_dynamic`` (``_fp16``)."""

    _KERNEL_RELU = True
