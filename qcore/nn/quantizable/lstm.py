"""Observed LSTM for static quantization (torch.ao.nn.quantizable.LSTM / LSTMCell): gates as observable modules.

``nn.LSTM`` computes its gates inside one fused kernel, where no observer can
see them. These classes rebuild the LSTM from ``nn.Linear`` gate projections,
:class:`~qcore.nn.quantized.FloatFunctional` adds and muls, and Sigmoid/Tanh
modules, so ``prepare`` gives every intermediate result its own observer and
``convert`` swaps every piece for its quantized counterpart
(:class:`qcore.nn.quantized.LSTM`). The same forward code runs on float
tensors (observed) and on QTensors (quantized); where quantized tensors with
different qparams meet (stacking hidden states, joining the two directions)
they follow torch's quantized ``cat``: everything moves onto the first
tensor's grid.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qcore import affine
from qcore.errors import ConfigError, QuantizationError
from qcore.qtensor import QTensor

__all__ = ["LSTMCell", "LSTM", "rnn_extra_repr"]

Hidden = tuple[Tensor, Tensor]


# --- structural ops on float tensors or QTensors (torch's quantized-tensor rules) -------------------------


def _quantize_like(x: Tensor, like: QTensor) -> QTensor:
    """Float ``x`` quantized onto ``like``'s per-tensor grid (full range of its dtype)."""
    d = like.qdtype
    q = affine.quantize_affine(x, like.q_scale(), like.q_zero_point(), d.quant_min, d.quant_max, d)
    return QTensor.from_int(q, like.q_scale(), like.q_zero_point(), d)


def _on_grid_of(x: QTensor, like: QTensor) -> QTensor:
    """``x`` requantized onto ``like``'s grid, as torch's quantized ``cat`` does to all but its first input."""
    if (x.qdtype, x.q_scale(), x.q_zero_point()) == (like.qdtype, like.q_scale(), like.q_zero_point()):
        return x
    return _quantize_like(x.dequantize(), like)


def _join(op: Any, tensors: Sequence[Tensor], dim: int) -> Tensor:
    """``op`` (torch.cat or torch.stack) of float tensors, or of QTensors onto the first one's grid."""
    if not any(isinstance(t, QTensor) for t in tensors):
        return op(list(tensors), dim)
    if not all(isinstance(t, QTensor) for t in tensors):
        raise QuantizationError(f"{op.__name__}: cannot join quantized and float tensors; quantize or dequantize them first")
    first = tensors[0]
    ints = [_on_grid_of(t, first).int_repr() for t in tensors]
    return QTensor.from_int(op(ints, dim), first.q_scale(), first.q_zero_point(), first.qdtype)


