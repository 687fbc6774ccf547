"""FX graph mode quantization (torch.ao.quantization.quantize_fx's API): trace, place observers, convert.

``import qcore.fx as quantize_fx`` then ``quantize_fx.prepare_fx(model,
qconfig_mapping, example_inputs)``, calibrate, ``quantize_fx.convert_fx(...)``:
quant/dequant placement follows the active backend's pattern description,
and what a backend cannot honour stays float with a FloatFallbackWarning.
Each prepared model records its per-node decisions as ``model.meta["qcore_fx"]``.
"""

from qcore.fx.convert import convert_fx, convert_to_reference_fx
from qcore.fx.custom_config import ConvertCustomConfig, FuseCustomConfig, PrepareCustomConfig
from qcore.fx.errors import FloatFallbackWarning, SymbolicTraceError
from qcore.fx.explain import Explanation, explain
from qcore.fx.fuse import fuse_fx
from qcore.fx.prepare import prepare_fx, prepare_qat_fx
from qcore.fx.record import FxRecord, NodeRecord, ObserverRecord
from qcore.fx.tracer import QcoreTracer

__all__ = [
    "ConvertCustomConfig",
    "Explanation",
    "FloatFallbackWarning",
    "FuseCustomConfig",
    "FxRecord",
    "NodeRecord",
    "ObserverRecord",
    "PrepareCustomConfig",
    "QcoreTracer",
    "SymbolicTraceError",
    "convert_fx",
    "convert_to_reference_fx",
    "explain",
    "fuse_fx",
    "prepare_fx",
    "prepare_qat_fx",
]
