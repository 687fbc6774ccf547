"""The TensorRT plugin registers symmetric int8 defaults and reports whether it can execute here."""

from __future__ import annotations

import importlib.util

import torch

import qcore


def test_defaults_are_symmetric_int8():
    qconfig = qcore.get_default_qconfig("tensorrt")
    activation, weight = qconfig.activation(), qconfig.weight()
    assert activation.dtype is qcore.int8 and activation.qscheme is qcore.per_tensor_symmetric
    assert weight.qscheme is qcore.per_channel_symmetric and (weight.quant_min, weight.quant_max) == (-127, 127)
    qat = qcore.get_default_qat_qconfig("tensorrt").activation()
    assert qat.dtype is qcore.int8


def test_availability_reason_matches_machine():
    from qcore_tensorrt.backend import unavailable_reason

    reason = unavailable_reason()
    if importlib.util.find_spec("tensorrt") is None:
        assert reason == "the tensorrt Python package is not installed"
        assert qcore.get_backend() != "tensorrt"
    elif not torch.cuda.is_available():
        assert reason == "no CUDA device is available"
    else:
        assert reason is None
