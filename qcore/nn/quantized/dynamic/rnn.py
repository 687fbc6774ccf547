"""Dynamically quantized recurrent modules: RNNCell, LSTMCell, GRUCell, LSTM, GRU (torch.ao.nn.quantized.dynamic).

Each gate projection is a dynamic :class:`~qcore.nn.quantized.dynamic.Linear`
(``linear_ih``, ``linear_hh``): its input is quantized on the fly from its own
min/max. As in torch.ao's CPU kernels, a multi-step LSTM/GRU layer projects the
whole input sequence at once (one set of qparams for the layer's input) and
the hidden state at every step (qparams per step). Gate arithmetic is torch's,
in float32. Dropout between layers applies in training mode only.

Cells of an LSTM/GRU are stored in ``cells`` (index ``layer * num_directions +
direction``), so state-dict keys read ``cells.0.linear_ih.weight``.
"""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qcore import dtypes
from qcore.dtypes import DTypeLike
from qcore.errors import ConfigError, QuantizationError
from qcore.nn.quantizable.lstm import rnn_extra_repr
from qcore.nn.quantized.dynamic.linear import Linear, check_float_input
from qcore.nn.quantized.dynamic.settings import DynamicQuantSettings, dynamic_settings_from
from qcore.nn.quantized.weight_only.storage import quantize_weight

__all__ = ["RNNCellBase", "RNNCell", "LSTMCell", "GRUCell", "RNNBase", "LSTM", "GRU"]


def _settings(dtype: DTypeLike, kwargs: dict[str, Any], owner: str) -> DynamicQuantSettings:
    try:
        return DynamicQuantSettings(dtype, **kwargs)
    except (ConfigError, TypeError) as exc:
        raise ConfigError(f"{owner}: {exc}") from None


class RNNCellBase(nn.Module):
    """Two dynamic Linears (input and hidden projections, ``num_chunks`` gates each) and the gate arithmetic."""

    _FLOAT_MODULE = nn.RNNCellBase
    __jit_unused_properties__ = ["weight_dtype"]

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        num_chunks: int = 4,
        dtype: DTypeLike = dtypes.int8,
        **act_kwargs: Any,
    ) -> None:
        super().__init__()
        settings = _settings(dtype, act_kwargs, type(self).__name__)
        self.input_size = int(input_size)
        self.hidden_size = int(hidden_size)
        self.bias = bool(bias)
        self.linear_ih = Linear(self.input_size, num_chunks * self.hidden_size, bias, settings.weight_dtype)
        self.linear_hh = Linear(self.hidden_size, num_chunks * self.hidden_size, bias, settings.weight_dtype)
        self.apply_settings(settings)

    def apply_settings(self, settings: DynamicQuantSettings) -> None:
        """Set how both projections quantize their inputs."""
        self.linear_ih.apply_settings(settings)
        self.linear_hh.apply_settings(settings)

    @property
    def weight_dtype(self) -> dtypes.QDType:
        return self.linear_ih.weight_dtype

    def extra_repr(self) -> str:
        text = f"{self.input_size}, {self.hidden_size}, weight_dtype={self.weight_dtype.name}"
        if not self.bias:
            text += ", bias=False"
        return text

    def _weight_bias(self) -> dict[str, dict[str, Any]]:
        """torch.ao's layout: {"weight": {"weight_ih": ..., "weight_hh": ...}, "bias": {...}}."""
        return {
            "weight": {"weight_ih": self.linear_ih.weight(), "weight_hh": self.linear_hh.weight()},
            "bias": {"bias_ih": self.linear_ih.bias(), "bias_hh": self.linear_hh.bias()},
        }

    def _prepare(self, input: Tensor, hx: Optional[Tensor]) -> Tuple[Tensor, Tensor, bool]:
        """(batched input, batched hidden state, whether the input was unbatched)."""
        if not torch.jit.is_scripting():
            check_float_input(self, input)
        unbatched = input.dim() == 1
        if unbatched:
            input = input.unsqueeze(0)
        if hx is None:
            hx = torch.zeros(input.size(0), self.hidden_size, dtype=input.dtype, device=input.device)
        elif unbatched:
            hx = hx.unsqueeze(0)
        return input, hx, unbatched

    @classmethod
    def from_float(cls, mod: nn.Module, use_precomputed_fake_quant: bool = False, *, reduce_range: Optional[bool] = None) -> Any:
        """Quantize a float cell's two weights with fresh observers from ``mod.qconfig.weight``."""
        owner = f"dynamic.{cls.__name__}"
        if not isinstance(mod, cls._FLOAT_MODULE):
            raise ConfigError(f"{owner}.from_float expects an nn.{cls._FLOAT_MODULE.__name__}, got {type(mod).__name__}")
        settings, weight_factory = dynamic_settings_from(mod, owner, reduce_range)
        qcell = cls._new_like(mod, settings.weight_dtype)
        qcell.apply_settings(settings)
        _load_projection(qcell.linear_ih, mod.weight_ih, mod.bias_ih, weight_factory, settings, owner)
        _load_projection(qcell.linear_hh, mod.weight_hh, mod.bias_hh, weight_factory, settings, owner)
        return qcell

    @classmethod
    def _new_like(cls, mod: nn.Module, weight_dtype: dtypes.QDType) -> Any:
        return cls(mod.input_size, mod.hidden_size, mod.bias, dtype=weight_dtype)


