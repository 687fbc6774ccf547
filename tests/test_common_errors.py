"""The reference doc's "Common Errors": float into a quantized module, quantized into a float module.

Both raise qcore's QuantizationError naming the module and saying where to
put a QuantStub / DeQuantStub. The doc's e2e examples (the fixes) run as
written, with ``torch.quantization`` replaced by ``qcore``.
"""

from __future__ import annotations

import io

import pytest
import torch

import qcore
from qcore import QuantizationError
from qcore.qtensor import QTensor

torch.set_num_threads(1)
some_qconfig = qcore.default_qconfig


def quantized(m: torch.nn.Module) -> torch.nn.Module:
    m.eval()
    prepared = qcore.prepare(m)
    prepared(torch.randn(8, 1, 4, 4))
    return qcore.convert(prepared)


# --- Passing a non-quantized Tensor into a quantized kernel -----------------------------------------


class M(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.quant = qcore.QuantStub()
        self.conv = torch.nn.Conv2d(1, 1, 1)

    def forward(self, x):
        # during the convert step, this will be replaced with a
        # `quantize_per_tensor` call
        x = self.quant(x)
        x = self.conv(x)
        return x


class NoQuantStub(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 1, 1)
        self.dequant = qcore.DeQuantStub()

    def forward(self, x):
        return self.dequant(self.conv(x))


def test_float_tensor_into_a_quantized_module_names_it_and_asks_for_a_quant_stub():
    m = NoQuantStub()
    m.qconfig = some_qconfig
    q = quantized(m)
    with pytest.raises(QuantizationError, match=r"conv.*float tensor.*QuantStub"):
        q(torch.randn(1, 1, 4, 4))


def test_the_docs_fix_with_a_quant_stub_runs():
    m = M()
    m.qconfig = some_qconfig
    out = quantized(m)(torch.randn(2, 1, 4, 4))
    assert isinstance(out, QTensor) and out.shape == (2, 1, 4, 4)


# --- Passing a quantized Tensor into a non-quantized kernel ------------------------------------------


class M2(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.quant = qcore.QuantStub()
        self.conv1 = torch.nn.Conv2d(1, 1, 1)
        # this module will not be quantized (see `qconfig = None` logic below)
        self.conv2 = torch.nn.Conv2d(1, 1, 1)
        self.dequant = qcore.DeQuantStub()

    def forward(self, x):
        # during the convert step, this will be replaced with a
        # `quantize_per_tensor` call
        x = self.quant(x)
        x = self.conv1(x)
        # during the convert step, this will be replaced with a
        # `dequantize` call
        x = self.dequant(x)
        x = self.conv2(x)
        return x


class MissingDeQuantStub(M2):
    def forward(self, x):
        return self.dequant(self.conv2(self.conv1(self.quant(x))))


def docs_model(cls: type = M2) -> torch.nn.Module:
    torch.manual_seed(0)
    m = cls()
    m.qconfig = some_qconfig
    # turn off quantization for conv2
    m.conv2.qconfig = None
    return m


def test_the_docs_fix_with_a_dequant_stub_runs_and_matches_float():
    m = docs_model()
    q = quantized(m)
    x = torch.randn(2, 1, 4, 4)
    assert type(q.conv2) is torch.nn.Conv2d
    out = q(x)
    assert not isinstance(out, QTensor)
    step = float(q.conv1.scale) * float(m.conv2.weight.detach().abs().sum())
    assert (out - m(x)).abs().max() <= 2 * step


def test_quantized_tensor_into_a_float_module_names_it_and_asks_for_a_dequant_stub():
    q = quantized(docs_model(MissingDeQuantStub))
    with pytest.raises(QuantizationError, match=r"'conv2' \(Conv2d\) is a float module.*DeQuantStub before 'conv2'"):
        q(torch.randn(1, 1, 4, 4))


def test_quantized_tensor_into_an_unhooked_float_op_still_says_dequantize():
    q = quantized(docs_model(MissingDeQuantStub))
    with pytest.raises(QuantizationError, match="DeQuantStub"):
        torch.sigmoid(q.conv1(q.quant(torch.randn(1, 1, 4, 4))))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit.script/save/load
def test_the_input_guard_does_not_stop_scripting():
    q = quantized(docs_model())
    x = q.quant(torch.randn(2, 1, 4, 4)).dequantize()  # values on the input grid
    scripted = torch.jit.script(q)
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    buffer.seek(0)
    loaded = torch.jit.load(buffer)
    assert torch.equal(loaded(x), q(x))
