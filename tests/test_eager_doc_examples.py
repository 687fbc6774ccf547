"""The reference doc's eager examples (PTDQ, PTSQ, QAT, model preparation), run as written.

Each example is copied from the doc with ``torch.quantization`` replaced by
``qcore`` (the comments are shortened). The outputs are checked against the
float model (within a few quantization steps) and against torch.ao running
the same example on the same weights and data.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

import qcore
import qcore.nn.quantized as nnq
from qcore.nn import intrinsic
from qcore.qtensor import QTensor

torch.set_num_threads(1)


def torch_ao():
    ao = pytest.importorskip("torch.ao.quantization")
    if "fbgemm" not in torch.backends.quantized.supported_engines:
        pytest.skip("torch.ao's fbgemm engine is not available")
    return ao


# --- Post Training Dynamic Quantization -----------------------------------------------------------------


class PTDQ(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 4)

    def forward(self, x):
        x = self.fc(x)
        return x


def test_ptdq_example():
    torch.manual_seed(0)
    # create a model instance
    model_fp32 = PTDQ()
    # create a quantized model instance
    model_int8 = qcore.quantize_dynamic(
        model_fp32,  # the original model
        {torch.nn.Linear},  # a set of layers to dynamically quantize
        dtype=torch.qint8)  # the target dtype for quantized weights

    # run the model
    input_fp32 = torch.randn(4, 4, 4, 4)
    res = model_int8(input_fp32)

    assert type(model_int8.fc) is not torch.nn.Linear and type(model_fp32.fc) is torch.nn.Linear
    expected = model_fp32(input_fp32)
    assert not isinstance(res, QTensor) and res.shape == expected.shape
    w = model_fp32.fc.weight.detach()
    weight_step = float(w.abs().max()) / 127.5
    input_step = float(input_fp32.max() - input_fp32.min()) / 255
    bound = 4 * (weight_step * float(input_fp32.abs().max()) * 4 + input_step * float(w.abs().sum(1).max()))
    assert (res - expected).abs().max() <= bound

    ao = torch_ao()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ao_int8 = ao.quantize_dynamic(model_fp32, {torch.nn.Linear}, dtype=torch.qint8)
        ao_res = ao_int8(input_fp32)
    assert (res - ao_res).abs().max() <= bound / 4


# --- Post Training Static Quantization ------------------------------------------------------------------


class PTSQ(torch.nn.Module):
    def __init__(self, stubs=qcore):
        super().__init__()
        # QuantStub converts tensors from floating point to quantized
        self.quant = stubs.QuantStub()
        self.conv = torch.nn.Conv2d(1, 1, 1)
        self.relu = torch.nn.ReLU()
        # DeQuantStub converts tensors from quantized to floating point
        self.dequant = stubs.DeQuantStub()

    def forward(self, x):
        x = self.quant(x)
        x = self.conv(x)
        x = self.relu(x)
        x = self.dequant(x)
        return x


def run_ptsq(quantization, model_fp32, input_fp32):
    """The doc's PTSQ steps, for ``quantization`` = qcore or torch.ao.quantization."""
    # model must be set to eval mode for static quantization logic to work
    model_fp32.eval()
    model_fp32.qconfig = quantization.get_default_qconfig('fbgemm')
    model_fp32_fused = quantization.fuse_modules(model_fp32, [['conv', 'relu']])
    model_fp32_prepared = quantization.prepare(model_fp32_fused)
    model_fp32_prepared(input_fp32)
    model_int8 = quantization.convert(model_fp32_prepared)
    # run the model, relevant calculations will happen in int8
    res = model_int8(input_fp32)
    return model_int8, res


