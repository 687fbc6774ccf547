"""Where observers go: inputs and outputs of the nodes the backend runs quantized, shared where qparams are.

Walking the graph in order, each statically quantized pattern gets

* on each float activation input that is not already observed in its dtype,
  an *input* observer (one per value and dtype, shared by its consumers);
* on its output, by its output kind: a new observer from its qconfig
  (``own``), a fixed-qparams observer (``fixed``: sigmoid, tanh, softmax),
  none because the output takes the input's qparams (``shared``: view,
  max-pool, relu; such an op follows its input, so it stays float when its
  input is not quantized), or none because the qparams follow from the
  input's (``none``: add or mul with a number);
* for ``F.linear`` / ``F.conv*``, a *weight* observer (a fake-quant in QAT)
  between the weight and the op.

Observers are submodules ``activation_post_process_<n>`` called by
``call_module`` nodes, as torch.ao names them; each is listed in the
record with its role and the node it serves.
"""

from __future__ import annotations

from typing import Any, Optional

import attrs
import torch
from torch import fx, nn

from qcore import dtypes
from qcore.dtypes import QDType
from qcore.errors import ConfigError, QcoreError
from qcore.fake_quant import FakeQuantizeBase, FixedQParamsFakeQuantize
from qcore.fx import ops
from qcore.fx.common import fresh_name
from qcore.fx.record import FxRecord, NodeRecord, ObserverRecord, get_record
from qcore.fx.values import VALUE, value_kind
from qcore.observers import FixedQParamsObserver

__all__ = ["QState", "Placement", "activation_inputs"]


@attrs.frozen
class QState:
    """A value that will be quantized: its dtype and the observer its qparams come from (None if derived)."""

    dtype: QDType
    observer: Optional[str]


def activation_inputs(node: fx.Node, record: NodeRecord) -> list[fx.Node]:
    """The inputs of ``node`` that are quantized activations (weights, biases and shapes are not)."""
    if record.role in ("module", "custom", "standalone"):
        return [a for a in node.all_input_nodes if value_kind(a) == "float"]
    if record.role == "cat":
        return [a for a in node.args[0] if isinstance(a, fx.Node)]
    if record.role == "binary":
        return [a for a in node.args[:2] if isinstance(a, fx.Node) and value_kind(a) == "float"]
    first = node.args[0] if node.args else None
    if record.role == "general" and record.output_kind != "shared":
        # every computed float tensor (bmm's two inputs); attributes are weights (F.layer_norm's)
        rest = [a for a in node.args[1:] if isinstance(a, fx.Node) and value_kind(a) == "float" and a.op != "get_attr"]
        return ([first] if isinstance(first, fx.Node) else []) + rest
    return [first] if isinstance(first, fx.Node) else []


def _fixed_observer(value_range: tuple[float, float], qconfig: Any, activation: nn.Module, qat: bool) -> nn.Module:
    """The qconfig's own fixed-qparams observer, or one for ``value_range`` in the qconfig's activation dtype."""
    if isinstance(activation, (FixedQParamsObserver, FixedQParamsFakeQuantize)):
        return activation
    dtype = dtypes.qdtype(activation.dtype)
    low, high = value_range
    scale = (high - low) / 256.0
    zero_point = dtype.quant_min + round(-low / scale)
    kwargs = dict(scale=scale, zero_point=zero_point, dtype=dtype, quant_min=dtype.quant_min, quant_max=dtype.quant_max)
    if qat or isinstance(activation, FakeQuantizeBase):
        return FixedQParamsFakeQuantize(observer=FixedQParamsObserver.with_args(**kwargs))
    return FixedQParamsObserver(**kwargs)


