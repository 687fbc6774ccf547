"""convert_fx / convert_to_reference_fx: the calibrated graph becomes a quantized one, lowered for the backend.

Following the prepare record, node by node:

* an observer on a float value becomes a ``Quantize`` module (its qparams),
  one on a value already quantized by it disappears, one on a value
  quantized otherwise becomes ``DeQuantize`` then ``Quantize``;
* a module runs as its quantized class (``from_float`` reads the output
  observer as ``activation_post_process``, as in eager mode); ``F.linear``
  and ``F.conv*`` become quantized modules built from their weight;
  add / mul / matmul / cat / add+relu call a ``QFunctional``; ops a QTensor
  runs itself (view, relu, max-pool) stay; any other quantized op runs in
  the reference pattern: ``DeQuantize`` -> float op -> ``Quantize``;
* dynamic and weight-only nodes become their modules (float in, float out);
* a quantized value reaching a float op or the output goes through
  ``DeQuantize``.

The result is qcore's reference quantized model (its quantized modules are
the reference modules). convert_fx then offers every quantized module to
the backend through ``qcore_lower_module``, the lowering eager convert uses;
convert_to_reference_fx stops before that. The converted GraphModule takes
and returns float tensors, and ``torch.jit.script`` turns each quantized
module into its TorchScript twin.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from typing import Any, Iterator, Optional

import attrs
import torch
from torch import fx, nn
from torch.nn.utils.parametrize import type_before_parametrizations

from qcore.errors import ConfigError, QcoreError, UncalibratedWarning
from qcore.flow import mappings
from qcore.fx import ops
from qcore.fx.common import (
    custom_module_swaps, fresh_name, model_device, preserve_attributes, resolve_backend, set_submodule,
)
from qcore.fx.custom_config import ConvertCustomConfig, as_convert_custom_config
from qcore.fx.donation import mark_donated_residuals
from qcore.fx.placement import activation_inputs
from qcore.fx.quantized_ops import BINARY_MODULES, SCALAR_MODULES, QuantizedCat
from qcore.fx.record import FxRecord, NodeRecord, attach_record, get_record
from qcore.fx.values import VALUE, value_kind
from qcore.qconfig_mapping import as_qconfig_mapping

__all__ = ["convert_fx", "convert_to_reference_fx"]


@attrs.frozen
class _Value:
    """What a node of the converted graph carries: ``"q"`` (a QTensor), ``"f"`` (float) or ``"o"`` (no tensor)."""

    kind: str
    observer: Optional[str] = None  # for "q": the observer whose qparams it has (None when derived)


_FLOAT = _Value("f")
_OTHER = _Value("o")


def convert_fx(
    graph_module: fx.GraphModule,
    convert_custom_config: Any = None,
    _remove_qconfig: bool = True,
    qconfig_mapping: Any = None,
    backend_config: Any = None,
) -> fx.GraphModule:
    """The quantized model of a prepared (and calibrated or trained) GraphModule, lowered for the backend.

    ``convert_custom_config`` (a ConvertCustomConfig or its dict form) adds
    observed -> quantized custom-module swaps; ``qconfig_mapping`` may set
    entries to None to keep nodes float after all; ``backend_config`` names
    the backend to lower for (by default the one prepare followed).
    """
    return _convert(graph_module, convert_custom_config, _remove_qconfig, qconfig_mapping, backend_config,
                    is_reference=False, api="convert_fx")


def convert_to_reference_fx(
    graph_module: fx.GraphModule,
    convert_custom_config: Any = None,
    _remove_qconfig: bool = True,
    qconfig_mapping: Any = None,
    backend_config: Any = None,
) -> fx.GraphModule:
    """Like :func:`convert_fx`, stopping at the reference quantized model (no backend lowering)."""
    return _convert(graph_module, convert_custom_config, _remove_qconfig, qconfig_mapping, backend_config,
                    is_reference=True, api="convert_to_reference_fx")


def _observed_to_quantized(config: ConvertCustomConfig) -> dict[str, dict[type, type]]:
    """{quant type: {observed class: quantized class}}: the registry's static triples, then the user's (which win)."""
    from qcore.flow.eager.custom_modules import _registered_swaps

    registered = {s.observed_cls: s.quantized_cls for s in _registered_swaps()}
    return custom_module_swaps(registered, config.observed_to_quantized_mapping, "from_observed",
                               "convert_custom_config")


def _convert(
    graph_module: Any, convert_custom_config: Any, remove_qconfig: bool, qconfig_mapping: Any, backend_config: Any,
    is_reference: bool, api: str,
) -> fx.GraphModule:
    record = get_record(graph_module, api)
    if record.stage != "prepared":
        raise ConfigError(f"{api}: this model is already converted ({record.stage}); convert the prepared model")
    config = as_convert_custom_config(convert_custom_config)
    gm = copy.deepcopy(graph_module)
    record = get_record(gm, api)
    if qconfig_mapping is not None:
        _apply_mapping_update(record, qconfig_mapping, api)
    backend = record.backend if backend_config is None else resolve_backend(backend_config, api).name
    converter = _Converter(gm, record, _observed_to_quantized(config), is_reference, api)
    converter.run()
    if not is_reference:
        mark_donated_residuals(gm)
        converter.lower(backend)
    if remove_qconfig:
        from qcore.flow.eager.convert import _remove_qconfig

        _remove_qconfig(gm)
    record.stage = "reference" if is_reference else "lowered"
    attach_record(gm, record)
    gm._qcore_backend = "reference" if is_reference else backend
    preserve_attributes(gm, graph_module, config.preserved_attributes, api)
    return gm


def _apply_mapping_update(record: FxRecord, qconfig_mapping: Any, api: str) -> None:
    """convert's qconfig_mapping may turn quantization off for nodes (a None qconfig), as in torch.ao."""
    mapping = as_qconfig_mapping(qconfig_mapping)
    for node_record in {id(r): r for r in record.nodes.values()}.values():
        if not node_record.quantized or not node_record.lookup:
            continue
        qconfig, entry = mapping.lookup(*node_record.lookup)
        if qconfig is None:
            node_record.keep_float(f"convert's qconfig_mapping sets its qconfig to None ({entry})")
        elif qconfig != node_record.qconfig:
            raise ConfigError(
                f"{api}: qconfig_mapping at convert may only set qconfigs to None; node {node_record.name!r} "
                f"({node_record.target}) was prepared with {node_record.qconfig!r} but {entry} now gives {qconfig!r}"
            )


