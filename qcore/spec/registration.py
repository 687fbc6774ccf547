"""Registration hooks: a plugin adds what it provides to the registry object it is handed.

qcore calls each of these once per plugin while it builds the registry, so
every entry records the plugin that added it and a name claimed by two
plugins is reported as a :class:`~qcore.errors.PluginConflictError` naming
both. They are not firstresult: every plugin's implementation runs, the
core's (``trylast``) included. Implementations return nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qcore.spec.markers import hookspec

if TYPE_CHECKING:  # the registry classes are only needed by type checkers here
    from qcore.registry.tables import (
        BackendRegistry,
        ClassRegistry,
        CustomModuleRegistry,
        FusionPatternRegistry,
        QuantizedModuleRegistry,
    )


@hookspec
def qcore_register_backends(registry: BackendRegistry) -> None:
    """Add the plugin's backends: ``registry.add(description)``.

    Receives a :class:`~qcore.registry.tables.BackendRegistry`; each
    :class:`~qcore.backend_config.BackendDescription` is registered under its
    ``name`` and every alias. Returns nothing. Not firstresult.
    """


@hookspec
def qcore_register_observers(registry: ClassRegistry) -> None:
    """Add the plugin's observer classes: ``registry.add(name, observer_class)``.

    Receives a :class:`~qcore.registry.tables.ClassRegistry`; the name is what
    serialised qconfigs and ``Factory.from_dict`` use to find the class.
    Returns nothing. Not firstresult.
    """


@hookspec
def qcore_register_fake_quantizers(registry: ClassRegistry) -> None:
    """Add the plugin's fake-quantize classes: ``registry.add(name, fake_quant_class)``.

    Receives a :class:`~qcore.registry.tables.ClassRegistry` (names share the
    lookup space of observers: observers are searched first). Returns nothing.
    Not firstresult.
    """


@hookspec
def qcore_register_fusion_patterns(registry: FusionPatternRegistry) -> None:
    """Add module fusions: ``registry.add(pattern, fuser, qat=False)``.

    Receives a :class:`~qcore.registry.tables.FusionPatternRegistry`;
    ``pattern`` is a tuple of module types in execution order (e.g.
    ``(nn.Conv2d, nn.BatchNorm2d, nn.ReLU)``), ``fuser(is_qat, *modules)``
    returns the fused module, ``qat`` says whether the entry is for
    quantization-aware training. Returns nothing. Not firstresult.
    """


@hookspec
def qcore_register_custom_modules(registry: CustomModuleRegistry) -> None:
    """Add custom-module swaps: ``registry.add(float_cls, observed_cls, quantized_cls, quant_type="static")``.

    Receives a :class:`~qcore.registry.tables.CustomModuleRegistry`; prepare
    swaps ``float_cls`` for ``observed_cls.from_float(...)`` and convert swaps
    that for ``quantized_cls.from_observed(...)``. Returns nothing. Not
    firstresult.
    """


@hookspec
def qcore_register_quantized_modules(registry: QuantizedModuleRegistry) -> None:
    """Add module swaps used by convert: ``registry.add(source_cls, quantized_cls, quant_type)``.

    Receives a :class:`~qcore.registry.tables.QuantizedModuleRegistry`;
    ``quant_type`` is one of ``"static"``, ``"dynamic"``, ``"weight_only"``,
    ``"qat"`` (for ``"qat"`` the target is the QAT module prepare swaps in).
    Returns nothing. Not firstresult.
    """
