"""qcore.load: rebuild a model from a qcore checkpoint, then lower it for the active backend."""

from __future__ import annotations

import os
from typing import Any, Iterable, Optional

from torch import Tensor, nn

from qcore.checkpoint.classes import ClassResolver, class_name
from qcore.checkpoint.codec import is_encodable
from qcore.checkpoint.configs import build_kwargs, constructor_parameters
from qcore.checkpoint.errors import CheckpointClassError, CheckpointError, CheckpointFormatError
from qcore.checkpoint.fileformat import PathLike, read_checkpoint, read_header
from qcore.checkpoint.hooks import known_hooks, register_hooks
from qcore.checkpoint.manifest import Manifest, ModuleEntry, decode_qconfig, parse_manifest
from qcore.checkpoint.save import MODULE_INTERNALS
from qcore.flow import mappings

__all__ = ["load", "read_manifest"]


def read_manifest(path: PathLike) -> Manifest:
    """The checked manifest of a checkpoint (format, version, checksum), without loading its tensors."""
    _, raw, _, _ = read_header(path)
    return parse_manifest(raw, os.fspath(path))


def load(
    path: PathLike,
    model: Optional[nn.Module] = None,
    *,
    classes: Iterable[type] = (),
    backend: Optional[str] = None,
    lower: bool = True,
    strict: bool = True,
) -> nn.Module:
    """The model saved at ``path`` by :func:`qcore.save`, lowered for ``backend`` (default: the active one).

    Nothing in the file is executed: the tensors are checked against their
    sha256, and only allowed classes are built (torch.nn, qcore's modules,
    classes registered by plugins, ``classes``). A model whose root (or any
    module) is your own class needs ``model=`` — a fresh instance of it, as
    built before quantization; the recorded quantized modules replace its
    float ones and it is filled in place and returned — or ``classes=[...]``
    when the class can be built from its recorded constructor arguments.
    ``lower=False`` keeps the reference quantized modules (like
    ``convert(..., is_reference=True)``).
    """
    if model is not None and not isinstance(model, nn.Module):
        raise CheckpointError(f"qcore.load: model= must be an nn.Module, got {type(model).__name__}")
    if lower:
        from qcore.backend_selection import get_backend_description

        target = get_backend_description(backend).name
    else:
        target = "reference"
    name = os.fspath(path)
    raw, tensors = read_checkpoint(path)
    manifest = parse_manifest(raw, name)
    given = [] if model is None else list(model.modules())
    resolver = ClassResolver([*classes, *(type(m) for m in given)])
    builder = _Builder(manifest, tensors, resolver, {id(m) for m in given}, name)
    root = builder.build(model)
    state: dict[str, Any] = dict(tensors)
    state.update(manifest.extra_state)
    try:
        root.load_state_dict(state, strict=strict)
    except (RuntimeError, ValueError) as exc:
        raise CheckpointError(
            f"{name}: the saved tensors do not fit the rebuilt model: {exc}. A module whose constructor arguments are "
            "not readable from its attributes is rebuilt with defaults; pass model= (a fresh instance of the saved "
            "model) so that its own modules are used"
        ) from exc
    builder.restore_hooks()
    root = _lower(root, target if lower else None)
    if manifest.backend is not None:
        root._qcore_backend = target
    return root


