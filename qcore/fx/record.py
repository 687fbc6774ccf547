"""What prepare_fx decided for every node, kept on the model as ``model.meta["qcore_fx"]``.

convert_fx reads it to build the quantized graph, and it answers "why is
this layer not quantized?": per node, the QConfigMapping entry that
matched, the backend pattern that took the node, or the reason it stays
float. Records hold names, never graph objects, so they survive deepcopy,
pickling and torch.jit.script.
"""

from __future__ import annotations

import importlib
import pickle
from typing import Any, Optional

import attrs
from torch import fx

__all__ = ["META_KEY", "NodeRecord", "ObserverRecord", "FxRecord", "attach_record", "get_record"]

#: The key of :class:`FxRecord` in ``GraphModule.meta``.
META_KEY = "qcore_fx"
#: The same record as an attribute: pickling a GraphModule keeps attributes but rebuilds ``meta`` empty.
RECORD_ATTR = "_qcore_fx_record"
_PRESERVED = "_user_preserved_attributes"  # torch.fx's meta key of attributes deepcopy restores

#: How a quantized node is converted (NodeRecord.role).
ROLES = (
    "module",             # a module swapped for its quantized class (Linear, ConvReLU2d, Hardswish, ...)
    "weighted_function",  # F.linear / F.conv*: becomes a quantized module built from the weight
    "binary",             # add / mul / matmul (and add + relu): QFunctional
    "cat",                # torch.cat: QFunctional.cat
    "shared",             # output shares the input's qparams (view, max-pool, relu, ...)
    "fixed",              # output qparams fixed by the function (sigmoid, tanh, softmax)
    "general",            # any other op with its own output observer: dequantize, float op, quantize
    "custom",             # a custom module: Observed.from_float at prepare, Quantized.from_observed at convert
    "standalone",         # a standalone module, prepared and converted on its own
    "float",              # not quantized
)


def _resolve(module: str, name: str) -> Any:
    return getattr(importlib.import_module(module), name)


