"""qcore.save: write a model as a pickle-free checkpoint (safetensors tensors plus a JSON manifest)."""

from __future__ import annotations

import copy
import warnings
from typing import Any, Iterator, Mapping, Optional

import torch
from torch import Tensor, nn

from qcore.checkpoint.classes import ClassResolver, class_name
from qcore.checkpoint.codec import Unencodable, encode, encode_named
from qcore.checkpoint.configs import module_config
from qcore.checkpoint.errors import CheckpointError, CheckpointWarning
from qcore.checkpoint.fileformat import FORMAT, FORMAT_VERSION, PathLike, tensor_table, write_checkpoint
from qcore.checkpoint.hooks import hook_names, known_hooks
from qcore.dtypes import QDType, QScheme

__all__ = ["save", "MODULE_INTERNALS"]

#: nn.Module's own bookkeeping attributes: never saved as attributes, never set from a manifest.
MODULE_INTERNALS = frozenset(nn.Module().__dict__) - {"training"}


def save(
    model: nn.Module,
    path: PathLike,
    *,
    qconfig: Any = None,
    metadata: Optional[Mapping[str, Any]] = None,
) -> None:
    """Write ``model`` to ``path``: its tensors in safetensors, its module tree and settings in a JSON manifest.

    A lowered module that is not one qcore.load may build is saved as its
    reference form when it has a ``to_reference()`` method. ``qconfig`` (a
    QConfig, default ``model.qconfig`` if set) and ``metadata`` (a dict of
    plain values) are stored in the manifest; read them back with
    :func:`qcore.checkpoint.read_manifest`. Forward hooks are not saved
    except qcore's own observer and guard hooks, which are recorded by name
    (a CheckpointWarning names the modules that had others).
    """
    if not isinstance(model, nn.Module):
        raise CheckpointError(f"qcore.save expects an nn.Module, got {type(model).__name__}")
    resolver = ClassResolver()
    model = _reference_form(model, resolver)
    entries, hooked = _module_entries(model)
    if hooked:
        shown = ", ".join(repr(n or "<root>") for n in hooked[:8]) + (" ..." if len(hooked) > 8 else "")
        warnings.warn(
            f"qcore.save: hooks other than qcore's own are not saved in a checkpoint; the hooks of {shown} "
            "will be missing after qcore.load (register them again)",
            CheckpointWarning,
            stacklevel=2,
        )
    tensors, extra_state = _state(model)
    if qconfig is None:
        qconfig = getattr(model, "qconfig", None)
    from qcore import __version__

    backend = getattr(model, "_qcore_backend", None)
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "qcore_version": __version__,
        "torch_version": torch.__version__,
        "backend": backend if isinstance(backend, str) else None,
        "modules": entries,
        "extra_state": extra_state,
        "qconfig": None if qconfig is None else _qconfig_dict(qconfig, "the qconfig given to qcore.save"),
        "metadata": encode_named(dict(metadata or {}), "metadata="),
        "tensors": tensor_table(tensors),
    }
    write_checkpoint(path, tensors, manifest)


def _reference_form(model: nn.Module, resolver: ClassResolver) -> nn.Module:
    """``model`` with lowered modules (not allowed, but with ``to_reference()``) replaced by their reference form, in a copy."""
    lowered: list[str] = []
    for name, m in model.named_modules():
        # An outer lowered module's to_reference() covers its children: skip those.
        if name and _lowered(m, resolver) and not any(name.startswith(outer + ".") for outer in lowered):
            lowered.append(name)
    if not lowered:
        return model
    model = copy.deepcopy(model)
    for name in lowered:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        reference = parent._modules[attr].to_reference()  # type: ignore[union-attr]
        if not isinstance(reference, nn.Module):
            raise CheckpointError(f"qcore.save: {name!r}.to_reference() returned {type(reference).__name__}, not a module")
        parent._modules[attr] = reference
    return model


def _lowered(module: nn.Module, resolver: ClassResolver) -> bool:
    return callable(getattr(module, "to_reference", None)) and not resolver.allows(type(module))


def _walk(module: nn.Module, prefix: str = "") -> Iterator[tuple[str, Optional[nn.Module]]]:
    """(qualified name, module) depth first, parents first; shared modules are yielded at every place."""
    yield prefix, module
    for name, child in module._modules.items():
        qualified = f"{prefix}.{name}" if prefix else name
        if child is None:
            yield qualified, None
        else:
            yield from _walk(child, qualified)


