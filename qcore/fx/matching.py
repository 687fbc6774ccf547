"""Which qconfig each node gets and whether the backend can run it quantized: one NodeRecord per op node.

For every op node: the QConfigMapping entry that applies (module nodes by
their qualified name and class; functions and methods by the module whose
forward calls them, their object type and call index), then the backend
pattern that takes it (with the fused (add, relu) chain found here; module
chains are fused before), then a dtype check of the qconfig against the
pattern's DTypeConfigs, then whether qcore has a quantized form for it.
A qconfig the backend cannot honour leaves the node float with
``warned=True``: prepare_fx warns, naming the node and the reason.
"""

from __future__ import annotations

import numbers
from typing import Any, Optional

import attrs
import torch.nn.functional as F
from torch import fx, nn
from torch.nn.utils.parametrize import type_before_parametrizations

from qcore import dtypes
from qcore.backend_config import BackendDescription, BackendPatternConfig, DTypeConfig, ObservationType
from qcore.dtypes import QDType
from qcore.errors import ConfigError
from qcore.flow import mappings
from qcore.fx import ops
from qcore.fx.custom_config import PrepareCustomConfig
from qcore.fx.record import NodeRecord
from qcore.fx.tracer import QcoreTracer, scope_of
from qcore.fx.values import value_kind
from qcore.qconfig_mapping import QConfigMapping

__all__ = ["Probe", "probe", "Matcher", "OP_NODES"]

OP_NODES = ("call_module", "call_function", "call_method")


@attrs.frozen
class Probe:
    """What a qconfig asks for, read from instances of its activation and weight factories."""

    kind: str  # "static", "dynamic", "weight_only" or "float16"
    act_dtype: Optional[QDType]
    act_range: Optional[tuple[int, int]]
    act_symmetric: bool
    act_class: str
    weight_dtype: Optional[QDType]
    weight_qscheme: Any
    weight_class: str


def _qdtype(value: Any) -> Optional[QDType]:
    if value is None:
        return None
    try:
        return dtypes.qdtype(value)
    except Exception:
        return None


def probe(qconfig: Any) -> Probe:
    """The kind of quantization ``qconfig`` asks for, and the dtypes and ranges the backend checks."""
    act = qconfig.activation()
    weight = qconfig.weight()
    act_dtype = _qdtype(getattr(act, "dtype", None))
    if getattr(act, "is_dynamic", False):
        kind = "dynamic"
    elif act_dtype is None or act_dtype == dtypes.float32:
        kind = "weight_only"
    elif act_dtype.is_float:
        kind = "float16"
    else:
        kind = "static"
    qmin, qmax = getattr(act, "quant_min", None), getattr(act, "quant_max", None)
    scheme = getattr(act, "qscheme", None)
    w_scheme = getattr(weight, "qscheme", None)
    return Probe(
        kind=kind,
        act_dtype=act_dtype,
        act_range=(int(qmin), int(qmax)) if qmin is not None and qmax is not None else None,
        act_symmetric=bool(scheme is not None and dtypes.qscheme(scheme).is_symmetric),
        act_class=type(act).__name__,
        weight_dtype=_qdtype(getattr(weight, "dtype", None)),
        weight_qscheme=dtypes.qscheme(w_scheme) if w_scheme is not None else None,
        weight_class=type(weight).__name__,
    )


def _names(values: Any) -> str:
    return ", ".join(sorted({v.name if hasattr(v, "name") else str(v) for v in values if v is not None})) or "none"


def check_dtypes(
    config: BackendPatternConfig, p: Probe, weighted: bool, backend: str
) -> tuple[Optional[DTypeConfig], Optional[str]]:
    """The first DTypeConfig of ``config`` that ``p`` satisfies, or None and why none does."""
    dynamic = p.kind == "dynamic"
    if p.kind == "weight_only":
        candidates = [c for c in config.dtype_configs if not c.is_dynamic and c.input_dtype in (None, dtypes.float32)
                      and c.weight_dtype is not None]
    else:
        candidates = [c for c in config.dtype_configs if c.is_dynamic == dynamic]
        if not dynamic:
            candidates = [c for c in candidates if c.input_dtype not in (dtypes.float32,)]
    what = ops.label(config.pattern)
    if not candidates:
        offered = sorted({"dynamic" if c.is_dynamic else ("weight-only" if c.input_dtype == dtypes.float32 else "static")
                          for c in config.dtype_configs})
        return None, (f"the backend {backend!r} runs {what} only {' or '.join(offered) or 'in float'} quantized, "
                      f"not {p.kind.replace('_', '-')}; give it a {' or '.join(offered)} qconfig or None")
    reasons = []
    for c in candidates:
        why = _mismatch(c, p, weighted, backend, what)
        if why is None:
            return c, None
        reasons.append(why)
    return None, reasons[0] if len(set(reasons)) == 1 else "; or ".join(dict.fromkeys(reasons))


