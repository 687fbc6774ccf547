"""The observer base classes: what every observer is, and the common base of min/max-style ones.

An observer is an ``nn.Module`` that returns its input unchanged while recording
statistics, and turns them into qparams on ``calculate_qparams()``. Its
configuration lives in one :class:`~qcore.quant_spec.QuantSpec` (``.spec``);
the torch.ao-style attributes (``dtype``, ``qscheme``, ``quant_min``, ...) are
read from it.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar, Optional

import attrs
import torch
from torch import Tensor, nn

from qcore import dtypes
from qcore.dtypes import DTypeLike, QDType, QScheme, QSchemeLike
from qcore.errors import ConfigError, ObserverError
from qcore.factory import Factory
from qcore.qparams import calculate_qparams as _qparams_from_range
from qcore.qparams import quant_range
from qcore.quant_spec import DEFAULT_EPS, QuantSpec

__all__ = ["ObserverBase", "UniformQuantizationObserverBase"]


def build_spec(owner: str, **fields: Any) -> QuantSpec:
    """A QuantSpec whose construction errors name the observer that was being built."""
    try:
        return QuantSpec(**fields)
    except ConfigError as exc:
        raise ConfigError(f"{owner}: {exc}") from None


class ObserverBase(nn.Module, metaclass=abc.ABCMeta):
    """Base of every observer: ``forward`` records and returns ``x``; ``calculate_qparams`` reports.

    Subclasses set ``self.spec``; ``dtype``, ``qscheme``, ``is_dynamic`` and
    ``reduce_range`` read it, and assigning them builds a new, re-validated spec.
    """

    spec: QuantSpec

    def __init__(self, dtype: DTypeLike = dtypes.uint8, is_dynamic: bool = False) -> None:
        super().__init__()
        self.spec = build_spec(type(self).__name__, dtype=dtype, is_dynamic=is_dynamic)

    @abc.abstractmethod
    def forward(self, x: Tensor) -> Tensor:
        """Record statistics of ``x`` and return ``x`` itself."""

    @abc.abstractmethod
    def calculate_qparams(self) -> tuple[Tensor, Tensor]:
        """(scale, zero_point) from what was observed."""

    @classmethod
    def with_args(cls, **kwargs: Any) -> Factory:
        """A factory building ``cls(**kwargs)``: what qconfigs hold instead of instances."""
        return Factory(cls, kwargs)

    def _evolve(self, **changes: Any) -> None:
        spec = build_spec(type(self).__name__, **{**attrs.asdict(self.spec, recurse=False), **changes})
        self._check_spec(spec)
        self.spec = spec

    def _check_spec(self, spec: QuantSpec) -> None:
        """Raise ConfigError if this observer cannot work with ``spec`` (subclasses add rules)."""

    @property
    def dtype(self) -> QDType:
        return self.spec.dtype

    @dtype.setter
    def dtype(self, value: DTypeLike) -> None:
        self._evolve(dtype=value)

    @property
    def qscheme(self) -> QScheme:
        return self.spec.qscheme

    @qscheme.setter
    def qscheme(self, value: QSchemeLike) -> None:
        self._evolve(qscheme=value)

    @property
    def is_dynamic(self) -> bool:
        return self.spec.is_dynamic

    @is_dynamic.setter
    def is_dynamic(self, value: bool) -> None:
        self._evolve(is_dynamic=value)

    @property
    def reduce_range(self) -> bool:
        return self.spec.reduce_range

    def _require_finite(self, x: Tensor, *stats: Tensor) -> None:
        """Raise ObserverError if ``x`` held NaN/inf, judged from its (NaN-propagating) min/max."""
        ok = torch.isfinite(stats[0]).all()
        for stat in stats[1:]:
            ok = ok & torch.isfinite(stat).all()
        if bool(ok):
            return
        bad = int((~torch.isfinite(x)).sum())
        raise ObserverError(
            f"{type(self).__name__} got {bad} non-finite value(s) (NaN or inf) among the {x.numel()} values "
            f"of an input of shape {tuple(x.shape)}; find where the model or the calibration data produces them "
            "and fix it before calibrating"
        )


class UniformQuantizationObserverBase(ObserverBase):
    """Base of observers that compute affine/symmetric qparams from a min/max range.

    Takes torch.ao's constructor arguments; dtypes and qschemes may be torch
    values, qcore values or strings. ``eps`` is kept as a float32 buffer, as in
    torch.ao, so state dicts carry it.
    """

    #: True: per-channel qschemes only; False: per-tensor only; None: either.
    per_channel: ClassVar[Optional[bool]] = None
    #: Whether ``is_dynamic=True`` (qparams taken from each input at run time) makes sense.
    supports_dynamic: ClassVar[bool] = True

    # torch.ao's state-dict format version 3 (buffers min_val/max_val/eps); saying so
    # lets torch.ao observers load qcore state dicts without their legacy conversions.
    _version = 3

    eps: Tensor

    def __init__(
        self,
        dtype: DTypeLike = dtypes.uint8,
        qscheme: QSchemeLike = dtypes.per_tensor_affine,
        reduce_range: bool = False,
        quant_min: Optional[int] = None,
        quant_max: Optional[int] = None,
        factory_kwargs: Optional[dict[str, Any]] = None,
        eps: float = DEFAULT_EPS,
        is_dynamic: bool = False,
        *,
        ch_axis: int = 0,
    ) -> None:
        nn.Module.__init__(self)
        name = type(self).__name__
        self.spec = build_spec(
            name,
            dtype=dtype,
            qscheme=qscheme,
            quant_min=quant_min,
            quant_max=quant_max,
            ch_axis=ch_axis,
            reduce_range=reduce_range,
            is_dynamic=is_dynamic,
            eps=eps,
        )
        self._check_spec(self.spec)
        kwargs = torch.nn.factory_kwargs(factory_kwargs)
        self.register_buffer("eps", torch.tensor([self.spec.eps], **kwargs))

    def _check_spec(self, spec: QuantSpec) -> None:
        name = type(self).__name__
        if spec.dtype.is_float:
            raise ConfigError(
                f"{name} computes integer qparams and cannot observe for the float dtype {spec.dtype.name}; "
                f"use PlaceholderObserver.with_args(dtype={spec.dtype.name!r}) (float types need no qparams) "
                "or an integer dtype such as uint8/int8"
            )
        if self.per_channel is False and spec.is_per_channel:
            raise ConfigError(
                f"{name} computes one scale/zero point per tensor and cannot use {spec.qscheme.value}; "
                "use PerChannelMinMaxObserver (or MovingAveragePerChannelMinMaxObserver) for per-channel qparams, "
                "or a per_tensor_affine/per_tensor_symmetric qscheme"
            )
        if self.per_channel is True and not spec.is_per_channel:
            raise ConfigError(
                f"{name} computes one scale/zero point per channel and cannot use {spec.qscheme.value}; "
                "use MinMaxObserver (or another per-tensor observer) for per-tensor qparams, "
                "or a per_channel_affine/per_channel_symmetric/per_channel_affine_float_qparams qscheme"
            )
        try:
            quant_range(spec)
        except ConfigError as exc:
            raise ConfigError(f"{name}: {exc}") from None
        if spec.is_dynamic and not self.supports_dynamic:
            raise ConfigError(
                f"{name} does not support dynamic quantization (is_dynamic=True); dynamic activations get their "
                "qparams from each input at run time: use PlaceholderObserver.with_args(dtype=..., is_dynamic=True) "
                "or MinMaxObserver"
            )
        if spec.is_symmetric and spec.reduce_range and spec.dtype is dtypes.uint8:
            raise ConfigError(
                f"{name}: reduce_range cannot be combined with symmetric quantization of uint8 "
                "(the zero point 128 would fall outside the reduced range 0..127); "
                "use dtype int8, an affine qscheme, or drop reduce_range"
            )

    @property
    def quant_min(self) -> int:
        """The smallest quantized value actually used (after ``reduce_range``)."""
        return quant_range(self.spec)[0]

    @property
    def quant_max(self) -> int:
        """The largest quantized value actually used (after ``reduce_range``)."""
        return quant_range(self.spec)[1]

    @property
    def has_customized_qrange(self) -> bool:
        return self.spec.quant_min is not None

    def _calculate_qparams(self, min_val: Tensor, max_val: Tensor) -> tuple[Tensor, Tensor]:
        """qparams for a range under this observer's spec and its ``eps`` buffer."""
        return _qparams_from_range(min_val, max_val, self.spec, eps=self.eps, owner=type(self).__name__)

    def reset_min_max_vals(self) -> None:
        raise NotImplementedError(f"{type(self).__name__} cannot reset its min/max values")

    def _spec_repr(self) -> str:
        s = self.spec
        text = f"dtype={s.dtype.name}, qscheme={s.qscheme.value}, quant_min={self.quant_min}, quant_max={self.quant_max}"
        if s.is_per_channel:
            text += f", ch_axis={s.ch_axis}"
        if s.reduce_range:
            text += ", reduce_range=True"
        if s.is_dynamic:
            text += ", is_dynamic=True"
        return text


def is_unset(min_val: Tensor, max_val: Tensor) -> bool:
    """True while a per-tensor min/max pair still holds its initial (+inf, -inf)."""
    return bool((min_val == float("inf")) & (max_val == float("-inf")))