class _Converter:
    """One conversion pass over a deep copy of the prepared GraphModule."""

    def __init__(self, gm: fx.GraphModule, record: FxRecord, custom: dict[str, dict[type, type]], is_reference: bool,
                 api: str) -> None:
        self.gm = gm
        self.is_reference = is_reference
        self.graph = gm.graph
        self.record = record
        self.custom = custom
        self.api = api
        self.modules = dict(gm.named_modules())
        self.device = model_device(gm)
        self.values: dict[fx.Node, _Value] = {}
        self.dequantized: dict[fx.Node, fx.Node] = {}
        self.swapped: list[str] = []  # quantized submodules created or swapped in, for lowering
        self.static = mappings.get_default_static_quant_module_mappings()
        self.dynamic = mappings.get_default_dynamic_quant_module_mappings()
        self.weight_only = mappings.get_default_weight_only_quant_module_mappings()

    # --- the walk ---------------------------------------------------------------------

    def run(self) -> None:
        placeholders = [n for n in self.graph.nodes if n.op == "placeholder"]
        quantized_inputs = set(self.record.input_quantized_indexes)
        for node in list(self.graph.nodes):
            if node.op == "placeholder":
                index = placeholders.index(node)
                self.values[node] = _Value("q") if index in quantized_inputs else self._plain(node)
            elif node.op == "get_attr":
                self.values[node] = self._plain(node)
            elif node.op == "output":
                self._output(node)
            elif node.op == "call_module" and node.target in self.record.observers:
                self._observer(node)
            else:
                self._op(node)
        for node in list(self.graph.nodes):
            if node.op == "get_attr" and not node.users:
                self.graph.erase_node(node)
        self.graph.lint()
        self.gm.delete_all_unused_submodules()
        self.gm.recompile()

    def _plain(self, node: fx.Node) -> _Value:
        return _FLOAT if value_kind(node) in ("float", "tuple") else _OTHER

    def _op(self, node: fx.Node) -> None:
        record = self.record.nodes.get(node.name)
        if record is None or not record.quantized:
            self._float_op(node)
            return
        if record.pattern_nodes and node.name != record.pattern_nodes[-1]:
            return  # the add of a fused (add, relu): converted with its relu
        try:
            with _naming_warnings(f"{self.api}: node {record.display}"):
                if record.quant_type == "static":
                    self._static(node, record)
                else:
                    self._dynamic(node, record)
        except QcoreError as exc:
            from qcore.flow.eager.convert import _named_error

            raise _named_error(exc, f"{self.api}: node {record.display}") from exc
        except Exception as exc:
            raise ConfigError(f"{self.api}: converting node {record.display} failed: "
                              f"{type(exc).__name__}: {exc}") from exc

    # --- helpers ------------------------------------------------------------------------

    def _add_module(self, base: str, module: nn.Module, swapped: bool = True) -> str:
        name = fresh_name(self.gm, base)
        if self.device is not None:
            module.to(self.device)
        self.gm.add_submodule(name, module)
        self.modules[name] = module
        if swapped:
            self.swapped.append(name)
        return name

    def _install(self, name: str, module: nn.Module) -> None:
        """Put a swapped-in module at ``name``, on the model's device, for lowering."""
        if not isinstance(module, nn.Module):
            raise ConfigError(f"the swap for {name!r} returned {type(module).__name__}, not a module")
        if self.device is not None:
            module.to(self.device)
        module._qcore_name = name
        set_submodule(self.gm, name, module)
        self.modules[name] = module
        self.swapped.append(name)

    def _dequantize(self, node: fx.Node) -> fx.Node:
        """``node``'s value as float: through a DeQuantize module (one per quantized value)."""
        from qcore.nn.quantized import DeQuantize

        existing = self.dequantized.get(node)
        if existing is not None:
            return existing
        if value_kind(node) == "tuple":
            users = ", ".join(repr(u.name) for u in node.users)
            raise ConfigError(
                f"the quantized tuple {node.name!r} reaches float code ({users}) whole; index it in the model "
                "(out, (h, c) = self.lstm(x)) so each tensor can be dequantized, or give that op a None qconfig"
            )
        name = self._add_module("dequantize", DeQuantize())
        with self.graph.inserting_after(node):
            dq = self.graph.call_module(name, (node,))
        dq.meta[VALUE] = "float"
        self.values[dq] = _FLOAT
        self.dequantized[node] = dq
        return dq

    def _quantize(self, node: fx.Node, observer: str) -> fx.Node:
        """A Quantize module with ``observer``'s qparams, applied to the float value ``node``."""
        from qcore.nn.quantized import Quantize

        post = self.modules[observer]
        module = Quantize.from_float(_Holder(post))
        name = self._add_module("quantize", module)
        module._qcore_name = name
        with self.graph.inserting_after(node):
            q = self.graph.call_module(name, (node,))
        q.meta[VALUE] = "float"
        self.values[q] = _Value("q", observer)
        return q

    def _float_inputs(self, node: fx.Node, keep_quantized: bool = False) -> None:
        """Dequantize every quantized input of ``node`` (a query like ``x.size()`` reads a QTensor directly)."""
        if keep_quantized:
            return
        for arg in list(node.all_input_nodes):
            if self.values.get(arg, _OTHER).kind == "q":
                node.replace_input_with(arg, self._dequantize(arg))

    def _require_quantized(self, node: fx.Node, args: list[fx.Node], record: NodeRecord) -> None:
        for arg in args:
            if self.values.get(arg, _OTHER).kind != "q":
                raise ConfigError(f"its input {arg.name!r} is not quantized; the prepared graph was changed after "
                                  "prepare_fx, prepare the model again")

    def _replace(self, node: fx.Node, target: str, args: tuple, value: _Value) -> fx.Node:
        with self.graph.inserting_after(node):
            new = self.graph.call_module(target, args)
        new.meta[VALUE] = node.meta.get(VALUE, "float")
        node.replace_all_uses_with(new)
        self.graph.erase_node(node)
        self.values[new] = value
        return new

    def _output_value(self, record: NodeRecord, source: Optional[fx.Node] = None) -> tuple[Optional[nn.Module], _Value]:
        """The observer module giving the node's output qparams, and the value the node then carries."""
        if record.output_kind == "shared":
            value = self.values[source]
            return (self.modules[value.observer] if value.observer else None), value
        if record.output_kind == "none":
            return None, _Value("q", None)
        return self.modules[record.output_observer], _Value("q", record.output_observer)

    # --- node kinds -------------------------------------------------------------------------

    def _float_op(self, node: fx.Node) -> None:
        self._float_inputs(node, keep_quantized=ops.is_query(node) and value_kind(node) == "other")
        self.values[node] = self._plain(node)

    def _observer(self, node: fx.Node) -> None:
        observer = node.target
        source = node.args[0]
        value = self.values.get(source, _OTHER)
        if self.record.observers[observer].role == "weight" or value.kind == "o" or (
                value.kind == "q" and value.observer == observer):
            node.replace_all_uses_with(source)
            self.graph.erase_node(node)
            return
        if value.kind == "q":
            source = self._dequantize(source)
        record = self.record.observers[observer]
        served = self.record.nodes.get(record.node)
        label = served.display if served is not None else repr(record.node)
        with _naming_warnings(f"{self.api}: the {record.role} observer {observer!r} of node {label}"):
            q = self._quantize(source, observer)
        node.replace_all_uses_with(q)
        self.graph.erase_node(node)

    def _output(self, node: fx.Node) -> None:
        keep = set(self.record.output_quantized_indexes)
        outputs = node.args[0]

        def dequantize_all(value: Any) -> Any:
            return fx.node.map_arg(value, lambda n: self._dequantize(n) if self.values.get(n, _OTHER).kind == "q" else n)

        if isinstance(outputs, (tuple, list)):
            new = type(outputs)(value if i in keep else dequantize_all(value) for i, value in enumerate(outputs))
        else:
            new = outputs if 0 in keep else dequantize_all(outputs)
        node.args = (new,)

    def _static(self, node: fx.Node, record: NodeRecord) -> None:
        head = node.args[0] if record.pattern_nodes else node
        inputs = activation_inputs(head, record)
        if record.role == "shared":
            self._require_quantized(node, inputs[:1], record)
            self.values[node] = self.values[node.args[0]]
            return
        if record.role in ("module", "custom"):
            self._module(node, record, inputs)
        elif record.role == "weighted_function":
            self._require_quantized(node, inputs, record)
            new = self._weighted_function(head, record, static=True)
            if head is not node:  # (F.linear, relu): the relu runs on the QTensor, already on the relu's grid
                self.values[node] = self.values[new]
        elif record.role == "binary":
            self._binary(node, record)
        elif record.role == "cat":
            self._require_quantized(node, inputs, record)
            self._cat(node, record)
        elif record.role == "standalone":
            self._standalone(node)
        else:
            self._require_quantized(node, inputs, record)
            self._reference(node, record, inputs)

    def _module(self, node: fx.Node, record: NodeRecord, inputs: list[fx.Node]) -> None:
        module = self.modules[node.target]
        cls = type_before_parametrizations(module)
        self._require_quantized(node, inputs, record)
        post, value = self._output_value(record, inputs[0] if inputs else None)
        if node.target in self.swapped:  # another call of a module already swapped (its observer is shared)
            self.values[node] = value
            return
        if record.role == "custom":
            target = self.custom.get("static", {}).get(cls)
            if target is None:
                raise ConfigError(
                    f"{node.target!r} is an observed custom module ({cls.__name__}) but no quantized class is given "
                    f"for it: pass convert_custom_config={{'observed_to_quantized_custom_module_class': {{'static': "
                    f"{{{cls.__name__}: <quantized class>}}}}}}"
                )
            if post is not None:
                module.activation_post_process = post
            new = target.from_observed(module)
        elif record.output_kind == "shared" and ops.qtensor_native(node, self.modules):
            self.values[node] = value
            return
        elif cls in self.static:
            if post is not None:
                module.activation_post_process = post
            new = _from_float(self.static[cls], module)
        else:
            self._reference(node, record, inputs)
            return
        self._install(node.target, new)
        self.values[node] = value

    def _weighted_function(self, node: fx.Node, record: NodeRecord, static: bool) -> fx.Node:
        """``F.linear`` / ``F.conv*``: a float module holding the weight, then its quantized class."""
        float_cls = ops.WEIGHTED_FUNCTIONS[node.target]
        kwargs = _weighted_arguments(node)
        x = kwargs.pop("input")
        weight = self._tensor(kwargs.pop("weight"))
        bias = kwargs.pop("bias", None)
        bias = self._tensor(bias) if bias is not None else None
        if float_cls is nn.Linear:
            module = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
        else:
            groups = int(kwargs.get("groups", 1))
            module = float_cls(weight.shape[1] * groups, weight.shape[0], tuple(weight.shape[2:]), bias=bias is not None,
                               **{k: v for k, v in kwargs.items() if k in ("stride", "padding", "dilation", "groups")})
        module.to(weight.device)
        with torch.no_grad():
            module.weight.copy_(weight)
            if bias is not None:
                module.bias.copy_(bias)
        module.qconfig = record.qconfig
        if static:
            if record.weight_observer is not None:
                module.weight_fake_quant = self.modules[record.weight_observer]
            module.activation_post_process = self.modules[record.output_observer]
            target = self.static[float_cls]
            value = _Value("q", record.output_observer)
        else:
            target = self._dynamic_target(float_cls, record)
            value = _FLOAT
        new = _from_float(target, module)
        name = self._add_module(node.name, new)
        new._qcore_name = name
        return self._replace(node, name, (x,), value)

    def _tensor(self, arg: Any) -> torch.Tensor:
        if isinstance(arg, fx.Node) and arg.op == "call_module" and arg.target in self.record.observers:
            arg = arg.args[0]  # the weight observer node: read the weight itself
        if isinstance(arg, fx.Node) and arg.op == "get_attr":
            return _get_attr(self.gm, arg.target).detach()
        if isinstance(arg, torch.Tensor):
            return arg.detach()
        raise ConfigError(f"expected a weight or bias held by the model, got {arg!r}")

    def _binary(self, node: fx.Node, record: NodeRecord) -> None:
        from qcore.nn.quantized import FloatFunctional, QFunctional

        add = node.args[0] if record.pattern_nodes else node
        op = "add_relu" if record.pattern_nodes else ops.BINARY_OPS[add.target]
        tensors = [a for a in add.args if isinstance(a, fx.Node)]
        self._require_quantized(node, tensors, record)
        if record.scalar is not None:
            module = SCALAR_MODULES[op](QFunctional(), record.scalar)
            args: tuple = (tensors[0],)
            value = _Value("q", None)
        else:
            float_functional = FloatFunctional()
            float_functional.activation_post_process = self.modules[record.output_observer]
            module = BINARY_MODULES[op](QFunctional.from_float(float_functional))
            args = tuple(add.args)
            value = _Value("q", record.output_observer)
        name = self._add_module(node.name, module, swapped=False)
        self._functional(name, module)
        self._replace(node, name, args, value)
        if add is not node:
            self.graph.erase_node(add)

    def _functional(self, name: str, module: nn.Module) -> None:
        """The QFunctional inside a call-site module is what the backend lowers."""
        module.functional._qcore_name = name
        self.swapped.append(f"{name}.functional")

    def _cat(self, node: fx.Node, record: NodeRecord) -> None:
        from qcore.nn.quantized import FloatFunctional, QFunctional

        tensors = node.args[0]
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        float_functional = FloatFunctional()
        float_functional.activation_post_process = self.modules[record.output_observer]
        module = QuantizedCat(QFunctional.from_float(float_functional), dim)
        name = self._add_module(node.name, module, swapped=False)
        self._functional(name, module)
        self._replace(node, name, (list(tensors),), _Value("q", record.output_observer))

    def _reference(self, node: fx.Node, record: NodeRecord, inputs: list[fx.Node]) -> None:
        """DeQuantize -> the float op -> Quantize with the output observer's qparams."""
        post, value = self._output_value(record, inputs[0] if inputs else None)
        self._float_inputs(node)
        self.values[node] = _FLOAT
        if value.observer is None:
            raise ConfigError("has no observer to take output qparams from")
        users = list(node.users)
        q = self._quantize(node, value.observer)
        for user in users:
            user.replace_input_with(node, q)
        self.values[q] = value

    def _standalone(self, node: fx.Node) -> None:
        inner_gm = self.modules[node.target]
        inner = get_record(inner_gm, self.api)
        keep = set(inner.input_quantized_indexes)
        for index, arg in enumerate(node.args):
            if isinstance(arg, fx.Node) and index not in keep and self.values.get(arg, _OTHER).kind == "q":
                node.replace_input_with(arg, self._dequantize(arg))
        converted = _convert(inner_gm, None, True, None, None, is_reference=self.is_reference,
                             api=f"{self.api} (standalone module {node.target!r})")
        set_submodule(self.gm, node.target, converted)
        self.modules[node.target] = converted
        self.values[node] = _Value("q", None) if 0 in inner.output_quantized_indexes else self._plain(node)

    def _dynamic_target(self, cls: type, record: NodeRecord) -> type:
        tables = (self.dynamic, self.weight_only) if record.quant_type == "dynamic" else (self.weight_only, self.static)
        for table in tables:
            if cls in table:
                return table[cls]
        raise ConfigError(f"qcore has no {record.quant_type} module for {cls.__name__}")

    def _dynamic(self, node: fx.Node, record: NodeRecord) -> None:
        self._float_inputs(node)
        if record.role == "weighted_function":
            self._weighted_function(node, record, static=False)
            return
        if node.target in self.swapped:  # another call of a module already swapped
            self.values[node] = self._plain(node)
            return
        module = self.modules[node.target]
        cls = type_before_parametrizations(module)
        if record.role == "custom":
            target = self.custom.get(record.quant_type, {}).get(cls)
            if target is None:
                raise ConfigError(f"{node.target!r} is an observed custom module ({cls.__name__}) but no quantized class "
                                  f"is given for it in convert_custom_config[{record.quant_type!r}]")
            new = target.from_observed(module)
        else:
            new = _from_float(self._dynamic_target(cls, record), module)
        self._install(node.target, new)
        self.values[node] = self._plain(node)

    # --- lowering -------------------------------------------------------------------------

    def lower(self, backend: str) -> None:
        """Offer each quantized module to the backend through ``qcore_lower_module``, as eager convert does."""
        from qcore.flow.eager.convert import lower_module

        for name in dict.fromkeys(self.swapped):
            try:
                module = self.gm.get_submodule(name)
            except AttributeError:
                continue  # removed after the swap
            lowered = lower_module(module, backend, name)
            if lowered is not module:
                lowered._qcore_name = name
                set_submodule(self.gm, name, lowered)
        self.gm.recompile()


