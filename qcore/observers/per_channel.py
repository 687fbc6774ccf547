"""Per-channel observers: their shared base (state per slice along ``ch_axis``) and the min/max ones (running range or moving average)."""

from __future__ import annotations

from typing import Any, ClassVar, Optional

import torch
from torch import Tensor

from qcore import dtypes
from qcore.dtypes import DTypeLike, QSchemeLike
from qcore.errors import ObserverError
from qcore.observers.base import UniformQuantizationObserverBase
from qcore.observers.minmax import check_averaging_constant
from qcore.quant_spec import DEFAULT_EPS

__all__ = ["PerChannelObserverBase", "PerChannelMinMaxObserver", "MovingAveragePerChannelMinMaxObserver"]


class PerChannelObserverBase(UniformQuantizationObserverBase):
    """Base of observers keeping state per channel (the slices along ``ch_axis``).

    Subclasses register ``min_val``/``max_val`` (and any other buffer named in
    ``_channel_buffers``) empty: the channel count is unknown until the first
    input, which fixes it, or a loaded state dict, which resizes them.
    """

    per_channel = True
    supports_dynamic = False
    #: The buffers whose first dimension is the channel count.
    _channel_buffers: ClassVar[tuple[str, ...]] = ("min_val", "max_val")

    min_val: Tensor
    max_val: Tensor

    @property
    def ch_axis(self) -> int:
        return self.spec.ch_axis

    @ch_axis.setter
    def ch_axis(self, value: int) -> None:
        self._evolve(ch_axis=value)

    def _channel_rows(self, x: Tensor) -> Tensor:
        """``x`` as a (channels, values) matrix, channels taken along ``ch_axis``."""
        axis = self.ch_axis
        if x.dim() == 0 or not -x.dim() <= axis < x.dim():
            raise ObserverError(
                f"{type(self).__name__} has ch_axis={axis} but got an input of shape {tuple(x.shape)}; "
                "set ch_axis to the input's channel dimension"
            )
        y = x.transpose(0, axis).to(self.min_val.dtype)
        return y.reshape(y.shape[0], -1)

    def _has_channels(self, min_cur: Tensor) -> bool:
        """False before the first input; after it True, once ``min_cur`` is checked to have as many channels."""
        if self.min_val.numel() == 0:
            return False
        if self.min_val.shape != min_cur.shape:
            raise ObserverError(
                f"{type(self).__name__} saw {min_cur.numel()} channels along ch_axis={self.ch_axis}, "
                f"but earlier inputs had {self.min_val.numel()}; feed tensors with a fixed channel count "
                "(or call reset_min_max_vals())"
            )
        return True

    def _store(self, **values: Tensor) -> None:
        """Resize each named buffer to its new value's shape and copy the value in."""
        for name, value in values.items():
            buffer = getattr(self, name)
            buffer.resize_(value.shape)
            buffer.copy_(value)

    def reset_min_max_vals(self) -> None:
        """Forget what was observed (and the channel count)."""
        self.min_val.resize_(0)
        self.max_val.resize_(0)

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
        # The buffers' sizes follow the channel count, unknown until data or a state dict arrives.
        for name in self._channel_buffers:
            value = state_dict.get(prefix + name)
            if isinstance(value, Tensor):
                getattr(self, name).resize_(value.shape)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )


class PerChannelMinMaxObserver(PerChannelObserverBase):
    """Records the running minimum and maximum of each channel (the slices along ``ch_axis``).

    ``min_val``/``max_val`` are empty until the first input, then hold one
    value per channel; loading a state dict resizes them.
    """

    def __init__(
        self,
        ch_axis: int = 0,
        dtype: DTypeLike = dtypes.uint8,
        qscheme: QSchemeLike = dtypes.per_channel_affine,
        reduce_range: bool = False,
        quant_min: Optional[int] = None,
        quant_max: Optional[int] = None,
        factory_kwargs: Optional[dict[str, Any]] = None,
        eps: float = DEFAULT_EPS,
        is_dynamic: bool = False,
    ) -> None:
        super().__init__(
            dtype, qscheme, reduce_range, quant_min, quant_max, factory_kwargs, eps, is_dynamic, ch_axis=ch_axis
        )
        kwargs = torch.nn.factory_kwargs(factory_kwargs)
        self.register_buffer("min_val", torch.tensor([], **kwargs))
        self.register_buffer("max_val", torch.tensor([], **kwargs))

    def forward(self, x_orig: Tensor) -> Tensor:
        if x_orig.numel() == 0:
            return x_orig
        x = x_orig.detach()
        min_cur, max_cur = torch.aminmax(self._channel_rows(x), dim=1)
        self._require_finite(x, min_cur, max_cur)
        if self._has_channels(min_cur):
            min_cur, max_cur = self._combine(min_cur, max_cur)
        self._store(min_val=min_cur, max_val=max_cur)
        return x_orig

    def _combine(self, min_cur: Tensor, max_cur: Tensor) -> tuple[Tensor, Tensor]:
        return torch.min(min_cur, self.min_val), torch.max(max_cur, self.max_val)

    def calculate_qparams(self) -> tuple[Tensor, Tensor]:
        """One (scale, zero_point) per channel."""
        return self._calculate_qparams(self.min_val, self.max_val)

    def extra_repr(self) -> str:
        return f"{self._spec_repr()}, min_val={self.min_val}, max_val={self.max_val}"


class MovingAveragePerChannelMinMaxObserver(PerChannelMinMaxObserver):
    """Per-channel ``min += c * (batch_min - min)`` (and likewise max); the first batch sets them."""

    def __init__(
        self,
        averaging_constant: float = 0.01,
        ch_axis: int = 0,
        dtype: DTypeLike = dtypes.uint8,
        qscheme: QSchemeLike = dtypes.per_channel_affine,
        reduce_range: bool = False,
        quant_min: Optional[int] = None,
        quant_max: Optional[int] = None,
        eps: float = DEFAULT_EPS,
        is_dynamic: bool = False,
        factory_kwargs: Optional[dict[str, Any]] = None,
    ) -> None:
        constant = check_averaging_constant(type(self).__name__, averaging_constant)
        super().__init__(ch_axis, dtype, qscheme, reduce_range, quant_min, quant_max, factory_kwargs, eps, is_dynamic)
        self.averaging_constant = constant

    def _combine(self, min_cur: Tensor, max_cur: Tensor) -> tuple[Tensor, Tensor]:
        c = self.averaging_constant
        return self.min_val + c * (min_cur - self.min_val), self.max_val + c * (max_cur - self.max_val)

    def extra_repr(self) -> str:
        return f"averaging_constant={self.averaging_constant}, {super().extra_repr()}"
