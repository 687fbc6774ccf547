"""Pattern lists shared by CPU backends: which ops (and fused chains) run quantized, with which dtypes.

Backends differ mostly in their dtype constraints, not in their op lists, so a
plugin calls :func:`standard_patterns` with its own DTypeConfigs.
"""

from __future__ import annotations

import operator
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from qcore.backend_config import BackendPatternConfig, DTypeConfig, ObservationType

SHARE = ObservationType.OUTPUT_SHARE_OBSERVER_WITH_INPUT

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONV_FNS = (F.conv1d, F.conv2d, F.conv3d)
_BNS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)

# Ops whose output takes its input's qparams: they move, select or average values (torch.ao's share-qparams ops).
SHARED_QPARAMS_OPS: tuple = (
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
    nn.Flatten, nn.Identity, nn.ReLU, nn.ReLU6, nn.Dropout, nn.Hardtanh,
    nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    F.max_pool1d, F.max_pool2d, F.max_pool3d, F.relu, F.relu6, F.dropout, F.hardtanh,
    F.avg_pool1d, F.avg_pool2d, F.avg_pool3d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d,
    torch.flatten, torch.transpose, torch.squeeze, torch.unsqueeze, torch.chunk,
    "view", "reshape", "flatten", "permute", "transpose", "contiguous", "squeeze", "unsqueeze",
    "chunk", "relu", "relu_", operator.getitem,
)

# Ops whose output range is fixed by the function: fixed qparams.
FIXED_QPARAMS_OPS: tuple = (
    nn.Sigmoid, torch.sigmoid, "sigmoid", nn.Hardsigmoid, F.hardsigmoid, "hardsigmoid",
    nn.Tanh, torch.tanh, "tanh", nn.Softmax, F.softmax,
)

# Ops with their own output observer and no weight.
ELEMENTWISE_OPS: tuple = (
    torch.add, operator.add, "add", torch.mul, operator.mul, "mul", torch.cat, torch.matmul, torch.bmm,
    nn.Hardswish, F.hardswish, nn.ELU, F.elu, nn.LeakyReLU, F.leaky_relu,
    nn.LayerNorm, F.layer_norm, nn.GroupNorm, F.group_norm,
    nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, F.instance_norm,
    nn.BatchNorm2d, nn.BatchNorm3d,
)


def _configs(patterns: Sequence, dtype_configs: Sequence[DTypeConfig], **kwargs) -> list[BackendPatternConfig]:
    return [BackendPatternConfig(p, tuple(dtype_configs), **kwargs) for p in patterns]


def standard_patterns(
    weighted: Sequence[DTypeConfig],
    activation: Sequence[DTypeConfig],
    dynamic: Sequence[DTypeConfig],
    weight_only: Sequence[DTypeConfig],
) -> tuple[BackendPatternConfig, ...]:
    """The op coverage of the reference doc's tables, with the caller's dtype constraints."""
    weighted_ops = [nn.Linear, F.linear, *_CONVS, *_CONV_FNS, *_TRANSPOSED]
    fused = [(nn.Linear, nn.ReLU), (nn.Linear, F.relu), (nn.Linear, nn.BatchNorm1d)]
    for conv, bn in zip(_CONVS, _BNS):
        fused += [(conv, nn.ReLU), (conv, F.relu), (conv, bn), (conv, bn, nn.ReLU), (conv, bn, F.relu)]
    for transposed, bn in zip(_TRANSPOSED, _BNS):
        fused.append((transposed, bn))
    fused += [(bn, nn.ReLU) for bn in _BNS[1:]] + [(torch.add, nn.ReLU), (operator.add, nn.ReLU), (torch.add, F.relu)]
    recurrent = [nn.LSTM, nn.GRU, nn.RNNCell, nn.LSTMCell, nn.GRUCell]
    return tuple(
        _configs(weighted_ops, [*weighted, *dynamic])
        + _configs(fused, weighted)
        + _configs(recurrent, dynamic)
        + _configs([nn.Embedding, nn.EmbeddingBag], weight_only)
        + _configs(ELEMENTWISE_OPS, activation)
        + _configs(SHARED_QPARAMS_OPS, activation, observation_type=SHARE)
        + _configs(FIXED_QPARAMS_OPS, activation)
    )
