"""Checks and construction steps every QAT module shares (qcore.nn.qat, qcore.nn.intrinsic.qat)."""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn
from torch.nn.utils.parametrize import type_before_parametrizations

from qcore.errors import ConfigError


def public_name(cls: type) -> str:
    """``qcore.nn.qat.Linear`` for the class defined in ``qcore.nn.qat.linear`` (its package's public name)."""
    return f"{cls.__module__.rpartition('.')[0]}.{cls.__name__}"


def type_name(cls: type) -> str:
    """``torch.nn.Conv2d`` rather than ``torch.nn.modules.conv.Conv2d``; qcore classes by their public name."""
    if cls.__module__.startswith("torch.nn.modules."):
        return f"torch.nn.{cls.__name__}"
    if cls.__module__.startswith("qcore."):
        return public_name(cls)
    return f"{cls.__module__}.{cls.__name__}"


def require_qconfig(cls: type, qconfig: Any, suggested: str = "qcore.default_qat_qconfig") -> Any:
    """``qconfig`` itself, or a ConfigError saying that a QAT module cannot be built without one."""
    if not qconfig:
        raise ConfigError(
            f"{public_name(cls)} needs a qconfig: it fake-quantizes its weight with qconfig.weight(). "
            f"Pass qconfig={suggested} (or another QConfig), or let "
            "qcore.prepare_qat build the module from a float module that carries a qconfig"
        )
    return qconfig


def build_weight_fake_quant(qconfig: Any, device: Optional[torch.device] = None) -> nn.Module:
    """A fresh weight fake-quant (or observer) from ``qconfig.weight``, on ``device`` when given."""
    weight_fake_quant = qconfig.weight()
    if device is not None:
        weight_fake_quant.to(device)
    return weight_fake_quant


def float_module_qconfig(cls: type, mod: nn.Module, suggested: str = "qcore.default_qat_qconfig") -> Any:
    """Check that ``mod`` is exactly ``cls._FLOAT_MODULE`` and carries a qconfig; return the qconfig."""
    expected = cls._FLOAT_MODULE  # type: ignore[attr-defined]
    got = type_before_parametrizations(mod)
    if got is not expected:
        raise ConfigError(
            f"{public_name(cls)}.from_float expects a {type_name(expected)} (exactly that type), "
            f"got {type_name(got)}"
        )
    qconfig = getattr(mod, "qconfig", None)
    if not qconfig:
        state = "has qconfig=None" if hasattr(mod, "qconfig") else "has no qconfig"
        raise ConfigError(
            f"{public_name(cls)}.from_float: the {type_name(got)} module {state}. Set "
            f"mod.qconfig = {suggested} (or another QConfig) first, or use qcore.prepare_qat, "
            "which propagates qconfigs and swaps modules for you"
        )
    return qconfig


def detached_parameter(value: Optional[torch.Tensor]) -> Optional[nn.Parameter]:
    """A new Parameter holding ``value`` without its autograd history (None stays None)."""
    return None if value is None else nn.Parameter(value.detach())


def float_conv_module(qat: nn.Module, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> nn.Module:
    """A float ``qat._FLOAT_CONV_MODULE`` shaped like ``qat`` holding ``weight``/``bias`` (detached).

    Wrapped with ReLU in ``qat._FUSED_FLOAT_MODULE`` when ``qat`` has a
    ``_FLOAT_RELU_MODULE``; left in ``qat``'s training mode.
    """
    conv = qat._FLOAT_CONV_MODULE(  # type: ignore[operator]
        qat.in_channels,
        qat.out_channels,
        qat.kernel_size,
        qat.stride,
        qat.padding,
        qat.dilation,
        qat.groups,
        bias is not None,
        qat.padding_mode,
    )
    conv.weight = detached_parameter(weight)
    conv.bias = detached_parameter(bias)
    result: nn.Module = conv
    if qat._FLOAT_RELU_MODULE is not None:
        result = qat._FUSED_FLOAT_MODULE(conv, qat._FLOAT_RELU_MODULE())  # type: ignore[operator]
    result.train(qat.training)
    return result