def test_ptsq_example():
    torch.manual_seed(0)
    model_fp32 = PTSQ()
    reference_model = copy.deepcopy(model_fp32)
    # calibrate the prepared model to determine quantization parameters for activations
    input_fp32 = torch.randn(4, 1, 4, 4)
    model_int8, res = run_ptsq(qcore, model_fp32, input_fp32)

    assert isinstance(model_int8.conv, intrinsic.quantized.ConvReLU2d)
    assert isinstance(model_int8.relu, torch.nn.Identity)
    out_step = float(model_int8.conv.scale)
    in_step = float(model_int8.quant.scale)
    w = float(reference_model.conv.weight.detach().abs().sum())
    expected = reference_model.eval()(input_fp32)
    assert (res - expected).abs().max() <= 2 * out_step + w * in_step

    ao = torch_ao()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ao_model = PTSQ(stubs=ao)
        ao_model.load_state_dict(reference_model.state_dict())
        ao_int8, ao_res = run_ptsq(ao, ao_model, input_fp32)
    assert float(ao_int8.conv.scale) == pytest.approx(out_step, rel=1e-6)
    assert (res - ao_res).abs().max() <= out_step * 1.001


# --- Quantization Aware Training ------------------------------------------------------------------------


class QATModel(torch.nn.Module):
    def __init__(self, stubs=qcore):
        super().__init__()
        # QuantStub converts tensors from floating point to quantized
        self.quant = stubs.QuantStub()
        self.conv = torch.nn.Conv2d(1, 1, 1)
        self.bn = torch.nn.BatchNorm2d(1)
        self.relu = torch.nn.ReLU()
        # DeQuantStub converts tensors from quantized to floating point
        self.dequant = stubs.DeQuantStub()

    def forward(self, x):
        x = self.quant(x)
        x = self.conv(x)
        x = self.bn(x)
        x = self.relu(x)
        x = self.dequant(x)
        return x


def make_training_loop(batches):
    def training_loop(model):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        for x in batches:
            optimizer.zero_grad()
            (model(x) - (0.8 * x + 0.1).clamp(min=0)).pow(2).mean().backward()
            optimizer.step()

    return training_loop


def run_qat(quantization, model_fp32, training_loop, input_fp32):
    """The doc's QAT steps, for ``quantization`` = qcore or torch.ao.quantization."""
    # model must be set to eval for fusion to work
    model_fp32.eval()
    model_fp32.qconfig = quantization.get_default_qat_qconfig('fbgemm')
    model_fp32_fused = quantization.fuse_modules(model_fp32,
        [['conv', 'bn', 'relu']])
    model_fp32_prepared = quantization.prepare_qat(model_fp32_fused.train())
    # run the training loop (not shown)
    training_loop(model_fp32_prepared)
    model_fp32_prepared.eval()
    model_int8 = quantization.convert(model_fp32_prepared)
    # run the model, relevant calculations will happen in int8
    res = model_int8(input_fp32)
    return model_fp32_prepared, model_int8, res


def test_qat_example():
    torch.manual_seed(0)
    model_fp32 = QATModel()
    initial = copy.deepcopy(model_fp32.state_dict())
    batches = [torch.randn(8, 1, 4, 4) for _ in range(20)]
    input_fp32 = torch.randn(4, 1, 4, 4)
    prepared, model_int8, res = run_qat(qcore, model_fp32, make_training_loop(batches), input_fp32)

    assert isinstance(model_int8.conv, intrinsic.quantized.ConvReLU2d)
    fake_quantized = prepared(input_fp32)  # the trained model with fake quantization, in eval mode
    out_step = float(model_int8.conv.scale)
    # convert folds BN and re-rounds the weight, as torch.ao does: a few steps from the fake-quantized model
    assert (res - fake_quantized).abs().max() <= 4 * out_step

    ao = torch_ao()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ao_model = QATModel(stubs=ao)
        ao_model.load_state_dict(initial)
        _, ao_int8, ao_res = run_qat(ao, ao_model, make_training_loop(batches), input_fp32)
    assert (res - ao_res).abs().max() <= out_step * 1.001


# --- Model Preparation for Eager Mode Static Quantization -----------------------------------------------


