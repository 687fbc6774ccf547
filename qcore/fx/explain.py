"""``qcore.fx.explain``: what prepare_fx would do to each node of a model, and why, without touching the model.

It prepares a deep copy (prepare_fx, or prepare_qat_fx for a model in
training mode) and reads the decisions prepare_fx records
(:class:`~qcore.fx.record.FxRecord`): per node of the traced model, the
QConfigMapping entry that matched, the backend pattern that took the node
or the reason it stays float, and the observers it gets. Nodes that were
fused into a module before (``bn1``, ``relu1`` into ``conv1``) are listed
too, pointing at the node that carries them.
"""

from __future__ import annotations

import copy
import difflib
import warnings
from typing import Any, Optional

import attrs
from torch import fx, nn
from torch.nn.utils.parametrize import type_before_parametrizations

from qcore.errors import ConfigError
from qcore.fx import ops
from qcore.fx.common import FUSED_NODES, resolve_backend
from qcore.fx.custom_config import as_prepare_custom_config
from qcore.fx.errors import FloatFallbackWarning
from qcore.fx.matching import OP_NODES, Matcher
from qcore.fx.record import META_KEY, FxRecord, NodeRecord
from qcore.fx.tracer import QcoreTracer, scope_of, trace
from qcore.qconfig_mapping import as_qconfig_mapping

__all__ = ["ExplainRow", "Explanation", "explain"]

#: ``ExplainRow.decision`` of a node folded into the fused module of another node.
FUSED = "fused"
_OPS = {"call_module": "module", "call_function": "function", "call_method": "method"}


def _class_name(module: Optional[nn.Module]) -> str:
    return type(module).__name__ if module is not None else "?"


@attrs.frozen
class ExplainRow:
    """One node of the traced model: quantized how (``decision``), with which observers, or float and why."""

    node: str
    op: str  # "module", "function" or "method"
    target: str  # the module class or the function / method that runs (fused: the fused class)
    module: str = ""  # call_module nodes: the qualified name of the module called
    scope: str = ""  # the qualified name of the module whose forward holds the node ("" for the model's own)
    qconfig_entry: str = ""  # the QConfigMapping entry that matched: "global", "module_name('fc1')", ...
    decision: str = "float"  # "static", "dynamic", "weight_only", "float" or "fused"
    role: str = "float"  # how convert handles it (qcore.fx.record.ROLES)
    pattern: str = ""  # the backend pattern that took the node, e.g. "(Conv2d, BatchNorm2d, ReLU)"
    group: tuple[str, ...] = ()  # the nodes of that pattern when it spans several (add + relu)
    reason: str = ""  # why the node stays float, or where it was fused into
    warned: bool = False  # whether prepare_fx warns about it (FloatFallbackWarning)
    fused_into: str = ""  # fused nodes: the node whose module now runs this one
    observers: tuple[str, ...] = ()  # "input: activation_post_process_0 (HistogramObserver)", ...

    @property
    def quantized(self) -> bool:
        return self.decision not in ("float", FUSED)

    @property
    def label(self) -> str:
        """How sentences name the node: its module path for module calls, else the node name; then what it runs."""
        return f"{self.module or self.node!r} ({self.target})"


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows)]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()

    return "\n".join([line(header), line(tuple("-" * w for w in widths)), *(line(r) for r in rows)])


_SHORT = {
    "output: shares its input's qparams": "out:=input",
    "output: qparams follow from the input's": "out:from-input",
    "input: quantized at run time (dynamic)": "in:dynamic",
}


def _short_observer(text: str) -> str:
    """``"input: activation_post_process_0 (HistogramObserver)"`` -> ``"in:HistogramObserver"`` for the table."""
    if text in _SHORT:
        return _SHORT[text]
    role, _, rest = text.partition(": ")
    role = {"input": "in", "output": "out"}.get(role, role)
    if rest.endswith(")") and " (" in rest:
        rest = rest[rest.rindex(" (") + 2:-1]
    return f"{role}:{rest.split(',')[0]}"