class _ByName:
    """Pickles a function that pickle cannot find by its qualified name (``F.max_pool2d`` is built by a factory)."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name

    def __reduce__(self) -> tuple:
        return _resolve, (self.module, self.name)


def _picklable(value: Any) -> Any:
    if isinstance(value, tuple):
        return tuple(_picklable(v) for v in value)
    try:
        pickle.dumps(value)
        return value
    except Exception:
        module, name = getattr(value, "__module__", None), getattr(value, "__name__", None)
        if module and name:
            try:
                if _resolve(module, name) is value:
                    return _ByName(module, name)
            except Exception:
                pass
        from qcore.fx.ops import label

        return label(value)  # keep a readable name rather than fail


@attrs.define
class NodeRecord:
    """One node of the prepared graph and how it is quantized (``quant_type``) or why not (``reason``)."""

    name: str
    op: str
    target: str
    module: str = ""  # call_module nodes: the qualified name of the module called
    scope: str = ""
    qconfig: Any = None
    qconfig_entry: str = ""
    lookup: tuple = ()  # the (module name, object type, call index) QConfigMapping.lookup was asked
    quant_type: str = "float"  # "static", "dynamic", "weight_only" or "float"
    role: str = "float"
    output_kind: str = "none"  # "own" observer, "shared" with the input, "fixed" qparams, or "none"
    pattern: Any = None
    pattern_nodes: tuple[str, ...] = ()
    dtype_config: Any = None
    reason: Optional[str] = None
    warned: bool = False
    input_observers: list[str] = attrs.Factory(list)
    output_observer: Optional[str] = None
    weight_observer: Optional[str] = None
    scalar: Optional[float] = None  # binary op with a number: the number (QFunctional.add_scalar / mul_scalar)

    @property
    def quantized(self) -> bool:
        return self.quant_type != "float"

    def keep_float(self, reason: str, warn: bool = False) -> None:
        """Mark the node float, remembering why (and whether the user is warned about it)."""
        self.quant_type = "float"
        self.role = "float"
        self.reason = reason
        self.warned = warn

    @property
    def display(self) -> str:
        """How messages name the node: the module path for module calls, else the node name; then what it runs."""
        return f"{self.module or self.name!r} ({self.target})"

    def describe(self) -> str:
        """One line: the node, what it runs and what happens to it."""
        head = self.display
        if not self.quantized:
            return f"{head}: float: {self.reason or 'no quantized form'}"
        pattern = f", pattern {self.pattern_text()}" if self.pattern is not None else ""
        return f"{head}: {self.quant_type} ({self.role}{pattern}), qconfig from {self.qconfig_entry}"

    def __getstate__(self) -> dict[str, Any]:
        state = {f.name: getattr(self, f.name) for f in attrs.fields(type(self))}
        state["pattern"] = _picklable(state["pattern"])
        state["lookup"] = _picklable(state["lookup"])
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            object.__setattr__(self, name, value)

    def pattern_text(self) -> str:
        from qcore.fx.ops import label

        return label(self.pattern)


@attrs.define
class ObserverRecord:
    """An observer (or fake-quant) prepare inserted: its submodule name, what it watches and for which node."""

    name: str
    role: str  # "input" (an op's input), "output" (an op's output) or "weight" (a functional op's weight)
    node: str  # the node it serves
    dtype: Any = None


@attrs.define
class FxRecord:
    """Everything prepare_fx decided, for convert_fx and for explaining the result."""

    backend: str
    is_qat: bool
    nodes: dict[str, NodeRecord] = attrs.Factory(dict)
    observers: dict[str, ObserverRecord] = attrs.Factory(dict)
    input_quantized_indexes: tuple[int, ...] = ()
    output_quantized_indexes: tuple[int, ...] = ()
    stage: str = "prepared"  # "prepared", then "reference" or "lowered" after convert
    node_order: tuple[str, ...] = ()  # every node name of the graph, in order, when the record was attached
    node_values: tuple[str, ...] = ()  # and what each produces (qcore.fx.values), which re-tracing forgets

    def node(self, name: str) -> NodeRecord:
        return self.nodes[name]

    def float_nodes(self) -> list[NodeRecord]:
        return [r for r in self.nodes.values() if not r.quantized]

    def quantized_nodes(self) -> list[NodeRecord]:
        return [r for r in self.nodes.values() if r.quantized]

    def summary(self) -> str:
        """One line per op node: quantized how, or float and why."""
        unique = {id(r): r for r in self.nodes.values()}
        return "\n".join(r.describe() for r in unique.values())


def attach_record(gm: fx.GraphModule, record: FxRecord) -> None:
    """Keep ``record`` on ``gm`` as ``gm.meta["qcore_fx"]``, through deepcopy, pickling and torch.save."""
    from qcore.fx.values import VALUE

    record.node_order = tuple(n.name for n in gm.graph.nodes)
    record.node_values = tuple(n.meta.get(VALUE, "other") for n in gm.graph.nodes)
    gm.meta[META_KEY] = record
    setattr(gm, RECORD_ATTR, record)
    gm.meta.setdefault(_PRESERVED, {})[RECORD_ATTR] = record


def _restore(record: FxRecord, gm: fx.GraphModule, api: str) -> None:
    """Follow a graph torch.fx re-traced from code (unpickling renames nodes and drops their meta; order stays)."""
    from qcore.errors import ConfigError
    from qcore.fx.values import VALUE

    nodes_now = list(gm.graph.nodes)
    names = [n.name for n in nodes_now]
    if not record.node_order:
        return
    if len(record.node_order) != len(names):
        raise ConfigError(f"{api}: the graph of this model changed after prepare_fx ({len(names)} nodes, "
                          f"{len(record.node_order)} prepared); prepare the model again")
    for node, value in zip(nodes_now, record.node_values):
        node.meta.setdefault(VALUE, value)
    if list(record.node_order) == names:
        return
    new = dict(zip(record.node_order, names))
    nodes: dict[str, NodeRecord] = {}
    renamed: set[int] = set()
    for old, node_record in record.nodes.items():
        if id(node_record) not in renamed:
            renamed.add(id(node_record))
            node_record.name = new.get(node_record.name, node_record.name)
            node_record.pattern_nodes = tuple(new.get(n, n) for n in node_record.pattern_nodes)
        nodes[new.get(old, old)] = node_record
    record.nodes = nodes
    for observer in record.observers.values():
        observer.node = new.get(observer.node, observer.node)


def get_record(model: Any, api: str = "convert_fx") -> FxRecord:
    """The FxRecord of a model prepare_fx or convert_fx returned; ConfigError for anything else."""
    from qcore.errors import ConfigError

    record = None
    if isinstance(model, fx.GraphModule):
        record = model.meta.get(META_KEY)
        if record is None:  # unpickled: meta is rebuilt empty, the attribute survives
            record = getattr(model, RECORD_ATTR, None)
            if isinstance(record, FxRecord):
                _restore(record, model, api)
                attach_record(model, record)
    if not isinstance(record, FxRecord):
        raise ConfigError(
            f"{api} expects the GraphModule that qcore.fx.prepare_fx / prepare_qat_fx returned, got "
            f"{type(model).__name__}{' without qcore FX records' if isinstance(model, fx.GraphModule) else ''}"
        )
    return record
