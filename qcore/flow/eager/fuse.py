"""fuse_modules / fuse_modules_qat: replace chains like conv, bn, relu with one fused module.

torch.ao's semantics: ``modules_to_fuse`` is a list of module names or a list
of such lists; in each group the first module is replaced by the fused module
and the others by ``nn.Identity``; the first module's forward pre-hooks and the
last module's forward hooks move to the fused module. The fusers come from the
registry's fusion patterns (the core's and the plugins'), looked up by the
exact types of the group's modules.

Stricter than torch.ao, so mistakes fail loudly instead of changing the model
silently: every name must exist, the modules of a group must be *adjacent*
(children of one parent module; those holding parameters or buffers, such as
conv and bn, must be consecutive children in the listed order, while
stateless ones such as ReLU may be registered anywhere in that parent, since
models often declare activations apart), a group must match a registered
pattern, and no module may be in two groups. Every group is checked and
fused before the model is changed, so a failing call leaves it untouched.
"""

from __future__ import annotations

import copy
import difflib
from typing import Any, Callable, Optional, Sequence, Union

from torch import nn
from torch.nn.utils.parametrize import type_before_parametrizations

from qcore.errors import ConfigError

__all__ = ["fuse_known_modules", "fuse_modules", "fuse_modules_qat", "get_fuser_method"]

ModulesToFuse = Union[Sequence[str], Sequence[Sequence[str]]]
FuserFunc = Callable[..., Sequence[nn.Module]]

_CONFIG_KEYS = ("additional_fuser_method_mapping",)


def fuse_modules(
    model: nn.Module,
    modules_to_fuse: ModulesToFuse,
    inplace: bool = False,
    fuser_func: Optional[FuserFunc] = None,
    fuse_custom_config_dict: Optional[dict[str, Any]] = None,
) -> nn.Module:
    """Fuse each group of named modules for post-training quantization (BatchNorm is folded; eval mode).

    ``fuser_func(mod_list, is_qat, additional_fuser_method_mapping)`` may replace
    the registry lookup (torch.ao's ``fuse_known_modules`` signature); it returns
    one module per input module. ``fuse_custom_config_dict`` accepts
    ``{"additional_fuser_method_mapping": {(type, ...): fuser}}``, consulted
    before the registry. With ``inplace=False`` the caller's model is never
    modified: a deep copy is fused and returned.
    """
    return _fuse(model, modules_to_fuse, False, inplace, fuser_func, fuse_custom_config_dict)


def fuse_modules_qat(
    model: nn.Module,
    modules_to_fuse: ModulesToFuse,
    inplace: bool = False,
    fuser_func: Optional[FuserFunc] = None,
    fuse_custom_config_dict: Optional[dict[str, Any]] = None,
) -> nn.Module:
    """Fuse for quantization-aware training: conv + bn stays trainable (``ConvBn2d`` ...); train mode.

    Same arguments as :func:`fuse_modules`; the QAT fusion patterns are used.
    """
    return _fuse(model, modules_to_fuse, True, inplace, fuser_func, fuse_custom_config_dict)


def get_fuser_method(
    op_list: tuple[type, ...],
    is_qat: bool = False,
    additional_fuser_method_mapping: Optional[dict[tuple[type, ...], Callable[..., nn.Module]]] = None,
) -> Callable[..., nn.Module]:
    """The fuser registered for the module types ``op_list`` (the additional mapping first); ConfigError if none."""
    op_list = tuple(op_list)
    additional = _check_mapping(additional_fuser_method_mapping or {})
    fuser = additional.get(op_list)
    if fuser is None:
        fuser = _patterns().get(op_list, qat=is_qat)
    if fuser is None:
        raise ConfigError(_unsupported_message(op_list, None, is_qat, additional))
    return fuser


