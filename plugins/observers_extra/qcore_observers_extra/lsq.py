"""Learnable fake quantization: LSQ (Esser et al., 2020) and LSQ+ (Bhalgat et al., 2020).

Both learn the step size ``scale`` by gradient descent; LSQ+ also learns the
zero point. The forward pass is qcore's fake quantization (bit-exact with
:func:`qcore.affine.fake_quantize_affine`) with the zero point rounded to the
integer it will have after convert. The backward pass is the papers', with
``v = x / scale + zero_point`` and ``qmin < v < qmax`` deciding "inside":

* ``d/dx``: 1 inside, 0 outside (straight-through);
* ``d/dscale``: ``round(v) - v`` inside, ``qmin - zero_point`` below,
  ``qmax - zero_point`` above (LSQ eq. 3, shifted by the zero point);
* ``d/dzero_point`` (LSQ+): 0 inside, ``-scale`` outside.

LSQ+ writes the offset as ``beta = -zero_point * scale``; its gradients in
``(scale, beta)`` become the ones above by the chain rule, which is how
torch.ao's learnable fake quant parametrises it too. Scale (and zero point)
gradients are multiplied by ``g = 1 / sqrt(N * Qp)``, ``N`` the number of
elements sharing one scale and ``Qp = quant_max``.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Optional

import torch
from torch import Tensor, nn

from qcore import dtypes
from qcore.affine import fake_quantize_affine_cachemask
from qcore.dtypes import QScheme
from qcore.errors import ConfigError, ObserverError
from qcore.fake_quant.base import FakeQuantizeBase
from qcore.fake_quant.validation import build_observer, check_quant_range, declared_dtype, observer_factory

from qcore_observers_extra.mse import MSEObserver

__all__ = ["LSQFakeQuantize", "LSQPlusFakeQuantize", "lsq_fake_quantize", "LSQFunction"]


def _channel_shape(x: Tensor, axis: Optional[int]) -> list[int]:
    shape = [1] * x.dim()
    if axis is not None:
        shape[axis] = x.shape[axis]
    return shape


class LSQFunction(torch.autograd.Function):
    """Fake quantization with the LSQ/LSQ+ gradients for ``x``, ``scale`` and ``zero_point`` (see the module docstring)."""

    @staticmethod
    def forward(ctx, x, scale, zero_point, quant_min, quant_max, axis, grad_factor):  # type: ignore[override]
        rounded_zp = zero_point.detach().round().clamp(quant_min, quant_max)
        if axis is None:
            out, _ = fake_quantize_affine_cachemask(x, scale.detach(), rounded_zp.to(torch.int64), quant_min, quant_max)
        else:
            out, _ = fake_quantize_affine_cachemask(
                x, scale.detach(), rounded_zp.to(torch.int64), quant_min, quant_max, axis=axis
            )
        ctx.save_for_backward(x, scale, rounded_zp)
        ctx.quant_range = (quant_min, quant_max)
        ctx.axis = axis
        ctx.grad_factor = grad_factor
        return out

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        x, scale, zero_point = ctx.saved_tensors
        quant_min, quant_max = ctx.quant_range
        axis = ctx.axis
        shape = _channel_shape(x, axis)
        compute = torch.float64 if x.dtype == torch.float64 else torch.float32
        s = scale.detach().to(compute).reshape(shape)
        z = zero_point.to(compute).reshape(shape)
        v = x.detach().to(compute) / s + z
        below = v <= quant_min
        above = v >= quant_max
        inside = ~(below | above)
        grad_c = grad.to(compute)
        grad_x = (grad_c * inside).to(x.dtype) if ctx.needs_input_grad[0] else None
        reduce_dims = [d for d in range(x.dim()) if axis is None or d != axis]

        def reduce(t: Tensor) -> Tensor:
            total = t.sum(dim=reduce_dims) if reduce_dims else t
            return (total * ctx.grad_factor).reshape(scale.shape)

        grad_scale = grad_zp = None
        if ctx.needs_input_grad[1]:
            d_scale = torch.where(inside, torch.round(v) - v, torch.where(below, quant_min - z, quant_max - z))
            grad_scale = reduce(grad_c * d_scale).to(scale.dtype)
        if ctx.needs_input_grad[2]:
            d_zp = torch.where(inside, torch.zeros_like(v), -s.expand_as(v))
            grad_zp = reduce(grad_c * d_zp).to(zero_point.dtype)
        return grad_x, grad_scale, grad_zp, None, None, None, None


def lsq_fake_quantize(
    x: Tensor,
    scale: Tensor,
    zero_point: Tensor,
    quant_min: int,
    quant_max: int,
    axis: Optional[int] = None,
    grad_factor: float = 1.0,
) -> Tensor:
    """Fake-quantize ``x`` with learnable ``scale``/``zero_point`` (float tensors, one value or one per channel along ``axis``).

    The zero point is rounded (and clamped to the range) in the forward pass;
    its gradient passes straight through the rounding. ``grad_factor`` scales
    the scale and zero-point gradients (LSQ's ``g``).
    """
    if axis is not None:
        axis = axis % x.dim()
    return LSQFunction.apply(x, scale, zero_point, int(quant_min), int(quant_max), axis, float(grad_factor))


class LSQFakeQuantize(FakeQuantizeBase):
    """LSQ: fake quantization with a learned scale, initialised from ``observer`` on the first batch.

    ``scale`` and ``zero_point`` are ``nn.Parameter``s (float; one value, or
    one per channel for per-channel qschemes) set from the observer's qparams
    on the first forward with the observer enabled; from then on the observer
    is not consulted and ``scale`` learns. LSQ keeps the zero point where the
    observer put it (``zero_point.requires_grad`` is False). ``quant_min``,
    ``quant_max`` and ``observer_kwargs`` (``dtype``, ``qscheme``, ``ch_axis``,
    ...) configure the observer, as for FakeQuantize. ``use_grad_scaling``
    applies LSQ's gradient scale ``g``.
    """

    #: Whether the zero point is learned (LSQ+) or kept from the observer (LSQ).
    learns_zero_point: ClassVar[bool] = False

    scale: nn.Parameter
    zero_point: nn.Parameter
    initialized: Tensor
    eps: Tensor

    def __init__(
        self,
        observer: Any = MSEObserver,
        quant_min: Optional[int] = None,
        quant_max: Optional[int] = None,
        use_grad_scaling: bool = True,
        **observer_kwargs: Any,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        factory = observer_factory(observer, owner)
        if quant_min is not None or quant_max is not None:
            check_quant_range(owner, quant_min, quant_max, declared_dtype(factory, observer_kwargs))
            observer_kwargs.update(quant_min=quant_min, quant_max=quant_max)
        self.activation_post_process = build_observer(factory, observer_kwargs, owner)
        post = self.activation_post_process
        if getattr(post, "is_dynamic", False):
            raise ConfigError(f"{owner} learns static qparams and cannot use a dynamic observer; drop is_dynamic=True")
        self.quant_min: int = int(post.quant_min)
        self.quant_max: int = int(post.quant_max)
        self.dtype = post.dtype
        self.qscheme: QScheme = dtypes.qscheme(post.qscheme)
        self.is_dynamic = False
        if self.qscheme is QScheme.PER_CHANNEL_AFFINE_FLOAT_QPARAMS:
            raise ConfigError(
                f"{owner} learns integer-zero-point qparams and cannot use {self.qscheme.value}; "
                "use per_channel_affine or per_channel_symmetric"
            )
        self.is_per_channel: bool = self.qscheme.is_per_channel
        if self.is_per_channel and getattr(post, "ch_axis", None) is None:
            raise ConfigError(
                f"{owner}: qscheme {self.qscheme.value} is per channel but {type(post).__name__} has no ch_axis; "
                "use a per-channel observer such as PerChannelMSEObserver or PerChannelMinMaxObserver"
            )
        self.ch_axis: int = int(post.ch_axis) if self.is_per_channel else -1
        self.use_grad_scaling = bool(use_grad_scaling)
        learn_zp = self.learns_zero_point and not self.qscheme.is_symmetric
        self.scale = nn.Parameter(torch.tensor([1.0]))
        self.zero_point = nn.Parameter(torch.tensor([0.0]), requires_grad=learn_zp)
        self.register_buffer("initialized", torch.tensor([0], dtype=torch.uint8))
        eps = getattr(post, "eps", None)
        eps_value = float(eps.reshape(-1)[0]) if isinstance(eps, Tensor) else float(torch.finfo(torch.float32).eps)
        self.register_buffer("eps", torch.tensor([eps_value]))

    # --- qparams -------------------------------------------------------------------

    def _initialize(self, scale: Tensor, zero_point: Tensor) -> None:
        with torch.no_grad():
            self.scale.data = scale.detach().to(torch.float32).reshape(-1).clone()
            self.zero_point.data = zero_point.detach().to(torch.float32).reshape(-1).clone()
            self.initialized.fill_(1)

    def calculate_qparams(self) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        """The learned ``(scale, zero_point)``: float32 scale (floored at ``eps``), integer zero point in range."""
        self._require_initialized("calculate_qparams()")
        scale = self.scale.detach().clamp(min=float(self.eps)).clone()
        zp = self.zero_point.detach().round().clamp(self.quant_min, self.quant_max)
        return scale, zp.to(torch.int64 if self.qscheme.is_symmetric else torch.int32)

    def _require_initialized(self, what: str) -> None:
        if self.initialized[0] == 0:
            raise ObserverError(
                f"{type(self).__name__} has no learned scale yet for {what}: its qparams are set from the observer on "
                "the first batch passed with the observer enabled; run a forward pass (enable_observer()) first"
            )

    def grad_factor(self, x: Tensor) -> float:
        """LSQ's gradient scale ``1 / sqrt(N * Qp)`` for the input ``x`` (1 when ``use_grad_scaling`` is off)."""
        if not self.use_grad_scaling:
            return 1.0
        per_scale = x.numel() / max(1, self.scale.numel())
        positive = self.quant_max if self.quant_max > 0 else self.quant_max - self.quant_min
        return 1.0 / math.sqrt(max(per_scale, 1.0) * positive)

    # --- forward -------------------------------------------------------------------

    def forward(self, x: Tensor) -> Tensor:
        if self.observer_enabled[0] == 1 and self.initialized[0] == 0:
            self.activation_post_process(x.detach())
            self._initialize(*self.activation_post_process.calculate_qparams())
        if self.fake_quant_enabled[0] == 1:
            self._require_initialized("fake quantization")
            with torch.no_grad():
                self.scale.clamp_(min=float(self.eps))
            axis = self.ch_axis if self.is_per_channel else None
            x = lsq_fake_quantize(x, self.scale, self.zero_point, self.quant_min, self.quant_max, axis, self.grad_factor(x))
        return x

    def extra_repr(self) -> str:
        return (
            f"fake_quant_enabled={self.fake_quant_enabled}, observer_enabled={self.observer_enabled}, "
            f"initialized={bool(self.initialized[0])}, quant_min={self.quant_min}, quant_max={self.quant_max}, "
            f"dtype={self.dtype}, qscheme={self.qscheme}, ch_axis={self.ch_axis}, "
            f"use_grad_scaling={self.use_grad_scaling}, scale={self.scale.data}, zero_point={self.zero_point.data}"
        )

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        # scale/zero_point have one value until initialised; a saved per-channel module has one per channel.
        with torch.no_grad():
            for name in ("scale", "zero_point"):
                value = state_dict.get(prefix + name)
                parameter = getattr(self, name)
                if isinstance(value, Tensor) and value.shape != parameter.shape:
                    parameter.data = torch.empty(value.shape, dtype=parameter.dtype, device=parameter.device)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )


class LSQPlusFakeQuantize(LSQFakeQuantize):
    """LSQ+: LSQ with a learned zero point (offset) as well, for affine qschemes.

    Under symmetric qschemes the zero point stays fixed, as in LSQ.
    """

    learns_zero_point = True
