"""The core plugin ("core", distribution qcore): the reference backend, core observers, module swaps, fusions.

It is registered first, cannot be blocked, and its hookimpls are ``trylast``
so that for dispatch hooks any backend plugin answers before the core's
defaults. Everything it provides is imported inside the hookimpls so that a
half-written tree still lets ``qcore.registry`` import.
"""

from __future__ import annotations

from typing import Any

from qcore.spec.markers import hookimpl

#: Below any plugin's priority: the reference backend is the default only when nothing else can run.
REFERENCE_PRIORITY = -1000


def reference_backend() -> Any:
    """The ``reference`` backend: exact integer semantics in plain PyTorch float math, runs anywhere."""
    from qcore import qconfig
    from qcore.backend_config import BackendDescription, DTypeConfig
    from qcore.backend_patterns import standard_patterns

    schemes = ("per_tensor_affine", "per_tensor_symmetric", "per_channel_affine", "per_channel_symmetric")
    weighted = [
        DTypeConfig(input_dtype="uint8", output_dtype="uint8", weight_dtype="int8", bias_dtype="float32",
                    weight_qschemes=schemes),
        DTypeConfig(input_dtype="int8", output_dtype="int8", weight_dtype="int8", bias_dtype="float32",
                    weight_qschemes=schemes),
    ]
    activation = [DTypeConfig(input_dtype="uint8", output_dtype="uint8"), DTypeConfig(input_dtype="int8", output_dtype="int8")]
    dynamic = [
        DTypeConfig(input_dtype="uint8", output_dtype="float32", weight_dtype="int8", bias_dtype="float32",
                    is_dynamic=True, weight_qschemes=schemes),
        DTypeConfig(input_dtype="float16", output_dtype="float32", weight_dtype="float16", bias_dtype="float32",
                    is_dynamic=True),
    ]
    weight_only = [
        DTypeConfig(input_dtype="float32", output_dtype="float32", weight_dtype="uint8"),
        DTypeConfig(input_dtype="float32", output_dtype="float32", weight_dtype="uint4"),
    ]
    return BackendDescription(
        name="reference",
        summary="exact integer simulation in plain PyTorch: the numerics every backend is checked against",
        default_qconfig=qconfig.default_qconfig,
        default_qat_qconfig=qconfig.default_qat_qconfig,
        default_dynamic_qconfig=qconfig.default_dynamic_qconfig,
        patterns=standard_patterns(weighted, activation, dynamic, weight_only),
        priority=REFERENCE_PRIORITY,
    )


@hookimpl(trylast=True)
def qcore_register_backends(registry: Any) -> None:
    registry.add(reference_backend())


@hookimpl(trylast=True)
def qcore_register_observers(registry: Any) -> None:
    from qcore.observers import CORE_OBSERVERS

    for name, cls in CORE_OBSERVERS.items():
        registry.add(name, cls)


@hookimpl(trylast=True)
def qcore_register_fake_quantizers(registry: Any) -> None:
    from qcore.fake_quant import CORE_FAKE_QUANTIZERS

    for name, cls in CORE_FAKE_QUANTIZERS.items():
        registry.add(name, cls)


@hookimpl(trylast=True)
def qcore_register_quantized_modules(registry: Any) -> None:
    from qcore.flow.mappings import core_module_swaps

    for quant_type, swaps in core_module_swaps().items():
        for source, target in swaps.items():
            registry.add(source, target, quant_type)


@hookimpl(trylast=True)
def qcore_register_fusion_patterns(registry: Any) -> None:
    from qcore.flow.eager.fusion_patterns import register_core_fusion_patterns

    register_core_fusion_patterns(registry)


@hookimpl(trylast=True)
def qcore_register_custom_modules(registry: Any) -> None:
    from qcore.flow.mappings import core_custom_modules

    for float_cls, observed_cls, quantized_cls in core_custom_modules():
        registry.add(float_cls, observed_cls, quantized_cls, "static")
