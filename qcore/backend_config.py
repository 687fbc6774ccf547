"""BackendDescription: what a backend can run, how it wants it quantized, and how to lower to it.

A backend plugin registers one of these through ``qcore_register_backends``.
The flows read it to decide what to quantize (patterns and their dtype
constraints), which modules to fuse, and which default qconfigs to offer.
"""

from __future__ import annotations

import enum
from typing import Any, Callable, Mapping, Optional, Union

import attrs

from qcore import dtypes
from qcore.dtypes import QDType, QScheme
from qcore.errors import ConfigError


class ObservationType(str, enum.Enum):
    """How a pattern's output is observed, as in torch.ao's backend config."""

    OUTPUT_USE_DIFFERENT_OBSERVER_AS_INPUT = "output_use_different_observer_as_input"
    OUTPUT_SHARE_OBSERVER_WITH_INPUT = "output_share_observer_with_input"
    INPUT_OUTPUT_NOT_OBSERVED = "input_output_not_observed"


def _optional_qdtype(value: Any) -> Optional[QDType]:
    return None if value is None else dtypes.qdtype(value)


def _qschemes(values: Any) -> frozenset[QScheme]:
    return frozenset(dtypes.qscheme(v) for v in values)


@attrs.frozen
class DTypeConfig:
    """One combination of dtypes a pattern supports, with the ranges the kernel needs.

    ``input_qrange_max`` bounds the activation range (fbgemm without VNNI needs
    ``(0, 127)``: reduce_range); ``weight_qschemes`` lists the weight schemes the
    kernel accepts.
    """

    input_dtype: Optional[QDType] = attrs.field(default=None, converter=_optional_qdtype)
    output_dtype: Optional[QDType] = attrs.field(default=None, converter=_optional_qdtype)
    weight_dtype: Optional[QDType] = attrs.field(default=None, converter=_optional_qdtype)
    bias_dtype: Optional[QDType] = attrs.field(default=None, converter=_optional_qdtype)
    is_dynamic: bool = False
    input_qrange_max: Optional[tuple[int, int]] = None
    weight_qschemes: frozenset[QScheme] = attrs.field(factory=frozenset, converter=_qschemes)
    symmetric_activations_only: bool = False


PatternLike = Union[type, Callable[..., Any], str, tuple]


@attrs.frozen
class BackendPatternConfig:
    """A pattern (a module type, a function, or a tuple of them for a fused chain) and its support."""

    pattern: PatternLike
    dtype_configs: tuple[DTypeConfig, ...] = attrs.field(default=(), converter=tuple)
    observation_type: ObservationType = ObservationType.OUTPUT_USE_DIFFERENT_OBSERVER_AS_INPUT
    fused_module: Optional[type] = None
    qat_module: Optional[type] = None
    reference_quantized_module: Optional[type] = None


@attrs.frozen
class BackendDescription:
    """Everything the core needs to know about one backend.

    ``unavailable_reason`` is called when the backend is considered as the
    machine's default: it returns why the backend cannot run here, or None.
    Higher ``priority`` wins among available backends. ``dynamic_reduce_range``
    says whether dynamically quantized activations use 7 bits (fbgemm's int16
    accumulation without VNNI) or the full 8.
    """

    name: str
    summary: str
    default_qconfig: Any
    default_qat_qconfig: Any
    default_dynamic_qconfig: Any = None
    aliases: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    patterns: tuple[BackendPatternConfig, ...] = attrs.field(default=(), converter=tuple)
    priority: int = 0
    unavailable_reason: Callable[[], Optional[str]] = attrs.field(default=lambda: None)
    lowerings: Mapping[type, Callable[..., Any]] = attrs.field(factory=dict)
    default_qconfig_mapping: Optional[Callable[..., Any]] = None
    dynamic_reduce_range: bool = True

    def __attrs_post_init__(self) -> None:
        if not self.name or not self.name.replace("_", "").isalnum():
            raise ConfigError(f"backend name {self.name!r} must be a non-empty identifier")

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)

    def supports(self, pattern: PatternLike) -> Optional[BackendPatternConfig]:
        """The pattern config for ``pattern``, or None when the backend does not run it."""
        for config in self.patterns:
            if config.pattern == pattern:
                return config
        return None
