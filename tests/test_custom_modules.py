"""The reference doc's Custom Module API example (eager part), run as written with torch.ao replaced by qcore."""

from __future__ import annotations

import pytest
import torch

import qcore
import qcore.nn.quantized as nnq
from doc_custom_module import CustomModule, ObservedCustomModule, StaticQuantCustomModule
from qcore import QConfigMapping  # noqa: F401  (imported by the doc's example)
from qcore.qtensor import QTensor

torch.set_num_threads(1)


def run_doc_example(calibration: torch.Tensor):
    #
    # example API call (Eager mode quantization)
    #

    m = torch.nn.Sequential(CustomModule()).eval()
    prepare_custom_config_dict = {
        "float_to_observed_custom_module_class": {
            CustomModule: ObservedCustomModule
        }
    }
    convert_custom_config_dict = {
        "observed_to_quantized_custom_module_class": {
            ObservedCustomModule: StaticQuantCustomModule
        }
    }
    m.qconfig = qcore.default_qconfig
    mp = qcore.prepare(
        m, prepare_custom_config_dict=prepare_custom_config_dict)
    # calibration (not shown)
    mp(calibration)
    mq = qcore.convert(
        mp, convert_custom_config_dict=convert_custom_config_dict)
    return m, mp, mq


def test_prepare_swaps_in_the_observed_module_with_its_observer():
    torch.manual_seed(0)
    m, mp, _ = run_doc_example(torch.randn(16, 3))
    assert isinstance(mp[0], ObservedCustomModule) and isinstance(m[0], CustomModule)
    observer = mp[0].activation_post_process
    assert isinstance(observer, qcore.MinMaxObserver)
    assert not hasattr(mp[0].linear, "activation_post_process")  # one observer: on the custom module's output


def test_convert_swaps_in_the_quantized_module_built_from_observed():
    torch.manual_seed(0)
    x = torch.randn(16, 3)
    m, mp, mq = run_doc_example(x)
    assert isinstance(mq[0], StaticQuantCustomModule) and isinstance(mq[0].linear, nnq.Linear)
    assert mq[0]._qcore_name == "0"
    scale, zero_point = mp[0].activation_post_process.calculate_qparams()
    assert float(mq[0].linear.scale) == pytest.approx(float(scale))
    assert int(mq[0].linear.zero_point) == int(zero_point)
    qx = qcore.quantize_per_tensor(x, 0.02, 128, torch.quint8)
    out = mq(qx)
    assert isinstance(out, QTensor)
    expected = m(qx.dequantize())
    assert (out.dequantize() - expected).abs().max() <= 2 * float(scale)


def test_without_the_convert_config_the_observed_module_stays():
    torch.manual_seed(0)
    m = torch.nn.Sequential(CustomModule()).eval()
    m.qconfig = qcore.default_qconfig
    mp = qcore.prepare(m, prepare_custom_config_dict={
        "float_to_observed_custom_module_class": {CustomModule: ObservedCustomModule}})
    mp(torch.randn(4, 3))
    with pytest.raises(qcore.ConfigError, match=r"'0' \(ObservedCustomModule\) is an observed custom module.*convert_custom_config_dict"):
        qcore.convert(mp)


def test_from_observed_failures_name_the_module():
    class Broken(StaticQuantCustomModule):
        @classmethod
        def from_observed(cls, observed_module):
            raise AssertionError("needs calibration")

    torch.manual_seed(0)
    _, mp, _ = run_doc_example(torch.randn(4, 3))
    with pytest.raises(qcore.ConfigError, match=r"'0' \(ObservedCustomModule\).*Broken.from_observed.*needs calibration"):
        qcore.convert(mp, convert_custom_config_dict={
            "observed_to_quantized_custom_module_class": {ObservedCustomModule: Broken}})


def test_fx_style_nested_config_is_accepted_in_eager_mode():
    m = torch.nn.Sequential(CustomModule()).eval()
    m.qconfig = qcore.default_qconfig
    mp = qcore.prepare(m, prepare_custom_config_dict={
        "float_to_observed_custom_module_class": {"static": {CustomModule: ObservedCustomModule}}})
    assert isinstance(mp[0], ObservedCustomModule)


def test_a_custom_class_without_from_float_is_refused():
    m = torch.nn.Sequential(CustomModule()).eval()
    m.qconfig = qcore.default_qconfig
    with pytest.raises(qcore.ConfigError, match="StaticQuantCustomModule has no classmethod from_float"):
        qcore.prepare(m, prepare_custom_config_dict={
            "float_to_observed_custom_module_class": {CustomModule: StaticQuantCustomModule}})
