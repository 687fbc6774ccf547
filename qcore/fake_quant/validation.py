"""Checks that turn a fake-quant module's bad arguments into ConfigErrors naming the module and the fix."""

from __future__ import annotations

import inspect
from typing import Any, Optional

from torch import nn

from qcore import dtypes
from qcore.dtypes import QDType
from qcore.errors import ConfigError
from qcore.factory import Factory, as_factory

# What FakeQuantize needs from the module its observer factory builds.
_OBSERVER_ATTRIBUTES = ("calculate_qparams", "dtype", "qscheme", "quant_min", "quant_max")


def observer_factory(observer: Any, owner: str) -> Factory:
    """``observer`` as a Factory; an observer *instance* or a non-callable is a ConfigError."""
    try:
        factory = as_factory(observer, "observer")
    except ConfigError as exc:
        raise ConfigError(f"{owner}: {exc}") from exc
    cls = factory.cls
    if isinstance(cls, type) and not (issubclass(cls, nn.Module) and hasattr(cls, "calculate_qparams")):
        raise _not_an_observer(owner, factory, cls.__name__, "calculate_qparams")
    return factory


def _not_an_observer(owner: str, factory: Factory, what: str, missing: str) -> ConfigError:
    return ConfigError(
        f"{owner}: {factory!r} builds a {what}, which is not an observer (lacks {missing}); "
        "pass an observer class such as MovingAverageMinMaxObserver, or its .with_args(...)"
    )


def declared_dtype(factory: Factory, observer_kwargs: dict[str, Any]) -> QDType:
    """The dtype the observer will get: the call's kwargs, then the factory's, then the class default."""
    if "dtype" in observer_kwargs:
        return dtypes.qdtype(observer_kwargs["dtype"])
    if "dtype" in factory.arguments:
        return dtypes.qdtype(factory.arguments["dtype"])
    try:
        parameter = inspect.signature(factory.cls).parameters.get("dtype")
    except (TypeError, ValueError):
        parameter = None
    if parameter is not None and parameter.default is not inspect.Parameter.empty:
        return dtypes.qdtype(parameter.default)
    return dtypes.uint8


def check_quant_range(owner: str, quant_min: Optional[int], quant_max: Optional[int], dtype: QDType) -> None:
    """quant_min/quant_max come together, are ordered, and fit in the emulated dtype."""
    if (quant_min is None) != (quant_max is None):
        raise ConfigError(f"{owner}: set both quant_min and quant_max, or neither (got {quant_min}, {quant_max})")
    if quant_min is None:
        return
    if dtype.is_float:
        raise ConfigError(
            f"{owner}: quant_min/quant_max do not apply to the float dtype {dtype.name}; "
            "fake quantization emulates integer dtypes (int8, uint8, int4, uint4, int32)"
        )
    if quant_min > quant_max:
        raise ConfigError(f"{owner}: quant_min ({quant_min}) is greater than quant_max ({quant_max}); swap them")
    if quant_min < dtype.quant_min or quant_max > dtype.quant_max:
        raise ConfigError(
            f"{owner}: quant_min/quant_max ({quant_min}, {quant_max}) fall outside {dtype.name}'s range "
            f"({dtype.quant_min}, {dtype.quant_max}); pass quant_min/quant_max within it or choose another dtype"
        )


def build_observer(factory: Factory, kwargs: dict[str, Any], owner: str) -> nn.Module:
    """``factory(**kwargs)``, with the observer's own complaint re-raised as a ConfigError naming ``owner``."""
    try:
        observer = factory(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{owner}: {exc}") from exc
    except (TypeError, ValueError, NotImplementedError, AssertionError) as exc:
        raise ConfigError(f"{owner}: cannot build its observer {factory!r} with {kwargs}: {exc}") from exc
    if hasattr(observer, "dtype") and dtypes.qdtype(observer.dtype).is_float:
        raise ConfigError(
            f"{owner}: its observer has the float dtype {dtypes.qdtype(observer.dtype).name}; fake quantization "
            "emulates integer dtypes. Use PlaceholderObserver directly for float16"
        )
    missing = [name for name in _OBSERVER_ATTRIBUTES if not hasattr(observer, name)]
    if not isinstance(observer, nn.Module) or missing:
        raise _not_an_observer(owner, factory, type(observer).__name__, ", ".join(missing) or "nn.Module")
    return observer
