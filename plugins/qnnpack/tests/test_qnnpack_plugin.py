"""The qnnpack plugin registers its backend with torch.ao's qnnpack defaults."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import qcore


def test_defaults_use_full_range_and_per_tensor_weights():
    qconfig = qcore.get_default_qconfig("qnnpack")
    activation, weight = qconfig.activation(), qconfig.weight()
    assert (activation.quant_min, activation.quant_max) == (0, 255)
    assert weight.qscheme is qcore.per_tensor_symmetric
    qat = qcore.get_default_qat_qconfig("qnnpack").activation()
    assert (qat.quant_min, qat.quant_max) == (0, 255)


def test_preferred_on_arm_only():
    code = textwrap.dedent(
        """
        import platform
        platform.machine = lambda: "aarch64"
        from qcore_qnnpack.backend import describe
        print(describe().priority)
        """
    )
    on_arm = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    from qcore_qnnpack.backend import describe

    import platform

    if platform.machine().lower() not in ("aarch64", "arm64"):
        assert describe().priority < on_arm
