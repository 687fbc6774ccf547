"""Static LSTM through the custom-module path: qcore.nn.quantizable.LSTM (observed) -> qcore.nn.quantized.LSTM.

Differential against torch.ao's same flow (torch.ao.nn.quantizable.LSTM / torch.ao.nn.quantized.LSTM passed
through prepare_custom_config_dict) on the same float weights and calibration data, plus real data: an LSTM
classifier on the rows of scikit-learn's digits.
"""

from __future__ import annotations

import copy
import io
import warnings
from typing import Any, Optional, Tuple

import pytest
import torch
from torch import nn

import qcore
import qcore.nn.quantizable as nnqa
import qcore.nn.quantized as nnq
from qcore.errors import ConfigError, QuantizationError
from qcore.flow.eager.prepare import is_activation_post_process
from qcore.qtensor import QTensor

torch.set_num_threads(1)


class Model(nn.Module):
    """QuantStub -> LSTM -> DeQuantStub; the states come back as they are (QTensors once converted)."""

    def __init__(self, lstm: nn.Module, quant: type = qcore.QuantStub, dequant: type = qcore.DeQuantStub) -> None:
        super().__init__()
        self.quant = quant()
        self.lstm = lstm
        self.dequant = dequant()

    def forward(self, x: torch.Tensor, hidden: Any = None) -> Any:
        y, (h, c) = self.lstm(self.quant(x), hidden)
        return self.dequant(y), h, c