def fuse_known_modules(
    mod_list: Sequence[nn.Module],
    is_qat: bool,
    additional_fuser_method_mapping: Optional[dict[tuple[type, ...], Callable[..., nn.Module]]] = None,
) -> list[nn.Module]:
    """torch.ao's default ``fuser_func``: ``[fused, Identity, ...]`` for the modules, moving their hooks."""
    fused = _fuse_group(list(mod_list), None, is_qat, _check_mapping(additional_fuser_method_mapping or {}))
    return _replacements(list(mod_list), fused)


# -- the work -------------------------------------------------------------------


def _fuse(
    model: nn.Module,
    modules_to_fuse: ModulesToFuse,
    is_qat: bool,
    inplace: bool,
    fuser_func: Optional[FuserFunc],
    config: Optional[dict[str, Any]],
) -> nn.Module:
    api = "fuse_modules_qat" if is_qat else "fuse_modules"
    if not isinstance(model, nn.Module):
        raise ConfigError(f"{api} fuses the submodules of an nn.Module; got {type(model).__name__}")
    groups = _groups(modules_to_fuse, api)
    additional = _config_mapping(config, api)
    if fuser_func is not None and not callable(fuser_func):
        raise ConfigError(
            f"fuser_func must be callable as fuser_func(mod_list, is_qat, additional_fuser_method_mapping); "
            f"got {fuser_func!r}"
        )
    if not inplace:
        model = copy.deepcopy(model)
    _check_disjoint(groups)
    resolved = [[_get_submodule(model, name) for name in group] for group in groups]
    for group, mods in zip(groups, resolved):
        _check_adjacent(model, group, mods)

    if fuser_func is not None:  # the caller's fuser_func replaces the lookup (torch.ao's contract)
        for group, mods in zip(groups, resolved):
            new = list(fuser_func(mods, is_qat, additional))
            if len(new) != len(group) or not all(isinstance(m, nn.Module) for m in new):
                raise ConfigError(
                    f"fuser_func must return one nn.Module per input module ({len(group)} for {group}); got {new!r}"
                )
            for name, module in zip(group, new):
                _set_submodule(model, name, module)
        return model

    fused = [_fuse_group(mods, group, is_qat, additional) for group, mods in zip(groups, resolved)]
    for group, mods, module in zip(groups, resolved, fused):
        for name, replacement in zip(group, _replacements(mods, module)):
            _set_submodule(model, name, replacement)
    return model


