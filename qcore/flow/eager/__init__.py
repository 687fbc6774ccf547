"""Eager-mode quantization (torch.ao.quantization.quantize's API): fuse, propagate, prepare, convert, quantize*.

The flow functions are imported eagerly: their modules share their names
(``prepare.py`` defines ``prepare``), and a lazy export would lose to the
submodule attribute the import system sets. Fusion is exported lazily.
"""

from qcore._lazy import lazy_exports
from qcore.flow.eager.custom_modules import get_default_custom_config_dict
from qcore.flow.eager.propagate import propagate_qconfig_
from qcore.flow.eager.prepare import add_quant_dequant, prepare, prepare_qat
from qcore.flow.eager.convert import UnquantizedModuleWarning, convert, swap_module
from qcore.flow.eager.quantize import quantize, quantize_dynamic, quantize_qat

_LAZY = {"fuse_modules": "fuse", "fuse_modules_qat": "fuse"}
__getattr__, _lazy_dir = lazy_exports(__name__, _LAZY)

__all__ = [
    "UnquantizedModuleWarning",
    "add_quant_dequant",
    "convert",
    "fuse_modules",
    "fuse_modules_qat",
    "get_default_custom_config_dict",
    "prepare",
    "prepare_qat",
    "propagate_qconfig_",
    "quantize",
    "quantize_dynamic",
    "quantize_qat",
    "swap_module",
]


def __dir__() -> list:
    return sorted(set(__all__) | set(globals()))