def _ao() -> Any:
    """torch.ao's quantization namespace and its LSTM custom-module config (skip when torch.ao is gone)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tq = pytest.importorskip("torch.ao.quantization")
        ao_quantizable = pytest.importorskip("torch.ao.nn.quantizable")
        ao_quantized = pytest.importorskip("torch.ao.nn.quantized")
    config = {
        "float_to_observed_custom_module_class": {nn.LSTM: ao_quantizable.LSTM},
        "observed_to_quantized_custom_module_class": {ao_quantizable.LSTM: ao_quantized.LSTM},
    }
    return tq, config


QCONFIGS = {
    # name: (qcore qconfig, torch.ao qconfig name / backend)
    "minmax_per_tensor": (lambda: qcore.default_qconfig, lambda tq: tq.default_qconfig),
    "fbgemm_histogram_per_channel": (lambda: qcore.get_default_qconfig("fbgemm"), lambda tq: tq.get_default_qconfig("fbgemm")),
}


def _sequence(kwargs: dict, batch: int = 6, steps: int = 7, features: int = 4) -> torch.Tensor:
    shape = (batch, steps, features) if kwargs.get("batch_first") else (steps, batch, features)
    return torch.randn(shape)


def _both(lstm: nn.LSTM, qconfig: str, calibration: list[torch.Tensor]) -> tuple[nn.Module, nn.Module]:
    """The same float LSTM statically quantized by qcore and by torch.ao, calibrated on the same data."""
    tq, config = _ao()
    ours = Model(copy.deepcopy(lstm)).eval()
    ours.qconfig = QCONFIGS[qconfig][0]()
    prepared = qcore.prepare(ours)
    for x in calibration:
        prepared(x)
    converted = qcore.convert(prepared)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = Model(copy.deepcopy(lstm), tq.QuantStub, tq.DeQuantStub).eval()
        theirs.qconfig = QCONFIGS[qconfig][1](tq)
        theirs_prepared = tq.prepare(theirs, prepare_custom_config_dict=config)
        for x in calibration:
            theirs_prepared(x)
        theirs_converted = tq.convert(theirs_prepared, convert_custom_config_dict=config)
    return converted, theirs_converted


def _steps(ours: torch.Tensor, theirs: torch.Tensor, scale: float) -> float:
    """Largest difference in quantization steps (rounded: values on one grid differ by whole steps)."""
    return round(float((ours - theirs).detach().abs().max()) / scale, 3)


# --- the flow ----------------------------------------------------------------------------------------------


def test_prepare_swaps_lstm_for_the_observed_one_without_config():
    torch.manual_seed(0)
    float_lstm = nn.LSTM(4, 5, num_layers=2).eval()
    model = Model(float_lstm).eval()
    model.qconfig = qcore.default_qconfig
    prepared = qcore.prepare(model)
    observed = prepared.lstm
    assert type(observed) is nnqa.LSTM
    assert not hasattr(observed, "activation_post_process"), "the observed LSTM places its own observers"
    cell = observed.layers[1].layer_fw.cell
    for name in ("igates", "hgates"):
        assert is_activation_post_process(getattr(cell, name).activation_post_process)
    for name in ("gates", "fgate_cx", "igate_cgate", "fgate_cx_igate_cgate", "ogate_cy"):
        assert is_activation_post_process(getattr(cell, name).activation_post_process)
    for name in ("input_gate", "forget_gate", "cell_gate", "output_gate", "cell_state_tanh"):
        assert type(getattr(cell, name).activation_post_process).__name__ == "FixedQParamsObserver"
    # weights are nn.LSTM's, copied
    torch.testing.assert_close(cell.igates.weight, float_lstm.weight_ih_l1)
    torch.testing.assert_close(observed.layers[0].layer_fw.cell.hgates.bias, float_lstm.bias_hh_l0)
    assert observed.layers[0].layer_fw.cell.igates.weight.data_ptr() != float_lstm.weight_ih_l0.data_ptr()

    x = torch.randn(5, 3, 4)
    y, h, c = prepared(x)
    y_ref, (h_ref, c_ref) = float_lstm(x)
    torch.testing.assert_close(y, y_ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(h, h_ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(c, c_ref, atol=1e-6, rtol=0)

    converted = qcore.convert(prepared)
    assert type(converted.lstm) is nnq.LSTM
    y_q, h_q, c_q = converted(x)
    assert isinstance(h_q, QTensor) and isinstance(c_q, QTensor)
    assert h_q.shape == (2, 3, 5) and c_q.shape == (2, 3, 5)
    assert float((y_q - y_ref).detach().abs().max()) < 0.05
    assert "QuantizedLSTM" in repr(converted) and "QuantizedLinear" in repr(converted)
    assert "QuantizableLSTM" in repr(prepared)


@pytest.mark.parametrize("qconfig", sorted(QCONFIGS))
@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"num_layers": 2, "bidirectional": True},
        {"num_layers": 2, "batch_first": True},
        {"bias": False, "bidirectional": True, "batch_first": True},
    ],
    ids=["plain", "2layers-bidirectional", "2layers-batch_first", "nobias-bidirectional-batch_first"],
)
def test_matches_torch_ao(kwargs, qconfig):
    torch.manual_seed(0)
    lstm = nn.LSTM(4, 6, **kwargs).eval()
    calibration = [_sequence(kwargs) for _ in range(3)]
    ours, theirs = _both(lstm, qconfig, calibration)
    x = _sequence(kwargs)
    y, h, c = ours(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ty, th, tc = theirs(x)
    # Same calibration, same qparams: torch.ao's h_n/c_n are on the first layer's forward grids, as ours.
    assert h.q_scale() == pytest.approx(th.q_scale(), rel=1e-6) and h.q_zero_point() == th.q_zero_point()
    assert c.q_scale() == pytest.approx(tc.q_scale(), rel=1e-6) and c.q_zero_point() == tc.q_zero_point()
    last = ours.lstm.layers[-1]
    out_scale = float(last.layer_fw.cell.ogate_cy.scale)
    # Measured: 0 steps (bit-exact) for every case here; gates compound, so allow two.
    assert _steps(y, ty, out_scale) <= 2.0
    assert _steps(h.dequantize(), th.dequantize(), h.q_scale()) <= 2.0
    assert _steps(c.dequantize(), tc.dequantize(), c.q_scale()) <= 2.0


def test_initial_states_are_quantized_in_and_out_as_torch_ao():
    torch.manual_seed(1)
    lstm = nn.LSTM(4, 5, num_layers=2, bidirectional=True).eval()
    h0, c0 = 0.5 * torch.randn(4, 3, 5), torch.randn(4, 3, 5)
    calibration = [_sequence({}, batch=3) for _ in range(3)]
    ours, theirs = _both(lstm, "minmax_per_tensor", calibration)
    x = _sequence({}, batch=3)
    q_h0 = qcore.quantize_per_tensor(h0, 0.01, 128, torch.quint8)
    q_c0 = qcore.quantize_per_tensor(c0, 0.02, 128, torch.quint8)
    y, h, c = ours(x, (q_h0, q_c0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t_h0 = torch.quantize_per_tensor(h0, 0.01, 128, torch.quint8)
        t_c0 = torch.quantize_per_tensor(c0, 0.02, 128, torch.quint8)
        ty, th, tc = theirs(x, (t_h0, t_c0))
    assert _steps(y, ty, float(ours.lstm.layers[-1].layer_fw.cell.ogate_cy.scale)) <= 2.0
    assert _steps(h.dequantize(), th.dequantize(), h.q_scale()) <= 2.0
    assert _steps(c.dequantize(), tc.dequantize(), c.q_scale()) <= 2.0
    # the states matter: zeros give a different answer
    assert not torch.equal(y, ours(x)[0])
    with pytest.raises(QuantizationError, match=r"'?lstm.*initial states.*quantize_per_tensor"):
        ours(x, (h0, c0))


def test_observed_lstm_matches_float_for_unbatched_inputs_and_given_states():
    torch.manual_seed(2)
    lstm = nn.LSTM(3, 4, num_layers=2, bidirectional=True, batch_first=True).eval()
    lstm.qconfig = qcore.default_qconfig
    observed = nnqa.LSTM.from_float(lstm)
    x = torch.randn(6, 3)  # unbatched: (time, features)
    h0, c0 = torch.randn(4, 4), torch.randn(4, 4)
    for args in ((x,), (x, (h0, c0)), (x.unsqueeze(0), (h0.unsqueeze(1), c0.unsqueeze(1)))):
        got, (h, c) = observed(*args)
        want, (h_ref, c_ref) = lstm(*args)
        torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
        torch.testing.assert_close(h, h_ref, atol=1e-6, rtol=0)
        torch.testing.assert_close(c, c_ref, atol=1e-6, rtol=0)
    quantized = nnq.LSTM.from_observed(observed)
    y, (h, c) = quantized(qcore.quantize_per_tensor(x, 0.05, 128, torch.quint8))
    assert y.shape == (6, 8) and h.shape == (4, 4) and c.shape == (4, 4)


def test_dropout_applies_between_layers_only_in_training():
    torch.manual_seed(3)
    lstm = nn.LSTM(3, 4, num_layers=2, dropout=0.5).eval()
    lstm.qconfig = qcore.default_qconfig
    observed = nnqa.LSTM.from_float(lstm)
    x = torch.randn(5, 2, 3)
    torch.testing.assert_close(observed(x)[0], lstm(x)[0], atol=1e-6, rtol=0)
    observed.train()
    torch.manual_seed(4)
    dropped = observed(x)[0]
    assert not torch.allclose(dropped, lstm(x)[0], atol=1e-3)


def test_int8_activations():
    """A symmetric int8 activation qconfig (as tensorrt's) gives int8 QTensors throughout."""
    torch.manual_seed(5)
    qconfig = qcore.QConfig(
        activation=qcore.MinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric),
        weight=qcore.default_weight_observer,
    )
    model = Model(nn.LSTM(4, 5)).eval()
    model.qconfig = qconfig
    prepared = qcore.prepare(model)
    for _ in range(3):
        prepared(torch.randn(6, 3, 4))
    converted = qcore.convert(prepared)
    x = torch.randn(6, 3, 4)
    y, h, c = converted(x)
    assert h.qdtype == qcore.int8 and c.qdtype == qcore.int8
    assert float((y - model(x)[0]).detach().abs().max()) < 0.05