class _Builder:
    """Materializes the manifest's module tree, reusing the given model's modules where the class matches."""

    def __init__(self, manifest: Manifest, tensors: dict[str, Tensor], resolver: ClassResolver, user_ids: set[int], where: str) -> None:
        self.manifest = manifest
        self.tensors = tensors
        self.resolver = resolver
        self.user_ids = user_ids
        self.where = where
        self.entries = {e.name: e for e in manifest.modules}
        self.children: dict[str, list[str]] = {}
        for entry in manifest.modules[1:]:
            self.children.setdefault(entry.parent, []).append(entry.name)
        self.built: dict[str, Optional[nn.Module]] = {}

    def build(self, model: Optional[nn.Module]) -> nn.Module:
        root = self.entries[""]
        if model is not None and class_name(type(model)) != root.class_name:
            raise CheckpointError(
                f"{self.where}: the checkpoint holds a {root.class_name} model but model= is a {class_name(type(model))}; "
                "pass a fresh instance of the saved model's class"
            )
        module = self._module("", model)
        assert module is not None
        self._restore_qconfigs()
        return module

    def _label(self, entry: ModuleEntry) -> str:
        return f"module {entry.name or '<root>'!r} ({entry.class_name})"

    def _module(self, name: str, existing: Optional[nn.Module]) -> Optional[nn.Module]:
        if name in self.built:
            return self.built[name]
        entry = self.entries[name]
        if entry.alias_of is not None:
            self.built[name] = self.built[entry.alias_of]
            return self.built[name]
        if entry.class_name is None:
            self.built[name] = None
            return None
        if existing is not None and class_name(type(existing)) == entry.class_name:
            module, fresh = existing, id(existing) not in self.user_ids
        else:
            module, fresh = self._construct(entry), True
        self.built[name] = module
        if fresh:
            self._apply_attributes(entry, module)
        elif isinstance(entry.attributes.get("_qcore_name"), str):
            module._qcore_name = entry.attributes["_qcore_name"]  # how errors name it, as convert set it
        if entry.training is not None:
            module.training = entry.training
        wanted: dict[str, Optional[nn.Module]] = {}
        for child_name in self.children.get(name, []):
            attr = self.entries[child_name].attr
            wanted[attr] = self._module(child_name, module._modules.get(attr))
        module._modules.clear()
        module._modules.update(wanted)
        return module

    def _construct(self, entry: ModuleEntry) -> nn.Module:
        label = self._label(entry)
        assert entry.class_name is not None
        try:
            cls = self.resolver.find(entry.class_name)
        except CheckpointClassError as exc:
            raise CheckpointClassError(f"{self.where}: {label}: {exc}") from None
        if not issubclass(cls, nn.Module):
            raise CheckpointClassError(f"{self.where}: {label} names {cls.__name__}, which is not an nn.Module")
        if entry.unsaved:
            raise CheckpointError(
                f"{self.where}: cannot rebuild {label}: its constructor argument(s) {', '.join(entry.unsaved)} could not "
                "be saved (no JSON form); pass model= holding this module (a fresh instance of the saved model)"
            )
        kwargs = build_kwargs(entry.config, lambda key: self._tensor(entry, key), lambda child: self._child(entry, child))
        if entry.has_qconfig and entry.qconfig is not None and any(p.name == "qconfig" for p in constructor_parameters(cls)):
            kwargs["qconfig"] = decode_qconfig(entry.qconfig, self.resolver, f"the qconfig of {label}")
        from_config = getattr(cls, "_qcore_from_config", None)
        try:
            module = from_config(dict(kwargs)) if callable(from_config) else cls(**kwargs)
        except CheckpointError:
            raise
        except Exception as exc:
            raise CheckpointError(
                f"{self.where}: cannot rebuild {label} from its saved constructor arguments {entry.config!r}: "
                f"{type(exc).__name__}: {exc}. If the class is yours, pass model= (a fresh instance of the saved model)"
            ) from exc
        if type(module) is not cls:
            raise CheckpointError(f"{self.where}: rebuilding {label} gave a {type(module).__name__}")
        return module

    def _tensor(self, entry: ModuleEntry, key: str) -> Tensor:
        full = f"{entry.name}.{key}" if entry.name else key
        tensor = self.tensors.get(full)
        if tensor is None:
            raise CheckpointFormatError(f"{self.where}: {self._label(entry)} needs the tensor {full!r}, which the file lacks")
        return tensor.clone()

    def _child(self, entry: ModuleEntry, attr: str) -> nn.Module:
        full = f"{entry.name}.{attr}" if entry.name else attr
        if full not in self.entries:
            raise CheckpointFormatError(f"{self.where}: {self._label(entry)} is built from its child {attr!r}, which the manifest lacks")
        child = self._module(full, None)
        if child is None:
            raise CheckpointFormatError(f"{self.where}: {self._label(entry)} is built from its child {attr!r}, which is None")
        return child

    def _apply_attributes(self, entry: ModuleEntry, module: nn.Module) -> None:
        """Set the saved plain attributes, as unpickling would, but never over methods, tensors or submodules."""
        cls_attrs = type(module)
        for key, value in entry.attributes.items():
            if key in MODULE_INTERNALS or key.startswith("__") or key in ("training", "qconfig"):
                raise CheckpointFormatError(f"{self.where}: {self._label(entry)} sets the reserved attribute {key!r}")
            if key in module._parameters or key in module._buffers or key in module._modules:
                continue
            current = vars(module).get(key, _MISSING)
            if current is _MISSING:
                if hasattr(cls_attrs, key):
                    continue
            elif not is_encodable(current):
                continue
            module.__dict__[key] = value

    def _restore_qconfigs(self) -> None:
        for entry in self.manifest.modules:
            module = self.built.get(entry.name)
            if not entry.has_qconfig or module is None or entry.alias_of is not None:
                continue
            if entry.qconfig is None:
                module.qconfig = None
            else:
                module.qconfig = decode_qconfig(entry.qconfig, self.resolver, f"the qconfig of {self._label(entry)}")

    def restore_hooks(self) -> None:
        """qcore's own hooks (observers, the float-module guard) on the modules that had them."""
        recorded = [e for e in self.manifest.modules if e.hooks and self.built.get(e.name) is not None]
        if not recorded:
            return
        table = known_hooks()
        for entry in recorded:
            module = self.built[entry.name]
            assert module is not None
            unknown = register_hooks(module, list(entry.hooks), table)
            if unknown is not None:
                raise CheckpointFormatError(f"{self.where}: {self._label(entry)} names the unknown hook {unknown!r}")


_MISSING = object()


def _quantized_classes() -> set[type]:
    """The classes convert lowers: every registered quantized-module target and custom quantized class."""
    from qcore.registry import get_registry

    registry = get_registry()
    found = {e.value for e in registry.quantized_modules.entries() if e.key[1] != "qat"}  # type: ignore[index]
    found |= {e.value.quantized_cls for e in registry.custom_modules.entries()}
    return found


def _lower(root: nn.Module, backend: Optional[str]) -> nn.Module:
    """Name each quantized module (``_qcore_name``) and, with a backend, offer it to the qcore_lower_module hook, as convert does."""
    from qcore.flow.eager.convert import lower_module

    quantized = _quantized_classes()

    def lowered(name: str, module: nn.Module) -> nn.Module:
        new = lower_module(module, backend, name)
        if name:
            new._qcore_name = name
        return new

    def visit(module: nn.Module, prefix: str) -> None:
        # convert also offers the float modules that run QTensors as they are (max pool, flatten) in the
        # quantized region; here, those beside a quantized module
        region = any(type(child) in quantized for child in module._modules.values())
        for attr, child in list(module._modules.items()):
            if child is None:
                continue
            qualified = f"{prefix}.{attr}" if prefix else attr
            if type(child) in quantized or (region and type(child) in mappings.QTENSOR_PASSTHROUGH_MODULES):
                module._modules[attr] = lowered(qualified, child)
            else:
                visit(child, qualified)

    if type(root) in quantized:
        return lowered("", root)
    visit(root, "")
    return root
