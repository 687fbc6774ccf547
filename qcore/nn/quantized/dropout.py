"""Quantized Dropout (torch.ao.nn.quantized.Dropout): the identity on QTensors, in train and eval mode alike."""

from __future__ import annotations

from typing import Any

from torch import nn

from qcore.errors import ConfigError
from qcore.nn.quantized.base import QuantizedModule
from qcore.nn.quantized.scripting import IdentityTwin
from qcore.qtensor import QTensor

__all__ = ["Dropout"]


class Dropout(nn.Module):
    """Stands where a float ``nn.Dropout`` was: returns its QTensor input unchanged, as torch.ao's does.

    A quantized model is for inference, so dropout never zeroes anything; the
    module only keeps ``p``/``inplace`` for the repr and checks that its input
    is quantized (a float input raises QuantizationError naming the module).
    """

    def __init__(self, p: float = 0.5, inplace: bool = False) -> None:
        super().__init__()
        if not 0.0 <= float(p) <= 1.0:
            raise ConfigError(f"Dropout: p must be a probability in [0, 1], got {p}")
        self.p = float(p)
        self.inplace = bool(inplace)

    def _get_name(self) -> str:
        return "QuantizedDropout"

    def forward(self, x: QTensor) -> QTensor:
        return QuantizedModule._as_qtensor_input(self, x)  # type: ignore[arg-type]

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace={self.inplace}"

    def __prepare_scriptable__(self) -> nn.Module:
        return IdentityTwin(source=self)

    @classmethod
    def from_float(cls, mod: Any, use_precomputed_fake_quant: bool = False) -> "Dropout":
        """From a float ``nn.Dropout`` (needs no observer)."""
        if not isinstance(mod, nn.Dropout):
            raise ConfigError(f"Dropout.from_float expects a torch.nn.Dropout, got {type(mod).__name__}")
        return cls(mod.p, mod.inplace)

    @classmethod
    def from_reference(cls, mod: Any, scale: float, zero_point: int) -> "Dropout":
        return cls(mod.p, mod.inplace)


#: {float module: quantized module} for the static mapping table.
STATIC_MAPPINGS: dict[type, type] = {nn.Dropout: Dropout}
