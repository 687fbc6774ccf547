"""Statically quantized LSTM (torch.ao.nn.quantized.LSTM): the observed LSTM with every piece converted.

``qcore.convert`` makes it from a calibrated :class:`qcore.nn.quantizable.LSTM`
(the custom-module path; ``qcore.prepare`` swapped the ``nn.LSTM`` for that).
Each gate projection is a quantized Linear, each add/mul a QFunctional and
each gate activation a fixed-qparams quantized Sigmoid/Tanh, so every
intermediate is re-quantized with the qparams calibration chose. As with
torch.ao, it takes and returns QTensors: the input, the optional initial
states ``(h_0, c_0)``, the output and ``(h_n, c_n)``. Without initial states
it starts from zeros; ``h_n`` and ``c_n`` lie on the grid of the first
layer's (forward direction's) hidden and cell states, as torch's quantized
``stack`` puts them.
"""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

import torch
from torch import Tensor, nn

from qcore.errors import ConfigError, QuantizationError
from qcore.nn.quantizable.lstm import LSTM as ObservedLSTM
from qcore.nn.quantized.base import module_label
from qcore.nn.quantized.scripting import ScriptableTwin, fake_quantize_output
from qcore.qtensor import QTensor

__all__ = ["LSTM", "LSTMTwin"]


def _has_observers(module: nn.Module) -> bool:
    from qcore.flow.eager.prepare import is_activation_post_process

    return any(is_activation_post_process(m) for m in module.modules())


class LSTM(ObservedLSTM):
    """A statically quantized LSTM: QTensor input and states in, QTensor output and states out.

    Build it with :meth:`from_observed` (``qcore.convert`` does). Its
    ``state_dict`` holds every inner module's quantized weights and qparams
    and loads into a freshly prepared and converted model of the same shape.
    """

    _FLOAT_MODULE = ObservedLSTM

    def _get_name(self) -> str:
        return "QuantizedLSTM"

    def forward(self, x: QTensor, hidden: Optional[tuple[QTensor, QTensor]] = None) -> tuple[QTensor, tuple[QTensor, QTensor]]:
        if not isinstance(x, QTensor):
            got = "a float tensor" if isinstance(x, Tensor) and x.is_floating_point() else type(x).__name__
            raise QuantizationError(
                f"{module_label(self)}: expected a quantized input (QTensor) but got {got}; put a QuantStub "
                "(or qcore.quantize_per_tensor) before this module"
            )
        if hidden is not None and isinstance(hidden, (tuple, list)) and not all(isinstance(s, QTensor) for s in hidden):
            raise QuantizationError(
                f"{module_label(self)}: the initial states (h_0, c_0) must be quantized too (QTensors), as with "
                "torch.ao's quantized LSTM; quantize them with qcore.quantize_per_tensor, or pass no states to start "
                "from zeros"
            )
        return super().forward(x, hidden)

    def __prepare_scriptable__(self) -> nn.Module:
        return LSTMTwin(self)

    @classmethod
    def from_float(cls, mod: nn.Module, use_precomputed_fake_quant: bool = False) -> Any:
        raise ConfigError(
            f"{cls.__name__}.from_float: the static LSTM is made from the observed one (float -> observed -> quantized): "
            "qcore.prepare swaps nn.LSTM for qcore.nn.quantizable.LSTM, calibrate, then qcore.convert calls "
            "qcore.nn.quantized.LSTM.from_observed"
        )

    @classmethod
    def from_observed(cls, other: nn.Module) -> "LSTM":
        """Convert every inner module of a prepared and calibrated :class:`qcore.nn.quantizable.LSTM`."""
        from qcore.flow.eager.convert import convert

        if not isinstance(other, ObservedLSTM) or isinstance(other, cls):
            raise ConfigError(
                f"{cls.__name__}.from_observed expects a prepared qcore.nn.quantizable.LSTM, got {type(other).__name__}"
            )
        if not _has_observers(other):
            raise ConfigError(
                f"{cls.__name__}.from_observed: the observed LSTM has no observers; make it with "
                "qcore.nn.quantizable.LSTM.from_float(float_lstm) (qcore.prepare does) and calibrate it first"
            )
        converted = convert(other, inplace=False, remove_qconfig=True)
        quantized = cls.__new__(cls)
        nn.Module.__init__(quantized)
        for name in ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout", "bidirectional"):
            setattr(quantized, name, getattr(other, name))
        quantized.layers = converted.layers
        quantized.eval()
        return quantized


# --- TorchScript twin: the same numerics on dequantized floats ---------------------------------------------

_CELL_PARTS = ("igates", "hgates", "gates", "input_gate", "forget_gate", "cell_gate", "output_gate", "fgate_cx",
               "igate_cgate", "fgate_cx_igate_cgate", "cell_state_tanh", "ogate_cy")


def _grid(twin: nn.Module, prefix: str, module: nn.Module) -> None:
    """Record ``module``'s output grid on ``twin`` (buffers ``{prefix}_scale`` / ``_zero_point``, its dtype's range)."""
    twin.register_buffer(f"{prefix}_scale", module.scale.detach().clone().reshape(()).to(torch.float32))
    twin.register_buffer(f"{prefix}_zero_point", module.zero_point.detach().clone().reshape(()).to(torch.int64))
    setattr(twin, f"{prefix}_qmin", int(module.dtype.quant_min))
    setattr(twin, f"{prefix}_qmax", int(module.dtype.quant_max))


