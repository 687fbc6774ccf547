"""The demo's model: a small CNN for 8x8 digits, and BatchNorm folding for inference."""

from __future__ import annotations

import copy

import attrs
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


@attrs.frozen
class ModelConfig:
    """The architecture; part of the cache key, so changing it retrains."""

    channels: tuple[int, int] = (16, 32)
    hidden: int = 64
    num_classes: int = 10


class DigitsCNN(nn.Module):
    """conv-bn-relu x2, max-pool, flatten, linear-relu, linear."""

    def __init__(self, config: ModelConfig = ModelConfig()) -> None:
        super().__init__()
        c1, c2 = config.channels
        self.conv1 = nn.Conv2d(1, c1, kernel_size=3, padding=1)
        self.bn1 = nn.BatchNorm2d(c1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(c1, c2, kernel_size=3, padding=1)
        self.bn2 = nn.BatchNorm2d(c2)
        self.relu2 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(c2 * 4 * 4, config.hidden)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(config.hidden, config.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.relu2(self.bn2(self.conv2(x)))
        x = self.flatten(self.pool(x))
        return self.fc2(self.relu3(self.fc1(x)))


def fold_batchnorm(model: DigitsCNN) -> DigitsCNN:
    """A copy in eval mode with each BatchNorm folded into the conv before it, as int8 deployment does.

    Uses torch's (non-deprecated) ``torch.nn.utils.fusion``; qcore's own fusion
    arrives with the eager flow.
    """
    folded = copy.deepcopy(model).eval()
    for conv_name, bn_name in (("conv1", "bn1"), ("conv2", "bn2")):
        conv, bn = getattr(folded, conv_name), getattr(folded, bn_name)
        setattr(folded, conv_name, fuse_conv_bn_eval(conv, bn))
        setattr(folded, bn_name, nn.Identity())
    return folded
