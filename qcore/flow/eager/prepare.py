"""prepare / prepare_qat: attach observers (or fake-quants) where a qconfig applies, as torch.ao does.

Each observed module gets its output observer as the child
``activation_post_process`` and a forward hook that feeds it; QuantStub gets
one (it observes the model's input), DeQuantStub none. Modules whose output
range is fixed (Sigmoid, Tanh, ...) get a fixed-qparams observer. The
caller's model is copied unless ``inplace=True``.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any, Iterable, Mapping, Optional

import torch
from torch import nn
from torch.nn.utils.parametrize import type_before_parametrizations

from qcore.errors import ConfigError, QcoreError
from qcore.fake_quant import FakeQuantizeBase, FixedQParamsFakeQuantize
from qcore.flow import mappings
from qcore.flow.eager.custom_modules import float_to_observed_mapping
from qcore.flow.eager.propagate import propagate_qconfig_
from qcore.observers import FixedQParamsObserver, ObserverBase
from qcore.qconfig import is_qat_qconfig
from qcore.stubs import DeQuantStub, QuantWrapper

__all__ = ["prepare", "prepare_qat", "add_quant_dequant", "is_activation_post_process"]


def is_activation_post_process(module: Any) -> bool:
    """Whether ``module`` is an observer or fake-quant module (what prepare attaches)."""
    return isinstance(module, (ObserverBase, FakeQuantizeBase))


def _observer_forward_hook(self: nn.Module, input: Any, output: Any) -> Any:
    """Forward hook: the module's output goes through its observer."""
    return self.activation_post_process(output)


def _observer_forward_pre_hook(self: nn.Module, input: Any) -> Any:
    """Forward pre-hook for memoryless observers: the module's input goes through its observer."""
    return self.activation_post_process(input[0])


OBSERVER_HOOKS = (_observer_forward_hook, _observer_forward_pre_hook)


def class_label(cls: type) -> str:
    """``Linear`` for torch.nn and user classes, ``qcore.nn.qat.Linear`` for qcore's (which share names)."""
    if cls.__module__.startswith("qcore.nn."):
        return f"{cls.__module__.rpartition('.')[0]}.{cls.__name__}"
    return cls.__name__


def describe(name: str, module: nn.Module) -> str:
    """How errors name a module: its qualified name and class."""
    label = class_label(type(module))
    return f"{name!r} ({label})" if name else f"the model ({label})"


def _lazy_class(path: str) -> tuple[type, ...]:
    cls = mappings._resolve(path)
    return () if cls is None else (cls,)


def fused_module_types() -> tuple[type, ...]:
    """qcore's fused-module base (swapped and observed as one unit)."""
    return _lazy_class("qcore.nn.intrinsic:FusedModule")


def functional_module_types() -> tuple[type, ...]:
    """FloatFunctional / QFunctional: their output observer is a predefined attribute."""
    return _lazy_class("qcore.nn.quantized:FloatFunctional") + _lazy_class("qcore.nn.quantized:QFunctional")


def is_leaf(module: nn.Module) -> bool:
    """No children other than parametrizations and attached observers."""
    return all(
        name == "parametrizations" or is_activation_post_process(child) for name, child in module.named_children()
    )


def _is_memoryless(observer: nn.Module) -> bool:
    inner = getattr(observer, "activation_post_process", observer) if isinstance(observer, FakeQuantizeBase) else observer
    return getattr(inner, "averaging_constant", None) == 1


def _fixed_qparams_post_process(module: nn.Module, qconfig: Any, activation: nn.Module) -> Optional[nn.Module]:
    """A fixed-qparams observer (fake-quant when training) for Sigmoid-like modules, in the qconfig's dtype."""
    value_range = mappings.FIXED_QPARAMS_RANGES.get(type_before_parametrizations(module))
    dtype = getattr(activation, "dtype", None)
    if value_range is None or dtype is None or dtype.is_float:
        return None
    low, high = value_range
    scale = (high - low) / 256.0
    zero_point = dtype.quant_min + round(-low / scale)
    observer = FixedQParamsObserver.with_args(
        scale=scale, zero_point=zero_point, dtype=dtype, quant_min=dtype.quant_min, quant_max=dtype.quant_max
    )
    if module.training or is_qat_qconfig(qconfig):
        return FixedQParamsFakeQuantize(observer=observer)
    return observer()


