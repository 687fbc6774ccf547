"""What each node of a traced graph produces: a float tensor, another tensor, a tuple of tensors, or no tensor.

Observers may only go on float tensors, so prepare needs to know. With
example inputs the graph is run once (eval mode, no grad, training flags
restored after, so nothing is learned) and the real values are recorded;
without them a conservative guess from the ops is used.
"""

from __future__ import annotations

import builtins
import operator
from typing import Any, Optional, Sequence

import torch
from torch import fx, nn

from qcore.errors import ConfigError

__all__ = ["VALUE", "annotate_values", "value_kind", "is_float_tensor", "as_example_inputs"]

#: node.meta key: "float", "int" (a non-float tensor), "tuple" (a tuple/list holding tensors) or "other".
VALUE = "qcore_value"
#: node.meta key: the positional arguments a call_module node received while running the example inputs.
EXAMPLE_ARGS = "qcore_example_args"


def as_example_inputs(example_inputs: Any) -> Optional[tuple[Any, ...]]:
    """A tuple of positional inputs: the reference doc passes a single tensor as well as a tuple."""
    if example_inputs is None:
        return None
    if isinstance(example_inputs, tuple):
        return example_inputs
    if isinstance(example_inputs, list):
        return tuple(example_inputs)
    return (example_inputs,)


def _kind(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return "float" if value.is_floating_point() else "int"
    if isinstance(value, (tuple, list)) and any(isinstance(v, torch.Tensor) for v in value):
        return "tuple"
    return "other"


class _Recorder(fx.Interpreter):
    def __init__(self, gm: fx.GraphModule, keep_args: frozenset[str]) -> None:
        super().__init__(gm)
        self.keep_args = keep_args

    def run_node(self, n: fx.Node) -> Any:
        result = super().run_node(n)
        n.meta[VALUE] = _kind(result)
        if n.op == "call_module" and n.target in self.keep_args:
            args, _ = self.fetch_args_kwargs_from_env(n)
            n.meta[EXAMPLE_ARGS] = tuple(args)
        return result


_NON_TENSOR_FUNCTIONS = {builtins.getattr, builtins.len, builtins.int, builtins.float, builtins.isinstance}
_NON_TENSOR_METHODS = {"size", "dim", "numel", "ndimension", "nelement", "stride", "is_contiguous", "item", "tolist"}
_TUPLE_FUNCTIONS = {torch.chunk, torch.split, torch.unbind}
_TUPLE_METHODS = {"chunk", "split", "unbind"}
_TUPLE_MODULES = (nn.LSTM, nn.GRU, nn.RNN, nn.LSTMCell, nn.MultiheadAttention)


def _guess(node: fx.Node, modules: dict[str, nn.Module]) -> str:
    inputs = [a.meta.get(VALUE, "other") for a in node.all_input_nodes]
    if node.op == "placeholder":
        return "float"
    if node.op == "get_attr":
        return "other"
    if node.op == "call_module":
        return "tuple" if isinstance(modules.get(node.target), _TUPLE_MODULES) else "float"
    if node.target is operator.getitem:
        return "float" if inputs and inputs[0] in ("tuple", "float") else "other"
    if node.target in _NON_TENSOR_FUNCTIONS or node.target in _NON_TENSOR_METHODS:
        return "other"
    if node.target in _TUPLE_FUNCTIONS or node.target in _TUPLE_METHODS:
        return "tuple"
    if node.op == "call_method" or getattr(node.target, "__module__", "") in ("_operator", "operator"):
        return "float" if "float" in inputs else "other"
    return "float" if "float" in inputs or str(getattr(node.target, "__module__", "")).startswith("torch") else "other"


def annotate_values(
    gm: fx.GraphModule, example_inputs: Optional[Sequence[Any]], keep_args: frozenset[str] = frozenset(),
    api: str = "prepare_fx",
) -> None:
    """Set ``node.meta[VALUE]`` on every node, running ``example_inputs`` through ``gm`` when given."""
    if example_inputs is None:
        modules = dict(gm.named_modules())
        for node in gm.graph.nodes:
            node.meta[VALUE] = _guess(node, modules)
        return
    modes = {m: m.training for m in gm.modules()}
    gm.eval()
    try:
        with torch.no_grad():
            _Recorder(gm, keep_args).run(*example_inputs)
    except Exception as exc:
        raise ConfigError(
            f"{api}: running the traced model on example_inputs failed: {type(exc).__name__}: {exc}. Pass inputs "
            "the model's forward accepts (a tuple of positional arguments, or a single tensor)"
        ) from exc
    finally:
        for module, training in modes.items():
            module.training = training
    for node in gm.graph.nodes:
        node.meta.setdefault(VALUE, "other")


def value_kind(node: Any) -> str:
    """``node``'s recorded value kind ("other" for constants and unannotated nodes)."""
    if not isinstance(node, fx.Node):
        return "other"
    return node.meta.get(VALUE, "other")


def is_float_tensor(node: Any) -> bool:
    return value_kind(node) == "float"