def _mismatch(c: DTypeConfig, p: Probe, weighted: bool, backend: str, what: str) -> Optional[str]:
    if p.kind != "weight_only" and c.input_dtype is not None and c.input_dtype != p.act_dtype:
        return (f"the backend {backend!r} runs {what} with {c.input_dtype.name} activations but the qconfig's "
                f"activation observer ({p.act_class}) produces {_names([p.act_dtype])}")
    if weighted and c.weight_dtype is not None and c.weight_dtype != p.weight_dtype:
        return (f"the backend {backend!r} runs {what} with {c.weight_dtype.name} weights but the qconfig's weight "
                f"observer ({p.weight_class}) produces {_names([p.weight_dtype])}")
    if weighted and c.weight_qschemes and p.weight_qscheme not in c.weight_qschemes:
        return (f"the backend {backend!r} runs {what} with {_names(c.weight_qschemes)} weights but the qconfig's "
                f"weight observer ({p.weight_class}) is {p.weight_qscheme.value if p.weight_qscheme else 'unknown'}")
    if c.input_qrange_max is not None and p.kind == "static":
        lo, hi = c.input_qrange_max
        if p.act_range is None or p.act_range[0] < lo or p.act_range[1] > hi:
            return (f"the backend {backend!r} runs {what} with activations in at most [{lo}, {hi}], but the qconfig's "
                    f"activation observer ({p.act_class}) uses {list(p.act_range) if p.act_range else 'an unknown range'}; "
                    f"use qcore.get_default_qconfig({backend!r}) or an observer with reduce_range=True / "
                    f"quant_max={hi}")
    if c.symmetric_activations_only and p.kind == "static" and not p.act_symmetric:
        return (f"the backend {backend!r} runs {what} with symmetric activations only, but the qconfig's activation "
                f"observer ({p.act_class}) is affine; use qcore.get_default_qconfig({backend!r})")
    return None


def _weighted(config: BackendPatternConfig) -> bool:
    return any(c.weight_dtype is not None for c in config.dtype_configs)


def _explicit(entry: str, node: fx.Node) -> bool:
    """Whether the matching QConfigMapping entry names this node itself (not the global or a parent module)."""
    if entry.startswith(("object_type(", "module_name_object_type_order")):
        return True
    return node.op == "call_module" and entry == f"module_name({node.target!r})"


def _number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