class _Observing:
    """One prepare pass: builds each module's output observer and checks it can be honoured."""

    def __init__(self, device: Optional[torch.device], static: bool) -> None:
        self.device = device
        self.static = static

    def activation_post_process(self, name: str, module: nn.Module) -> nn.Module:
        qconfig = module.qconfig
        try:
            observer = qconfig.activation()
        except QcoreError as exc:
            raise ConfigError(f"prepare: cannot build the activation observer of {describe(name, module)}: {exc}") from exc
        if self.static and getattr(observer, "is_dynamic", False):
            raise ConfigError(
                f"prepare: the qconfig of {describe(name, module)} is for dynamic quantization (its activation "
                f"{type(observer).__name__} has is_dynamic=True), which needs no calibration: use "
                "qcore.quantize_dynamic(model, ...) instead, or a static qconfig such as qcore.get_default_qconfig()"
            )
        special = _fixed_qparams_post_process(module, qconfig, observer)
        if special is not None:
            observer = special
        if self.device is not None:
            observer.to(self.device)
        return observer

    def insert(self, name: str, module: nn.Module) -> None:
        """Attach the output observer and its hook (the observer's hook runs first)."""
        if getattr(module, "qconfig", None) is None or isinstance(module, DeQuantStub):
            return
        observer = self.activation_post_process(name, module)
        module.add_module("activation_post_process", observer)
        if _is_memoryless(observer):
            module.register_forward_pre_hook(_observer_forward_pre_hook, prepend=True)
        else:
            module.register_forward_hook(_observer_forward_hook, prepend=True)


def _unique_device(module: nn.Module) -> Optional[torch.device]:
    devices = {p.device for p in module.parameters() if p.device.type != "meta"}
    devices |= {b.device for b in module.buffers() if b.device.type != "meta"}
    if len(devices) > 1:
        raise ConfigError(f"prepare works on a model on one device; this one has parameters on {sorted(map(str, devices))}")
    return next(iter(devices), None)


def _add_observer_(
    module: nn.Module,
    qconfig_propagation_list: Optional[Iterable[type]] = None,
    non_leaf_module_list: Optional[Iterable[type]] = None,
    device: Optional[torch.device] = None,
    custom_module_class_mapping: Optional[Mapping[type, type]] = None,
    *,
    static: bool = True,
) -> None:
    """Attach output observers to ``module``'s leaves (and listed non-leaf modules) that have a qconfig, in place."""
    allow = set(mappings.get_default_qconfig_propagation_list() if qconfig_propagation_list is None
                else qconfig_propagation_list)
    if device is None:
        device = _unique_device(module)
    _Walk(
        _Observing(device, static), allow, set(non_leaf_module_list or ()), dict(custom_module_class_mapping or {})
    ).visit(module, "")


