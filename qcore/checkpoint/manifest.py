"""The manifest: what a checkpoint records besides tensors, parsed and checked before anything is built."""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Optional

import attrs

from qcore.checkpoint.codec import decode
from qcore.checkpoint.errors import CheckpointError, CheckpointFormatError

__all__ = ["ModuleEntry", "Manifest", "parse_manifest", "decode_qconfig"]


@attrs.frozen
class ModuleEntry:
    """One module of the saved tree, by qualified name ("" is the root)."""

    name: str
    class_name: Optional[str]  # None: the parent holds None under this name
    alias_of: Optional[str] = None  # the same module object as an earlier entry
    config: Mapping[str, Any] = attrs.field(factory=dict)
    unsaved: tuple[str, ...] = ()
    attributes: Mapping[str, Any] = attrs.field(factory=dict)
    training: Optional[bool] = None
    has_qconfig: bool = False  # the module had a qconfig attribute (None excludes it from quantization)
    qconfig: Optional[Mapping[str, Any]] = None
    hooks: tuple[Mapping[str, str], ...] = ()
    qparams: Mapping[str, Any] = attrs.field(factory=dict)

    @property
    def parent(self) -> str:
        return self.name.rpartition(".")[0]

    @property
    def attr(self) -> str:
        return self.name.rpartition(".")[2]


@attrs.frozen
class Manifest:
    """A checkpoint's manifest. ``qconfig_data`` is the QConfig given to qcore.save (see :meth:`qconfig`)."""

    format_version: int
    qcore_version: str
    torch_version: str
    backend: Optional[str]
    modules: tuple[ModuleEntry, ...]
    extra_state: Mapping[str, Any]
    qconfig_data: Optional[Mapping[str, Any]]
    metadata: Mapping[str, Any]
    tensors: Mapping[str, Mapping[str, Any]]

    def qconfig(self, classes: Iterable[type] = ()) -> Any:
        """The QConfig saved with the model (None if none was); its observer classes go through the allow-list."""
        if self.qconfig_data is None:
            return None
        from qcore.checkpoint.classes import ClassResolver

        return decode_qconfig(self.qconfig_data, ClassResolver(classes), "the checkpoint's qconfig")

    def module(self, name: str) -> ModuleEntry:
        for entry in self.modules:
            if entry.name == name:
                return entry
        raise KeyError(name)


def _fail(where: str, what: str) -> CheckpointFormatError:
    return CheckpointFormatError(f"malformed manifest in {where}: {what}")


def _str(value: Any, where: str, what: str, optional: bool = False) -> Optional[str]:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise _fail(where, f"{what} must be a string, got {value!r}")
    return value


def _entry(raw: Any, where: str) -> ModuleEntry:
    if not isinstance(raw, dict):
        raise _fail(where, f"a module entry must be an object, got {raw!r}")
    name = _str(raw.get("name"), where, "a module's name")
    assert name is not None
    label = f"{where}, module {name!r}"
    alias_of = _str(raw.get("alias_of"), label, "alias_of", optional=True)
    if alias_of is not None:
        return ModuleEntry(name, None, alias_of=alias_of)
    class_name = _str(raw.get("class"), label, "class", optional=True)
    config = raw.get("config", {})
    attributes = raw.get("attributes", {})
    if not isinstance(config, dict) or not isinstance(attributes, dict):
        raise _fail(label, "config and attributes must be objects")
    unsaved = raw.get("unsaved", [])
    if not isinstance(unsaved, list) or not all(isinstance(u, str) for u in unsaved):
        raise _fail(label, "unsaved must be a list of names")
    training = raw.get("training")
    if training is not None and not isinstance(training, bool):
        raise _fail(label, "training must be true or false")
    qconfig = raw.get("qconfig")
    if qconfig is not None and not isinstance(qconfig, dict):
        raise _fail(label, "qconfig must be an object")
    qparams = raw.get("qparams", {})
    return ModuleEntry(
        name,
        class_name,
        config={str(k): decode(v, f"{label}, config {k!r}") for k, v in config.items()},
        unsaved=tuple(unsaved),
        attributes={str(k): decode(v, f"{label}, attribute {k!r}") for k, v in attributes.items()},
        training=training,
        has_qconfig="qconfig" in raw,
        qconfig=qconfig,
        hooks=_hooks(raw.get("hooks", []), label),
        qparams=qparams if isinstance(qparams, dict) else {},
    )


