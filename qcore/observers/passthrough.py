"""Observers that compute no qparams: they carry a dtype (and flags) to convert, or record for debugging."""

from __future__ import annotations

from typing import Optional

from torch import Tensor

from qcore import dtypes
from qcore.dtypes import DTypeLike, QSchemeLike
from qcore.errors import ConfigError, ObserverError
from qcore.observers.base import ObserverBase, build_spec
from qcore.qparams import quant_range
from qcore.quant_spec import DEFAULT_EPS

__all__ = ["PlaceholderObserver", "NoopObserver", "ReuseInputObserver", "RecordingObserver"]


class _NoQParams(ObserverBase):
    """Shared by observers that only pass their configuration on."""

    #: Why this observer has no qparams, for the error ``calculate_qparams`` raises.
    no_qparams_reason = "it records no statistics"

    def forward(self, x: Tensor) -> Tensor:
        return x

    def calculate_qparams(self) -> tuple[Tensor, Tensor]:
        raise ObserverError(
            f"{type(self).__name__} has no qparams to calculate: {self.no_qparams_reason}; "
            "use MinMaxObserver, HistogramObserver or another statistics observer where qparams are needed"
        )


class PlaceholderObserver(_NoQParams):
    """Records only the target dtype: float16 casts, or dynamic quantization (``is_dynamic=True``).

    For dynamic quantization the qparams are computed from each input at run
    time, so nothing is observed. ``compute_dtype`` (deprecated in torch.ao)
    means ``is_dynamic=True``. ``per_token=True`` (dynamic only, qcore's
    addition) asks for one scale and zero point per token (per row of the
    input flattened to ``[-1, features]``) instead of one per tensor.
    """

    no_qparams_reason = "it only carries the dtype (float types need none; dynamic quantization computes them at run time)"

    def __init__(
        self,
        dtype: DTypeLike = dtypes.float32,
        custom_op_name: str = "",
        compute_dtype: Optional[DTypeLike] = None,
        quant_min: Optional[int] = None,
        quant_max: Optional[int] = None,
        qscheme: Optional[QSchemeLike] = None,
        eps: Optional[float] = None,
        is_dynamic: bool = False,
        per_token: bool = False,
    ) -> None:
        _NoQParams.__init__(self, dtype, is_dynamic)
        self.spec = build_spec(
            type(self).__name__,
            dtype=dtype,
            qscheme=dtypes.per_tensor_affine if qscheme is None else qscheme,
            quant_min=quant_min,
            quant_max=quant_max,
            is_dynamic=bool(is_dynamic or compute_dtype is not None),
            eps=DEFAULT_EPS if eps is None else eps,
        )
        self.custom_op = custom_op_name
        self.per_token = bool(per_token)
        if self.per_token and (not self.spec.is_dynamic or self.dtype.is_float):
            raise ConfigError(
                f"PlaceholderObserver: per_token=True describes dynamic integer activations (one scale and zero point "
                f"per token, computed at run time); it needs is_dynamic=True and an integer dtype, got "
                f"is_dynamic={self.spec.is_dynamic}, dtype={self.dtype.name}. Use qcore.per_token_dynamic_quant_observer"
            )

    @property
    def quant_min(self) -> Optional[int]:
        """The integer range's low end (None for float dtypes)."""
        return None if self.dtype.is_float else quant_range(self.spec)[0]

    @property
    def quant_max(self) -> Optional[int]:
        return None if self.dtype.is_float else quant_range(self.spec)[1]

    @property
    def eps(self) -> float:
        return self.spec.eps

    def extra_repr(self) -> str:
        text = f"dtype={self.dtype.name}, is_dynamic={self.is_dynamic}"
        return text + ", per_token=True" if self.per_token else text


class NoopObserver(_NoQParams):
    """Passes its dtype (float16 by default) to ``from_float``; observes nothing."""

    no_qparams_reason = "it only carries the dtype"

    def __init__(self, dtype: DTypeLike = dtypes.float16, custom_op_name: str = "") -> None:
        super().__init__(dtype, False)
        self.custom_op = custom_op_name

    def extra_repr(self) -> str:
        return f"dtype={self.dtype.name}"


class ReuseInputObserver(_NoQParams):
    """Marks an op (reshape, view, ...) whose output shares its input's observer (FX mode)."""

    no_qparams_reason = "the output reuses the input's observer and its qparams"

    def __init__(self) -> None:
        super().__init__(dtypes.uint8, False)


class RecordingObserver(_NoQParams):
    """Debug observer: keeps a detached copy of every tensor it sees in ``tensor_val``."""

    no_qparams_reason = "it is a debugging aid that only records tensors"

    def __init__(self, dtype: DTypeLike = dtypes.uint8) -> None:
        super().__init__(dtype, False)
        self.tensor_val: list[Tensor] = []

    def forward(self, x: Tensor) -> Tensor:
        self.tensor_val.append(x.detach().clone())
        return x

    def get_tensor_value(self) -> list[Tensor]:
        return self.tensor_val
