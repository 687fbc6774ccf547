"""prepare_fx / prepare_qat_fx: trace, fuse, decide per node from the backend's patterns, insert observers.

The steps, on a copy of the model:

1. every submodule gets the ``qconfig`` the QConfigMapping gives its name
   and class (what ``from_float`` of module swaps reads);
2. :class:`~qcore.fx.tracer.QcoreTracer` traces it (custom, standalone and
   non-traceable modules kept whole);
3. module chains are fused where the backend runs them fused and their
   nodes share a qconfig;
4. ``example_inputs`` run once to learn which values are float tensors;
5. :class:`~qcore.fx.matching.Matcher` decides each node: quantized how,
   or float and why; what the backend cannot honour is warned about
   (:class:`~qcore.fx.errors.FloatFallbackWarning`), never dropped in silence;
6. QAT modules, observed custom modules and prepared standalone modules
   are swapped in;
7. :class:`~qcore.fx.placement.Placement` inserts the observers.

The decisions stay on the model as ``model.meta["qcore_fx"]`` (an
:class:`~qcore.fx.record.FxRecord`), which convert_fx follows.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

from torch import fx, nn
from torch.nn.utils.parametrize import type_before_parametrizations

from qcore.errors import ConfigError
from qcore.flow import mappings
from qcore.fx.common import custom_module_swaps, model_device, preserve_attributes, resolve_backend, set_submodule
from qcore.fx.custom_config import PrepareCustomConfig, as_prepare_custom_config
from qcore.fx.errors import FloatFallbackWarning
from qcore.fx.fuse import fuse_graph
from qcore.fx.fuse_add import fuse_residual_adds
from qcore.fx.matching import Matcher
from qcore.fx.placement import Placement
from qcore.fx.record import FxRecord, NodeRecord, attach_record
from qcore.fx.tracer import QcoreTracer, trace
from qcore.fx.values import EXAMPLE_ARGS, annotate_values, as_example_inputs
from qcore.qconfig import is_qat_qconfig
from qcore.qconfig_mapping import QConfigMapping, as_qconfig_mapping

__all__ = ["prepare_fx", "prepare_qat_fx"]


def prepare_fx(
    model: nn.Module,
    qconfig_mapping: Any,
    example_inputs: Any = None,
    prepare_custom_config: Any = None,
    _equalization_config: Any = None,
    backend_config: Any = None,
) -> fx.GraphModule:
    """A traced copy of ``model`` (in eval mode) with observers where the backend runs ops quantized.

    ``qconfig_mapping`` is a QConfigMapping or torch.ao's dict form
    (``{'': qconfig}``); ``example_inputs`` a tuple of positional inputs or
    one tensor (without them, which values are tensors is guessed from the
    ops); ``prepare_custom_config`` a PrepareCustomConfig or its dict form;
    ``backend_config`` a backend name or BackendDescription (the active
    backend by default). Calibrate the result, then call convert_fx.
    """
    if _equalization_config is not None:
        raise ConfigError("prepare_fx: _equalization_config (input-weight equalization) is not supported by qcore")
    _check_model(model, "prepare_fx")
    training = [repr(name) if name else "the model" for name, m in model.named_modules() if m.training]
    if training:
        shown = ", ".join(training[:5]) + (f" and {len(training) - 5} more" if len(training) > 5 else "")
        raise ConfigError(
            f"prepare_fx is for post-training quantization and needs the model in eval mode, but {shown} are in "
            "training mode: call model.eval() first. For quantization-aware training use qcore.fx.prepare_qat_fx"
        )
    return _prepare(model, qconfig_mapping, example_inputs, prepare_custom_config, backend_config, False, "prepare_fx")


def prepare_qat_fx(
    model: nn.Module,
    qconfig_mapping: Any,
    example_inputs: Any = None,
    prepare_custom_config: Any = None,
    backend_config: Any = None,
) -> fx.GraphModule:
    """Like :func:`prepare_fx` for quantization-aware training: the model in train mode, fake-quants, QAT modules."""
    _check_model(model, "prepare_qat_fx")
    if not model.training:
        raise ConfigError(
            "prepare_qat_fx is for quantization-aware training and needs the model in training mode: call "
            "model.train() first. For post-training quantization use qcore.fx.prepare_fx(model.eval(), ...)"
        )
    return _prepare(model, qconfig_mapping, example_inputs, prepare_custom_config, backend_config, True,
                    "prepare_qat_fx")


def _check_model(model: Any, api: str) -> None:
    if not isinstance(model, nn.Module):
        raise ConfigError(f"{api} expects an nn.Module, got {type(model).__name__}")


def _mapping(qconfig_mapping: Any, api: str) -> QConfigMapping:
    if qconfig_mapping is None:
        raise ConfigError(f"{api}: qconfig_mapping is required, e.g. qcore.get_default_qconfig_mapping() or "
                          "{'': qcore.default_qconfig}")
    try:
        return as_qconfig_mapping(qconfig_mapping)
    except ConfigError as exc:
        raise ConfigError(f"{api}: {exc}") from exc


def _custom_swaps(config: PrepareCustomConfig) -> dict[str, dict[type, type]]:
    """{quant type: {float class: observed class}}: the registry's static triples, then the user's (which win)."""
    from qcore.flow.eager.custom_modules import _registered_swaps

    registered = {s.float_cls: s.observed_cls for s in _registered_swaps()}
    return custom_module_swaps(registered, config.float_to_observed_mapping, "from_float", "prepare_custom_config")


def _attach_qconfigs(model: nn.Module, mapping: QConfigMapping) -> None:
    """``module.qconfig`` for every submodule, by name and class (read by from_float of swapped modules)."""
    for name, module in model.named_modules():
        module.qconfig = mapping.lookup(name, type_before_parametrizations(module))[0]


def _prepare(
    model: nn.Module,
    qconfig_mapping: Any,
    example_inputs: Any,
    prepare_custom_config: Any,
    backend_config: Any,
    is_qat: bool,
    api: str,
) -> fx.GraphModule:
    mapping = _mapping(qconfig_mapping, api)
    config = as_prepare_custom_config(prepare_custom_config)
    backend = resolve_backend(backend_config, api)
    inputs = as_example_inputs(example_inputs)
    swaps = _custom_swaps(config)
    source = model
    model = copy.deepcopy(model)
    _attach_qconfigs(model, mapping)
    custom_classes = {cls for entries in swaps.values() for cls in entries}
    tracer = QcoreTracer(
        skipped_module_names=config.non_traceable_module_names,
        skipped_module_classes=config.non_traceable_module_classes,
        leaf_module_names=config.standalone_module_names,
        leaf_module_classes=(*custom_classes, *config.standalone_module_classes),
    )
    gm = trace(model, tracer, api)
    matcher = Matcher(gm, mapping, backend, config, swaps, tracer, api)
    fuse_graph(gm, backend, is_qat, can_fuse=matcher.can_fuse, api=api)
    matcher.refresh()
    standalone = frozenset(n.target for n in gm.graph.nodes if n.op == "call_module"
                           and config.standalone_entry(n.target, type(matcher.modules[n.target])) is not None)
    annotate_values(gm, inputs, standalone, api)
    if fuse_residual_adds(gm, backend, is_qat, can_fuse=matcher.can_fuse):
        matcher.refresh()
    record = FxRecord(
        backend=backend.name, is_qat=is_qat, nodes=matcher.decide(),
        input_quantized_indexes=tuple(config.input_quantized_indexes),
        output_quantized_indexes=tuple(config.output_quantized_indexes),
    )
    _warn(record, api)
    _swap_modules(gm, record, swaps, config, mapping, backend, is_qat, api)
    Placement(gm, record, is_qat, model_device(gm), api).run()
    gm.graph.lint()
    gm.recompile()
    attach_record(gm, record)
    preserve_attributes(gm, source, config.preserved_attributes, api)
    return gm


def _warn(record: FxRecord, api: str) -> None:
    """One FloatFallbackWarning per reason, naming the nodes left float for it."""
    by_reason: dict[str, list[NodeRecord]] = {}
    seen: set[int] = set()
    for node_record in record.nodes.values():
        if node_record.warned and id(node_record) not in seen:
            seen.add(id(node_record))
            by_reason.setdefault(node_record.reason or "", []).append(node_record)
    for reason, records in by_reason.items():
        shown = ", ".join(r.display for r in records[:8])
        more = f" and {len(records) - 8} more" if len(records) > 8 else ""
        warnings.warn(
            f"{api}: {len(records)} node(s) stay float: {shown}{more}: {reason}",
            FloatFallbackWarning,
            stacklevel=4,
        )


def _from_float(cls: type, module: nn.Module, name: str, api: str, method: str = "from_float") -> nn.Module:
    try:
        new = getattr(cls, method)(module)
    except Exception as exc:
        raise ConfigError(f"{api}: {cls.__name__}.{method} failed for {name!r} ({type(module).__name__}): "
                          f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(new, nn.Module):
        raise ConfigError(f"{api}: {cls.__name__}.{method} returned {type(new).__name__}, not a module, for {name!r}")
    return new


def _swap_modules(
    gm: fx.GraphModule, record: FxRecord, swaps: dict[str, dict[type, type]], config: PrepareCustomConfig,
    mapping: QConfigMapping, backend: Any, is_qat: bool, api: str,
) -> None:
    """QAT modules, observed custom modules and prepared standalone modules, in place of the float ones."""
    modules = dict(gm.named_modules())
    qat_mapping = mappings.get_default_qat_module_mappings() if is_qat else {}
    done: set[str] = set()
    for node in gm.graph.nodes:
        if node.op != "call_module" or node.target in done:
            continue  # a module called at several places is swapped once
        done.add(node.target)
        node_record = record.nodes[node.name]
        module = modules[node.target]
        cls = type_before_parametrizations(module)
        if not node_record.quantized:
            continue
        module.qconfig = node_record.qconfig
        if node_record.role == "custom":
            observed = _from_float(swaps[node_record.quant_type][cls], module, node.target, api)
            if getattr(observed, "qconfig", None) is None:
                observed.qconfig = node_record.qconfig
            set_submodule(gm, node.target, observed)
        elif node_record.role == "standalone":
            entry = config.standalone_entry(node.target, cls)
            inputs = entry.example_inputs if entry.example_inputs is not None else node.meta.get(EXAMPLE_ARGS)
            inner = _prepare(
                module, entry.qconfig_mapping if entry.qconfig_mapping is not None else mapping, inputs,
                entry.prepare_custom_config, entry.backend_config if entry.backend_config is not None else backend,
                is_qat, f"{api} (standalone module {node.target!r})",
            )
            set_submodule(gm, node.target, inner)
        elif (node_record.quant_type in ("static", "weight_only") and cls in qat_mapping
              and is_qat_qconfig(node_record.qconfig)):
            set_submodule(gm, node.target, _from_float(qat_mapping[cls], module, node.target, api))