def test_quantization_aware_training_path():
    """In a model prepared for QAT the observed LSTM holds QAT Linears; convert makes the quantized LSTM."""
    torch.manual_seed(6)
    model = Model(nn.LSTM(4, 5)).train()
    model.qconfig = qcore.get_default_qat_qconfig()
    prepared = qcore.prepare_qat(model)
    assert type(prepared.lstm) is nnqa.LSTM
    assert type(prepared.lstm.layers[0].layer_fw.cell.igates) is qcore.nn.qat.Linear
    optimizer = torch.optim.SGD(prepared.parameters(), lr=0.01)
    for _ in range(3):
        optimizer.zero_grad()
        prepared(torch.randn(6, 3, 4))[0].pow(2).mean().backward()
        optimizer.step()
    converted = qcore.convert(prepared.eval())
    assert type(converted.lstm) is nnq.LSTM
    x = torch.randn(6, 3, 4)
    assert float((converted(x)[0] - prepared(x)[0]).detach().abs().max()) < 0.1


class ScriptableModel(nn.Module):
    """Model with TorchScript-friendly annotations; every result leaves through a DeQuantStub."""

    def __init__(self, lstm: nn.Module) -> None:
        super().__init__()
        self.quant, self.quant_h, self.quant_c = qcore.QuantStub(), qcore.QuantStub(), qcore.QuantStub()
        self.lstm = lstm
        self.dequant, self.dequant_h, self.dequant_c = qcore.DeQuantStub(), qcore.DeQuantStub(), qcore.DeQuantStub()

    def forward(self, x: torch.Tensor, h0: Optional[torch.Tensor] = None, c0: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if h0 is not None and c0 is not None:
            y, (h, c) = self.lstm(self.quant(x), (self.quant_h(h0), self.quant_c(c0)))
        else:
            y, (h, c) = self.lstm(self.quant(x))
        return self.dequant(y), self.dequant_h(h), self.dequant_c(c)


@pytest.mark.parametrize("kwargs", [{}, {"num_layers": 2, "bidirectional": True, "batch_first": True}])
def test_torchscript_twin_equals_eager_and_saves(kwargs):
    """On the reference backend the scripted model's outputs equal the eager ones dequantized, bit for bit."""
    torch.manual_seed(9)
    model = ScriptableModel(nn.LSTM(4, 5, **kwargs)).eval()
    model.qconfig = qcore.get_default_qconfig("fbgemm")
    prepared = qcore.prepare(model)
    for _ in range(3):
        x = _sequence(kwargs, batch=3)
        states = (torch.randn(prepared.lstm.num_layers * (2 if prepared.lstm.bidirectional else 1), 3, 5),) * 2
        prepared(x)
        prepared(x, *states)
    with qcore.backend("reference"):
        converted = qcore.convert(prepared)
    x = _sequence(kwargs, batch=3)
    states = (0.5 * torch.randn(states[0].shape), torch.randn(states[0].shape))
    before = [converted(x), converted(x, *states)]
    scripted = torch.jit.script(converted)
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    buffer.seek(0)
    loaded = torch.jit.load(buffer)
    for args, eager in zip(((x,), (x, *states)), before):
        # the eager model keeps working after scripting swapped its children for twins
        for other in (scripted(*args), loaded(*args), converted(*args)):
            for got, want in zip(other, eager):
                assert torch.equal(got, want)


# --- save / load, errors -----------------------------------------------------------------------------------


def _converted_model(calibrate: bool) -> nn.Module:
    model = Model(nn.LSTM(4, 5, num_layers=2, bidirectional=True)).eval()
    model.qconfig = qcore.get_default_qconfig("fbgemm")
    prepared = qcore.prepare(model)
    if calibrate:
        for _ in range(3):
            prepared(torch.randn(6, 3, 4))
    return qcore.convert(prepared)


def test_state_dict_round_trip_into_a_fresh_converted_model():
    torch.manual_seed(7)
    original = _converted_model(calibrate=True)
    buffer = io.BytesIO()
    torch.save(original.state_dict(), buffer)
    buffer.seek(0)
    with pytest.warns(qcore.UncalibratedWarning):
        fresh = _converted_model(calibrate=False)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    x = torch.randn(6, 3, 4)
    for got, want in zip(fresh(x), original(x)):
        if isinstance(want, QTensor):
            assert torch.equal(got.int_repr(), want.int_repr()) and got.q_scale() == want.q_scale()
        else:
            assert torch.equal(got, want)
    keys = original.state_dict().keys()
    assert "lstm.layers.1.layer_bw.cell.igates.weight" in keys and "lstm.layers.0.layer_fw.cell.ogate_cy.scale" in keys


def test_errors_name_the_module_and_the_fix():
    torch.manual_seed(8)
    converted = _converted_model(calibrate=True)
    with pytest.raises(QuantizationError, match=r"lstm.*QuantizedLSTM|lstm.*quantized.LSTM.*QuantStub"):
        converted.lstm(torch.randn(6, 3, 4))
    with pytest.raises(QuantizationError, match="input_size=4"):
        converted.lstm(qcore.quantize_per_tensor(torch.randn(6, 3, 5), 0.1, 128, torch.quint8))
    with pytest.raises(QuantizationError, match="h_0 of shape"):
        q = qcore.quantize_per_tensor(torch.zeros(1, 3, 5), 0.1, 128, torch.quint8)
        converted.lstm(qcore.quantize_per_tensor(torch.randn(6, 3, 4), 0.1, 128, torch.quint8), (q, q))

    with pytest.raises(ConfigError, match="expects a torch.nn.LSTM"):
        nnqa.LSTM.from_float(nn.GRU(4, 5))
    with pytest.raises(ConfigError, match="no qconfig"):
        nnqa.LSTM.from_float(nn.LSTM(4, 5))
    with pytest.raises(ConfigError, match="from_observed"):
        nnq.LSTM.from_float(nn.LSTM(4, 5))
    with pytest.raises(ConfigError, match="no observers"):
        nnq.LSTM.from_observed(nnqa.LSTM(4, 5))
    with pytest.raises(ConfigError, match="expects a prepared qcore.nn.quantizable.LSTM"):
        nnq.LSTM.from_observed(nn.LSTM(4, 5))
    with pytest.raises(ConfigError, match="from_observed"):
        nnqa.LSTM.from_observed(nnqa.LSTM(4, 5))
    with pytest.raises(ConfigError, match="dropout"):
        nnqa.LSTM(4, 5, dropout=2.0)

    projected = Model(nn.LSTM(4, 5, proj_size=3)).eval()
    projected.qconfig = qcore.default_qconfig
    with pytest.raises(ConfigError, match=r"'lstm'.*proj_size=3.*qconfig to None"):
        qcore.prepare(projected)


# --- real data ---------------------------------------------------------------------------------------------


class DigitsLSTM(nn.Module):
    """Reads a digit image row by row (8 time steps x 8 pixels); classifies from the last hidden output."""

    def __init__(self, quant: type = qcore.QuantStub, dequant: type = qcore.DeQuantStub, hidden: int = 32) -> None:
        super().__init__()
        self.quant = quant()
        self.lstm = nn.LSTM(8, hidden, batch_first=True)
        self.fc = nn.Linear(hidden, 10)
        self.dequant = dequant()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.lstm(self.quant(x))
        return self.dequant(self.fc(y[:, -1]))


def test_digits_lstm_classifier_static_accuracy():
    pytest.importorskip("sklearn")
    from qcore.demo.data import load_digits_split

    tq, config = _ao()
    data = load_digits_split()
    x_train, y_train = data.train_images.reshape(-1, 8, 8), data.train_labels
    x_test, y_test = data.test_images.reshape(-1, 8, 8), data.test_labels
    torch.manual_seed(0)
    net = DigitsLSTM(nn.Identity, nn.Identity)
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
    generator = torch.Generator().manual_seed(0)
    for _ in range(25):
        order = torch.randperm(len(x_train), generator=generator)
        for start in range(0, len(x_train), 64):
            index = order[start:start + 64]
            optimizer.zero_grad()
            nn.functional.cross_entropy(net(x_train[index]), y_train[index]).backward()
            optimizer.step()
    net.eval()

    def accuracy(model: nn.Module) -> float:
        with torch.no_grad():
            return 100.0 * float((model(x_test).argmax(1) == y_test).float().mean())

    calibration = x_train[:256]
    ours = DigitsLSTM().eval()
    ours.load_state_dict(net.state_dict())
    ours.qconfig = qcore.get_default_qconfig("fbgemm")
    prepared = qcore.prepare(ours)
    prepared(calibration)
    converted = qcore.convert(prepared)
    assert type(converted.lstm) is nnq.LSTM and isinstance(converted.fc, nnq.Linear)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = DigitsLSTM(tq.QuantStub, tq.DeQuantStub).eval()
        theirs.load_state_dict(net.state_dict())
        theirs.qconfig = tq.get_default_qconfig("fbgemm")
        theirs_prepared = tq.prepare(theirs, prepare_custom_config_dict=config)
        theirs_prepared(calibration)
        theirs_converted = tq.convert(theirs_prepared, convert_custom_config_dict=config)
        theirs_accuracy = accuracy(theirs_converted)

    fp32, int8 = accuracy(net), accuracy(converted)
    assert fp32 > 90.0, f"the float classifier did not train ({fp32:.1f}%)"
    assert int8 >= fp32 - 2.0, f"static int8 {int8:.2f}% vs fp32 {fp32:.2f}%"
    assert int8 >= theirs_accuracy - 0.5, f"qcore {int8:.2f}% vs torch.ao {theirs_accuracy:.2f}%"
