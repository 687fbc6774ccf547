"""Turning configuration values (dtypes, qschemes, classes) into JSON-able values and back."""

from __future__ import annotations

import importlib
from typing import Any

import torch

from qcore import dtypes
from qcore.dtypes import QDType, QScheme
from qcore.errors import ConfigError


def class_name(cls: Any) -> str:
    """The registered name of an observer/fake-quant class, else its ``module:qualname``."""
    from qcore.registry import get_registry

    name = get_registry().name_of_class(cls)
    if name is not None:
        return name
    return f"{cls.__module__}:{cls.__qualname__}"


def resolve_class(name: str) -> Any:
    """The class registered under ``name`` (observers, then fake-quant), or a ``module:qualname`` import."""
    if ":" in name:
        module_name, _, qualname = name.partition(":")
        try:
            target: Any = importlib.import_module(module_name)
            for part in qualname.split("."):
                target = getattr(target, part)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"cannot import {name!r}: {exc}") from exc
        return target
    from qcore.registry import get_registry

    return get_registry().lookup_class(name)


def encode_value(value: Any) -> Any:
    """JSON-able form of one keyword argument of a Factory."""
    from qcore.factory import Factory

    if isinstance(value, QDType):
        return {"qdtype": value.name}
    if isinstance(value, torch.dtype):
        return {"torch_dtype": str(value).removeprefix("torch.")}
    if isinstance(value, QScheme):
        return {"qscheme": value.value}
    if type(value).__name__ == "qscheme":
        return {"qscheme": dtypes.qscheme(value).value}
    if isinstance(value, Factory):
        return {"factory": value.to_dict()}
    if isinstance(value, type):
        return {"class": class_name(value)}
    if isinstance(value, (list, tuple)):
        return [encode_value(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise ConfigError(f"cannot serialise the value {value!r} of type {type(value).__name__}")


def decode_value(value: Any) -> Any:
    """Inverse of :func:`encode_value`."""
    from qcore.factory import Factory

    if isinstance(value, dict):
        if "qdtype" in value:
            return dtypes.qdtype(value["qdtype"])
        if "torch_dtype" in value:
            found = getattr(torch, value["torch_dtype"], None)
            if not isinstance(found, torch.dtype):
                raise ConfigError(f"unknown torch dtype {value['torch_dtype']!r}")
            return found
        if "qscheme" in value:
            return dtypes.qscheme(value["qscheme"])
        if "factory" in value:
            return Factory.from_dict(value["factory"])
        if "class" in value:
            return resolve_class(value["class"])
        raise ConfigError(f"unknown encoded value {value!r}")
    if isinstance(value, list):
        return [decode_value(v) for v in value]
    return value
