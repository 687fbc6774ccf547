"""The qnnpack backend description: ARM-first, also runs on x86 where torch ships the engine."""

from __future__ import annotations

import platform

from qcore.backend_config import BackendDescription, DTypeConfig
from qcore.backend_patterns import standard_patterns

from qcore_qnnpack import qconfigs

ARM_MACHINES = frozenset({"aarch64", "arm64", "armv7l", "armv8l"})
_WEIGHT_SCHEMES = ("per_tensor_affine", "per_tensor_symmetric", "per_channel_symmetric")

WEIGHTED_INT8 = DTypeConfig(
    input_dtype="uint8", output_dtype="uint8", weight_dtype="int8", bias_dtype="float32",
    weight_qschemes=_WEIGHT_SCHEMES,
)
ACTIVATION_UINT8 = DTypeConfig(input_dtype="uint8", output_dtype="uint8")
DYNAMIC_INT8 = DTypeConfig(
    input_dtype="uint8", output_dtype="float32", weight_dtype="int8", bias_dtype="float32",
    is_dynamic=True, weight_qschemes=_WEIGHT_SCHEMES,
)
WEIGHT_ONLY = (DTypeConfig(input_dtype="float32", output_dtype="float32", weight_dtype="uint8"),)


def describe() -> BackendDescription:
    """qnnpack: the machine's default on ARM, available but not preferred elsewhere."""
    on_arm = platform.machine().lower() in ARM_MACHINES
    return BackendDescription(
        name="qnnpack",
        summary="ARM / mobile CPUs: qnnpack int8 kernels with full 8-bit activations",
        default_qconfig=qconfigs.default_qconfig,
        default_qat_qconfig=qconfigs.default_qat_qconfig,
        default_dynamic_qconfig=qconfigs.default_dynamic_qconfig,
        patterns=standard_patterns([WEIGHTED_INT8], [ACTIVATION_UINT8], [DYNAMIC_INT8], WEIGHT_ONLY),
        priority=100 if on_arm else 20,
        dynamic_reduce_range=False,
    )
