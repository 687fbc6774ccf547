"""The fbgemm plugin registers the x86 backend with torch.ao's fbgemm/x86 defaults."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

import qcore
from qcore.backend_config import BackendDescription


def test_backend_is_registered_under_both_names():
    from qcore.backend_selection import get_backend_description

    description = get_backend_description("fbgemm")
    assert isinstance(description, BackendDescription)
    assert get_backend_description("x86") is description
    assert description.default_qconfig == qcore.get_default_qconfig("x86")


def test_activations_use_seven_bits_and_weights_per_channel():
    activation = qcore.get_default_qconfig("fbgemm").activation()
    weight = qcore.get_default_qconfig("fbgemm").weight()
    assert (activation.quant_min, activation.quant_max) == (0, 127)
    assert weight.qscheme is qcore.per_channel_symmetric


def test_linear_pattern_demands_reduced_range():
    import torch

    from qcore.backend_selection import get_backend_description

    config = get_backend_description("fbgemm").supports(torch.nn.Linear)
    static = [c for c in config.dtype_configs if not c.is_dynamic]
    assert static and static[0].input_qrange_max == (0, 127)


def test_unavailable_off_x86():
    code = textwrap.dedent(
        """
        import platform
        platform.machine = lambda: "aarch64"
        from qcore.errors import PluginUnavailable
        try:
            import qcore_fbgemm.plugin
        except PluginUnavailable as exc:
            print("skipped:", exc.reason)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "skipped: fbgemm needs an x86 CPU; this machine is aarch64" in out
