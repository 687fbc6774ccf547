"""Dynamic LSTM, GRU and cells on fbgemm: ``torch.quantized_lstm`` / ``quantized_gru`` and the cell kernels.

A kernel cell or layer keeps the reference's children (``linear_ih`` /
``linear_hh`` reference Linears, same state-dict keys:
``cells.0.linear_ih.weight``, ...) and holds their weights packed for fbgemm,
packed when built and again after ``load_state_dict`` or ``apply_settings``
(call :meth:`repack` after changing a projection's weights directly). The
layers hand torch's C++ recurrence one cell-parameter object per layer and
direction (``make_quantized_cell_params_dynamic`` / ``_fp16``). torch's CPU
recurrence projects the whole input sequence at once and the hidden state at
every step, as the reference does, so results agree up to float32 summation
order; the tests bound the difference to the reference's and torch.ao's
modules by 1e-5 (observed ~1e-7).

Per-token projections (a per-token qconfig) keep the reference modules: the
recurrent kernels quantize per tensor.

torch's C++ cell kernels always quantize activations with the halved range;
a cell set to ``reduce_range=False`` runs fbgemm's linear for both
projections and the reference's gate arithmetic in Python instead.
"""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

import torch
from torch import Tensor

from qcore import dtypes
from qcore.nn.quantized.dynamic import rnn as reference

from qcore_fbgemm.dynamic.base import KernelModule
from qcore_fbgemm.dynamic.linear import check_kernel_settings, linear_unsupported_reason
from qcore_fbgemm.dynamic.packing import pack_linear
from qcore_fbgemm.torch_quantized import quiet

__all__ = [
    "FbgemmDynamicRNNCell",
    "FbgemmDynamicLSTMCell",
    "FbgemmDynamicGRUCell",
    "FbgemmDynamicLSTM",
    "FbgemmDynamicGRU",
]


def _cells(module: Any) -> List[Any]:
    return list(module.cells) if isinstance(module, reference.RNNBase) else [module]


def _projection_reason(module: Any) -> Optional[str]:
    for cell in _cells(module):
        for linear in (cell.linear_ih, cell.linear_hh):
            reason = linear_unsupported_reason(linear, allow_per_token=False)
            if reason is not None:
                return reason
    return None


def _pack(linear: Any) -> Any:
    """The projection's weight packed for fbgemm; its float copy is dropped (the kernels never read it)."""
    linear.set_cache_dequantized(False)
    return pack_linear(linear.weight(), linear.bias())


def _bias_or_zeros(linear: Any) -> Tensor:
    bias = linear.bias()
    return bias if bias is not None else torch.zeros(linear.out_features)


def _after_load(module: Any, incompatible_keys: Any) -> None:
    module.repack()


class _KernelRecurrent(KernelModule):
    """Packing on construction, load and settings changes; the fbgemm settings check."""

    def _init_kernel(self) -> None:
        self._ready = True
        self.repack()
        self.register_load_state_dict_post_hook(_after_load)

    def apply_settings(self, settings: Any) -> None:
        check_kernel_settings(self, self.weight_dtype, settings, allow_per_token=False)
        super().apply_settings(settings)  # type: ignore[misc]
        if getattr(self, "_ready", False):
            self.repack()

    def repack(self) -> None:
        raise NotImplementedError

    @classmethod
    def unsupported_reason(cls, ref: Any) -> Optional[str]:
        return _projection_reason(ref)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, kernel=fbgemm"  # type: ignore[misc]


class _KernelCell(_KernelRecurrent):
    """The cells: packed projections, and whether torch's C++ cell kernel applies."""

    def repack(self) -> None:
        """Pack both projections again (after changing their weights outside ``load_state_dict``)."""
        ih, hh = self.linear_ih, self.linear_hh
        self._w_ih, self._w_hh = _pack(ih), _pack(hh)
        self._bias_ih, self._bias_hh = _bias_or_zeros(ih), _bias_or_zeros(hh)  # the kernels' signature wants them
        self._fp16 = ih.weight_dtype is dtypes.float16
        self._reduce_range = bool(ih.reduce_range)
        self._cell_kernel = self._fp16 or self._reduce_range

    def _project(self, x: Tensor, hidden: bool) -> Tensor:
        """The input (or hidden) projection on fbgemm, for the Python path when the C++ cell kernel does not apply."""
        packed = self._w_hh if hidden else self._w_ih
        if self._fp16:
            return torch.ops.quantized.linear_dynamic_fp16(x, packed)
        return torch.ops.quantized.linear_dynamic(x, packed, self._reduce_range)

    def _float32(self, x: Tensor) -> Tensor:
        return x if x.dtype == torch.float32 else x.to(torch.float32)


