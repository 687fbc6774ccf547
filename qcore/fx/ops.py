"""What a graph node runs, in the terms of backend patterns: its pattern key, equivalent spellings, its role.

A node's *key* is what a :class:`~qcore.backend_config.BackendPatternConfig`
names: a module class (a fused or QAT module stands for the float chain it
came from, e.g. ``(nn.Linear, nn.ReLU)``), a function (``F.linear``,
``torch.add``, ``operator.add``) or a method name (``"view"``). One op has
several spellings (``x + y``, ``torch.add(x, y)``, ``x.add(y)``; ``F.relu``,
``nn.ReLU``, ``x.relu()``): :func:`spellings` lists them so a backend that
names one supports all.
"""

from __future__ import annotations

import builtins
import itertools
import operator
from typing import Any, Iterator, Optional

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.nn.utils.parametrize import type_before_parametrizations

from qcore.flow import mappings

__all__ = [
    "node_key",
    "object_type",
    "spellings",
    "pattern_spellings",
    "label",
    "FIXED_QPARAMS_RANGE",
    "fixed_range",
    "WEIGHTED_FUNCTIONS",
    "BINARY_OPS",
    "is_relu",
    "is_cat",
    "qtensor_native",
    "is_query",
]

_RELU = (nn.ReLU, F.relu, torch.relu, "relu", "relu_")
_GROUPS: tuple[tuple[Any, ...], ...] = (
    _RELU,
    (torch.add, operator.add, operator.iadd, "add", "add_"),
    (torch.mul, operator.mul, operator.imul, "mul", "mul_"),
    (torch.matmul, operator.matmul, "matmul"),
    (torch.bmm, "bmm"),
    (torch.cat, getattr(torch, "concat", torch.cat)),
    (nn.Sigmoid, torch.sigmoid, F.sigmoid, "sigmoid", "sigmoid_"),
    (nn.Hardsigmoid, F.hardsigmoid, "hardsigmoid"),
    (nn.Tanh, torch.tanh, F.tanh, "tanh", "tanh_"),
    (nn.Softmax, F.softmax, torch.softmax, "softmax"),
    (nn.Hardswish, F.hardswish),
    (nn.ReLU6, F.relu6),
    (nn.Hardtanh, F.hardtanh, "hardtanh"),
    (nn.Dropout, F.dropout),
    (nn.ELU, F.elu),
    (nn.LeakyReLU, F.leaky_relu),
    (nn.Flatten, torch.flatten, "flatten"),
    (torch.transpose, "transpose"),
    (torch.squeeze, "squeeze"),
    (torch.unsqueeze, "unsqueeze"),
    (torch.chunk, "chunk"),
    (torch.reshape, "reshape"),
    (torch.permute, "permute"),
    (nn.MaxPool1d, F.max_pool1d),
    (nn.MaxPool2d, F.max_pool2d),
    (nn.MaxPool3d, F.max_pool3d),
    (nn.AvgPool2d, F.avg_pool2d),
    (nn.AdaptiveAvgPool2d, F.adaptive_avg_pool2d),
    (nn.LayerNorm, F.layer_norm),
    # a functional weighted op is its module's op: a backend running (Linear, ReLU) fused runs F.linear + relu so
    (nn.Linear, F.linear),
    (nn.Conv1d, F.conv1d),
    (nn.Conv2d, F.conv2d),
    (nn.Conv3d, F.conv3d),
    (nn.GroupNorm, F.group_norm),
)
_SPELLINGS: dict[Any, tuple[Any, ...]] = {}
for _group in _GROUPS:
    for _member in _group:
        _SPELLINGS.setdefault(_member, _group)

#: Output ranges of the ops whose output qparams are fixed by the function.
FIXED_QPARAMS_RANGE: dict[Any, tuple[float, float]] = {}
for _member in (*_SPELLINGS[nn.Sigmoid], *_SPELLINGS[nn.Hardsigmoid], *_SPELLINGS[nn.Softmax]):
    FIXED_QPARAMS_RANGE[_member] = (0.0, 1.0)
for _member in _SPELLINGS[nn.Tanh]:
    FIXED_QPARAMS_RANGE[_member] = (-1.0, 1.0)

#: Functions with a weight argument, and the module class each becomes at convert.
WEIGHTED_FUNCTIONS: dict[Any, type] = {F.linear: nn.Linear, F.conv1d: nn.Conv1d, F.conv2d: nn.Conv2d, F.conv3d: nn.Conv3d}

#: Two-input ops QFunctional runs (by its method name).
BINARY_OPS: dict[Any, str] = {}
for _member in _SPELLINGS[torch.add]:
    BINARY_OPS[_member] = "add"
for _member in _SPELLINGS[torch.mul]:
    BINARY_OPS[_member] = "mul"
for _member in _SPELLINGS[torch.matmul]:
    BINARY_OPS[_member] = "matmul"

