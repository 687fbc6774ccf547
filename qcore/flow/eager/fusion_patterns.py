"""The core's fusion patterns and fuser methods (torch.ao's fuser_method_mappings).

A *fuser* is ``fuser(is_qat: bool, *modules) -> nn.Module``: it receives the
modules of one pattern in execution order and returns the module that replaces
the first of them (the others become ``nn.Identity``). It must not modify the
modules it is given. With ``is_qat=False`` (``fuse_modules``) BatchNorm is
folded exactly into the preceding conv/linear, so the modules must be in eval
mode; with ``is_qat=True`` (``fuse_modules_qat``) the modules are kept as a
fused float container (``qcore.nn.intrinsic.ConvBn2d`` ...) that
``prepare_qat`` swaps for its QAT module, so BN-containing groups must be in
train mode. A fuser raises :class:`~qcore.errors.ConfigError` for modules it
cannot fuse.

Plugins add patterns the same way :func:`register_core_fusion_patterns` does,
from their ``qcore_register_fusion_patterns(registry)`` hookimpl.
"""

from __future__ import annotations

import copy
from typing import Any, Callable

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_conv_bn_weights, fuse_linear_bn_eval

from qcore.errors import ConfigError
from qcore.nn.intrinsic import modules as nni

__all__ = [
    "CORE_FUSION_PATTERNS",
    "fuse_conv_bn",
    "fuse_conv_bn_relu",
    "fuse_convtranspose_bn",
    "fuse_linear_bn",
    "register_core_fusion_patterns",
    "sequential_fuser",
]

Fuser = Callable[..., nn.Module]

_CONV_BN = {nn.Conv1d: nni.ConvBn1d, nn.Conv2d: nni.ConvBn2d, nn.Conv3d: nni.ConvBn3d}
_CONV_BN_RELU = {nn.Conv1d: nni.ConvBnReLU1d, nn.Conv2d: nni.ConvBnReLU2d, nn.Conv3d: nni.ConvBnReLU3d}
_CONV_RELU = {nn.Conv1d: nni.ConvReLU1d, nn.Conv2d: nni.ConvReLU2d, nn.Conv3d: nni.ConvReLU3d}
_CONVT_BN = {
    nn.ConvTranspose1d: nni.ConvTransposeBn1d,
    nn.ConvTranspose2d: nni.ConvTransposeBn2d,
    nn.ConvTranspose3d: nni.ConvTransposeBn3d,
}


def _names(modules: tuple[nn.Module, ...]) -> str:
    return " + ".join(type(m).__name__ for m in modules)


def _check_mode(is_qat: bool, *modules: nn.Module) -> None:
    """BN fusion needs every module in eval mode (folding) or in train mode (QAT)."""
    if is_qat and not all(m.training for m in modules):
        raise ConfigError(
            f"fuse_modules_qat keeps {_names(modules)} as a QAT-trainable module and needs them in train mode; "
            f"call model.train() first, or use fuse_modules on an eval-mode model to fold the BatchNorm"
        )
    if not is_qat and any(m.training for m in modules):
        raise ConfigError(
            f"fuse_modules folds the BatchNorm of {_names(modules)} using its running statistics and needs them "
            f"in eval mode; call model.eval() first, or use fuse_modules_qat on a train-mode model for QAT"
        )


def _check_bn(
    out_channels: int, bn: nn.modules.batchnorm._BatchNorm, owner: nn.Module, is_qat: bool, broadcast: bool = False
) -> None:
    if bn.num_features != out_channels and not (broadcast and bn.num_features == 1):
        raise ConfigError(
            f"cannot fuse {type(owner).__name__} with {out_channels} output channels and "
            f"{type(bn).__name__}({bn.num_features}): the BatchNorm must have one feature per output channel"
        )
    if is_qat and not bn.affine:
        raise ConfigError(f"QAT fusion needs {type(bn).__name__} with affine=True")
    if bn.running_mean is None or bn.running_var is None:
        raise ConfigError(
            f"cannot fuse {type(bn).__name__} with track_running_stats=False: it has no running statistics to "
            f"{'track during QAT' if is_qat else 'fold'}"
        )


def _fold_conv_bn(conv: Any, bn: nn.modules.batchnorm._BatchNorm) -> Any:
    """A new conv (or transposed conv) computing ``bn(conv(x))`` of eval-mode modules, using torch's fusion utility."""
    if not conv.transposed:
        return fuse_conv_bn_eval(conv, bn)
    if conv.groups == 1:
        return fuse_conv_bn_eval(conv, bn, transpose=True)
    # torch's utility scales dim 1 of the weight, which for a grouped transposed conv holds only
    # out_channels / groups channels: lay the groups out along dim 1 so output channel g*(C/g)+j lines up.
    w = conv.weight
    g = conv.groups
    in_per_group, out_per_group = w.shape[0] // g, w.shape[1]
    kernel = tuple(w.shape[2:])
    grouped = w.detach().reshape(g, in_per_group, out_per_group, *kernel).transpose(0, 1).reshape(
        in_per_group, g * out_per_group, *kernel
    )
    weight, bias = fuse_conv_bn_weights(
        grouped, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias, transpose=True
    )
    weight = weight.detach().reshape(in_per_group, g, out_per_group, *kernel).transpose(0, 1).reshape(w.shape)
    folded = copy.deepcopy(conv)
    folded.weight = nn.Parameter(weight.contiguous(), w.requires_grad)
    folded.bias = bias
    return folded