def _fuse_group(
    mods: list[nn.Module], names: Optional[list[str]], is_qat: bool, additional: dict[tuple[type, ...], Any]
) -> nn.Module:
    """Run the registered fuser for ``mods``; the modules themselves are not changed."""
    types = tuple(type_before_parametrizations(m) for m in mods)
    fuser = additional.get(types) or _patterns().get(types, qat=is_qat)
    if fuser is None:
        raise ConfigError(_unsupported_message(types, names, is_qat, additional))
    label = _label(types, names)
    try:
        fused = fuser(is_qat, *mods)
    except ConfigError as exc:
        raise ConfigError(f"cannot fuse {label}: {exc}") from exc
    except Exception as exc:  # a plugin's fuser written in torch.ao's style (AssertionError, ...)
        name = getattr(fuser, "__qualname__", repr(fuser))
        raise ConfigError(f"cannot fuse {label}: the fuser {name} raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(fused, nn.Module):
        raise ConfigError(f"the fuser for {label} returned {fused!r}, not an nn.Module")
    if fused.training != mods[0].training:  # a new container defaults to train mode: match the modules it holds
        fused.training = mods[0].training
    return fused


def _replacements(mods: list[nn.Module], fused: nn.Module) -> list[nn.Module]:
    """``[fused, Identity, ...]``, moving the first module's pre-hooks and the last one's forward hooks to ``fused``.

    Copies of those hooks inside ``fused`` (a folded conv is a deep copy of the first module) are removed, so
    each hook runs once.
    """
    first, last = mods[0], mods[-1]
    pre_flags = ("_forward_pre_hooks_with_kwargs",)
    post_flags = ("_forward_hooks_with_kwargs", "_forward_hooks_always_called")
    pre = _take_hooks(first, "_forward_pre_hooks", pre_flags)
    post = _take_hooks(last, "_forward_hooks", post_flags)
    for inner in fused.modules():
        _take_hooks(inner, "_forward_pre_hooks", pre_flags, keys={key for key, _, _ in pre})
        _take_hooks(inner, "_forward_hooks", post_flags, keys={key for key, _, _ in post})
    for _, hook, (with_kwargs,) in pre:
        fused.register_forward_pre_hook(hook, with_kwargs=with_kwargs)
    for _, hook, (with_kwargs, always_call) in post:
        fused.register_forward_hook(hook, with_kwargs=with_kwargs, always_call=always_call)
    rest = []
    for _ in mods[1:]:
        identity = nn.Identity()
        identity.training = first.training
        rest.append(identity)
    return [fused, *rest]


def _take_hooks(
    module: nn.Module, attr: str, flag_attrs: tuple[str, ...], keys: Optional[set[int]] = None
) -> list[tuple[int, Any, tuple[bool, ...]]]:
    """Remove and return ``module``'s hooks in ``attr`` (those under ``keys``, default all) with their flags."""
    hooks = getattr(module, attr)
    flags = [getattr(module, f, {}) for f in flag_attrs]
    chosen = [key for key in hooks if keys is None or key in keys]
    return [(key, hooks.pop(key), tuple(bool(f.pop(key, False)) for f in flags)) for key in chosen]


# -- checks and messages -----------------------------------------------------------


def _patterns() -> Any:
    from qcore.registry import get_registry

    return get_registry().fusion_patterns


def _groups(modules_to_fuse: ModulesToFuse, api: str) -> list[list[str]]:
    if isinstance(modules_to_fuse, str) or not isinstance(modules_to_fuse, (list, tuple)):
        raise ConfigError(
            f"{api} takes a list of module names (['conv', 'bn', 'relu']) or a list of such lists; "
            f"got {modules_to_fuse!r}"
        )
    if all(isinstance(item, str) for item in modules_to_fuse):
        groups = [list(modules_to_fuse)] if modules_to_fuse else []
    elif all(isinstance(item, (list, tuple)) and all(isinstance(n, str) for n in item) for item in modules_to_fuse):
        groups = [list(item) for item in modules_to_fuse]
    else:
        raise ConfigError(
            f"{api} takes a list of module names or a list of lists of module names, not a mix; got {modules_to_fuse!r}"
        )
    for group in groups:
        if len(group) < 2:
            raise ConfigError(f"a fusion group names at least two modules; got {group!r}")
    return groups


def _check_disjoint(groups: list[list[str]]) -> None:
    seen: dict[str, list[str]] = {}
    for group in groups:
        for name in group:
            for other, where in seen.items():
                if name == other or name.startswith(other + ".") or other.startswith(name + "."):
                    same = "twice in the fusion group" if where is group else f"in both fusion groups {where} and"
                    raise ConfigError(f"{name!r} is named {same} {group}; each module can be fused once")
            seen[name] = group


def _get_submodule(model: nn.Module, name: str) -> nn.Module:
    module = model
    path: list[str] = []
    for token in name.split("."):
        child = module._modules.get(token) if token else None
        if child is None:
            where = f"{type(module).__name__} at {'.'.join(path)!r}" if path else f"the model ({type(module).__name__})"
            children = ", ".join(module._modules) or "(none)"
            close = difflib.get_close_matches(name, [n for n, _ in model.named_modules() if n], n=3)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise ConfigError(f"no module named {name!r}: {where} has no child {token!r}; its children: {children}{hint}")
        module = child
        path.append(token)
    return module


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, leaf = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, leaf, module)