# Ops a QTensor runs exactly itself (qcore/qtensor.py): convert leaves them on quantized values.
_QTENSOR_FUNCTIONS = {
    F.relu, torch.relu, torch.flatten, torch.transpose, torch.squeeze, torch.unsqueeze, torch.chunk, torch.split,
    torch.reshape, torch.permute, torch.unbind, operator.getitem,
    F.max_pool1d, F.max_pool2d, F.max_pool3d, F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d,
    F.avg_pool1d, F.avg_pool2d, F.avg_pool3d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d,
}
_QTENSOR_METHODS = {
    "relu", "relu_", "view", "reshape", "flatten", "permute", "transpose", "contiguous", "squeeze", "unsqueeze",
    "chunk", "split", "unbind", "expand", "expand_as", "view_as", "reshape_as", "t", "detach", "clone", "unflatten",
}
# Ops that only ask about a tensor (its shape, dtype): a QTensor answers them, nothing to dequantize.
_QUERY_METHODS = {"size", "dim", "numel", "ndimension", "nelement", "is_contiguous", "stride"}
_QUERY_FUNCTIONS = {builtins.getattr, builtins.len, torch.numel}


def _module_key(module: nn.Module) -> Any:
    """A module's pattern key: its float class, or the tuple of part classes for a fused module."""
    cls = type_before_parametrizations(module)
    if cls.__module__.startswith("qcore.nn."):
        cls = getattr(cls, "_FLOAT_MODULE", cls)  # a QAT module stands for the float module it came from
    parts = getattr(cls, "_part_types", None)
    if parts:
        return tuple(parts)
    return cls


def node_key(node: fx.Node, modules: dict[str, nn.Module]) -> Any:
    """What ``node`` runs, as backend patterns name it (None for placeholders, attributes and outputs)."""
    if node.op == "call_module":
        return _module_key(modules[node.target])
    if node.op in ("call_function", "call_method"):
        return node.target
    return None


def object_type(node: fx.Node, modules: dict[str, nn.Module]) -> Any:
    """The object type QConfigMapping.set_object_type matches: a module class (the first part of a fused one),
    a function or a method name."""
    key = node_key(node, modules)
    if isinstance(key, tuple):
        return key[0]
    return key


def spellings(key: Any) -> tuple[Any, ...]:
    """Every spelling of the op ``key`` names (``key`` first)."""
    group = _SPELLINGS.get(key, ())
    return (key, *(member for member in group if member is not key))


def pattern_spellings(key: Any) -> Iterator[Any]:
    """``key`` and its equivalent spellings; for a fused tuple, every combination of its parts' spellings."""
    if not isinstance(key, tuple):
        yield from spellings(key)
        return
    yield from itertools.product(*(spellings(part) for part in key))


def label(key: Any) -> str:
    """A readable name for a pattern key: ``Linear``, ``torch.add``, ``Tensor.view``, ``(Conv2d, ReLU)``."""
    if isinstance(key, tuple):
        return "(" + ", ".join(label(part) for part in key) + ")"
    if isinstance(key, str):
        return f"Tensor.{key}"
    if isinstance(key, type):
        return key.__name__
    module = getattr(key, "__module__", None) or ""
    name = getattr(key, "__name__", repr(key))
    if getattr(F, name, None) is key:
        return f"F.{name}"
    if module in ("_operator", "operator"):
        return f"operator.{name}"
    if module.startswith("torch.nn.functional"):
        return f"F.{name}"
    if module.startswith("torch"):
        return f"torch.{name}"
    return f"{module}.{name}" if module else name


def fixed_range(key: Any) -> Optional[tuple[float, float]]:
    """The fixed output range of ``key`` (sigmoid-like ops), or None."""
    try:
        return FIXED_QPARAMS_RANGE.get(key) or mappings.FIXED_QPARAMS_RANGES.get(key)
    except TypeError:  # unhashable
        return None


def is_relu(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """A plain relu: ``nn.ReLU``, ``F.relu``, ``torch.relu`` or ``x.relu()`` on one input."""
    if node.op == "call_module":
        return type(modules[node.target]) is nn.ReLU
    if node.op in ("call_function", "call_method") and node.target in _RELU:
        return len(node.args) == 1
    return False


def is_cat(key: Any) -> bool:
    return key in (torch.cat, getattr(torch, "concat", torch.cat))


def qtensor_native(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """Whether a QTensor runs ``node``'s op exactly by itself (shape ops, relu, max-pool)."""
    if node.op == "call_module":
        return type_before_parametrizations(modules[node.target]) in mappings.QTENSOR_PASSTHROUGH_MODULES
    if node.op == "call_function":
        return node.target in _QTENSOR_FUNCTIONS
    if node.op == "call_method":
        return node.target in _QTENSOR_METHODS
    return False


def is_query(node: fx.Node) -> bool:
    """Ops that only read a tensor's metadata (``x.size()``, ``x.shape``), which a QTensor answers."""
    if node.op == "call_method":
        return node.target in _QUERY_METHODS
    if node.op == "call_function":
        return node.target in _QUERY_FUNCTIONS
    return False
