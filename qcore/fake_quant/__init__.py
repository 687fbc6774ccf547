"""Fake-quant modules: simulate quantization in training (QAT) with torch.ao's API, without torch.ao."""

from __future__ import annotations

from qcore.fake_quant.base import FakeQuantizeBase
from qcore.fake_quant.fake_quantize import FakeQuantize
from qcore.fake_quant.fixed_qparams import FixedQParamsFakeQuantize
from qcore.fake_quant.fused import FusedMovingAvgObsFakeQuantize
from qcore.fake_quant.fused_ops import choose_qparams_from_range, fused_moving_avg_obs_fake_quant
from qcore.fake_quant.helpers import disable_fake_quant, disable_observer, enable_fake_quant, enable_observer
from qcore.fake_quant.defaults import *  # noqa: F401,F403  (the named defaults)
from qcore.fake_quant.defaults import __all__ as _default_names

# The fake-quant classes qcore registers under these names (through the fake-quant hook).
CORE_FAKE_QUANTIZERS: dict[str, type] = {
    "fake_quantize": FakeQuantize,
    "fixed_qparams_fake_quantize": FixedQParamsFakeQuantize,
    "fused_moving_avg_obs_fake_quantize": FusedMovingAvgObsFakeQuantize,
}

__all__ = [
    "CORE_FAKE_QUANTIZERS",
    "FakeQuantizeBase",
    "FakeQuantize",
    "FixedQParamsFakeQuantize",
    "FusedMovingAvgObsFakeQuantize",
    "choose_qparams_from_range",
    "fused_moving_avg_obs_fake_quant",
    "enable_fake_quant",
    "disable_fake_quant",
    "enable_observer",
    "disable_observer",
    *_default_names,
]