def _module_entries(model: nn.Module) -> tuple[list[dict[str, Any]], list[str]]:
    table = known_hooks()
    entries: list[dict[str, Any]] = []
    first_name: dict[int, str] = {}
    hooked: list[str] = []
    skip_under: Optional[str] = None
    for name, module in _walk(model):
        if skip_under is not None and (name == skip_under or name.startswith(skip_under + ".")):
            continue
        skip_under = None
        if module is None:
            entries.append({"name": name, "class": None})
            continue
        if id(module) in first_name:
            entries.append({"name": name, "alias_of": first_name[id(module)]})
            skip_under = name  # its subtree is the first occurrence's
            continue
        first_name[id(module)] = name
        entry = _entry(name, module)
        hooks, other = hook_names(module, table)
        if hooks:
            entry["hooks"] = hooks
        if other:
            hooked.append(name)
        entries.append(entry)
    return entries, hooked


def _entry(name: str, module: nn.Module) -> dict[str, Any]:
    cls = type(module)
    label = f"module {name or '<root>'!r} ({cls.__name__})"
    config = module_config(module)
    entry: dict[str, Any] = {
        "name": name,
        "class": class_name(cls),
        "config": {k: encode_named(v, f"{label}, constructor argument {k!r}") for k, v in config.kwargs.items()},
        "training": bool(module.training),
        "attributes": _attributes(module),
    }
    if config.unsaved:
        entry["unsaved"] = list(config.unsaved)
    if "qconfig" in vars(module):
        qconfig = vars(module)["qconfig"]
        entry["qconfig"] = None if qconfig is None else _qconfig_dict(qconfig, f"the qconfig of {label}")
    qparams = _qparams(module)
    if qparams:
        entry["qparams"] = qparams
    return entry


def _attributes(module: nn.Module) -> dict[str, Any]:
    """The instance attributes that are plain values (numbers, strings, dtypes, tuples ...), encoded."""
    out: dict[str, Any] = {}
    for key, value in vars(module).items():
        if key in MODULE_INTERNALS or key in ("training", "qconfig") or key.startswith("__"):
            continue
        try:
            out[key] = encode(value)
        except Unencodable:
            continue
    return out


def _qparams(module: nn.Module) -> dict[str, Any]:
    """A readable summary of the module's quantization parameters (informational; load reads the tensors)."""
    out: dict[str, Any] = {}
    scale, zero_point = module._buffers.get("scale"), module._buffers.get("zero_point")
    if isinstance(scale, Tensor) and isinstance(zero_point, Tensor) and scale.numel() == 1 and zero_point.numel() == 1:
        out["scale"] = float(scale.reshape(()))
        out["zero_point"] = int(zero_point.reshape(()))
        dtype = vars(module).get("dtype")
        if isinstance(dtype, QDType):
            out["dtype"] = dtype.name
    try:
        weight_dtype = getattr(module, "weight_dtype", None)
    except Exception:
        weight_dtype = None
    if isinstance(weight_dtype, QDType):
        out["weight_dtype"] = weight_dtype.name
        scheme = vars(module).get("weight_qscheme")
        if isinstance(scheme, QScheme):
            out["weight_qscheme"] = scheme.value
        axis = module._buffers.get("weight_axis")
        if isinstance(axis, Tensor) and axis.numel() == 1:
            out["weight_axis"] = int(axis)
    return out


def _qconfig_dict(qconfig: Any, what: str) -> dict[str, Any]:
    from qcore.qconfig import QConfig

    if not isinstance(qconfig, QConfig):
        raise CheckpointError(f"qcore.save: {what} must be a qcore.QConfig, got {type(qconfig).__name__}")
    try:
        data = qconfig.to_dict()
        encode(data)  # plain JSON all the way down
    except Exception as exc:
        raise CheckpointError(f"qcore.save: cannot store {what} ({qconfig!r}): {exc}") from exc
    return data


def _state(model: nn.Module) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The state dict split into tensors (CPU, contiguous, unshared) and encoded ``_extra_state`` values."""
    tensors: dict[str, Tensor] = {}
    extra: dict[str, Any] = {}
    for key, value in model.state_dict().items():
        if isinstance(value, Tensor):
            if value.is_sparse or value.layout != torch.strided:
                raise CheckpointError(f"qcore.save: tensor {key!r} is {value.layout}; only dense tensors can be saved")
            if value.device.type == "meta":
                raise CheckpointError(f"qcore.save: tensor {key!r} is on the meta device and holds no data")
            tensors[key] = value.detach().to("cpu", copy=True).contiguous()
        elif key == "_extra_state" or key.endswith("._extra_state"):
            extra[key] = encode_named(value, f"the extra state {key!r}")
        else:
            raise CheckpointError(
                f"qcore.save: state dict entry {key!r} is a {type(value).__name__}, neither a tensor nor _extra_state"
            )
    return tensors, extra