def _stack(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    return _join(torch.stack, tensors, dim)


def _cat(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    return _join(torch.cat, tensors, dim)


def _flip(x: Tensor, dim: int) -> Tensor:
    """``x.flip(dim)``, keeping a QTensor's qparams."""
    if isinstance(x, QTensor):
        return QTensor.from_int(x.int_repr().flip(dim), x.q_scale(), x.q_zero_point(), x.qdtype)
    return x.flip(dim)


def _zeros(shape: Sequence[int], like: Tensor) -> Tensor:
    """Zeros on ``like``'s device: float, or a QTensor with scale 1 and zero point 0 in ``like``'s dtype (torch.ao's)."""
    if isinstance(like, QTensor):
        d = like.qdtype
        return QTensor.from_int(torch.zeros(tuple(shape), dtype=d.storage, device=like.device), 1.0, 0, d)
    return torch.zeros(tuple(shape), dtype=like.dtype if like.is_floating_point() else torch.float32, device=like.device)


def _parameter(value: Tensor) -> nn.Parameter:
    return nn.Parameter(value.detach().clone(), requires_grad=value.requires_grad)


# --- the cell --------------------------------------------------------------------------------------------


class LSTMCell(nn.Module):
    """One LSTM step with every intermediate observable: ``(hy, cy) = cell(x, (hx, cx))``.

    ``igates``/``hgates`` project the input and the hidden state to the four
    gates (input, forget, cell, output, in nn.LSTM's order), ``gates`` adds
    them, the gate activations are modules, and each product and the new cell
    state have a FloatFunctional of their own. ``cell_state_tanh`` is tanh(cy)
    (torch.ao calls ``torch.tanh`` there; a module gives it an observer too,
    with the same fixed qparams torch's quantized tanh uses).
    """

    _FLOAT_MODULE = nn.LSTMCell

    def __init__(self, input_dim: int, hidden_dim: int, bias: bool = True, device: Any = None, dtype: Any = None) -> None:
        from qcore.nn.quantized.functional_modules import FloatFunctional

        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.input_size = int(input_dim)
        self.hidden_size = int(hidden_dim)
        self.bias = bool(bias)
        self.igates = nn.Linear(self.input_size, 4 * self.hidden_size, bias=bias, **factory)
        self.hgates = nn.Linear(self.hidden_size, 4 * self.hidden_size, bias=bias, **factory)
        self.gates = FloatFunctional()
        self.input_gate = nn.Sigmoid()
        self.forget_gate = nn.Sigmoid()
        self.cell_gate = nn.Tanh()
        self.output_gate = nn.Sigmoid()
        self.fgate_cx = FloatFunctional()
        self.igate_cgate = FloatFunctional()
        self.fgate_cx_igate_cgate = FloatFunctional()
        self.cell_state_tanh = nn.Tanh()
        self.ogate_cy = FloatFunctional()

    def _get_name(self) -> str:
        return "QuantizableLSTMCell"

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}" + ("" if self.bias else ", bias=False")

    def initialize_hidden(self, batch_size: int, like: Tensor) -> Hidden:
        """Zero ``(hx, cx)`` of shape ``(batch_size, hidden_size)``, quantized when ``like`` is a QTensor."""
        zeros = _zeros((batch_size, self.hidden_size), like)
        return zeros, zeros

    def forward(self, x: Tensor, hidden: Optional[Hidden] = None) -> Hidden:
        if hidden is None or hidden[0] is None or hidden[1] is None:
            hidden = self.initialize_hidden(x.shape[0], x)
        hx, cx = hidden
        gates = self.gates.add(self.igates(x), self.hgates(hx))
        input_gate, forget_gate, cell_gate, output_gate = gates.chunk(4, 1)
        input_gate = self.input_gate(input_gate)
        forget_gate = self.forget_gate(forget_gate)
        cell_gate = self.cell_gate(cell_gate)
        output_gate = self.output_gate(output_gate)
        fgate_cx = self.fgate_cx.mul(forget_gate, cx)
        igate_cgate = self.igate_cgate.mul(input_gate, cell_gate)
        cy = self.fgate_cx_igate_cgate.add(fgate_cx, igate_cgate)
        hy = self.ogate_cy.mul(output_gate, self.cell_state_tanh(cy))
        return hy, cy

    @classmethod
    def from_params(cls, wi: Tensor, wh: Tensor, bi: Optional[Tensor] = None, bh: Optional[Tensor] = None) -> "LSTMCell":
        """A cell holding copies of nn.LSTM's ``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh``."""
        if (bi is None) != (bh is None):
            raise ConfigError("LSTMCell.from_params: give both biases (bias_ih and bias_hh) or neither")
        if wi.dim() != 2 or wh.dim() != 2 or wi.shape[0] != wh.shape[0] or wh.shape[0] != 4 * wh.shape[1]:
            raise ConfigError(
                f"LSTMCell.from_params: expected weight_ih (4*hidden, input) and weight_hh (4*hidden, hidden), got "
                f"{tuple(wi.shape)} and {tuple(wh.shape)}"
            )
        cell = cls(wi.shape[1], wh.shape[1], bias=bi is not None, device=wi.device, dtype=wi.dtype)
        cell.igates.weight = _parameter(wi)
        cell.hgates.weight = _parameter(wh)
        if bi is not None and bh is not None:
            cell.igates.bias = _parameter(bi)
            cell.hgates.bias = _parameter(bh)
        return cell

    @classmethod
    def from_float(cls, mod: nn.Module, qconfig: Any = None) -> "LSTMCell":
        """The observable cell of a float ``nn.LSTMCell`` (weights copied, qconfig kept; not yet prepared)."""
        if not isinstance(mod, nn.LSTMCell):
            raise ConfigError(f"{cls.__name__}.from_float expects a torch.nn.LSTMCell, got {type(mod).__name__}")
        qconfig = qconfig if qconfig is not None else getattr(mod, "qconfig", None)
        if qconfig is None:
            raise ConfigError(f"{cls.__name__}.from_float: the LSTMCell has no qconfig; set mod.qconfig or pass qconfig=")
        cell = cls.from_params(mod.weight_ih, mod.weight_hh, mod.bias_ih, mod.bias_hh)
        cell.qconfig = qconfig
        cell.train(mod.training)
        return cell


class _LSTMSingleLayer(nn.Module):
    """One direction of one layer: the cell run over the time steps of a ``(T, B, F)`` sequence."""

    def __init__(self, input_dim: int, hidden_dim: int, bias: bool = True, device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        self.cell = LSTMCell(input_dim, hidden_dim, bias=bias, device=device, dtype=dtype)

    def forward(self, x: Tensor, hidden: Optional[Hidden] = None) -> tuple[Tensor, Hidden]:
        outputs = []
        for step in range(x.shape[0]):
            hidden = self.cell(x[step], hidden)
            outputs.append(hidden[0])
        if hidden is None:
            raise QuantizationError("LSTM: the input sequence is empty (no time steps)")
        return _stack(outputs, 0), hidden

    @classmethod
    def from_params(cls, wi: Tensor, wh: Tensor, bi: Optional[Tensor] = None, bh: Optional[Tensor] = None) -> "_LSTMSingleLayer":
        cell = LSTMCell.from_params(wi, wh, bi, bh)
        layer = cls.__new__(cls)
        nn.Module.__init__(layer)
        layer.cell = cell
        return layer


class _LSTMLayer(nn.Module):
    """One layer, one or two directions; the backward direction runs on the reversed sequence.

    Returns the output ``(T, B, D*H)`` and ``(h, c)`` of shape ``(D, B, H)``.
    Quantized, the backward results join on the forward ones' grids.
    """

    def __init__(
        self, input_dim: int, hidden_dim: int, bias: bool = True, bidirectional: bool = False, device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        self.bidirectional = bool(bidirectional)
        self.layer_fw = _LSTMSingleLayer(input_dim, hidden_dim, bias=bias, device=device, dtype=dtype)
        if self.bidirectional:
            self.layer_bw = _LSTMSingleLayer(input_dim, hidden_dim, bias=bias, device=device, dtype=dtype)

    def forward(self, x: Tensor, hidden: Hidden) -> tuple[Tensor, Hidden]:
        hx, cx = hidden
        out_fw, (h_fw, c_fw) = self.layer_fw(x, (hx[0], cx[0]))
        if not self.bidirectional:
            return out_fw, (h_fw.unsqueeze(0), c_fw.unsqueeze(0))
        out_bw, (h_bw, c_bw) = self.layer_bw(_flip(x, 0), (hx[1], cx[1]))
        out = _cat([out_fw, _flip(out_bw, 0)], out_fw.dim() - 1)
        return out, (_stack([h_fw, h_bw], 0), _stack([c_fw, c_bw], 0))

    @classmethod
    def from_float(cls, mod: nn.LSTM, layer_idx: int) -> "_LSTMLayer":
        """Layer ``layer_idx`` of a float nn.LSTM, weights copied."""
        layer = cls.__new__(cls)
        nn.Module.__init__(layer)
        layer.bidirectional = bool(mod.bidirectional)
        for name, suffix in (("layer_fw", ""), ("layer_bw", "_reverse"))[: 2 if mod.bidirectional else 1]:
            weights = [getattr(mod, f"{kind}_l{layer_idx}{suffix}", None) for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
            setattr(layer, name, _LSTMSingleLayer.from_params(*weights))
        return layer


def rnn_extra_repr(mod: nn.Module) -> str:
    """nn.LSTM's repr arguments for an LSTM-like ``mod``: the sizes, then the options that are not the defaults."""
    text = f"{mod.input_size}, {mod.hidden_size}"
    if mod.num_layers != 1:
        text += f", num_layers={mod.num_layers}"
    if not mod.bias:
        text += ", bias=False"
    if mod.batch_first:
        text += ", batch_first=True"
    if mod.dropout:
        text += f", dropout={mod.dropout}"
    if mod.bidirectional:
        text += ", bidirectional=True"
    return text


# --- the LSTM --------------------------------------------------------------------------------------------


class LSTM(nn.Module):
    """An observable ``nn.LSTM``: layers of :class:`LSTMCell`, the same inputs and outputs as nn.LSTM.

    Made by :meth:`from_float` (which ``qcore.prepare`` calls for every
    ``nn.LSTM`` with a qconfig), calibrated like any prepared model, then
    converted into :class:`qcore.nn.quantized.LSTM`. Weights live per layer:
    ``lstm.layers[0].layer_fw.cell.igates.weight`` is nn.LSTM's ``weight_ih_l0``.
    ``dropout`` applies between layers in training mode, as in nn.LSTM.
    """

    _FLOAT_MODULE = nn.LSTM

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        if int(num_layers) < 1:
            raise ConfigError(f"{type(self).__name__}: num_layers must be at least 1, got {num_layers}")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout <= 1:
            raise ConfigError(f"{type(self).__name__}: dropout must be a probability in [0, 1], got {dropout!r}")
        self.input_size = int(input_size)
        self.hidden_size = int(hidden_size)
        self.num_layers = int(num_layers)
        self.bias = bool(bias)
        self.batch_first = bool(batch_first)
        self.dropout = float(dropout)
        self.bidirectional = bool(bidirectional)
        sizes = [self.input_size] + [self.hidden_size * (2 if self.bidirectional else 1)] * (self.num_layers - 1)
        self.layers = nn.ModuleList(
            _LSTMLayer(size, self.hidden_size, self.bias, self.bidirectional, device=device, dtype=dtype) for size in sizes
        )

    def _get_name(self) -> str:
        return "QuantizableLSTM"

    def extra_repr(self) -> str:
        return rnn_extra_repr(self)

    def _check_input(self, x: Any, hidden: Any) -> None:
        if isinstance(x, nn.utils.rnn.PackedSequence):
            raise QuantizationError(
                f"{type(self).__name__}: PackedSequence inputs are not supported; pad the batch to one length instead"
            )
        if not isinstance(x, Tensor) or x.dim() not in (2, 3):
            got = f"shape {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
            raise QuantizationError(f"{type(self).__name__}: expected a 2-d (unbatched) or 3-d input, got {got}")
        if x.shape[0 if x.dim() == 2 or not self.batch_first else 1] == 0:
            raise QuantizationError(f"{type(self).__name__}: the input sequence is empty (no time steps)")
        if x.shape[-1] != self.input_size:
            raise QuantizationError(
                f"{type(self).__name__}: the input has {x.shape[-1]} features, the LSTM expects input_size={self.input_size}"
            )
        if hidden is not None and (not isinstance(hidden, (tuple, list)) or len(hidden) != 2):
            raise QuantizationError(f"{type(self).__name__}: hidden must be a tuple (h_0, c_0), got {type(hidden).__name__}")

    def forward(self, x: Tensor, hidden: Optional[Hidden] = None) -> tuple[Tensor, Hidden]:
        self._check_input(x, hidden)
        batched = x.dim() == 3
        if not batched:
            x = x.unsqueeze(1)
        elif self.batch_first:
            x = x.transpose(0, 1)
        batch = x.shape[1]
        directions = 2 if self.bidirectional else 1
        state_shape = (self.num_layers, directions, batch, self.hidden_size)
        if hidden is None:
            zeros = _zeros(state_shape[1:], x)
            states = [(zeros, zeros)] * self.num_layers
        else:
            hx, cx = hidden
            expected = (self.num_layers * directions,) + ((batch,) if batched else ()) + (self.hidden_size,)
            for name, state in (("h_0", hx), ("c_0", cx)):
                if not isinstance(state, Tensor) or tuple(state.shape) != expected:
                    got = tuple(state.shape) if isinstance(state, Tensor) else type(state).__name__
                    raise QuantizationError(f"{type(self).__name__}: expected {name} of shape {expected}, got {got}")
            hx, cx = hx.reshape(state_shape), cx.reshape(state_shape)
            states = [(hx[i], cx[i]) for i in range(self.num_layers)]
        h_n, c_n = [], []
        for index, layer in enumerate(self.layers):
            x, (h, c) = layer(x, states[index])
            h_n.append(h)
            c_n.append(c)
            if self.training and self.dropout > 0 and index < self.num_layers - 1:
                x = F.dropout(x, self.dropout, training=True)
        h_out = _stack(h_n, 0).reshape(self.num_layers * directions, batch, self.hidden_size)
        c_out = _stack(c_n, 0).reshape(self.num_layers * directions, batch, self.hidden_size)
        if not batched:
            return x.squeeze(1), (h_out.squeeze(1), c_out.squeeze(1))
        if self.batch_first:
            x = x.transpose(0, 1)
        return x, (h_out, c_out)

    @classmethod
    def from_float(cls, mod: nn.Module, qconfig: Any = None) -> "LSTM":
        """The observed LSTM of a float ``nn.LSTM``: weights copied, observers attached (prepared or QAT-prepared).

        A model in eval mode is prepared for calibration (``qcore.prepare``), one
        in training mode for quantization-aware training (``qcore.prepare_qat``).
        """
        if not isinstance(mod, nn.LSTM):
            raise ConfigError(f"{cls.__name__}.from_float expects a torch.nn.LSTM, got {type(mod).__name__}")
        qconfig = qconfig if qconfig is not None else getattr(mod, "qconfig", None)
        if qconfig is None:
            raise ConfigError(
                f"{cls.__name__}.from_float: the LSTM has no qconfig; set mod.qconfig (or run qcore.prepare with one) "
                "or pass qconfig="
            )
        if getattr(mod, "proj_size", 0):
            raise ConfigError(
                f"{cls.__name__}.from_float: LSTMs with projections (proj_size={mod.proj_size}) have no static quantized "
                "form; set this LSTM's qconfig to None to keep it float"
            )
        observed = cls.__new__(cls)
        nn.Module.__init__(observed)
        for name in ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout", "bidirectional"):
            setattr(observed, name, getattr(mod, name))
        observed.dropout = float(observed.dropout)
        observed.layers = nn.ModuleList(_LSTMLayer.from_float(mod, i) for i in range(mod.num_layers))
        observed.qconfig = qconfig
        return _prepare_self(observed, training=mod.training)

    @classmethod
    def from_observed(cls, mod: nn.Module) -> Any:
        raise ConfigError(
            f"{cls.__name__} is the observed LSTM (float -> observed); qcore.nn.quantized.LSTM.from_observed makes the "
            "quantized one (qcore.convert calls it)"
        )


def _prepare_self(observed: nn.Module, training: bool) -> Any:
    """Attach observers inside a freshly built observed module, as torch.ao's quantizable modules do."""
    from qcore.flow.eager.prepare import prepare, prepare_qat

    if training:
        return prepare_qat(observed.train(), inplace=True)
    return prepare(observed.eval(), inplace=True)
