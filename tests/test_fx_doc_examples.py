"""The reference doc's FX examples, run as written with ``quantize_fx`` -> ``qcore.fx`` and ``torch.ao.quantization``
(``torch.quantization``) -> ``qcore``.

The doc leaves ``UserModel`` and ``input_fp32`` undefined; they are a small
model and input here. Its static and QAT examples ask for qnnpack's qconfigs,
so they run with qnnpack as the active backend (on the default fbgemm, whose
kernels need 7-bit activations, those qconfigs are refused with a warning;
see test_fx_flow.py).
"""

from __future__ import annotations

import copy
import io
import warnings

import pytest
import torch
from torch import nn

import qcore
import qcore.fx as quantize_fx
import qcore.nn.quantized as nnq
from doc_custom_module import CustomModule, ObservedCustomModule, StaticQuantCustomModule
from qcore import QConfigMapping
from qcore.errors import UncalibratedWarning
from qcore.fx import convert_fx, prepare_fx
from qcore import default_qconfig

torch.set_num_threads(1)


class UserModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(16, 4)

    def forward(self, x):
        return self.fc2(self.relu(self.fc1(x)))


def _steps(y: torch.Tensor, ref: torch.Tensor, n: float) -> bool:
    y, ref = y.detach(), ref.detach()
    return bool((y - ref).abs().max() <= n * float(ref.abs().max()) / 64 + 1e-6)


def test_fxptq_api_example():
    torch.manual_seed(0)
    input_fp32 = torch.randn(32, 8)
    model_fp = UserModel()

    #
    # post training dynamic/weight_only quantization
    #

    # we need to deepcopy if we still want to keep model_fp unchanged after quantization since quantization apis change the input model
    model_to_quantize = copy.deepcopy(model_fp)
    model_to_quantize.eval()
    qconfig_mapping = QConfigMapping().set_global(qcore.default_dynamic_qconfig)
    # a tuple of one or more example inputs are needed to trace the model
    example_inputs = (input_fp32)
    # prepare
    model_prepared = quantize_fx.prepare_fx(model_to_quantize, qconfig_mapping, example_inputs)
    # no calibration needed when we only have dynamic/weight_only quantization
    # quantize
    model_quantized = quantize_fx.convert_fx(model_prepared)

    # the backend runs (Linear, ReLU) fused only statically: dynamic Linear, then a float ReLU
    assert isinstance(model_quantized.fc1, nnq.dynamic.Linear)
    assert isinstance(model_quantized.fc2, nnq.dynamic.Linear)
    expected = model_fp.eval()(input_fp32)
    assert _steps(model_quantized(input_fp32), expected, 2)

    with qcore.backend("qnnpack"):
        #
        # post training static quantization
        #

        model_to_quantize = copy.deepcopy(model_fp)
        qconfig_mapping = QConfigMapping().set_global(qcore.get_default_qconfig('qnnpack'))
        model_to_quantize.eval()
        # prepare
        model_prepared = quantize_fx.prepare_fx(model_to_quantize, qconfig_mapping, example_inputs)
        # calibrate (not shown)
        model_prepared(input_fp32)
        # quantize
        model_quantized = quantize_fx.convert_fx(model_prepared)

        assert isinstance(model_quantized.fc1, qcore.nn.intrinsic.quantized.LinearReLU)
        assert isinstance(model_quantized.fc2, nnq.Linear)
        assert _steps(model_quantized(input_fp32), expected, 3)

        #
        # quantization aware training for static quantization
        #

        model_to_quantize = copy.deepcopy(model_fp)
        qconfig_mapping = QConfigMapping().set_global(qcore.get_default_qat_qconfig('qnnpack'))
        model_to_quantize.train()
        # prepare
        model_prepared = quantize_fx.prepare_qat_fx(model_to_quantize, qconfig_mapping, example_inputs)
        assert isinstance(model_prepared.fc1, qcore.nn.intrinsic.qat.LinearReLU)
        # training loop (not shown)
        optimizer = torch.optim.SGD(model_prepared.parameters(), lr=0.01)
        for _ in range(3):
            optimizer.zero_grad()
            model_prepared(input_fp32).pow(2).mean().backward()
            optimizer.step()
        # quantize
        model_quantized = quantize_fx.convert_fx(model_prepared)

        assert isinstance(model_quantized.fc1, qcore.nn.intrinsic.quantized.LinearReLU)
        model_prepared.eval()
        model_prepared.apply(qcore.disable_observer)
        assert _steps(model_quantized(input_fp32), model_prepared(input_fp32), 2)

    #
    # fusion
    #
    model_to_quantize = copy.deepcopy(model_fp)
    model_fused = quantize_fx.fuse_fx(model_to_quantize)

    assert isinstance(model_fused.fc1, qcore.nn.intrinsic.LinearReLU)
    assert torch.equal(model_fused(input_fp32), model_fp(input_fp32))


