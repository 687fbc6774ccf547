"""qcore: quantization for PyTorch models, a minimal core plus installable backend plugins.

The public names follow ``torch.ao.quantization`` so existing code moves over
by replacing the import. Plugins are discovered on first use of the registry,
never by ``import qcore`` itself.
"""

from __future__ import annotations

from typing import Any

from qcore.dtypes import (
    QDType,
    QScheme,
    float16,
    float32,
    int4,
    int8,
    int32,
    per_channel_affine,
    per_channel_affine_float_qparams,
    per_channel_symmetric,
    per_tensor_affine,
    per_tensor_symmetric,
    uint4,
    uint8,
)
from qcore.errors import (
    ConfigError,
    ObserverError,
    PluginConflictError,
    PluginError,
    PluginUnavailable,
    QcoreError,
    QuantizationError,
    UncalibratedError,
    UncalibratedWarning,
)
from qcore.factory import Factory
from qcore.fake_quant import *  # noqa: F401,F403  (FakeQuantize, helpers, named defaults)
from qcore.observers import *  # noqa: F401,F403  (MinMaxObserver, ..., named defaults)
from qcore.qconfig import (
    QConfig,
    default_activation_only_qconfig,
    default_debug_qconfig,
    default_dynamic_qat_qconfig,
    default_dynamic_qconfig,
    default_embedding_qat_qconfig,
    default_embedding_qat_qconfig_4bit,
    default_per_channel_qconfig,
    default_qat_qconfig,
    default_qat_qconfig_v2,
    default_qconfig,
    default_reuse_input_qconfig,
    default_weight_only_qconfig,
    float16_dynamic_qconfig,
    float16_static_qconfig,
    float_qparams_weight_only_qconfig,
    float_qparams_weight_only_qconfig_4bit,
    get_default_dynamic_qconfig,
    get_default_qat_qconfig,
    get_default_qconfig,
    per_channel_dynamic_qconfig,
    per_token_dynamic_qconfig,
)
from qcore.qconfig_mapping import QConfigMapping, get_default_qat_qconfig_mapping, get_default_qconfig_mapping
from qcore.quant_spec import QuantSpec
from qcore.qtensor import (
    QTensor,
    dequantize,
    quantize_per_channel,
    quantize_per_tensor,
    quantize_per_tensor_dynamic,
)

__version__ = "0.1.0"

# Names that need the registry: imported on first access so `import qcore` stays free of plugins.
_LAZY = {
    "configure_plugins": "qcore.registry",
    "list_plugins": "qcore.registry",
    "get_plugin": "qcore.registry",
    "set_backend": "qcore.backend_selection",
    "get_backend": "qcore.backend_selection",
    "backend": "qcore.backend_selection",
    "list_backends": "qcore.backend_selection",
    "get_backend_description": "qcore.backend_selection",
    # eager mode (torch.ao.quantization.quantize and fuse_modules)
    "QuantStub": "qcore.stubs",
    "DeQuantStub": "qcore.stubs",
    "QuantWrapper": "qcore.stubs",
    "prepare": "qcore.flow.eager",
    "prepare_qat": "qcore.flow.eager",
    "convert": "qcore.flow.eager",
    "quantize": "qcore.flow.eager",
    "quantize_qat": "qcore.flow.eager",
    "quantize_dynamic": "qcore.flow.eager",
    "propagate_qconfig_": "qcore.flow.eager",
    "add_quant_dequant": "qcore.flow.eager",
    "swap_module": "qcore.flow.eager",
    "fuse_modules": "qcore.flow.eager.fuse",
    "fuse_modules_qat": "qcore.flow.eager.fuse",
    "fuse_known_modules": "qcore.flow.eager.fuse",
    "get_fuser_method": "qcore.flow.eager.fuse",
    "get_default_custom_config_dict": "qcore.flow.eager",
    "UnquantizedModuleWarning": "qcore.flow.eager",
    "get_default_static_quant_module_mappings": "qcore.flow.mappings",
    "get_default_static_quant_reference_module_mappings": "qcore.flow.mappings",
    "get_default_dynamic_quant_module_mappings": "qcore.flow.mappings",
    "get_default_qat_module_mappings": "qcore.flow.mappings",
    "get_default_qconfig_propagation_list": "qcore.flow.mappings",
    "get_static_quant_module_class": "qcore.flow.mappings",
    "get_dynamic_quant_module_class": "qcore.flow.mappings",
    "no_observer_set": "qcore.flow.mappings",
    "save": "qcore.checkpoint",
    "load": "qcore.checkpoint",
    "CheckpointError": "qcore.checkpoint",
    "weight_only_qconfig": "qcore.nn.quantized.weight_only",
    "weight_only_int8_qconfig": "qcore.nn.quantized.weight_only",
    "weight_only_int4_qconfig": "qcore.nn.quantized.weight_only",
}
_SUBPACKAGES = ("nn", "fx")


def __getattr__(name: str) -> Any:
    import importlib

    if name in _SUBPACKAGES:
        return importlib.import_module(f"qcore.{name}")
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'qcore' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | set(_SUBPACKAGES))
