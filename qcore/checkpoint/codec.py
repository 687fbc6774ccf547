"""JSON form of the plain values a manifest holds: constructor arguments, attributes, ``_extra_state``.

JSON has no tuples, dtypes or NaN, so those are written as one-key objects
whose key starts with ``$`` (``{"$tuple": [1, 2]}``, ``{"$qdtype": "int8"}``);
every dict is wrapped as ``{"$dict": {...}}`` so the two never mix. Decoding
only builds these plain values: nothing in a manifest names code to run.
"""

from __future__ import annotations

import math
from typing import Any

import attrs
import torch

from qcore import dtypes
from qcore.dtypes import QDType, QScheme
from qcore.errors import ConfigError
from qcore.checkpoint.errors import CheckpointError, CheckpointFormatError

__all__ = ["TensorRef", "ModuleRef", "Unencodable", "encode", "decode", "is_encodable"]


@attrs.frozen
class TensorRef:
    """A constructor argument that is one of the module's saved tensors (its state-dict key, relative)."""

    key: str


@attrs.frozen
class ModuleRef:
    """A constructor argument that is one of the module's children (its attribute name)."""

    name: str


class Unencodable(Exception):
    """A value with no JSON form (a function, an arbitrary object)."""


def encode(value: Any) -> Any:
    """The JSON form of ``value``; :class:`Unencodable` for anything but plain configuration values."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else {"$float": repr(value)}
    if isinstance(value, QDType):
        return {"$qdtype": value.name}
    if isinstance(value, QScheme):
        return {"$qscheme": value.value}
    if isinstance(value, torch.dtype):
        return {"$torch_dtype": str(value).replace("torch.", "")}
    if isinstance(value, TensorRef):
        return {"$tensor": value.key}
    if isinstance(value, ModuleRef):
        return {"$module": value.name}
    if isinstance(value, (tuple, torch.Size)):
        return {"$tuple": [encode(v) for v in value]}
    if isinstance(value, list):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise Unencodable(f"a dict with non-string keys ({type(value).__name__})")
        return {"$dict": {k: encode(v) for k, v in value.items()}}
    raise Unencodable(f"a {type(value).__module__}.{type(value).__qualname__}")


def is_encodable(value: Any) -> bool:
    try:
        encode(value)
    except Unencodable:
        return False
    return True


def encode_named(value: Any, where: str) -> Any:
    """:func:`encode`, raising a CheckpointError that says what ``where`` holds when it cannot."""
    try:
        return encode(value)
    except Unencodable as exc:
        raise CheckpointError(f"qcore.save: {where} holds {exc}, which a checkpoint cannot store") from None


def decode(value: Any, where: str = "the manifest") -> Any:
    """Inverse of :func:`encode`; a malformed value raises CheckpointFormatError naming ``where``."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, list):
        return [decode(v, where) for v in value]
    if not isinstance(value, dict) or len(value) != 1:
        raise CheckpointFormatError(f"malformed value {_short(value)} in {where}")
    (tag, payload), = value.items()
    try:
        if tag == "$dict" and isinstance(payload, dict):
            return {str(k): decode(v, where) for k, v in payload.items()}
        if tag == "$tuple" and isinstance(payload, list):
            return tuple(decode(v, where) for v in payload)
        if tag == "$float" and payload in ("nan", "inf", "-inf"):
            return float(payload)
        if tag == "$qdtype" and isinstance(payload, str):
            return dtypes.qdtype(payload)
        if tag == "$qscheme" and isinstance(payload, str):
            return dtypes.qscheme(payload)
        if tag == "$torch_dtype" and isinstance(payload, str):
            found = getattr(torch, payload, None) if payload.isidentifier() else None
            if isinstance(found, torch.dtype):
                return found
        if tag == "$tensor" and isinstance(payload, str):
            return TensorRef(payload)
        if tag == "$module" and isinstance(payload, str):
            return ModuleRef(payload)
    except ConfigError as exc:
        raise CheckpointFormatError(f"malformed value {_short(value)} in {where}: {exc}") from None
    raise CheckpointFormatError(f"malformed value {_short(value)} in {where}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