class Prepared(torch.nn.Module):
    """The doc's checklist: ReLU modules (not functionals), stubs, FloatFunctional for add/cat, fusion."""

    def __init__(self, stubs=qcore, functional=nnq):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 4, 3, padding=1)  # excluded below: model.conv1.qconfig = None
        self.quant = stubs.QuantStub()
        self.conv = torch.nn.Conv2d(4, 4, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(4)
        self.relu = torch.nn.ReLU()
        self.skip_add = functional.FloatFunctional()
        self.pool = torch.nn.MaxPool2d(2)
        self.flatten = torch.nn.Flatten()
        self.linear1 = torch.nn.Linear(16, 8)  # its own custom_qconfig below
        self.relu1 = torch.nn.ReLU()
        self.dequant = stubs.DeQuantStub()

    def forward(self, x):
        x = self.conv1(x)  # float
        x = self.quant(x)
        y = self.relu(self.bn(self.conv(x)))
        x = self.skip_add.add(x, y)
        x = self.flatten(self.pool(x))
        x = self.relu1(self.linear1(x))
        return self.dequant(x)


def prepared_model() -> Prepared:
    torch.manual_seed(0)
    model = Prepared().eval()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-0.2, 0.2)
        model.bn.running_var.uniform_(0.5, 1.5)
    return model


def run_preparation(quantization, model, custom_qconfig, x):
    """The checklist's steps, for ``quantization`` = qcore or torch.ao.quantization."""
    model.qconfig = quantization.get_default_qconfig("fbgemm")
    model.conv1.qconfig = None
    fused = quantization.fuse_modules(model, [["conv", "bn", "relu"], ["linear1", "relu1"]])
    fused.linear1.qconfig = custom_qconfig  # on the fused module, which replaced linear1
    prepared = quantization.prepare(fused)
    prepared(x)
    quantized = quantization.convert(prepared)
    return quantized, quantized(x)


def test_model_preparation_checklist():
    model = prepared_model()
    x = torch.randn(16, 1, 4, 4)
    expected = model(x)
    custom_qconfig = qcore.QConfig(activation=qcore.MinMaxObserver.with_args(dtype=torch.qint8),
                                   weight=qcore.default_weight_observer)
    quantized, out = run_preparation(qcore, copy.deepcopy(model), custom_qconfig, x)

    assert type(quantized.conv1) is torch.nn.Conv2d
    assert isinstance(quantized.conv, intrinsic.quantized.ConvReLU2d)
    assert isinstance(quantized.skip_add, nnq.QFunctional)
    assert isinstance(quantized.linear1, intrinsic.quantized.LinearReLU)
    assert quantized.linear1.dtype == qcore.int8  # the custom qconfig's activation dtype
    steps = float(quantized.linear1.scale) * 2 + float(quantized.skip_add.scale) * float(
        model.linear1.weight.detach().abs().sum(1).max())
    assert (out - expected).abs().max() <= 2 * steps


def test_model_preparation_matches_torch_ao():
    model = prepared_model()
    x = torch.randn(16, 1, 4, 4)
    custom = qcore.QConfig(activation=qcore.MinMaxObserver, weight=qcore.default_weight_observer)
    quantized, out = run_preparation(qcore, copy.deepcopy(model), custom, x)

    ao = torch_ao()
    import torch.ao.nn.quantized as ao_nnq

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ao_model = Prepared(stubs=ao, functional=ao_nnq).eval()
        ao_model.load_state_dict(model.state_dict())
        ao_custom = ao.QConfig(activation=ao.MinMaxObserver, weight=ao.default_weight_observer)
        ao_quantized, ao_out = run_preparation(ao, ao_model, ao_custom, x)
    assert float(quantized.linear1.scale) == pytest.approx(float(ao_quantized.linear1.scale), rel=1e-6)
    assert (out - ao_out).abs().max() <= float(quantized.linear1.scale) * 1.001
