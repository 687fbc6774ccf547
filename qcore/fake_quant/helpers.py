"""Switches for whole models: ``model.apply(qcore.disable_observer)`` and friends."""

from __future__ import annotations

from torch import nn

from qcore.fake_quant.base import FakeQuantizeBase


def enable_fake_quant(mod: nn.Module) -> None:
    """Turn fake quantization on for ``mod`` if it is a fake-quant module (for ``model.apply``)."""
    if isinstance(mod, FakeQuantizeBase):
        mod.enable_fake_quant()


def disable_fake_quant(mod: nn.Module) -> None:
    """Let values through unrounded (statistics may still be collected)."""
    if isinstance(mod, FakeQuantizeBase):
        mod.disable_fake_quant()


def enable_observer(mod: nn.Module) -> None:
    """Resume updating statistics and qparams."""
    if isinstance(mod, FakeQuantizeBase):
        mod.enable_observer()


def disable_observer(mod: nn.Module) -> None:
    """Freeze statistics and qparams (usual late in QAT)."""
    if isinstance(mod, FakeQuantizeBase):
        mod.disable_observer()
