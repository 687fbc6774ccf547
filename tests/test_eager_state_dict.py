"""The reference doc's state_dict round trip: save a converted model, load it into a fresh, uncalibrated one."""

from __future__ import annotations

import io

import pytest
import torch

import qcore


class M(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.quant = qcore.QuantStub()
        self.linear = torch.nn.Linear(5, 5)
        self.relu = torch.nn.ReLU()
        self.dequant = qcore.DeQuantStub()

    def forward(self, x):
        return self.dequant(self.relu(self.linear(self.quant(x))))


def _converted(calibrate: bool) -> torch.nn.Module:
    model = M().eval()
    model.qconfig = qcore.get_default_qconfig("fbgemm")
    prepared = qcore.prepare(model)
    if calibrate:
        prepared(torch.rand(16, 5))
    return qcore.convert(prepared, is_reference=True)


def test_state_dict_loads_into_a_fresh_uncalibrated_model():
    torch.manual_seed(0)
    original = _converted(calibrate=True)
    buffer = io.BytesIO()
    torch.save(original.state_dict(), buffer)

    with pytest.warns(qcore.UncalibratedWarning, match="saw no data.*placeholder qparams"):
        fresh = _converted(calibrate=False)
    buffer.seek(0)
    fresh.load_state_dict(torch.load(buffer))
    x = torch.rand(8, 5)
    assert torch.equal(original(x), fresh(x))


def test_uncalibrated_observer_still_raises_when_asked_directly():
    with pytest.raises(qcore.UncalibratedError, match="saw no data"):
        qcore.MinMaxObserver().calculate_qparams()