class Matcher:
    """Decides, node by node, what prepare does: qconfig lookup, backend pattern, dtype check, quantized form."""

    def __init__(
        self,
        gm: fx.GraphModule,
        mapping: QConfigMapping,
        backend: BackendDescription,
        custom: PrepareCustomConfig,
        custom_swaps: dict[str, dict[type, type]],
        tracer: QcoreTracer,
        api: str,
    ) -> None:
        self.gm = gm
        self.mapping = mapping
        self.backend = backend
        self.custom = custom
        self.custom_swaps = custom_swaps
        self.tracer = tracer
        self.api = api
        self.modules: dict[str, nn.Module] = dict(gm.named_modules())
        self.qconfigs: dict[str, tuple[Any, str]] = {}
        self.lookups: dict[str, tuple] = {}
        self._probes: dict[int, Probe] = {}
        self._patterns: dict[Any, Optional[BackendPatternConfig]] = {}
        self._tables: Optional[dict[str, tuple[dict[type, type], ...]]] = None
        self._lookup_all()

    # --- qconfigs ---------------------------------------------------------------------

    def _lookup_all(self) -> None:
        """Look every op node up in the QConfigMapping, counting calls per (scope, object type) for order entries."""
        counters: dict[tuple[str, Any], int] = {}
        for node in self.gm.graph.nodes:
            if node.op not in OP_NODES:
                continue
            scope, _ = scope_of(node)
            obj = ops.object_type(node, self.modules)
            try:
                index = counters.get((scope, obj), 0)
                counters[(scope, obj)] = index + 1
            except TypeError:  # an unhashable target
                index = 0
            name = node.target if node.op == "call_module" else scope
            self.lookups[node.name] = (name, obj, index)
            self.qconfigs[node.name] = self.mapping.lookup(name, obj, index)

    def qconfig(self, node: fx.Node) -> tuple[Any, str]:
        return self.qconfigs.get(node.name, (None, "no entry"))

    def probe(self, qconfig: Any) -> Probe:
        key = id(qconfig)
        if key not in self._probes:
            try:
                self._probes[key] = probe(qconfig)
            except ConfigError:
                raise
            except Exception as exc:
                raise ConfigError(f"{self.api}: cannot build the observers of {qconfig!r}: {exc}") from exc
        return self._probes[key]

    def refresh(self) -> None:
        """Re-read the model's submodules (after fusion or swaps)."""
        self.modules = dict(self.gm.named_modules())

    # --- patterns ---------------------------------------------------------------------

    def pattern(self, key: Any) -> Optional[BackendPatternConfig]:
        """The backend's pattern config for ``key`` under any of its spellings."""
        try:
            if key in self._patterns:
                return self._patterns[key]
        except TypeError:
            return None
        found = None
        for spelled in ops.pattern_spellings(key):
            found = self.backend.supports(spelled)
            if found is not None:
                break
        self._patterns[key] = found
        return found

    def can_fuse(self, nodes: list[fx.Node], pattern: tuple[type, ...]) -> bool:
        """Fuse a module chain only when its nodes share one qconfig that the backend runs on the fused pattern."""
        qconfigs = [self.qconfig(n)[0] for n in nodes]
        first = qconfigs[0]
        if first is None or any(q != first for q in qconfigs[1:]):
            return False
        config = self.pattern(pattern)
        if config is None:
            return False
        p = self.probe(first)
        if p.kind not in ("static", "dynamic"):
            return False
        return check_dtypes(config, p, _weighted(config), self.backend.name)[0] is not None

    # --- decisions --------------------------------------------------------------------

    def decide(self) -> dict[str, NodeRecord]:
        """A NodeRecord per op node of the (fused) graph; a fused (add, relu) pair shares one record."""
        records: dict[str, NodeRecord] = {}
        nodes = [n for n in self.gm.graph.nodes if n.op in OP_NODES]
        for node in nodes:
            qconfig, entry = self.qconfig(node)
            scope, _ = scope_of(node)
            records[node.name] = NodeRecord(
                name=node.name, op=node.op, target=self._target_label(node), scope=scope,
                module=node.target if node.op == "call_module" else "",
                qconfig=qconfig, qconfig_entry=entry, lookup=self.lookups.get(node.name, ()),
            )
        fused = self._fuse_with_relu(nodes, records)
        for node in nodes:
            record = records[node.name]
            if node.name in fused or record.name != node.name:
                continue  # the first node of a fused (op, relu): decided with its relu
            self._decide(node, record)
        return records

    def _target_label(self, node: fx.Node) -> str:
        if node.op == "call_module":
            return type_before_parametrizations(self.modules[node.target]).__name__
        return ops.label(node.target)

    def _fuse_with_relu(self, nodes: list[fx.Node], records: dict[str, NodeRecord]) -> set[str]:
        """Give (add, relu) and (F.linear / F.conv*, relu) chains the backend runs fused one record (the relu's).

        Returns the names of the first nodes, which are decided with their relu.
        """
        firsts: set[str] = set()
        for node in nodes:
            if not ops.is_relu(node, self.modules):
                continue
            first = node.args[0]
            if not isinstance(first, fx.Node) or first.op not in ("call_function", "call_method") or len(first.users) != 1:
                continue
            if first.target in ops.WEIGHTED_FUNCTIONS:
                pass
            elif ops.BINARY_OPS.get(first.target) != "add" or not self._plain_binary(first) or (
                    self._scalar_operand(first) is not None):
                continue
            qconfig = self.qconfig(node)[0]
            if qconfig is None or qconfig != self.qconfig(first)[0] or self.probe(qconfig).kind != "static":
                continue
            config = self.pattern((first.target, nn.ReLU))
            if config is None or check_dtypes(config, self.probe(qconfig), _weighted(config), self.backend.name)[0] is None:
                continue
            record = records[node.name]
            record.pattern_nodes = (first.name, node.name)
            record.target = f"{records[first.name].target} + {record.target}"
            records[first.name] = record
            firsts.add(first.name)
        return firsts

    def _plain_binary(self, node: fx.Node) -> bool:
        """``op(a, b)`` with no extra arguments, at least one float tensor, the other a float tensor or a number."""
        if len(node.args) != 2 or node.kwargs:
            return False
        a, b = node.args
        kinds = [value_kind(a), value_kind(b)]
        if "float" not in kinds:
            return False
        return all(k == "float" or _number(v) for k, v in zip(kinds, (a, b)))

    def _scalar_operand(self, node: fx.Node) -> Optional[float]:
        a, b = node.args
        if _number(b):
            return float(b)
        if _number(a):
            return float(a)
        return None

    def _decide(self, node: fx.Node, record: NodeRecord) -> None:
        module = self.modules.get(node.target) if node.op == "call_module" else None
        qconfig, entry = record.qconfig, record.qconfig_entry
        if module is not None and self.tracer.is_skipped(module, node.target):
            record.keep_float("listed as non-traceable in prepare_custom_config, so it runs in float")
            return
        if module is not None and self.custom.standalone_entry(node.target, type(module)) is not None:
            record.quant_type, record.role = "static", "standalone"
            return
        if qconfig is None:
            record.keep_float(f"its qconfig is None ({entry})")
            return
        if value_kind(node) not in ("float", "tuple"):
            record.keep_float("it does not compute floating-point tensors")
            return
        p = self.probe(qconfig)
        observed = self.custom_swaps.get(p.kind, {}).get(type_before_parametrizations(module)) if module else None
        if observed is not None:
            record.quant_type, record.role = p.kind, "custom"
            # an observed module that places its own observers (quantizable LSTM / MHA) gets none on its output
            own = p.kind == "static" and not issubclass(observed, tuple(mappings.no_observer_set()))
            record.output_kind = "own" if own else "none"
            return
        key = ops.node_key(node, self.modules)
        head = node
        if record.pattern_nodes:
            head = node.args[0]
            key = (head.target, nn.ReLU)
            module = None  # a fused (add, nn.ReLU()) runs as the add's quantized form, not the ReLU module's
        config = self.pattern(key)
        if config is None:
            record.keep_float(f"the backend {self.backend.name!r} has no quantized pattern for {ops.label(key)}",
                              warn=_explicit(entry, node))
            return
        record.pattern = config.pattern
        weighted = _weighted(config)
        if p.kind == "float16":
            record.keep_float("its qconfig asks for float16 static quantization, which qcore does not run; use "
                              "qcore.float16_dynamic_qconfig for float16 weights", warn=True)
            return
        if p.kind in ("dynamic", "weight_only") and not weighted:
            record.keep_float(f"{p.kind.replace('_', '-')} quantization applies to ops with weights; this op runs in "
                              "float between them")
            return
        output_kind = self._output_kind(node, key, config)
        if output_kind != "shared" or p.kind != "static":
            dtype_config, why = check_dtypes(config, p, weighted, self.backend.name)
            if dtype_config is None:
                record.keep_float(why, warn=True)
                return
            record.dtype_config = dtype_config
        role = self._role(head, key, output_kind, p.kind)
        missing = self._missing_form(head, module, role, p.kind, weighted)
        if missing is not None:
            record.keep_float(missing, warn=True)
            return
        record.quant_type, record.role = p.kind, role
        record.output_kind = output_kind if p.kind == "static" else "none"
        if role == "binary" and not record.pattern_nodes:
            record.scalar = self._scalar_operand(head)
            if record.scalar is not None:
                record.output_kind = "none"

    def _output_kind(self, node: fx.Node, key: Any, config: BackendPatternConfig) -> str:
        if config.observation_type == ObservationType.OUTPUT_SHARE_OBSERVER_WITH_INPUT:
            return "shared"
        if not isinstance(key, tuple) and ops.fixed_range(key) is not None:
            return "fixed"
        return "own"

    def _role(self, node: fx.Node, key: Any, output_kind: str, kind: str) -> str:
        if node.op == "call_module":
            return "module"
        if node.target in ops.WEIGHTED_FUNCTIONS:
            return "weighted_function"
        if kind != "static":
            return "general"
        if node.target in ops.BINARY_OPS and self._plain_binary(node):
            if ops.BINARY_OPS.get(node.target) != "matmul" or self._scalar_operand(node) is None:
                return "binary"
        if ops.is_cat(key) and node.args and isinstance(node.args[0], (list, tuple)) and len(node.args) <= 2 and (
                not node.kwargs or set(node.kwargs) == {"dim"}):
            return "cat"
        if output_kind == "shared" and ops.qtensor_native(node, self.modules):
            return "shared"
        return "general"

    def _missing_form(self, node: fx.Node, module: Optional[nn.Module], role: str, kind: str,
                      weighted: bool) -> Optional[str]:
        """Why qcore cannot build the quantized form of this node, or None when it can."""
        if role == "weighted_function":
            weight = node.args[1] if len(node.args) > 1 else node.kwargs.get("weight")
            if not isinstance(weight, fx.Node) or weight.op != "get_attr":
                return (f"the weight of {ops.label(node.target)} is computed in the graph; only weights held as module "
                        "parameters or buffers can be quantized")
            if kind != "static" and node.target is not F.linear:
                return f"qcore has no {kind.replace('_', '-')} form of {ops.label(node.target)}"
            return None
        if module is None or not weighted:
            return None
        cls = type_before_parametrizations(module)
        if self._tables is None:
            static = mappings.get_default_static_quant_module_mappings()
            dynamic = mappings.get_default_dynamic_quant_module_mappings()
            weight_only = mappings.get_default_weight_only_quant_module_mappings()
            qat = mappings.get_default_qat_module_mappings()
            self._tables = {"static": (static, qat), "dynamic": (dynamic, weight_only), "weight_only": (weight_only, static)}
        if any(cls in table for table in self._tables[kind]):
            return None  # (a static module may be swapped for its QAT module, whose quantized form exists)
        return f"qcore has no {kind.replace('_', '-')} quantized module for {cls.__name__}"
