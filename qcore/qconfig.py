"""QConfig: which observer or fake-quant to attach to a module's activations and weights.

A frozen value, validated at construction: each factory is instantiated once so
that a bad combination (quant_min > quant_max, a per-channel scheme given to a
per-tensor observer, ...) fails here, with the observer's own message, rather
than during calibration.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import attrs
import torch

from qcore.errors import ConfigError
from qcore.factory import Factory, as_factory
from qcore.fake_quant import defaults as fq
from qcore.fake_quant import FakeQuantizeBase
from qcore.observers import defaults as obs
from qcore.observers import NoopObserver, PlaceholderObserver


def _activation(value: Any) -> Factory:
    return as_factory(value, "activation observer")


def _weight(value: Any) -> Factory:
    return as_factory(value, "weight observer")


@attrs.frozen
class QConfig:
    """Observer (or fake-quant) factories for a module's output activation and its weight."""

    activation: Factory = attrs.field(converter=_activation)
    weight: Factory = attrs.field(converter=_weight)

    def __attrs_post_init__(self) -> None:
        for role in ("activation", "weight"):
            factory = getattr(self, role)
            try:
                instance = factory()
            except ConfigError as exc:
                raise ConfigError(f"QConfig {role}: {exc}") from exc
            except TypeError as exc:
                raise ConfigError(f"QConfig {role}: cannot build {factory!r}: {exc}") from exc
            if role == "activation" and getattr(instance, "qscheme", None) is not None and instance.qscheme.is_per_channel:
                raise ConfigError(
                    f"QConfig activation {factory!r} is per-channel; activations are quantized per tensor. "
                    "Use a per-tensor observer such as HistogramObserver or MinMaxObserver"
                )

    def to_dict(self) -> dict[str, Any]:
        return {"activation": self.activation.to_dict(), "weight": self.weight.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "QConfig":
        try:
            return cls(Factory.from_dict(data["activation"]), Factory.from_dict(data["weight"]))
        except KeyError as exc:
            raise ConfigError(f"QConfig description lacks {exc}; expected 'activation' and 'weight'") from None


QConfigAny = Optional[QConfig]

# The named qconfigs of torch.ao, with the same meaning.
default_qconfig = QConfig(activation=obs.default_observer, weight=obs.default_weight_observer)
default_debug_qconfig = QConfig(activation=obs.default_debug_observer, weight=obs.default_weight_observer)
default_per_channel_qconfig = QConfig(activation=obs.default_observer, weight=obs.default_per_channel_weight_observer)
default_dynamic_qconfig = QConfig(activation=obs.default_dynamic_quant_observer, weight=obs.default_weight_observer)
per_channel_dynamic_qconfig = QConfig(
    activation=obs.default_dynamic_quant_observer, weight=obs.default_per_channel_weight_observer
)
#: qcore's addition: activations quantized per token (uint8, full range), weights per channel symmetric int8.
per_token_dynamic_qconfig = QConfig(
    activation=obs.per_token_dynamic_quant_observer, weight=obs.default_per_channel_weight_observer
)
float16_dynamic_qconfig = QConfig(
    activation=PlaceholderObserver.with_args(dtype=torch.float16, is_dynamic=True),
    weight=PlaceholderObserver.with_args(dtype=torch.float16),
)
float16_static_qconfig = QConfig(
    activation=PlaceholderObserver.with_args(dtype=torch.float16),
    weight=PlaceholderObserver.with_args(dtype=torch.float16),
)
float_qparams_weight_only_qconfig = QConfig(
    activation=obs.default_placeholder_observer, weight=obs.default_float_qparams_observer
)
float_qparams_weight_only_qconfig_4bit = QConfig(
    activation=obs.default_placeholder_observer, weight=obs.default_float_qparams_observer_4bit
)
default_qat_qconfig = QConfig(activation=fq.default_fake_quant, weight=fq.default_weight_fake_quant)
default_dynamic_qat_qconfig = QConfig(activation=fq.default_dynamic_fake_quant, weight=fq.default_weight_fake_quant)
default_weight_only_qconfig = QConfig(activation=torch.nn.Identity, weight=fq.default_weight_fake_quant)
default_activation_only_qconfig = QConfig(activation=fq.default_fake_quant, weight=torch.nn.Identity)
default_qat_qconfig_v2 = QConfig(activation=fq.default_fused_act_fake_quant, weight=fq.default_fused_wt_fake_quant)
default_reuse_input_qconfig = QConfig(activation=obs.default_reuse_input_observer, weight=NoopObserver)
default_embedding_qat_qconfig = QConfig(
    activation=NoopObserver.with_args(dtype=torch.float32), weight=fq.default_embedding_fake_quant
)
default_embedding_qat_qconfig_4bit = QConfig(
    activation=NoopObserver.with_args(dtype=torch.float32), weight=fq.default_embedding_fake_quant_4bit
)
default_fixed_qparams_range_0to1_qconfig = QConfig(
    activation=obs.default_fixed_qparams_range_0to1_observer, weight=NoopObserver
)
default_fixed_qparams_range_neg1to1_qconfig = QConfig(
    activation=obs.default_fixed_qparams_range_neg1to1_observer, weight=NoopObserver
)
default_fixed_qparams_range_0to1_qat_qconfig = QConfig(
    activation=fq.default_fixed_qparams_range_0to1_fake_quant, weight=NoopObserver
)
default_fixed_qparams_range_neg1to1_qat_qconfig = QConfig(
    activation=fq.default_fixed_qparams_range_neg1to1_fake_quant, weight=NoopObserver
)


def is_qat_qconfig(qconfig: QConfigAny) -> bool:
    """Whether the qconfig simulates quantization in training (fake-quant) rather than observing."""
    if qconfig is None:
        return False
    return any(
        isinstance(factory.cls, type) and issubclass(factory.cls, FakeQuantizeBase)
        for factory in (qconfig.activation, qconfig.weight)
    )


def get_default_qconfig(backend: Optional[str] = None, version: int = 0) -> QConfig:
    """The post-training qconfig the backend recommends (the active backend when None)."""
    _check_version("get_default_qconfig", version, 0)
    return _describe(backend).default_qconfig


def get_default_qat_qconfig(backend: Optional[str] = None, version: int = 1) -> QConfig:
    """The quantization-aware-training qconfig the backend recommends (fused observe-and-fake-quant)."""
    _check_version("get_default_qat_qconfig", version, 1)
    return _describe(backend).default_qat_qconfig


def _check_version(function: str, version: int, supported: int) -> None:
    # torch.ao kept older default sets under version numbers; qcore has one set per backend.
    if version != supported:
        raise ConfigError(
            f"{function}(version={version}) is not available: qcore offers one default per backend "
            f"(torch.ao's version {supported}); drop the version argument"
        )


def get_default_dynamic_qconfig(backend: Optional[str] = None) -> QConfig:
    """The dynamic-quantization qconfig the backend recommends."""
    return _describe(backend).default_dynamic_qconfig or default_dynamic_qconfig


def _describe(backend: Optional[str]) -> Any:
    from qcore.backend_selection import get_backend_description

    return get_backend_description(backend)