def _stateful(module: nn.Module) -> bool:
    return any(True for _ in module.parameters()) or any(True for _ in module.buffers())


def _check_adjacent(model: nn.Module, group: list[str], mods: list[nn.Module]) -> None:
    parents = {name.rpartition(".")[0] for name in group}
    if len(parents) > 1:
        where = ", ".join(f"{n!r} in {n.rpartition('.')[0] or 'the model'!r}" for n in group)
        raise ConfigError(
            f"the modules of the fusion group {group} are not adjacent: they must be children of one module; got {where}"
        )
    parent_name = parents.pop()
    parent = model.get_submodule(parent_name) if parent_name else model
    order = list(parent._modules)
    stateful = [(name, order.index(name.rpartition(".")[2])) for name, m in zip(group, mods) if _stateful(m)]
    for (prev, i), (name, j) in zip(stateful, stateful[1:]):
        if j != i + 1:
            between = order[i + 1 : j] if j > i else []
            detail = f"children in between: {', '.join(between)}" if between else f"{name!r} comes before {prev!r}"
            raise ConfigError(
                f"the modules of the fusion group {group} are not adjacent: {prev!r} and {name!r} must be "
                f"consecutive children of {parent_name or 'the model'!r} in the listed order ({detail}); "
                f"children in order: {', '.join(order)}"
            )


def _check_mapping(mapping: Any) -> dict[tuple[type, ...], Any]:
    if not isinstance(mapping, dict):
        raise ConfigError(f"additional_fuser_method_mapping must be a dict {{(type, ...): fuser}}; got {mapping!r}")
    for pattern, fuser in mapping.items():
        if not (isinstance(pattern, tuple) and len(pattern) >= 2 and all(isinstance(t, type) for t in pattern)):
            raise ConfigError(f"a fusion pattern is a tuple of at least two module types; got {pattern!r}")
        if not callable(fuser):
            raise ConfigError(f"the fuser for {_label(pattern, None)} must be callable (is_qat, *modules); got {fuser!r}")
    return mapping


def _config_mapping(config: Optional[dict[str, Any]], api: str) -> dict[tuple[type, ...], Any]:
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise ConfigError(f"fuse_custom_config_dict must be a dict; got {config!r}")
    unknown = sorted(set(config) - set(_CONFIG_KEYS))
    if unknown:
        raise ConfigError(f"{api}: unknown fuse_custom_config_dict keys {unknown}; known: {', '.join(_CONFIG_KEYS)}")
    return _check_mapping(config.get("additional_fuser_method_mapping") or {})


def _pattern_text(pattern: tuple[type, ...]) -> str:
    return "(" + ", ".join(t.__name__ for t in pattern) + ")"


def _label(types: tuple[type, ...], names: Optional[Sequence[str]]) -> str:
    text = _pattern_text(types)
    return f"{text} (modules {', '.join(repr(n) for n in names)})" if names else text


def _unsupported_message(
    types: tuple[type, ...], names: Optional[Sequence[str]], is_qat: bool, additional: dict[tuple[type, ...], Any]
) -> str:
    registry = _patterns()
    supported = list(additional) + [p for p in registry.patterns(qat=is_qat) if p not in additional]
    mode = "QAT (fuse_modules_qat)" if is_qat else "post-training fusion (fuse_modules)"
    other = ""
    if registry.get(types, qat=not is_qat) is not None:
        other = f"; it is registered for {'fuse_modules' if is_qat else 'fuse_modules_qat'} only"
    return (
        f"no fusion pattern for {_label(types, names)} in {mode}{other}; supported patterns: "
        f"{', '.join(_pattern_text(p) for p in supported) or '(none)'}. A plugin adds patterns through its "
        f"qcore_register_fusion_patterns hook, or pass fuse_custom_config_dict="
        f"{{'additional_fuser_method_mapping': {{(type, ...): fuser}}}}"
    )