def fuse_conv_bn(is_qat: bool, conv: nn.Module, bn: nn.Module) -> nn.Module:
    """Conv{1,2,3}d + BatchNorm: eval mode folds the BN into a new conv; QAT gives ``ConvBn{n}d(conv, bn)``."""
    _check_mode(is_qat, conv, bn)
    _check_bn(conv.out_channels, bn, conv, is_qat)  # type: ignore[arg-type]
    if is_qat:
        return _fused_class(_CONV_BN, conv, "conv + bn")(conv, bn)
    return _fold_conv_bn(conv, bn)  # type: ignore[arg-type]


def fuse_conv_bn_relu(is_qat: bool, conv: nn.Module, bn: nn.Module, relu: nn.Module) -> nn.Module:
    """Conv + BatchNorm + ReLU: eval mode gives ``ConvReLU{n}d(folded conv, relu)``; QAT ``ConvBnReLU{n}d``."""
    _check_mode(is_qat, conv, bn)
    _check_bn(conv.out_channels, bn, conv, is_qat)  # type: ignore[arg-type]
    if is_qat:
        return _fused_class(_CONV_BN_RELU, conv, "conv + bn + relu")(conv, bn, relu)
    return _fused_class(_CONV_RELU, conv, "conv + relu")(_fold_conv_bn(conv, bn), relu)  # type: ignore[arg-type]


def fuse_linear_bn(is_qat: bool, linear: nn.Module, bn: nn.Module) -> nn.Module:
    """Linear + BatchNorm1d: eval mode folds the BN into a new Linear; QAT gives ``LinearBn1d(linear, bn)``."""
    _check_mode(is_qat, linear, bn)
    # eval-mode folding also accepts BatchNorm1d(1), broadcast over every output feature, as torch does
    _check_bn(linear.out_features, bn, linear, is_qat, broadcast=not is_qat)  # type: ignore[arg-type]
    if is_qat:
        return nni.LinearBn1d(linear, bn)  # type: ignore[arg-type]
    return fuse_linear_bn_eval(linear, bn)  # type: ignore[arg-type]


def fuse_convtranspose_bn(is_qat: bool, convt: nn.Module, bn: nn.Module) -> nn.Module:
    """ConvTranspose{1,2,3}d + BatchNorm: eval mode folds the BN into a new ConvTranspose; QAT gives ``ConvTransposeBn{n}d``."""
    _check_mode(is_qat, convt, bn)
    _check_bn(convt.out_channels, bn, convt, is_qat)  # type: ignore[arg-type]
    if is_qat:
        return _fused_class(_CONVT_BN, convt, "convtranspose + bn")(convt, bn)
    return _fold_conv_bn(convt, bn)  # type: ignore[arg-type]


def sequential_fuser(fused_cls: type) -> Fuser:
    """A fuser that ignores ``is_qat`` and wraps the modules in ``fused_cls`` (conv + relu, linear + relu, bn + relu)."""

    def fuser(is_qat: bool, *modules: nn.Module) -> nn.Module:
        return fused_cls(*modules)

    fuser.__name__ = fuser.__qualname__ = f"fuse_{fused_cls.__name__}"
    fuser.__doc__ = f"Wrap the modules in {fused_cls.__name__} (the same for PTQ and QAT)."
    return fuser


def _fused_class(table: dict[type, type], first: nn.Module, what: str) -> type:
    cls = table.get(type(first))
    if cls is None:
        raise ConfigError(
            f"no fused module for {what} starting with {type(first).__name__}; supported: "
            f"{', '.join(t.__name__ for t in table)}"
        )
    return cls


#: pattern (module types in execution order) -> fuser; each is registered for PTQ and for QAT.
CORE_FUSION_PATTERNS: dict[tuple[type, ...], Fuser] = {
    (nn.Conv1d, nn.BatchNorm1d): fuse_conv_bn,
    (nn.Conv1d, nn.BatchNorm1d, nn.ReLU): fuse_conv_bn_relu,
    (nn.Conv2d, nn.BatchNorm2d): fuse_conv_bn,
    (nn.Conv2d, nn.BatchNorm2d, nn.ReLU): fuse_conv_bn_relu,
    (nn.Conv3d, nn.BatchNorm3d): fuse_conv_bn,
    (nn.Conv3d, nn.BatchNorm3d, nn.ReLU): fuse_conv_bn_relu,
    (nn.Conv1d, nn.ReLU): sequential_fuser(nni.ConvReLU1d),
    (nn.Conv2d, nn.ReLU): sequential_fuser(nni.ConvReLU2d),
    (nn.Conv3d, nn.ReLU): sequential_fuser(nni.ConvReLU3d),
    (nn.Linear, nn.BatchNorm1d): fuse_linear_bn,
    (nn.Linear, nn.ReLU): sequential_fuser(nni.LinearReLU),
    (nn.BatchNorm2d, nn.ReLU): sequential_fuser(nni.BNReLU2d),
    (nn.BatchNorm3d, nn.ReLU): sequential_fuser(nni.BNReLU3d),
    (nn.ConvTranspose1d, nn.BatchNorm1d): fuse_convtranspose_bn,
    (nn.ConvTranspose2d, nn.BatchNorm2d): fuse_convtranspose_bn,
    (nn.ConvTranspose3d, nn.BatchNorm3d): fuse_convtranspose_bn,
}


def register_core_fusion_patterns(registry: Any) -> None:
    """Add the core's patterns to a FusionPatternRegistry, for PTQ (``qat=False``) and QAT (``qat=True``)."""
    for pattern, fuser in CORE_FUSION_PATTERNS.items():
        registry.add(pattern, fuser, qat=False)
        registry.add(pattern, fuser, qat=True)