class _CellTwin(nn.Module):
    """One step on dequantized floats; its parts are the quantized cell's modules (scripting twins them in turn)."""

    def __init__(self, cell: nn.Module) -> None:
        super().__init__()
        for name in _CELL_PARTS:
            setattr(self, name, getattr(cell, name))

    def forward(self, x: Tensor, hx: Tensor, cx: Tensor) -> Tuple[Tensor, Tensor]:
        gates = self.gates.add(self.igates(x), self.hgates(hx)).chunk(4, 1)
        input_gate = self.input_gate(gates[0])
        forget_gate = self.forget_gate(gates[1])
        cell_gate = self.cell_gate(gates[2])
        output_gate = self.output_gate(gates[3])
        cy = self.fgate_cx_igate_cgate.add(self.fgate_cx.mul(forget_gate, cx), self.igate_cgate.mul(input_gate, cell_gate))
        return self.ogate_cy.mul(output_gate, self.cell_state_tanh(cy)), cy


class _LayerTwin(nn.Module):
    """One layer on floats; the backward direction's results move onto the forward one's grids, as in eager."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        cells = [layer.layer_fw.cell] + ([layer.layer_bw.cell] if layer.bidirectional else [])
        self.cells = nn.ModuleList(_CellTwin(cell) for cell in cells)
        _grid(self, "h", layer.layer_fw.cell.ogate_cy)
        _grid(self, "c", layer.layer_fw.cell.fgate_cx_igate_cgate)

    def forward(self, x: Tensor, hx: Tensor, cx: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        outputs: List[Tensor] = []
        hs: List[Tensor] = []
        cs: List[Tensor] = []
        direction = 0
        for cell in self.cells:
            sequence = x if direction == 0 else x.flip(0)
            h, c = hx[direction], cx[direction]
            steps: List[Tensor] = []
            for t in range(sequence.size(0)):
                h, c = cell(sequence[t], h, c)
                steps.append(h)
            out = torch.stack(steps, 0)
            if direction == 1:
                out = fake_quantize_output(out.flip(0), self.h_scale, self.h_zero_point, self.h_qmin, self.h_qmax)
                h = fake_quantize_output(h, self.h_scale, self.h_zero_point, self.h_qmin, self.h_qmax)
                c = fake_quantize_output(c, self.c_scale, self.c_zero_point, self.c_qmin, self.c_qmax)
            outputs.append(out)
            hs.append(h)
            cs.append(c)
            direction += 1
        return torch.cat(outputs, outputs[0].dim() - 1), torch.stack(hs, 0), torch.stack(cs, 0)


class LSTMTwin(ScriptableTwin):
    """TorchScript twin of the quantized LSTM: float input on the input grid, outputs equal to the eager ones dequantized.

    ``h_n`` / ``c_n`` go onto the first layer's grids, as the eager module's
    quantized stacking puts them.
    """

    def __init__(self, source: LSTM) -> None:
        super().__init__(source)
        self.layers = nn.ModuleList(_LayerTwin(layer) for layer in source.layers)
        self.num_layers = int(source.num_layers)
        self.hidden_size = int(source.hidden_size)
        self.directions = 2 if source.bidirectional else 1
        self.batch_first = bool(source.batch_first)
        _grid(self, "h", source.layers[0].layer_fw.cell.ogate_cy)
        _grid(self, "c", source.layers[0].layer_fw.cell.fgate_cx_igate_cgate)

    def forward(self, x: Tensor, hidden: Optional[Tuple[Tensor, Tensor]] = None) -> Tuple[Tensor, Tuple[Tensor, Tensor]]:
        if torch.jit.is_scripting():
            return self.reference_lstm(x, hidden)
        return self._eager_lstm(x, hidden)

    @torch.jit.unused
    def _eager_lstm(self, x: Tensor, hidden: Optional[Tuple[Tensor, Tensor]]) -> Tuple[Tensor, Tuple[Tensor, Tensor]]:
        source = self.source
        return source(x, hidden) if source is not None else self.reference_lstm(x, hidden)

    def reference_lstm(self, x: Tensor, hidden: Optional[Tuple[Tensor, Tensor]]) -> Tuple[Tensor, Tuple[Tensor, Tensor]]:
        batched = x.dim() == 3
        if not batched:
            x = x.unsqueeze(1)
        elif self.batch_first:
            x = x.transpose(0, 1)
        batch = x.size(1)
        if hidden is None:
            hx = torch.zeros(self.num_layers, self.directions, batch, self.hidden_size, device=x.device)
            cx = hx
        else:
            hx = hidden[0].reshape(self.num_layers, self.directions, batch, self.hidden_size)
            cx = hidden[1].reshape(self.num_layers, self.directions, batch, self.hidden_size)
        hs: List[Tensor] = []
        cs: List[Tensor] = []
        index = 0
        for layer in self.layers:
            x, h, c = layer(x, hx[index], cx[index])
            hs.append(fake_quantize_output(h, self.h_scale, self.h_zero_point, self.h_qmin, self.h_qmax))
            cs.append(fake_quantize_output(c, self.c_scale, self.c_zero_point, self.c_qmin, self.c_qmax))
            index += 1
        h_n = torch.stack(hs, 0).reshape(self.num_layers * self.directions, batch, self.hidden_size)
        c_n = torch.stack(cs, 0).reshape(self.num_layers * self.directions, batch, self.hidden_size)
        if not batched:
            return x.squeeze(1), (h_n.squeeze(1), c_n.squeeze(1))
        if self.batch_first:
            x = x.transpose(0, 1)
        return x, (h_n, c_n)

    def extra_repr(self) -> str:
        return f"num_layers={self.num_layers}, hidden_size={self.hidden_size}, directions={self.directions}"
