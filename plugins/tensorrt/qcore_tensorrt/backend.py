"""The TensorRT backend description: symmetric int8 patterns and availability on this machine."""

from __future__ import annotations

import importlib.util
from typing import Optional

import torch

from qcore.backend_config import BackendDescription, DTypeConfig
from qcore.backend_patterns import standard_patterns

from qcore_tensorrt import qconfigs

WEIGHTED_INT8 = DTypeConfig(
    input_dtype="int8", output_dtype="int8", weight_dtype="int8", bias_dtype="float32",
    weight_qschemes=("per_tensor_symmetric", "per_channel_symmetric"), symmetric_activations_only=True,
)
ACTIVATION_INT8 = DTypeConfig(input_dtype="int8", output_dtype="int8", symmetric_activations_only=True)


def unavailable_reason() -> Optional[str]:
    """Why TensorRT cannot execute models here, or None."""
    if importlib.util.find_spec("tensorrt") is None:
        return "the tensorrt Python package is not installed"
    if not torch.cuda.is_available():
        return "no CUDA device is available"
    return None


def describe() -> BackendDescription:
    """TensorRT: static int8 only (no dynamic quantization), preferred when a GPU and TensorRT are present."""
    return BackendDescription(
        name="tensorrt",
        aliases=("trt",),
        summary="NVIDIA GPUs: TensorRT explicit-quantization networks, symmetric int8",
        default_qconfig=qconfigs.default_qconfig,
        default_qat_qconfig=qconfigs.default_qat_qconfig,
        patterns=standard_patterns([WEIGHTED_INT8], [ACTIVATION_INT8], [], []),
        priority=200,
        unavailable_reason=unavailable_reason,
    )
