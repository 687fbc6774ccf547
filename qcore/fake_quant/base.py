"""FakeQuantizeBase: the switches every fake-quant module shares (observe? fake-quantize?)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import nn

from qcore.factory import Factory


class FakeQuantizeBase(ABC, nn.Module):
    """Base of qcore's fake-quant modules, with torch.ao's API.

    ``fake_quant_enabled`` and ``observer_enabled`` are one-element uint8
    buffers rather than Python flags so that they travel with ``state_dict``,
    ``.to(device)`` and DDP broadcasts (NCCL has no bool).
    """

    fake_quant_enabled: torch.Tensor
    observer_enabled: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("fake_quant_enabled", torch.tensor([1], dtype=torch.uint8))
        self.register_buffer("observer_enabled", torch.tensor([1], dtype=torch.uint8))

    @abstractmethod
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Observe ``x`` (when enabled) and return it fake-quantized (when enabled)."""

    @abstractmethod
    def calculate_qparams(self, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """The (scale, zero_point) this module quantizes with."""

    def enable_fake_quant(self, enabled: bool = True) -> None:
        self.fake_quant_enabled[0] = 1 if enabled else 0

    def disable_fake_quant(self) -> None:
        self.enable_fake_quant(False)

    def enable_observer(self, enabled: bool = True) -> None:
        self.observer_enabled[0] = 1 if enabled else 0

    def disable_observer(self) -> None:
        self.enable_observer(False)

    @classmethod
    def with_args(cls, **kwargs: Any) -> Factory:
        """A factory that builds this module with ``kwargs`` (what a QConfig holds)."""
        return Factory(cls, kwargs)
