"""convert / swap_module: replace observed modules by their quantized counterparts, then lower them.

Each module with a qconfig whose type the mapping knows becomes
``Target.from_float(module)`` (custom modules: ``from_observed``); fused and
custom modules swap as one unit. Every swapped module records its qualified
name as ``_qcore_name`` for error messages. Unless ``is_reference=True``,
each quantized module is offered to the active backend through the
``qcore_lower_module`` hook (the reference backend keeps it as it is), and
the model records the backend as ``_qcore_backend``.

What cannot be honoured is reported, never skipped in silence: a module that
was observed for quantization but has no quantized counterpart raises
ConfigError; a module with a qconfig that static quantization has no
counterpart for stays float with an :class:`UnquantizedModuleWarning`
(once per type, naming the modules); and a float module that receives a
quantized tensor raises QuantizationError naming it.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import warnings
from typing import Any, Callable, Iterator, Mapping, Optional, Tuple

import torch
from torch import nn
from torch.nn.utils.parametrize import type_before_parametrizations

from qcore.errors import ConfigError, QcoreError, QuantizationError, UncalibratedWarning
from qcore.flow import mappings
from qcore.flow.eager.custom_modules import observed_to_quantized_mapping
from qcore.flow.eager.prepare import (
    OBSERVER_HOOKS,
    _observer_forward_hook,
    class_label,
    describe,
    fused_module_types,
    is_activation_post_process,
    is_leaf,
)
from qcore.stubs import DeQuantStub, QuantStub

__all__ = ["convert", "lower_module", "swap_module", "UnquantizedModuleWarning", "MappingLookup"]


class UnquantizedModuleWarning(UserWarning):
    """convert left a module with a qconfig in float because the mapping has no quantized counterpart."""


class MappingLookup:
    """The target class for a module: ``mapping[type(module)]`` (None when absent)."""

    def __init__(self, mapping: Mapping[type, type]) -> None:
        if not isinstance(mapping, Mapping):
            raise ConfigError(f"mapping must be a dict {{float module class: quantized class}}, got {type(mapping).__name__}")
        self.mapping = dict(mapping)

    def __call__(self, module: nn.Module) -> Optional[type]:
        return self.mapping.get(type_before_parametrizations(module))

    def __contains__(self, cls: type) -> bool:
        return cls in self.mapping


TargetLookup = Callable[[nn.Module], Optional[type]]


def _unique_device(module: nn.Module) -> Optional[torch.device]:
    devices = {p.device for p in module.parameters()} | {b.device for b in module.buffers()}
    devices.discard(torch.device("meta"))
    if len(devices) > 1:
        raise ConfigError(f"swap_module works on modules on one device; got {sorted(map(str, devices))}")
    return next(iter(devices), None)


def _call_from_float(target: type, module: nn.Module, use_precomputed_fake_quant: bool) -> nn.Module:
    from_float = getattr(target, "from_float", None)
    if from_float is None:
        raise ConfigError(f"{target.__name__} has no from_float classmethod, so it cannot be a swap target")
    try:
        accepts = "use_precomputed_fake_quant" in inspect.signature(from_float).parameters
    except (TypeError, ValueError):
        accepts = False
    if accepts:
        return from_float(module, use_precomputed_fake_quant=use_precomputed_fake_quant)
    return from_float(module)


def _named_error(exc: Exception, where: str) -> Exception:
    """``exc`` re-raised with the module named: qcore errors keep their class, others become ConfigError."""
    message = f"{where}: {exc}" if isinstance(exc, QcoreError) else f"{where}: {type(exc).__name__}: {exc}"
    if isinstance(exc, QcoreError):
        try:
            return type(exc)(message)
        except TypeError:
            pass
    return ConfigError(message)


def _reference_backend() -> Any:
    from qcore.backend_selection import backend

    return backend("reference")


def _reissue(caught: list, where: str) -> None:
    """Re-emit warnings raised while building a module, naming the module for the uncalibrated ones."""
    for w in caught:
        if issubclass(w.category, UncalibratedWarning):
            warnings.warn(f"{where}: {w.message}", UncalibratedWarning, stacklevel=5)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)


def _swap(
    mod: nn.Module,
    name: str,
    target_for: TargetLookup,
    custom: Mapping[type, type],
    use_precomputed_fake_quant: bool,
    reference: bool = False,
) -> nn.Module:
    """The module that replaces ``mod`` (``mod`` itself when nothing applies).

    With ``reference``, custom modules that convert their insides themselves do
    so on the reference backend, so ``is_reference=True`` reaches them too.
    """
    if getattr(mod, "qconfig", None) is None:
        return mod
    mod_type = type_before_parametrizations(mod)
    custom_target = custom.get(mod_type)
    target = None if custom_target is not None else target_for(mod)
    if custom_target is None and target is None:
        return mod
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UncalibratedWarning)
            if custom_target is not None:
                with _reference_backend() if reference else contextlib.nullcontext():
                    new_mod = custom_target.from_observed(mod)
            else:
                new_mod = _call_from_float(target, mod, use_precomputed_fake_quant)
        _reissue(caught, f"convert: {describe(name, mod)}")
    except Exception as exc:
        made_by = f"{custom_target.__name__}.from_observed" if custom_target is not None else f"{target.__name__}.from_float"
        raise _named_error(exc, f"convert: cannot swap {describe(name, mod)} with {made_by}") from exc
    if not isinstance(new_mod, nn.Module):
        raise ConfigError(f"convert: swapping {describe(name, mod)} returned {type(new_mod).__name__}, not a module")
    # Keep the user's hooks; they now see quantized tensors. The observer hooks go with the observer.
    for hook in mod._forward_pre_hooks.values():
        if hook not in OBSERVER_HOOKS and hook is not _reject_quantized_input:
            new_mod.register_forward_pre_hook(hook)
    for hook in mod._forward_hooks.values():
        if hook is not _observer_forward_hook:
            new_mod.register_forward_hook(hook)
    device = _unique_device(mod)
    if device is not None:
        new_mod.to(device)
    return new_mod


def swap_module(
    mod: nn.Module,
    mapping: Mapping[type, type],
    custom_module_class_mapping: Mapping[type, type],
    use_precomputed_fake_quant: bool = False,
) -> nn.Module:
    """The quantized counterpart of ``mod`` when it has a qconfig and a mapping entry, else ``mod`` itself."""
    return _swap(mod, getattr(mod, "_qcore_name", ""), MappingLookup(mapping), custom_module_class_mapping,
                 use_precomputed_fake_quant)


def lower_module(module: nn.Module, backend: Optional[str], name: str = "") -> nn.Module:
    """``module`` lowered for ``backend`` through the ``qcore_lower_module`` hook (itself when no plugin lowers it).

    Convert, checkpoint loading and the FX flow all lower through here, so a
    backend's kernels are picked the same way whichever way a model arrives.
    """
    if backend is None:
        return module
    from qcore.registry import get_registry

    try:
        lowered = get_registry().hook.qcore_lower_module(backend=backend, module=module)
    except Exception as exc:
        raise _named_error(exc, f"lowering {describe(name, module)} for the backend {backend!r} failed") from exc
    if lowered is None:
        return module
    if not isinstance(lowered, nn.Module):
        raise ConfigError(f"the backend {backend!r} lowered {describe(name, module)} to "
                          f"{type(lowered).__name__}, not a module")
    return lowered


class _Conversion:
    """One convert pass: which modules were swapped, so the checks after it know the quantized region."""

    def __init__(self, target_for: TargetLookup, custom: Mapping[type, type], use_precomputed_fake_quant: bool,
                 lower_backend: Optional[str], purpose: str) -> None:
        self.target_for = target_for
        self.custom = dict(custom)
        self.use_precomputed_fake_quant = use_precomputed_fake_quant
        self.lower_backend = lower_backend
        self.purpose = purpose
        self.fused = fused_module_types()
        self.swapped: dict[int, type] = {}  # id(new module) -> source type

    def run(self, module: nn.Module, prefix: str = "") -> None:
        reassign = {}
        for name, child in module.named_children():
            if is_activation_post_process(child):
                continue
            qualified = f"{prefix}.{name}" if prefix else name
            unit = (
                (self.fused and isinstance(child, self.fused))
                or type_before_parametrizations(child) in self.custom
                or getattr(child, "_qcore_observed_custom_module", False)
            )
            if not unit:
                self.run(child, qualified)
            new = _swap(child, qualified, self.target_for, self.custom, self.use_precomputed_fake_quant,
                        reference=self.lower_backend is None and self.purpose == "convert")
            if new is child:
                self._check_unswapped(qualified, child)
                lowered = self._lower_passthrough(qualified, child)
                if lowered is not child:
                    reassign[name] = lowered
                continue
            new = self._lower(qualified, new)
            new._qcore_name = qualified
            self.swapped[id(new)] = type_before_parametrizations(child)
            reassign[name] = new
        for name, new in reassign.items():
            module._modules[name] = new

    def _check_unswapped(self, name: str, module: nn.Module) -> None:
        if self.purpose != "convert" or getattr(module, "qconfig", None) is None:
            return
        observer = getattr(module, "activation_post_process", None)
        if observer is None or not is_activation_post_process(observer) or isinstance(module, DeQuantStub):
            return
        cls = class_label(type(module))
        if getattr(module, "_qcore_observed_custom_module", False):
            raise ConfigError(
                f"convert: {describe(name, module)} is an observed custom module but no quantized class is given for "
                f"it: pass convert_custom_config_dict={{'observed_to_quantized_custom_module_class': {{{cls}: "
                "<quantized class>}}, or register the triple with a plugin (qcore_register_custom_modules)"
            )
        raise ConfigError(
            f"convert: {describe(name, module)} was prepared for quantization (it has an observer) but the mapping "
            f"has no quantized module for {cls}. Pass mapping={{{cls}: "
            "<quantized class>, ...}, register the swap with a plugin (qcore_register_quantized_modules), or set "
            "its qconfig to None before prepare to keep it float"
        )

    def _lower(self, name: str, module: nn.Module) -> nn.Module:
        return lower_module(module, self.lower_backend, name)

    def _lower_passthrough(self, name: str, module: nn.Module) -> nn.Module:
        """A float module that runs QTensors as they are (max pool, flatten, ...), in the quantized region
        (it has a qconfig), offered to the backend too: its kernels may run the op more directly."""
        if (self.purpose != "convert" or getattr(module, "qconfig", None) is None
                or type_before_parametrizations(module) not in mappings.QTENSOR_PASSTHROUGH_MODULES):
            return module
        lowered = self._lower(name, module)
        if lowered is not module:
            lowered._qcore_name = name
            self.swapped[id(lowered)] = type_before_parametrizations(module)
        return lowered

    # --- after the swaps --------------------------------------------------------------

    def float_leaves(self, module: nn.Module, prefix: str = "") -> Iterator[tuple[str, nn.Module]]:
        """(name, module) of the leaves outside every swapped subtree, observers left out."""
        if id(module) in self.swapped or is_activation_post_process(module):
            return
        if is_leaf(module):
            yield prefix, module
            return
        for name, child in module.named_children():
            yield from self.float_leaves(child, f"{prefix}.{name}" if prefix else name)

    def has_quantized_region(self) -> bool:
        return any(issubclass(source, QuantStub) for source in self.swapped.values())

    def finish(self, root: nn.Module, leaves: list[tuple[str, nn.Module]]) -> None:
        """Warn about float modules that asked for quantization; guard float modules against QTensors."""
        unquantized: dict[type, list[str]] = {}
        for name, module in leaves:
            module_type = type_before_parametrizations(module)
            if module_type in mappings.QTENSOR_PASSTHROUGH_MODULES or module is root or isinstance(module, _CONTAINERS):
                continue
            if getattr(module, "qconfig", None) is not None and not isinstance(module, (QuantStub, DeQuantStub)):
                unquantized.setdefault(module_type, []).append(name)
            if _guards_input(module):
                module._qcore_name = name
                if _reject_quantized_input not in module._forward_pre_hooks.values():
                    module.register_forward_pre_hook(_reject_quantized_input)
        for module_type, names in unquantized.items():
            shown = ", ".join(repr(n) for n in names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
            warnings.warn(
                f"convert: {len(names)} {class_label(module_type)} module(s) ({shown}) have a qconfig but the mapping "
                f"has no quantized {module_type.__name__}, so they stay float and cannot take quantized input: put a "
                "DeQuantStub before them, or set their qconfig to None to keep them float without this warning",
                UnquantizedModuleWarning,
                stacklevel=4,
            )


_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def _forward_takes_one_tensor(module: nn.Module) -> bool:
    try:
        params = list(inspect.signature(type(module).forward).parameters.values())[1:]
    except (TypeError, ValueError):
        return False
    if len(params) != 1 or params[0].kind not in (params[0].POSITIONAL_ONLY, params[0].POSITIONAL_OR_KEYWORD):
        return False
    return params[0].annotation in (inspect.Parameter.empty, torch.Tensor, "Tensor", "torch.Tensor")


def _guards_input(module: nn.Module) -> bool:
    """Float modules that compute (torch.nn layers, or anything with weights) and take one tensor."""
    computes = type(module).__module__.startswith("torch.nn.") or any(
        True for _ in module.parameters(recurse=False)
    ) or any(True for _ in module.buffers(recurse=False))
    return computes and _forward_takes_one_tensor(module)


def _reject_quantized_input(module: nn.Module, args: Tuple[torch.Tensor]) -> None:
    """Forward pre-hook convert puts on float modules: a QTensor input raises an error naming the module."""
    if not torch.jit.is_scripting():
        _raise_if_quantized(module, args)
    return None


def _raise_if_quantized(module: nn.Module, args: Tuple[Any, ...]) -> None:
    from qcore.qtensor import QTensor

    if any(isinstance(a, QTensor) for a in args):
        name = getattr(module, "_qcore_name", "") or type(module).__name__
        raise QuantizationError(
            f"{name!r} ({class_label(type(module))}) is a float module but received a quantized tensor (QTensor) from "
            f"the quantized part of the model. Put a DeQuantStub before {name!r} (x = self.dequant(x)) to go back to "
            f"float, or quantize {name!r} too (give it a qconfig instead of None)"
        )


def _remove_qconfig(module: nn.Module) -> None:
    """Delete ``qconfig`` attributes, observers and their hooks left after convert (torch.ao's cleanup)."""
    for child in module.children():
        _remove_qconfig(child)
    if hasattr(module, "qconfig"):
        try:
            del module.qconfig
        except AttributeError:
            pass
    observer = getattr(module, "activation_post_process", None)
    if observer is not None and is_activation_post_process(observer):
        delattr(module, "activation_post_process")
    for hooks in (module._forward_pre_hooks, module._forward_hooks):
        for handle_id in [h for h, fn in hooks.items() if fn in OBSERVER_HOOKS]:
            del hooks[handle_id]


def _convert(
    module: nn.Module,
    target_for: TargetLookup,
    custom: Mapping[type, type],
    lower_backend: Optional[str],
    purpose: str,
    use_precomputed_fake_quant: bool = False,
) -> _Conversion:
    """Swap in place; ``purpose`` is "convert" (checks on) or "prepare_qat" (swapping in QAT modules)."""
    conversion = _Conversion(target_for, custom, use_precomputed_fake_quant, lower_backend, purpose)
    conversion.run(module)
    return conversion


def convert(
    module: nn.Module,
    mapping: Optional[Mapping[type, type]] = None,
    inplace: bool = False,
    remove_qconfig: bool = True,
    is_reference: bool = False,
    convert_custom_config_dict: Optional[Mapping[str, Any]] = None,
    use_precomputed_fake_quant: bool = False,
) -> nn.Module:
    """A copy of the prepared and calibrated ``module`` (itself if ``inplace``) with quantized modules swapped in.

    ``mapping`` replaces the default static mapping; ``is_reference=True``
    keeps the reference quantized modules instead of lowering them for the
    active backend; ``convert_custom_config_dict`` adds custom-module swaps.
    """
    return _convert_model(module, MappingLookup(mapping) if mapping is not None else None, inplace, remove_qconfig,
                          is_reference, convert_custom_config_dict, use_precomputed_fake_quant)


def _convert_model(
    module: nn.Module,
    target_for: Optional[TargetLookup],
    inplace: bool,
    remove_qconfig: bool,
    is_reference: bool,
    convert_custom_config_dict: Optional[Mapping[str, Any]],
    use_precomputed_fake_quant: bool,
) -> nn.Module:
    from qcore.backend_selection import get_backend

    if not isinstance(module, nn.Module):
        raise ConfigError(f"convert expects an nn.Module, got {type(module).__name__}")
    if target_for is None:
        target_for = MappingLookup(mappings.get_default_static_quant_module_mappings())
    custom = observed_to_quantized_mapping(convert_custom_config_dict)
    backend = "reference" if is_reference else get_backend()
    if not inplace:
        module = copy.deepcopy(module)
    conversion = _convert(module, target_for, custom, None if is_reference else backend, "convert",
                          use_precomputed_fake_quant)
    if conversion.has_quantized_region():
        conversion.finish(module, list(conversion.float_leaves(module)))
    if remove_qconfig:
        _remove_qconfig(module)
    module._qcore_backend = backend
    return module