class Placement:
    """Inserts the observers of one prepare pass into ``gm`` and lists them in ``record``."""

    def __init__(self, gm: fx.GraphModule, record: FxRecord, is_qat: bool, device: Optional[torch.device],
                 api: str) -> None:
        self.gm = gm
        self.graph = gm.graph
        self.record = record
        self.is_qat = is_qat
        self.device = device
        self.api = api
        self.modules = dict(gm.named_modules())
        self.qstate: dict[fx.Node, QState] = {}
        self._input_observers: dict[tuple[fx.Node, QDType], fx.Node] = {}
        self._module_observers: dict[str, str] = {}  # a module called at several places: one output observer
        self._count = 0

    # --- building observers -----------------------------------------------------------

    def _build(self, record: NodeRecord, what: str) -> nn.Module:
        factory = record.qconfig.weight if what == "weight" else record.qconfig.activation
        try:
            observer = factory()
        except QcoreError as exc:
            raise ConfigError(f"{self.api}: cannot build the {what} observer of node {record.name!r}: {exc}") from exc
        if self.device is not None:
            observer.to(self.device)
        return observer

    def _add(self, observer: nn.Module, after: fx.Node, source: fx.Node, role: str, served: str,
             dtype: Optional[QDType]) -> fx.Node:
        name = fresh_name(self.gm, f"activation_post_process_{self._count}")
        self._count += 1
        self.gm.add_submodule(name, observer)
        with self.graph.inserting_after(after):
            node = self.graph.call_module(name, (source,))
        node.meta[VALUE] = source.meta.get(VALUE, "float")
        self.record.observers[name] = ObserverRecord(name, role, served, dtype)
        return node

    @staticmethod
    def _dtype(observer: nn.Module) -> QDType:
        return dtypes.qdtype(observer.dtype)

    # --- the walk ---------------------------------------------------------------------

    def run(self) -> None:
        placeholders = [n for n in self.graph.nodes if n.op == "placeholder"]
        for index in self.record.input_quantized_indexes:
            if index >= len(placeholders):
                raise ConfigError(f"{self.api}: input_quantized_indexes has {index} but forward takes "
                                  f"{len(placeholders)} inputs")
            self.qstate[placeholders[index]] = QState(dtypes.uint8, None)
        for node in list(self.graph.nodes):
            record = self.record.nodes.get(node.name)
            if record is None or record.quant_type != "static":
                continue
            first = record.pattern_nodes[0] if record.pattern_nodes else node.name
            last = record.pattern_nodes[-1] if record.pattern_nodes else node.name
            if node.name == first and not self._inputs(node, record):
                continue
            if node.name == last:
                self._output(node, record)

    def _inputs(self, node: fx.Node, record: NodeRecord) -> bool:
        """Observe the node's activation inputs; False when the node turned out to stay float."""
        if record.output_kind == "shared":
            source = node.args[0] if node.args else None
            if not isinstance(source, fx.Node) or source not in self.qstate:
                record.keep_float("its input is not quantized, and ops that share their input's qparams follow "
                                  "their input")
                return False
            return True
        if record.role == "standalone":
            return self._standalone_inputs(node, record)
        dtype = self._dtype(record.qconfig.activation())
        for arg in activation_inputs(node, record):
            self._quantize_input(arg, node, record, dtype)
        if record.role == "weighted_function":
            self._observe_weight(node, record)
        return True

    def _quantize_input(self, arg: fx.Node, consumer: fx.Node, record: NodeRecord, dtype: QDType) -> None:
        state = self.qstate.get(arg)
        if state is not None and state.dtype == dtype:
            return
        if value_kind(arg) != "float":
            return
        key = (arg, dtype)
        observed = self._input_observers.get(key)
        if observed is None:
            observer = self._build(record, "activation")
            observed = self._add(observer, arg, arg, "input", consumer.name, dtype)
            self._input_observers[key] = observed
            self.qstate[observed] = QState(dtype, observed.target)
        consumer.replace_input_with(arg, observed)
        record.input_observers.append(observed.target)

    def _observe_weight(self, node: fx.Node, record: NodeRecord) -> None:
        weight = node.args[1] if len(node.args) > 1 else node.kwargs["weight"]
        observer = self._build(record, "weight")
        observed = self._add(observer, weight, weight, "weight", node.name, self._dtype(observer))
        node.replace_input_with(weight, observed)
        record.weight_observer = observed.target

    def _output(self, node: fx.Node, record: NodeRecord) -> None:
        if record.output_kind == "shared":
            state = self.qstate[node.args[0]]
            if state.observer is not None or ops.qtensor_native(node, self.modules):
                self.qstate[node] = state
                return
            # the input's qparams are derived (x + 1.0), so no observer holds them: observe the output itself
            record.output_kind = "own"
        if record.role == "standalone":
            self._standalone_output(node, record)
            return
        activation = record.qconfig.activation()
        dtype = self._dtype(activation)
        if record.output_kind == "none":
            self.qstate[node] = QState(dtype, None)
            return
        if record.output_kind == "fixed":
            key = ops.node_key(node, self.modules)
            observer = _fixed_observer(ops.fixed_range(key), record.qconfig, activation, self.is_qat)
            if self.device is not None:
                observer.to(self.device)
        elif node.op == "call_module" and node.target in self._module_observers:
            self._share_module_observer(node, record, dtype)
            return
        else:
            observer = self._build(record, "activation")
        observed = self._add(observer, node, node, "output", record.name, dtype)
        if node.op == "call_module":
            self._module_observers[node.target] = observed.target
        node.replace_all_uses_with(observed, delete_user_cb=lambda user: user is not observed)
        record.output_observer = observed.target
        self.qstate[observed] = QState(dtype, observed.target)

    def _share_module_observer(self, node: fx.Node, record: NodeRecord, dtype: QDType) -> None:
        """Another call of a module already observed: the same observer, since one quantized module serves both."""
        name = self._module_observers[node.target]
        with self.graph.inserting_after(node):
            observed = self.graph.call_module(name, (node,))
        observed.meta[VALUE] = node.meta.get(VALUE, "float")
        node.replace_all_uses_with(observed, delete_user_cb=lambda user: user is not observed)
        record.output_observer = name
        self.qstate[observed] = QState(dtype, name)

    # --- standalone modules: their own configs say which inputs/outputs are quantized ----------

    def _standalone_inputs(self, node: fx.Node, record: NodeRecord) -> bool:
        inner = get_record(self.modules[node.target], self.api)
        qconfig = record.qconfig
        for index in inner.input_quantized_indexes:
            if index >= len(node.args) or not isinstance(node.args[index], fx.Node):
                raise ConfigError(f"{self.api}: the standalone module {node.target!r} expects input {index} quantized "
                                  "but it is not called with a tensor there")
            if qconfig is None:
                raise ConfigError(f"{self.api}: the standalone module {node.target!r} expects input {index} quantized, "
                                  "but its qconfig in the outer model is None; give it a static qconfig")
            self._quantize_input(node.args[index], node, record, self._dtype(qconfig.activation()))
        return True

    def _standalone_output(self, node: fx.Node, record: NodeRecord) -> None:
        inner = get_record(self.modules[node.target], self.api)
        if 0 in inner.output_quantized_indexes:
            self.qstate[node] = QState(dtypes.uint8, None)
