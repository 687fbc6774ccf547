"""Quantized dtypes and quantization schemes, named without torch's deprecated quantized dtypes.

Users arrive with ``torch.qint8``/``torch.per_tensor_affine`` or with strings
(``"int8"``); :func:`qdtype` and :func:`qscheme` turn either into qcore's own
values so the rest of the core never touches torch's quantized tensor types.
"""

from __future__ import annotations

import enum
from typing import Union

import attrs
import torch

from qcore.errors import ConfigError


@attrs.frozen(repr=False)
class QDType:
    """A quantized dtype: how values are stored and which integer range they may take."""

    name: str
    storage: torch.dtype
    quant_min: int
    quant_max: int
    bits: int
    is_float: bool = False
    values_per_byte: int = 1

    @property
    def is_signed(self) -> bool:
        return self.quant_min < 0

    def reduced_range(self) -> tuple[int, int]:
        """The range with one bit less, as fbgemm's ``reduce_range`` asks (avoids int16 overflow)."""
        if self.is_float:
            raise ConfigError(f"reduce_range does not apply to the float dtype {self.name!r}")
        return self.quant_min // 2, self.quant_max // 2

    def __repr__(self) -> str:
        return f"qcore.{self.name}"

    # The dtypes are singletons: copies and unpickled values are the canonical instance,
    # so `observer.dtype is qcore.int8` survives convert's deepcopy and torch.save.
    def __reduce__(self) -> tuple:
        return (qdtype, (self.name,))

    def __copy__(self) -> "QDType":
        return self

    def __deepcopy__(self, memo: dict) -> "QDType":
        return self


uint8 = QDType("uint8", torch.uint8, 0, 255, 8)
int8 = QDType("int8", torch.int8, -128, 127, 8)
int32 = QDType("int32", torch.int32, -(2**31), 2**31 - 1, 32)
uint4 = QDType("uint4", torch.uint8, 0, 15, 4, values_per_byte=2)
int4 = QDType("int4", torch.uint8, -8, 7, 4, values_per_byte=2)
float16 = QDType("float16", torch.float16, 0, 0, 16, is_float=True)
float32 = QDType("float32", torch.float32, 0, 0, 32, is_float=True)

ALL_QDTYPES: tuple[QDType, ...] = (uint8, int8, int32, uint4, int4, float16, float32)

_ALIASES: dict[str, QDType] = {
    "uint8": uint8, "quint8": uint8, "u8": uint8,
    "int8": int8, "qint8": int8, "i8": int8,
    "int32": int32, "qint32": int32, "i32": int32,
    "uint4": uint4, "quint4x2": uint4, "quint4": uint4,
    "int4": int4, "qint4": int4,
    "float16": float16, "fp16": float16, "half": float16,
    "float32": float32, "fp32": float32, "float": float32,
}


def _torch_dtype_aliases() -> dict[torch.dtype, QDType]:
    table = {
        torch.uint8: uint8, torch.int8: int8, torch.int32: int32,
        torch.float16: float16, torch.float32: float32,
    }
    # torch's quantized dtypes are deprecated; accept them while torch still has them.
    for attr, value in (("quint8", uint8), ("qint8", int8), ("qint32", int32), ("quint4x2", uint4)):
        dtype = getattr(torch, attr, None)
        if dtype is not None:
            table[dtype] = value
    return table


_TORCH_ALIASES = _torch_dtype_aliases()

DTypeLike = Union[QDType, torch.dtype, str]


def qdtype(value: DTypeLike) -> QDType:
    """Normalise a torch dtype (``torch.qint8``), a string (``"int8"``) or a QDType to a QDType."""
    if isinstance(value, QDType):
        return value
    if isinstance(value, torch.dtype):
        found = _TORCH_ALIASES.get(value)
    elif isinstance(value, str):
        found = _ALIASES.get(value.lower().removeprefix("torch."))
    else:
        found = None
    if found is None:
        names = ", ".join(sorted({d.name for d in ALL_QDTYPES}))
        raise ConfigError(f"unsupported quantized dtype {value!r}; use one of: {names} (or torch.qint8 / torch.quint8 / torch.qint32 / torch.float16)")
    return found


class QScheme(str, enum.Enum):
    """How qparams are shared (per tensor or per channel) and whether zero is fixed (symmetric)."""

    PER_TENSOR_AFFINE = "per_tensor_affine"
    PER_TENSOR_SYMMETRIC = "per_tensor_symmetric"
    PER_CHANNEL_AFFINE = "per_channel_affine"
    PER_CHANNEL_SYMMETRIC = "per_channel_symmetric"
    PER_CHANNEL_AFFINE_FLOAT_QPARAMS = "per_channel_affine_float_qparams"

    @property
    def is_per_channel(self) -> bool:
        return self.value.startswith("per_channel")

    @property
    def is_symmetric(self) -> bool:
        return self.value.endswith("symmetric")

    def __repr__(self) -> str:
        return f"qcore.{self.value}"

    __str__ = __repr__


per_tensor_affine = QScheme.PER_TENSOR_AFFINE
per_tensor_symmetric = QScheme.PER_TENSOR_SYMMETRIC
per_channel_affine = QScheme.PER_CHANNEL_AFFINE
per_channel_symmetric = QScheme.PER_CHANNEL_SYMMETRIC
per_channel_affine_float_qparams = QScheme.PER_CHANNEL_AFFINE_FLOAT_QPARAMS

QSchemeLike = Union[QScheme, "torch.qscheme", str]


def qscheme(value: QSchemeLike) -> QScheme:
    """Normalise a ``torch.per_tensor_affine``-style qscheme or its string name to a QScheme."""
    if isinstance(value, QScheme):
        return value
    name = str(value).lower().removeprefix("torch.")
    try:
        return QScheme(name)
    except ValueError:
        names = ", ".join(s.value for s in QScheme)
        raise ConfigError(f"unsupported qscheme {value!r}; use one of: {names}") from None


def to_torch_dtype(value: DTypeLike) -> torch.dtype:
    """torch's deprecated quantized dtype for a qcore dtype, for torch.ao interop in plugins and tests."""
    d = qdtype(value)
    table = {"uint8": "quint8", "int8": "qint8", "int32": "qint32", "uint4": "quint4x2"}
    if d.is_float:
        return d.storage
    return getattr(torch, table[d.name])


def to_torch_qscheme(value: QSchemeLike) -> "torch.qscheme":
    """torch's qscheme object of the same name, for torch.ao interop."""
    return getattr(torch, qscheme(value).value)