class _Walk:
    """torch.ao's _add_observer_ recursion, with qualified names for errors."""

    def __init__(self, observing: _Observing, allow: set[type], non_leaf: set[type], custom: dict[type, type]) -> None:
        self.observing = observing
        self.allow = allow
        self.non_leaf = non_leaf
        self.custom = custom
        self.fused = fused_module_types()
        self.functional = functional_module_types()
        self.no_observer = tuple(mappings.no_observer_set())

    def visit(self, module: nn.Module, prefix: str) -> None:
        for name, child in list(module.named_children()):
            qualified = f"{prefix}.{name}" if prefix else name
            child_type = type_before_parametrizations(child)
            observed = getattr(child, "qconfig", None) is not None
            if child_type is nn.Dropout or is_activation_post_process(child):
                continue
            if self.functional and issubclass(child_type, self.functional):
                if observed:
                    if not hasattr(child, "activation_post_process"):
                        raise ConfigError(f"prepare: {describe(qualified, child)} has no activation_post_process "
                                          "attribute to replace with its observer")
                    child.activation_post_process = self.observing.activation_post_process(qualified, child)
            elif (self.fused and isinstance(child, self.fused)) or child_type in self.non_leaf:
                self.observing.insert(qualified, child)
            elif observed and child_type in mappings.FIXED_QPARAMS_RANGES:
                self.observing.insert(qualified, child)
            elif observed and child_type in self.custom:
                self._swap_custom(module, name, qualified, child)
            else:
                self.visit(child, qualified)
        module_type = type_before_parametrizations(module)
        if module_type in self.allow and not isinstance(module, nn.Sequential) and (
            is_leaf(module) or hasattr(module, "weight_fake_quant")
        ):
            self.observing.insert(prefix, module)

    def _swap_custom(self, parent: nn.Module, name: str, qualified: str, child: nn.Module) -> None:
        observed_cls = self.custom[type_before_parametrizations(child)]
        try:
            observed = observed_cls.from_float(child)
        except Exception as exc:
            raise ConfigError(
                f"prepare: {observed_cls.__name__}.from_float failed for the custom module {describe(qualified, child)}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        if not isinstance(observed, nn.Module):
            raise ConfigError(f"prepare: {observed_cls.__name__}.from_float returned {type(observed).__name__}, "
                              f"not a module, for {describe(qualified, child)}")
        if getattr(observed, "qconfig", None) is None:
            observed.qconfig = child.qconfig
        observed._qcore_observed_custom_module = True  # convert swaps it as one unit
        setattr(parent, name, observed)
        if not (self.no_observer and isinstance(observed, self.no_observer)):
            self.observing.insert(qualified, observed)


def _check_module(model: Any, function: str) -> None:
    if not isinstance(model, nn.Module):
        raise ConfigError(f"{function} expects an nn.Module, got {type(model).__name__}")


def _prepare(
    model: nn.Module,
    inplace: bool,
    allow_list: Optional[Iterable[type]],
    observer_non_leaf_module_list: Optional[Iterable[type]],
    prepare_custom_config_dict: Optional[Mapping[str, Any]],
    static: bool,
) -> nn.Module:
    custom = float_to_observed_mapping(prepare_custom_config_dict)
    if not inplace:
        model = copy.deepcopy(model)
    propagate_qconfig_(model, None, prepare_custom_config_dict)
    if not any(getattr(m, "qconfig", None) is not None for m in model.modules()):
        warnings.warn(
            "prepare: no module has a qconfig, so nothing will be observed or quantized; set model.qconfig "
            "(e.g. qcore.get_default_qconfig()) or the .qconfig of the submodules to quantize",
            UserWarning,
            stacklevel=3,
        )
    _add_observer_(model, allow_list, observer_non_leaf_module_list, custom_module_class_mapping=custom, static=static)
    return model


def prepare(
    model: nn.Module,
    inplace: bool = False,
    allow_list: Optional[Iterable[type]] = None,
    observer_non_leaf_module_list: Optional[Iterable[type]] = None,
    prepare_custom_config_dict: Optional[Mapping[str, Any]] = None,
) -> nn.Module:
    """A copy of ``model`` (the model itself if ``inplace``) with observers where a qconfig applies, for calibration.

    The model must be in eval mode (post-training static quantization);
    ``allow_list`` replaces the module types that get observers,
    ``observer_non_leaf_module_list`` adds non-leaf types to observe, and
    ``prepare_custom_config_dict`` adds custom-module swaps.
    """
    _check_module(model, "prepare")
    training = [repr(name) if name else "the model" for name, m in model.named_modules() if m.training]
    if training:
        shown = ", ".join(training[:5]) + (f" and {len(training) - 5} more" if len(training) > 5 else "")
        raise ConfigError(
            f"prepare is for post-training static quantization and needs the model in eval mode, but {shown} "
            "are in training mode: call model.eval() first. For quantization-aware training use "
            "qcore.prepare_qat(model.train()) instead"
        )
    return _prepare(model, inplace, allow_list, observer_non_leaf_module_list, prepare_custom_config_dict, static=True)


def prepare_qat(model: nn.Module, mapping: Optional[Mapping[type, type]] = None, inplace: bool = False) -> nn.Module:
    """A copy of ``model`` with QAT modules swapped in and fake-quants attached; the model must be in train mode."""
    from qcore.flow.eager.convert import _convert, MappingLookup

    _check_module(model, "prepare_qat")
    if not model.training:
        raise ConfigError(
            "prepare_qat is for quantization-aware training and needs the model in training mode: call "
            "model.train() first. For post-training static quantization use qcore.prepare(model.eval())"
        )
    if mapping is None:
        mapping = mappings.get_default_qat_module_mappings()
    if not inplace:
        model = copy.deepcopy(model)
    propagate_qconfig_(model, None)
    _convert(model, MappingLookup(mapping), custom={}, lower_backend=None, purpose="prepare_qat")
    return _prepare(model, True, None, set(mapping.values()), None, static=False)


def add_quant_dequant(module: nn.Module) -> nn.Module:
    """Wrap every leaf with a qconfig in a QuantWrapper (in place; a quantized leaf model is returned wrapped)."""
    if is_leaf(module) and getattr(module, "qconfig", None):
        return QuantWrapper(module)
    for name, child in module.named_children():
        module._modules[name] = add_quant_dequant(child)
    return module
