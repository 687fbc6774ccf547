"""Factory: a class plus keyword arguments, what ``Observer.with_args(...)`` returns.

It plays the part of torch.ao's ``_PartialWrapper`` but is a frozen value:
comparable, hashable by identity of its class and arguments, printable, and
serialisable by the class's registered name.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import attrs
import torch

from qcore import dtypes

from qcore.errors import ConfigError


_TORCH_QUANTIZED_DTYPES = frozenset(
    getattr(torch, name) for name in ("quint8", "qint8", "qint32", "quint4x2") if hasattr(torch, name)
)


def _canonical(value: Any) -> Any:
    # torch's quantized dtypes and qschemes are deprecated: hold qcore's equivalents instead,
    # so that torch.qint8 and "int8" spell the same factory.
    if isinstance(value, torch.dtype) and value in _TORCH_QUANTIZED_DTYPES:
        return dtypes.qdtype(value)
    if isinstance(value, torch.qscheme):
        return dtypes.qscheme(value)
    return value


def _freeze_kwargs(value: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted((k, _canonical(v)) for k, v in dict(value).items()))


@attrs.frozen(repr=False)
class Factory:
    """Builds ``cls(**kwargs)`` when called; ``with_args`` adds or overrides arguments."""

    cls: Callable[..., Any]
    kwargs: tuple[tuple[str, Any], ...] = attrs.field(default=(), converter=_freeze_kwargs)

    def __call__(self, **more: Any) -> Any:
        return self.cls(**{**dict(self.kwargs), **more})

    def with_args(self, **more: Any) -> "Factory":
        return Factory(self.cls, {**dict(self.kwargs), **more})

    @property
    def arguments(self) -> dict[str, Any]:
        return dict(self.kwargs)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.kwargs)
        return f"{getattr(self.cls, '__name__', self.cls)}.with_args({args})"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form: the class by its registered name (or import path) and its arguments."""
        from qcore.serialize_values import encode_value, class_name

        return {"class": class_name(self.cls), "kwargs": {k: encode_value(v) for k, v in self.kwargs}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Factory":
        from qcore.serialize_values import decode_value, resolve_class

        try:
            target = resolve_class(data["class"])
            kwargs = {k: decode_value(v) for k, v in data.get("kwargs", {}).items()}
        except KeyError as exc:
            raise ConfigError(f"factory description {dict(data)!r} lacks the key {exc}") from None
        return cls(target, kwargs)


def as_factory(value: Any, what: str = "observer") -> Factory:
    """Accept a Factory, a class, or a registered name; reject instances with a clear error."""
    if isinstance(value, Factory):
        return value
    if isinstance(value, str):
        from qcore.serialize_values import resolve_class

        return Factory(resolve_class(value))
    if isinstance(value, type):
        return Factory(value)
    if callable(value) and not hasattr(value, "forward"):
        # functools.partial and other plain callables: keep them as they are.
        return Factory(value)
    raise ConfigError(
        f"expected an {what} class, a Factory from .with_args(...), or a registered {what} name; "
        f"got an instance of {type(value).__name__}. Pass the class (e.g. MinMaxObserver) "
        f"or MinMaxObserver.with_args(...) instead of MinMaxObserver()"
    )