@attrs.frozen
class Explanation:
    """What prepare_fx does to every node of a model, in graph order; ``str()`` is a table, ``why(name)`` a sentence."""

    backend: str
    is_qat: bool
    rows: tuple[ExplainRow, ...]
    #: the FloatFallbackWarning messages prepare_fx would emit (the explanation holds them, so they are not re-emitted)
    warnings: tuple[str, ...] = ()

    def quantized_rows(self) -> list[ExplainRow]:
        return [r for r in self.rows if r.quantized]

    def float_rows(self) -> list[ExplainRow]:
        return [r for r in self.rows if r.decision == "float"]

    def row(self, name: str) -> ExplainRow:
        """The row of node ``name``, or of the node calling the module with qualified name ``name``."""
        for row in self.rows:
            if row.node == name:
                return row
        for row in self.rows:
            if row.module == name:
                return row
        raise self._unknown(name)

    def _unknown(self, name: str) -> ConfigError:
        names = list(dict.fromkeys([r.node for r in self.rows] + [r.module for r in self.rows if r.module]))
        close = sorted(difflib.get_close_matches(name, names, n=3))
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else f"; the nodes are {', '.join(names[:12])}"
        return ConfigError(f"explain: no node or module {name!r} in the traced model{hint}")

    def why(self, name: str) -> str:
        """Why node (or module) ``name`` is quantized the way it is, or why it is not quantized at all.

        ``name`` is a node name or a module's qualified name; for a module
        whose forward was traced through, every node it holds is explained.
        """
        try:
            return self._why_row(self.row(name))
        except ConfigError:
            inside = [r for r in self.rows if r.module.startswith(name + ".") or r.scope == name
                      or r.scope.startswith(name + ".")]
            if not inside:
                raise
        lines = [f"{name!r} was traced through, so its {len(inside)} node(s) are decided "
                 "one by one:"]
        lines += [f"  {self._why_row(r)}" for r in inside]
        return "\n".join(lines)

    def _why_row(self, row: ExplainRow) -> str:
        entry = f"its qconfig comes from {row.qconfig_entry}" if row.qconfig_entry else "no qconfig entry applies"
        if row.decision == FUSED:
            head = self.row(row.fused_into)
            return (f"{row.label} is fused into {head.label} as the backend pattern {row.pattern} and runs inside it "
                    f"({entry}); that node: {self._why_row(head)}")
        if not row.quantized:
            warned = " (prepare_fx warns about it)" if row.warned else ""
            reason = row.reason or "no quantized form"
            entry = "" if row.qconfig_entry and row.qconfig_entry in reason else f"; {entry}"
            return f"{row.label} is not quantized: {reason}{warned}{entry}"
        group = f" together with {', '.join(n for n in row.group if n != row.node)}" if len(row.group) > 1 else ""
        observers = f"; observers: {', '.join(row.observers)}" if row.observers else ""
        return (f"{row.label} is quantized {row.decision.replace('_', '-')} ({row.role}): {entry}, and the backend "
                f"{self.backend!r} runs it as the pattern {row.pattern or '?'}{group}{observers}")

    def __str__(self) -> str:
        mode = "quantization-aware training (prepare_qat_fx)" if self.is_qat else "post-training (prepare_fx)"
        header = ("node", "op", "target", "qconfig", "decision", "pattern", "observers", "reason")
        body = []
        for r in self.rows:
            why = f"fused into {r.fused_into}" if r.decision == FUSED else r.reason
            if r.warned:
                why = "[warned] " + why
            body.append((r.node, r.op, r.target, r.qconfig_entry or "-", r.decision, r.pattern or "-",
                         " ".join(_short_observer(o) for o in r.observers) or "-", why))
        quantized, floating = len(self.quantized_rows()), len(self.float_rows())
        fused = len(self.rows) - quantized - floating
        summary = f"{quantized} node(s) quantized, {fused} fused into them, {floating} float"
        return f"backend {self.backend!r}, {mode}\n{_table(header, body)}\n{summary}"

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-serialisable): backend, mode, one dict per row, the warnings."""
        return {
            "backend": self.backend,
            "is_qat": self.is_qat,
            "rows": [attrs.asdict(r) for r in self.rows],
            "warnings": list(self.warnings),
        }


def _observers(record: NodeRecord, node: str, modules: dict[str, nn.Module]) -> tuple[str, ...]:
    """What observes ``node`` (inputs and weight on a pattern's first node, the output on its last)."""
    first = record.pattern_nodes[0] if record.pattern_nodes else record.name
    last = record.pattern_nodes[-1] if record.pattern_nodes else record.name

    def named(role: str, name: str) -> str:
        return f"{role}: {name} ({_class_name(modules.get(name))})"

    found: list[str] = []
    if node == first:
        found += [named("input", name) for name in dict.fromkeys(record.input_observers)]
        if record.weight_observer:
            found.append(named("weight", record.weight_observer))
        elif record.quantized and record.role in ("module", "custom"):
            module = modules.get(record.module)
            fake_quant = getattr(module, "weight_fake_quant", None)
            if fake_quant is not None:  # a QAT module fake-quantizes its weight from now on
                found.append(f"weight: {record.module}.weight_fake_quant ({_class_name(fake_quant)})")
            elif record.dtype_config is not None and record.dtype_config.weight_dtype is not None:
                weight = record.qconfig.weight() if record.qconfig is not None else None
                found.append(f"weight: {_class_name(weight)}, observed at convert")
    if node == last and record.quantized:
        if record.quant_type == "dynamic":
            found.append("input: quantized at run time (dynamic)")
        elif record.output_observer:
            found.append(named("output", record.output_observer))
        elif record.output_kind == "shared":
            found.append("output: shares its input's qparams")
        elif record.output_kind == "none" and record.role not in ("custom", "standalone"):
            found.append("output: qparams follow from the input's")
    return tuple(found)


def _row(record: NodeRecord, node: fx.Node, modules: dict[str, nn.Module]) -> ExplainRow:
    return ExplainRow(
        node=node.name,
        op=_OPS.get(node.op, node.op),
        target=record.target,
        module=record.module,
        scope=record.scope,
        qconfig_entry=record.qconfig_entry,
        decision=record.quant_type,
        role=record.role,
        pattern=record.pattern_text() if record.pattern is not None else "",
        group=tuple(record.pattern_nodes),
        reason=record.reason or ("" if record.quantized else "no quantized form"),
        warned=record.warned,
        observers=_observers(record, node.name, modules),
    )


def _fused_head(node: fx.Node, record: FxRecord, fused_into: dict[str, str]) -> Optional[NodeRecord]:
    """The record of the node a fused-away node was folded into: as fusion noted it, else up the first arguments."""
    if fused_into.get(node.name) in record.nodes:
        return record.nodes[fused_into[node.name]]
    current: Any = node
    while isinstance(current, fx.Node) and current.args:
        current = current.args[0]
        if isinstance(current, fx.Node) and current.name in record.nodes:
            return record.nodes[current.name]
    return None


def _fused_row(node: fx.Node, head: Optional[NodeRecord], entry: str, original: fx.GraphModule) -> ExplainRow:
    modules = dict(original.named_modules())
    target = (type_before_parametrizations(modules[node.target]).__name__ if node.op == "call_module"
              else ops.label(node.target))
    common = dict(node=node.name, op=_OPS.get(node.op, node.op), target=target,
                  module=node.target if node.op == "call_module" else "", scope=scope_of(node)[0],
                  qconfig_entry=entry)
    if head is None:  # not expected: every removed node belongs to a fused chain
        return ExplainRow(**common, reason="removed from the graph by prepare_fx")
    return ExplainRow(**common, decision=FUSED, role=head.role,
                      pattern=head.pattern_text() if head.pattern is not None else "",
                      reason=f"fused into {head.name!r}", fused_into=head.name)


def _fusion_patterns(rows: list[ExplainRow], original: fx.GraphModule) -> list[ExplainRow]:
    """Name a fused module chain by the pattern that was fused, ``(Conv2d, BatchNorm2d, ReLU)``, on all its rows.

    (The fused module itself may show fewer parts: BatchNorm is folded away for post-training quantization.)
    """
    modules = dict(original.named_modules())
    nodes = {n.name: n for n in original.graph.nodes}

    def part(name: str) -> str:
        node = nodes[name]
        if node.op == "call_module":
            return type_before_parametrizations(modules[node.target]).__name__
        return "ReLU" if ops.is_relu(node, modules) else ops.label(node.target)

    chains: dict[str, list[str]] = {}
    for row in rows:
        if row.decision == FUSED:
            chains.setdefault(row.fused_into, [part(row.fused_into)]).append(part(row.node))
    if not chains:
        return rows
    patterns = {head: "(" + ", ".join(parts) + ")" for head, parts in chains.items()}
    return [attrs.evolve(r, pattern=patterns[r.fused_into or r.node]) if (r.fused_into or r.node) in patterns else r
            for r in rows]


def explain(
    model: nn.Module,
    qconfig_mapping: Any,
    example_inputs: Any = None,
    backend_config: Any = None,
    prepare_custom_config: Any = None,
    *,
    is_qat: Optional[bool] = None,
) -> Explanation:
    """What prepare_fx decides for every node of ``model``: the answer to "why is this layer not quantized?".

    Arguments are prepare_fx's. The analysis runs on a deep copy; ``model``
    is left as it was. ``is_qat`` (default: ``model.training``) explains
    prepare_qat_fx instead. Tracing failures raise prepare_fx's
    :class:`~qcore.fx.errors.SymbolicTraceError`.
    """
    from qcore.fx.prepare import _custom_swaps, prepare_fx, prepare_qat_fx

    if not isinstance(model, nn.Module):
        raise ConfigError(f"explain expects an nn.Module, got {type(model).__name__}")
    mapping = as_qconfig_mapping(qconfig_mapping) if qconfig_mapping is not None else None
    if mapping is None:
        raise ConfigError("explain: qconfig_mapping is required, e.g. qcore.get_default_qconfig_mapping()")
    config = as_prepare_custom_config(prepare_custom_config)
    backend = resolve_backend(backend_config, "explain")
    qat = model.training if is_qat is None else bool(is_qat)
    work = copy.deepcopy(model).train(qat)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prepare = prepare_qat_fx if qat else prepare_fx
        prepared = prepare(work, mapping, example_inputs, prepare_custom_config=config, backend_config=backend)
    messages = []
    for w in caught:
        if issubclass(w.category, FloatFallbackWarning):
            messages.append(str(w.message))
        else:  # not explain's business: pass it on
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    record: FxRecord = prepared.meta[META_KEY]

    # The graph before fusion, traced the way prepare traced it: every node the user wrote, fused or not.
    custom_classes = {cls for entries in _custom_swaps(config).values() for cls in entries}
    tracer = QcoreTracer(
        skipped_module_names=config.non_traceable_module_names,
        skipped_module_classes=config.non_traceable_module_classes,
        leaf_module_names=config.standalone_module_names,
        leaf_module_classes=(*custom_classes, *config.standalone_module_classes),
    )
    original = trace(work, tracer, "explain")
    lookups = Matcher(original, mapping, backend, config, _custom_swaps(config), tracer, "explain").qconfigs

    modules = dict(prepared.named_modules())
    fused_into = {name: n.name for n in prepared.graph.nodes for name in n.meta.get(FUSED_NODES, ())}
    rows: list[ExplainRow] = []
    seen: set[str] = set()
    for node in original.graph.nodes:
        if node.op not in OP_NODES:
            continue
        seen.add(node.name)
        node_record = record.nodes.get(node.name)
        if node_record is not None:
            rows.append(_row(node_record, node, modules))
        else:
            entry = lookups.get(node.name, (None, ""))[1]
            rows.append(_fused_row(node, _fused_head(node, record, fused_into), entry, original))
    for node in prepared.graph.nodes:  # not expected: nodes prepare made that the plain trace lacks
        if node.name not in seen and node.name in record.nodes:
            rows.append(_row(record.nodes[node.name], node, modules))
    rows = _fusion_patterns(rows, original)
    return Explanation(backend=record.backend, is_qat=qat, rows=tuple(rows), warnings=tuple(messages))