def _hooks(raw: Any, label: str) -> tuple[Mapping[str, str], ...]:
    if not isinstance(raw, list) or not all(
        isinstance(h, dict) and isinstance(h.get("kind"), str) and isinstance(h.get("name"), str) for h in raw
    ):
        raise _fail(label, "hooks must be a list of {kind, name} objects")
    return tuple(raw)


def parse_manifest(raw: Mapping[str, Any], where: str) -> Manifest:
    """Check the manifest's structure (names unique, parents before children) and decode its values."""
    modules_raw = raw.get("modules")
    if not isinstance(modules_raw, list) or not modules_raw:
        raise _fail(where, "no module list")
    entries = [_entry(m, where) for m in modules_raw]
    seen: dict[str, ModuleEntry] = {}
    for entry in entries:
        if entry.name in seen:
            raise _fail(where, f"module {entry.name!r} appears twice")
        if not seen:
            if entry.name != "" or entry.class_name is None:
                raise _fail(where, "the first module must be the root (name '') with a class")
        else:
            if entry.name == "" or any(not part for part in entry.name.split(".")):
                raise _fail(where, f"bad module name {entry.name!r}")
            parent = seen.get(entry.parent)
            if parent is None or parent.class_name is None:
                raise _fail(where, f"module {entry.name!r} comes before its parent {entry.parent!r}")
            if entry.alias_of is not None:
                target = seen.get(entry.alias_of)
                if target is None or target.alias_of is not None or target.class_name is None:
                    raise _fail(where, f"module {entry.name!r} is an alias of {entry.alias_of!r}, which is not an earlier module")
        seen[entry.name] = entry
    extra = raw.get("extra_state", {})
    tensors = raw.get("tensors", {})
    metadata = raw.get("metadata", {"$dict": {}})
    qconfig = raw.get("qconfig")
    backend = raw.get("backend")
    if not isinstance(extra, dict) or not isinstance(tensors, dict) or (qconfig is not None and not isinstance(qconfig, dict)):
        raise _fail(where, "extra_state, tensors and qconfig must be objects")
    decoded_metadata = decode(metadata, f"{where}, metadata")
    return Manifest(
        format_version=int(raw.get("format_version", 0)),
        qcore_version=str(raw.get("qcore_version", "")),
        torch_version=str(raw.get("torch_version", "")),
        backend=_str(backend, where, "backend", optional=True),
        modules=tuple(entries),
        extra_state={str(k): decode(v, f"{where}, extra state {k!r}") for k, v in extra.items()},
        qconfig_data=qconfig,
        metadata=decoded_metadata if isinstance(decoded_metadata, dict) else {},
        tensors=tensors,
    )


def _check_classes(value: Any, resolver: Any, where: str) -> None:
    """Every ``"class"`` a QConfig description names must be registered or on the allow-list (nothing is imported)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "class":
                if not isinstance(item, str):
                    raise CheckpointFormatError(f"malformed class name {item!r} in {where}")
                resolver.find_observer(item)
            else:
                _check_classes(item, resolver, where)
    elif isinstance(value, list):
        for item in value:
            _check_classes(item, resolver, where)


def decode_qconfig(data: Mapping[str, Any], resolver: Any, where: str) -> Any:
    """A QConfig from its saved description, once every class in it is known to be allowed."""
    from qcore.qconfig import QConfig

    _check_classes(data, resolver, where)
    try:
        return QConfig.from_dict(data)
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointFormatError(f"cannot rebuild {where}: {type(exc).__name__}: {exc}") from exc