def _load_projection(linear: Linear, weight: Tensor, bias: Optional[Tensor], weight_factory: Any, settings: DynamicQuantSettings, owner: str) -> None:
    if settings.weight_dtype is dtypes.float16:
        linear.set_weight_bias(weight.detach().float(), bias)
        return
    observer = weight_factory()
    observer(weight.detach())
    linear.set_weight_bias(quantize_weight(weight, observer, owner), bias)


class RNNCell(RNNCellBase):
    """An Elman cell ``h' = tanh(W_ih x + b_ih + W_hh h + b_hh)`` (or relu) with dynamic int8 / float16 weights."""

    _FLOAT_MODULE = nn.RNNCell

    def __init__(
        self, input_size: int, hidden_size: int, bias: bool = True, nonlinearity: str = "tanh", dtype: DTypeLike = dtypes.int8, **act_kwargs: Any
    ) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ConfigError(f"RNNCell: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        super().__init__(input_size, hidden_size, bias, 1, dtype, **act_kwargs)
        self.nonlinearity = nonlinearity

    def forward(self, input: Tensor, hx: Optional[Tensor] = None) -> Tensor:
        x, h, unbatched = self._prepare(input, hx)
        gates = self.linear_hh(h) + self.linear_ih(x)
        out = torch.tanh(gates) if self.nonlinearity == "tanh" else torch.relu(gates)
        return out.squeeze(0) if unbatched else out

    def _get_name(self) -> str:
        return "DynamicQuantizedRNNCell"

    def extra_repr(self) -> str:
        text = super().extra_repr()
        return text if self.nonlinearity == "tanh" else f"{text}, nonlinearity={self.nonlinearity}"

    @classmethod
    def _new_like(cls, mod: nn.Module, weight_dtype: dtypes.QDType) -> "RNNCell":
        return cls(mod.input_size, mod.hidden_size, mod.bias, mod.nonlinearity, dtype=weight_dtype)


class LSTMCell(RNNCellBase):
    """An LSTM cell with dynamic int8 / float16 weights; gates in torch's order (input, forget, cell, output)."""

    _FLOAT_MODULE = nn.LSTMCell

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, dtype: DTypeLike = dtypes.int8, **act_kwargs: Any) -> None:
        super().__init__(input_size, hidden_size, bias, 4, dtype, **act_kwargs)

    def forward(self, input: Tensor, hx: Optional[Tuple[Tensor, Tensor]] = None) -> Tuple[Tensor, Tensor]:
        h0: Optional[Tensor] = None if hx is None else hx[0]
        x, h, unbatched = self._prepare(input, h0)
        c = torch.zeros_like(h) if hx is None else (hx[1].unsqueeze(0) if unbatched else hx[1])
        h1, c1 = self.step(self.linear_ih(x), h, c)
        if unbatched:
            return h1.squeeze(0), c1.squeeze(0)
        return h1, c1

    def step(self, gates_ih: Tensor, h: Tensor, c: Tensor) -> Tuple[Tensor, Tensor]:
        """One step given the input projection ``gates_ih``: torch's LSTMCell arithmetic."""
        gates = self.linear_hh(h) + gates_ih
        i, f, g, o = gates.chunk(4, 1)
        cy = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        hy = torch.sigmoid(o) * torch.tanh(cy)
        return hy, cy

    def _get_name(self) -> str:
        return "DynamicQuantizedLSTMCell"


class GRUCell(RNNCellBase):
    """A GRU cell with dynamic int8 / float16 weights; gates in torch's order (reset, update, new)."""

    _FLOAT_MODULE = nn.GRUCell

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, dtype: DTypeLike = dtypes.int8, **act_kwargs: Any) -> None:
        super().__init__(input_size, hidden_size, bias, 3, dtype, **act_kwargs)

    def forward(self, input: Tensor, hx: Optional[Tensor] = None) -> Tensor:
        x, h, unbatched = self._prepare(input, hx)
        h1, _ = self.step(self.linear_ih(x), h, h)
        return h1.squeeze(0) if unbatched else h1

    def step(self, gates_ih: Tensor, h: Tensor, c: Tensor) -> Tuple[Tensor, Tensor]:
        """One step given the input projection ``gates_ih``: torch's GRUCell arithmetic (``c`` is unused)."""
        ir, iz, in_ = gates_ih.chunk(3, 1)
        hr, hz, hn = self.linear_hh(h).chunk(3, 1)
        reset = torch.sigmoid(hr + ir)
        update = torch.sigmoid(hz + iz)
        new = torch.tanh(in_ + hn * reset)
        hy = (h - new) * update + new
        return hy, c

    def _get_name(self) -> str:
        return "DynamicQuantizedGRUCell"


