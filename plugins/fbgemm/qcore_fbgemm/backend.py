"""The fbgemm backend description: patterns with fbgemm's dtype constraints and its defaults."""

from __future__ import annotations

import torch

from qcore.backend_config import BackendDescription, BackendPatternConfig, DTypeConfig
from qcore.backend_patterns import standard_patterns
from qcore.nn.intrinsic import ConvAdd1d, ConvAdd2d, ConvAddReLU1d, ConvAddReLU2d

from qcore_fbgemm import qconfigs
from qcore_fbgemm.plugin import unavailable_reason

_WEIGHT_SCHEMES = ("per_tensor_affine", "per_tensor_symmetric", "per_channel_affine", "per_channel_symmetric")

# uint8 activations limited to 7 bits (reduce_range), int8 weights, float bias.
WEIGHTED_INT8 = DTypeConfig(
    input_dtype="uint8", output_dtype="uint8", weight_dtype="int8", bias_dtype="float32",
    input_qrange_max=(0, 127), weight_qschemes=_WEIGHT_SCHEMES,
)
ACTIVATION_UINT8 = DTypeConfig(input_dtype="uint8", output_dtype="uint8")
DYNAMIC_INT8 = DTypeConfig(
    input_dtype="uint8", output_dtype="float32", weight_dtype="int8", bias_dtype="float32",
    is_dynamic=True, weight_qschemes=_WEIGHT_SCHEMES,
)
DYNAMIC_FLOAT16 = DTypeConfig(
    input_dtype="float16", output_dtype="float32", weight_dtype="float16", bias_dtype="float32", is_dynamic=True
)
# conv + add (+ relu) run as one onednn kernel (conv2d_add), which takes symmetric weights only.
CONV_ADD_INT8 = DTypeConfig(
    input_dtype="uint8", output_dtype="uint8", weight_dtype="int8", bias_dtype="float32",
    input_qrange_max=(0, 127), weight_qschemes=("per_tensor_symmetric", "per_channel_symmetric"),
)
WEIGHT_ONLY = (
    DTypeConfig(input_dtype="float32", output_dtype="float32", weight_dtype="uint8"),
    DTypeConfig(input_dtype="float32", output_dtype="float32", weight_dtype="uint4"),
)


def residual_patterns() -> tuple[BackendPatternConfig, ...]:
    """The fused conv + add (+ relu) modules, where torch has onednn's kernels for them."""
    if "onednn" not in torch.backends.quantized.supported_engines:
        return ()
    fused_modules = (ConvAdd1d, ConvAddReLU1d, ConvAdd2d, ConvAddReLU2d)
    return tuple(BackendPatternConfig(fused, (CONV_ADD_INT8,)) for fused in fused_modules)


def describe() -> BackendDescription:
    """fbgemm, also answering to torch's engine name ``x86``; preferred on x86 machines."""
    return BackendDescription(
        name="fbgemm",
        aliases=("x86",),
        summary="x86 server CPUs (AVX2/AVX-512): fbgemm int8 kernels with 7-bit activations",
        default_qconfig=qconfigs.default_qconfig,
        default_qat_qconfig=qconfigs.default_qat_qconfig,
        default_dynamic_qconfig=qconfigs.default_dynamic_qconfig,
        patterns=(
            *standard_patterns([WEIGHTED_INT8], [ACTIVATION_UINT8], [DYNAMIC_INT8, DYNAMIC_FLOAT16], WEIGHT_ONLY),
            *residual_patterns(),
        ),
        priority=100,
        unavailable_reason=unavailable_reason,
    )