# --- the FX custom module example -----------------------------------------------------------------------

def test_custom_module_example_fx():
    torch.manual_seed(0)
    #
    # example API call (FX graph mode quantization)
    #
    m = torch.nn.Sequential(CustomModule()).eval()
    qconfig_mapping = QConfigMapping().set_global(qcore.default_qconfig)
    prepare_custom_config_dict = {
        "float_to_observed_custom_module_class": {
            "static": {
                CustomModule: ObservedCustomModule,
            }
        }
    }
    convert_custom_config_dict = {
        "observed_to_quantized_custom_module_class": {
            "static": {
                ObservedCustomModule: StaticQuantCustomModule,
            }
        }
    }
    mp = qcore.fx.prepare_fx(
        m, qconfig_mapping, torch.randn(3,3), prepare_custom_config=prepare_custom_config_dict)
    # calibration (not shown)
    x = torch.randn(3, 3)
    mp(x)
    mq = qcore.fx.convert_fx(
        mp, convert_custom_config=convert_custom_config_dict)

    assert isinstance(mp.get_submodule("0"), ObservedCustomModule)
    custom = mq.get_submodule("0")
    assert isinstance(custom, StaticQuantCustomModule) and isinstance(custom.linear, nnq.Linear)
    expected = m(x)
    assert _steps(mq(x), expected, 3)


# --- the FX save/load examples --------------------------------------------------------------------------


class M(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(5, 5)
        self.relu = nn.ReLU()

    def forward(self, x):
        x = self.linear(x)
        x = self.relu(x)
        return x


def test_save_load_state_dict_example():
    torch.manual_seed(0)
    m = M().eval()
    prepare_orig = prepare_fx(m, {'' : default_qconfig})
    prepare_orig(torch.rand(5, 5))
    quantized_orig = convert_fx(prepare_orig)

    # Save/load using state_dict
    b = io.BytesIO()
    torch.save(quantized_orig.state_dict(), b)

    m2 = M().eval()
    prepared = prepare_fx(m2, {'' : default_qconfig})
    with pytest.warns(UncalibratedWarning):
        quantized = convert_fx(prepared)
    b.seek(0)
    quantized.load_state_dict(torch.load(b))

    x = torch.rand(7, 5)
    assert torch.equal(quantized(x), quantized_orig(x))
    assert not torch.equal(quantized_orig(x), torch.zeros_like(x))


def test_save_load_scripted_example():
    torch.manual_seed(0)
    # Note: using the same model M from previous example
    m = M().eval()
    prepare_orig = prepare_fx(m, {'' : default_qconfig})
    prepare_orig(torch.rand(5, 5))
    quantized_orig = convert_fx(prepare_orig)

    # save/load using scripted model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's own notes on attribute annotations
        scripted = torch.jit.script(quantized_orig)
    b = io.BytesIO()
    torch.jit.save(scripted, b)
    b.seek(0)
    scripted_quantized = torch.jit.load(b)

    # Scripted right after convert, a backend kernel's twin may round a tie differently: within one step.
    x = torch.rand(7, 5)
    step = float(quantized_orig.linear.scale)
    assert (scripted_quantized(x) - quantized_orig(x)).abs().max() <= step * 1.001
    assert torch.equal(scripted(x), scripted_quantized(x))