class RNNBase(nn.Module):
    """Multi-layer, optionally bidirectional LSTM/GRU over dynamic cells (``mode`` "LSTM" or "GRU")."""

    _FLOAT_MODULE = nn.RNNBase
    __jit_unused_properties__ = ["weight_dtype", "num_directions"]
    _CELL = RNNCellBase

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        dtype: DTypeLike = dtypes.int8,
        **act_kwargs: Any,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        if int(num_layers) < 1:
            raise ConfigError(f"{owner}: num_layers must be at least 1, got {num_layers}")
        if not 0.0 <= float(dropout) <= 1.0:
            raise ConfigError(f"{owner}: dropout must be in [0, 1], got {dropout}")
        settings = _settings(dtype, act_kwargs, owner)
        self.input_size = int(input_size)
        self.hidden_size = int(hidden_size)
        self.num_layers = int(num_layers)
        self.bias = bool(bias)
        self.batch_first = bool(batch_first)
        self.dropout = float(dropout)
        self.bidirectional = bool(bidirectional)
        directions = 2 if self.bidirectional else 1
        cells = []
        for layer in range(self.num_layers):
            layer_input = self.input_size if layer == 0 else self.hidden_size * directions
            for _ in range(directions):
                cells.append(self._CELL(layer_input, self.hidden_size, self.bias, dtype=settings.weight_dtype))
        self.cells = nn.ModuleList(cells)
        self.apply_settings(settings)

    def apply_settings(self, settings: DynamicQuantSettings) -> None:
        for cell in self.cells:
            cell.apply_settings(settings)

    @property
    def weight_dtype(self) -> dtypes.QDType:
        return self.cells[0].weight_dtype

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    def extra_repr(self) -> str:
        return f"{rnn_extra_repr(self)}, weight_dtype={self.weight_dtype.name}"

    def _weight_bias(self) -> dict[str, dict[str, Any]]:
        """torch.ao's layout: {"weight": {"weight_ih_l0": ..., ...}, "bias": {"bias_ih_l0": ..., ...}}."""
        out: dict[str, dict[str, Any]] = {"weight": {}, "bias": {}}
        for k, cell in enumerate(self.cells):
            suffix = f"_l{k // self.num_directions}" + ("_reverse" if k % self.num_directions else "")
            for part, linear in (("ih", cell.linear_ih), ("hh", cell.linear_hh)):
                out["weight"][f"weight_{part}{suffix}"] = linear.weight()
                out["bias"][f"bias_{part}{suffix}"] = linear.bias()
        return out

    def _check_input(self, input: Any, hx: Any) -> None:
        if isinstance(input, nn.utils.rnn.PackedSequence):
            raise QuantizationError(
                f"{type(self).__name__}: PackedSequence input is not supported; pad it "
                "(torch.nn.utils.rnn.pad_packed_sequence) and pass the padded tensor"
            )
        check_float_input(self, input)
        if input.dim() not in (2, 3):
            raise QuantizationError(f"{type(self).__name__}: expected a 2-d (unbatched) or 3-d input, got shape {tuple(input.shape)}")
        if input.size(-1) != self.input_size:
            raise QuantizationError(f"{type(self).__name__}: input has {input.size(-1)} features, expected input_size={self.input_size}")
        steps = input.size(1) if self.batch_first and input.dim() == 3 else input.size(0)
        if steps == 0:
            raise QuantizationError(f"{type(self).__name__}: the input sequence is empty (length 0)")

    def _run(self, x: Tensor, h0: Tensor, c0: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """All layers over a time-major batched input ``x``; returns (output, h_n, c_n)."""
        directions = 2 if self.bidirectional else 1
        last = self.num_layers * directions - 1
        layer_input = x
        outputs: List[Tensor] = []
        h_n: List[Tensor] = []
        c_n: List[Tensor] = []
        for k, cell in enumerate(self.cells):
            reverse = k % directions == 1
            pre = cell.linear_ih(layer_input)  # the whole sequence at once: one set of qparams
            if reverse:
                pre = pre.flip(0)
            h = h0[k]
            c = c0[k]
            steps: List[Tensor] = []
            for t in range(pre.size(0)):
                h, c = cell.step(pre[t], h, c)
                steps.append(h)
            out = torch.stack(steps, 0)
            if reverse:
                out = out.flip(0)
            outputs.append(out)
            h_n.append(h)
            c_n.append(c)
            if k % directions == directions - 1:
                layer_input = torch.cat(outputs, -1) if directions == 2 else outputs[0]
                outputs = []
                if self.training and self.dropout > 0.0 and k < last:
                    layer_input = F.dropout(layer_input, self.dropout, True)
        return layer_input, torch.stack(h_n, 0), torch.stack(c_n, 0)

    def _layout(self, input: Tensor) -> Tuple[Tensor, bool]:
        """Time-major, batched input and whether the input was unbatched."""
        unbatched = input.dim() == 2
        if unbatched:
            return input.unsqueeze(1), True
        if self.batch_first:
            return input.transpose(0, 1), False
        return input, False

    def _zeros(self, x: Tensor) -> Tensor:
        return torch.zeros(self.num_layers * (2 if self.bidirectional else 1), x.size(1), self.hidden_size, dtype=x.dtype, device=x.device)

    def _output(self, out: Tensor, unbatched: bool) -> Tensor:
        if unbatched:
            return out.squeeze(1)
        return out.transpose(0, 1) if self.batch_first else out

    @classmethod
    def from_float(cls, mod: nn.Module, use_precomputed_fake_quant: bool = False, *, reduce_range: Optional[bool] = None) -> Any:
        """Quantize every weight of a float LSTM/GRU with a fresh observer from ``mod.qconfig.weight``."""
        owner = f"dynamic.{cls.__name__}"
        if not isinstance(mod, cls._FLOAT_MODULE):
            raise ConfigError(f"{owner}.from_float expects an nn.{cls._FLOAT_MODULE.__name__}, got {type(mod).__name__}")
        if getattr(mod, "proj_size", 0):
            raise ConfigError(f"{owner}.from_float: LSTM with proj_size={mod.proj_size} is not supported; use proj_size=0")
        settings, weight_factory = dynamic_settings_from(mod, owner, reduce_range)
        qmod = cls(
            mod.input_size, mod.hidden_size, mod.num_layers, mod.bias, mod.batch_first, mod.dropout, mod.bidirectional,
            dtype=settings.weight_dtype,
        )
        qmod.apply_settings(settings)
        directions = qmod.num_directions
        for k, cell in enumerate(qmod.cells):
            suffix = f"_l{k // directions}" + ("_reverse" if k % directions else "")
            bias_ih = getattr(mod, f"bias_ih{suffix}") if mod.bias else None
            bias_hh = getattr(mod, f"bias_hh{suffix}") if mod.bias else None
            _load_projection(cell.linear_ih, getattr(mod, f"weight_ih{suffix}"), bias_ih, weight_factory, settings, owner)
            _load_projection(cell.linear_hh, getattr(mod, f"weight_hh{suffix}"), bias_hh, weight_factory, settings, owner)
        return qmod


class LSTM(RNNBase):
    """torch.ao.nn.quantized.dynamic.LSTM on the reference backend: float in, float out."""

    _FLOAT_MODULE = nn.LSTM
    _CELL = LSTMCell

    def forward(self, input: Tensor, hx: Optional[Tuple[Tensor, Tensor]] = None) -> Tuple[Tensor, Tuple[Tensor, Tensor]]:
        if not torch.jit.is_scripting():
            self._check_input(input, hx)
        x, unbatched = self._layout(input)
        if hx is None:
            h0 = self._zeros(x)
            c0 = h0
        else:
            h0, c0 = hx
            if unbatched:
                h0 = h0.unsqueeze(1)
                c0 = c0.unsqueeze(1)
        out, h_n, c_n = self._run(x, h0, c0)
        if unbatched:
            h_n = h_n.squeeze(1)
            c_n = c_n.squeeze(1)
        return self._output(out, unbatched), (h_n, c_n)

    def _get_name(self) -> str:
        return "DynamicQuantizedLSTM"


class GRU(RNNBase):
    """torch.ao.nn.quantized.dynamic.GRU on the reference backend: float in, float out."""

    _FLOAT_MODULE = nn.GRU
    _CELL = GRUCell

    def forward(self, input: Tensor, hx: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        if not torch.jit.is_scripting():
            self._check_input(input, hx)
        x, unbatched = self._layout(input)
        if hx is None:
            h0 = self._zeros(x)
        else:
            h0 = hx.unsqueeze(1) if unbatched else hx
        out, h_n, _ = self._run(x, h0, h0)
        if unbatched:
            h_n = h_n.squeeze(1)
        return self._output(out, unbatched), h_n

    def _get_name(self) -> str:
        return "DynamicQuantizedGRU"