class FbgemmDynamicRNNCell(_KernelCell, reference.RNNCell):
    """qcore's dynamic RNNCell on ``quantized_rnn_tanh_cell_dynamic`` / ``quantized_rnn_relu_cell_dynamic``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        reference.RNNCell.__init__(self, *args, **kwargs)
        self._relu = self.nonlinearity == "relu"
        self._init_kernel()

    def forward(self, input: Tensor, hx: Optional[Tensor] = None) -> Tensor:
        x, h, unbatched = self._prepare(input, hx)
        x, h = self._float32(x), self._float32(h)
        if not self._cell_kernel:
            gates = self._project(h, True) + self._project(x, False)
            out = torch.relu(gates) if self._relu else torch.tanh(gates)
        elif self._relu:
            out = torch.ops.quantized.quantized_rnn_relu_cell_dynamic(x, h, self._w_ih, self._w_hh, self._bias_ih, self._bias_hh)
        else:
            out = torch.ops.quantized.quantized_rnn_tanh_cell_dynamic(x, h, self._w_ih, self._w_hh, self._bias_ih, self._bias_hh)
        out = out.to(input.dtype)
        return out.squeeze(0) if unbatched else out

    @staticmethod
    def _constructor_args(m: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return (m.input_size, m.hidden_size, m.bias, m.nonlinearity), {"dtype": m.weight_dtype}


class FbgemmDynamicLSTMCell(_KernelCell, reference.LSTMCell):
    """qcore's dynamic LSTMCell on ``quantized_lstm_cell_dynamic``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        reference.LSTMCell.__init__(self, *args, **kwargs)
        self._init_kernel()

    def forward(self, input: Tensor, hx: Optional[Tuple[Tensor, Tensor]] = None) -> Tuple[Tensor, Tensor]:
        h0: Optional[Tensor] = None if hx is None else hx[0]
        x, h, unbatched = self._prepare(input, h0)
        c = torch.zeros_like(h) if hx is None else (hx[1].unsqueeze(0) if unbatched else hx[1])
        x, h, c = self._float32(x), self._float32(h), self._float32(c)
        if self._cell_kernel:
            h1, c1 = torch.ops.quantized.quantized_lstm_cell_dynamic(
                x, [h, c], self._w_ih, self._w_hh, self._bias_ih, self._bias_hh
            )
        else:
            gates = self._project(h, True) + self._project(x, False)
            i, f, g, o = gates.chunk(4, 1)
            c1 = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h1 = torch.sigmoid(o) * torch.tanh(c1)
        h1, c1 = h1.to(input.dtype), c1.to(input.dtype)
        if unbatched:
            return h1.squeeze(0), c1.squeeze(0)
        return h1, c1

    @staticmethod
    def _constructor_args(m: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return (m.input_size, m.hidden_size, m.bias), {"dtype": m.weight_dtype}


class FbgemmDynamicGRUCell(_KernelCell, reference.GRUCell):
    """qcore's dynamic GRUCell on ``quantized_gru_cell_dynamic``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        reference.GRUCell.__init__(self, *args, **kwargs)
        self._init_kernel()

    def forward(self, input: Tensor, hx: Optional[Tensor] = None) -> Tensor:
        x, h, unbatched = self._prepare(input, hx)
        x, h = self._float32(x), self._float32(h)
        if self._cell_kernel:
            out = torch.ops.quantized.quantized_gru_cell_dynamic(x, h, self._w_ih, self._w_hh, self._bias_ih, self._bias_hh)
        else:
            ir, iz, in_ = self._project(x, False).chunk(3, 1)
            hr, hz, hn = self._project(h, True).chunk(3, 1)
            reset = torch.sigmoid(hr + ir)
            update = torch.sigmoid(hz + iz)
            new = torch.tanh(in_ + hn * reset)
            out = (h - new) * update + new
        out = out.to(input.dtype)
        return out.squeeze(0) if unbatched else out

    @staticmethod
    def _constructor_args(m: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return (m.input_size, m.hidden_size, m.bias), {"dtype": m.weight_dtype}


# --- multi-layer LSTM / GRU ------------------------------------------------------------------------------


class _KernelLayers(_KernelRecurrent):
    """The layers: one packed cell-parameter object per layer and direction, input handling."""

    def repack(self) -> None:
        """Pack every projection and rebuild the cell parameters (after changing weights outside ``load_state_dict``)."""
        params = []
        fp16 = self.weight_dtype is dtypes.float16
        with quiet():
            for cell in self.cells:
                ih, hh = cell.linear_ih, cell.linear_hh
                if fp16:
                    params.append(torch.ops.quantized.make_quantized_cell_params_fp16(_pack(ih), _pack(hh)))
                else:
                    params.append(torch.ops.quantized.make_quantized_cell_params_dynamic(
                        _pack(ih), _pack(hh), _bias_or_zeros(ih), _bias_or_zeros(hh), bool(ih.reduce_range)
                    ))
        self._cell_params = params
        self._kernel_dtype = torch.float16 if fp16 else torch.qint8

    def _checked_input(self, input: Tensor) -> Tuple[Tensor, bool]:
        """(batched float32 input, unbatched?) after the reference's input checks."""
        if not torch.jit.is_scripting():
            self._check_input(input, None)
        unbatched = input.dim() == 2
        x = input.unsqueeze(0 if self.batch_first else 1) if unbatched else input
        return (x if x.dtype == torch.float32 else x.to(torch.float32)), unbatched

    def _batched_state(self, state: Tensor, unbatched: bool) -> Tensor:
        state = state.unsqueeze(1) if unbatched else state
        return state if state.dtype == torch.float32 else state.to(torch.float32)

    def _zero_state(self, x: Tensor) -> Tensor:
        batch = x.size(0) if self.batch_first else x.size(1)
        directions = 2 if self.bidirectional else 1
        return torch.zeros(self.num_layers * directions, batch, self.hidden_size, dtype=x.dtype, device=x.device)

    def _unbatch(self, out: Tensor, unbatched: bool, dtype: torch.dtype) -> Tensor:
        out = out.squeeze(0 if self.batch_first else 1) if unbatched else out
        return out if out.dtype == dtype else out.to(dtype)

    @staticmethod
    def _constructor_args(m: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return (m.input_size, m.hidden_size, m.num_layers, m.bias, m.batch_first, m.dropout, m.bidirectional), {
            "dtype": m.weight_dtype}


class FbgemmDynamicLSTM(_KernelLayers, reference.LSTM):
    """qcore's dynamic LSTM on ``torch.quantized_lstm(..., use_dynamic=True)``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        reference.LSTM.__init__(self, *args, **kwargs)
        self._init_kernel()

    def forward(self, input: Tensor, hx: Optional[Tuple[Tensor, Tensor]] = None) -> Tuple[Tensor, Tuple[Tensor, Tensor]]:
        x, unbatched = self._checked_input(input)
        if hx is None:
            h0 = self._zero_state(x)
            c0 = h0
        else:
            h0 = self._batched_state(hx[0], unbatched)
            c0 = self._batched_state(hx[1], unbatched)
        # has_biases is always True: torch insists, and the packed weights hold the (possibly absent) biases.
        out, h_n, c_n = torch.quantized_lstm(
            x, [h0, c0], self._cell_params, True, self.num_layers, float(self.dropout), self.training,
            self.bidirectional, self.batch_first, dtype=self._kernel_dtype, use_dynamic=True,
        )
        if unbatched:
            h_n = h_n.squeeze(1)
            c_n = c_n.squeeze(1)
        dtype = input.dtype
        if dtype != torch.float32:
            h_n, c_n = h_n.to(dtype), c_n.to(dtype)
        return self._unbatch(out, unbatched, dtype), (h_n, c_n)


class FbgemmDynamicGRU(_KernelLayers, reference.GRU):
    """qcore's dynamic GRU on ``torch.quantized_gru``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        reference.GRU.__init__(self, *args, **kwargs)
        self._init_kernel()

    def forward(self, input: Tensor, hx: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        x, unbatched = self._checked_input(input)
        h0 = self._zero_state(x) if hx is None else self._batched_state(hx, unbatched)
        out, h_n = torch.quantized_gru(
            x, h0, self._cell_params, True, self.num_layers, float(self.dropout), self.training,
            self.bidirectional, self.batch_first,
        )
        if unbatched:
            h_n = h_n.squeeze(1)
        if input.dtype != torch.float32:
            h_n = h_n.to(input.dtype)
        return self._unbatch(out, unbatched, input.dtype), h_n
