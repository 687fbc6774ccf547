"""The demo's models: a small CNN for 8x8 digits (plain and with quant stubs for the eager flow),
a recurrent classifier reading the digits row by row, and BatchNorm folding for inference."""

from __future__ import annotations

import copy
from typing import Callable, Optional

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
        self.config = config
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


class QuantizableDigitsCNN(DigitsCNN):
    """DigitsCNN between a QuantStub and a DeQuantStub, as eager-mode quantization needs.

    Same parameters and state_dict keys as DigitsCNN (the stubs hold none), so
    trained weights load as they are. The stub classes are arguments so the
    same model also runs through torch.ao's flow in differential tests.
    """

    #: The groups ``fuse_modules`` / ``fuse_modules_qat`` fuse: conv-bn-relu twice, linear-relu.
    FUSE_GROUPS = (("conv1", "bn1", "relu1"), ("conv2", "bn2", "relu2"), ("fc1", "relu3"))

    def __init__(self, config: ModelConfig = ModelConfig(), quant_stub: Optional[Callable[[], nn.Module]] = None,
                 dequant_stub: Optional[Callable[[], nn.Module]] = None) -> None:
        super().__init__(config)
        if quant_stub is None or dequant_stub is None:
            from qcore.stubs import DeQuantStub, QuantStub

            quant_stub, dequant_stub = quant_stub or QuantStub, dequant_stub or DeQuantStub
        self.quant = quant_stub()
        self.dequant = dequant_stub()

    @classmethod
    def from_trained(cls, model: DigitsCNN, **stubs: Callable[[], nn.Module]) -> "QuantizableDigitsCNN":
        """A quantizable copy of a trained DigitsCNN, in the same training mode."""
        quantizable = cls(model.config, **stubs)
        quantizable.load_state_dict(model.state_dict())
        return quantizable.train(model.training)

    @property
    def fuse_groups(self) -> list[list[str]]:
        return [list(group) for group in self.FUSE_GROUPS]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dequant(super().forward(self.quant(x)))


@attrs.frozen
class RecurrentConfig:
    """A recurrent classifier over the digits' 8 rows (8 steps of 8 pixels); part of the cache key."""

    cell: str = attrs.field(default="LSTM", validator=attrs.validators.in_(("LSTM", "GRU")))
    hidden: int = 64
    num_classes: int = 10


class DigitsRNN(nn.Module):
    """An LSTM or GRU reading an 8x8 image row by row, then a linear layer on its last output."""

    def __init__(self, config: RecurrentConfig = RecurrentConfig()) -> None:
        super().__init__()
        self.config = config
        self.rnn = getattr(nn, config.cell)(8, config.hidden, batch_first=True)
        self.fc = nn.Linear(config.hidden, config.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x.reshape(x.shape[0], 8, 8))
        return self.fc(out[:, -1])


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