_WEIGHTED_PARAMETERS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")


def _weighted_arguments(node: fx.Node) -> dict[str, Any]:
    """The arguments of an ``F.linear`` / ``F.conv*`` call by name (``F.linear`` takes the first three)."""
    names = _WEIGHTED_PARAMETERS[:3] if node.target is torch.nn.functional.linear else _WEIGHTED_PARAMETERS
    if len(node.args) > len(names) or set(node.kwargs) - set(names):
        raise ConfigError(f"unexpected arguments to {ops.label(node.target)}: {node.args}, {node.kwargs}")
    arguments = dict(zip(names, node.args))
    arguments.update(node.kwargs)
    return arguments


@contextlib.contextmanager
def _naming_warnings(where: str) -> Iterator[None]:
    """Re-issue the UncalibratedWarnings of building quantized modules with the node they are for."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UncalibratedWarning)
        yield
    for w in caught:
        if issubclass(w.category, UncalibratedWarning):
            warnings.warn(f"{where}: {w.message}", UncalibratedWarning, stacklevel=5)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)


class _Holder(nn.Module):
    """What Quantize.from_float reads: a module whose ``activation_post_process`` is the observer."""

    def __init__(self, post: nn.Module) -> None:
        super().__init__()
        self.activation_post_process = post


def _from_float(target: type, module: nn.Module) -> nn.Module:
    from qcore.flow.eager.convert import _call_from_float

    return _call_from_float(target, module, False)


def _get_attr(root: nn.Module, target: str) -> torch.Tensor:
    value: Any = root
    for part in target.split("."):
        value = getattr(value, part)
    return value
