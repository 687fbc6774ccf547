"""Observers: modules that watch tensors during calibration and turn what they saw into qparams.

The classes and named defaults mirror ``torch.ao.quantization.observer``;
:data:`CORE_OBSERVERS` maps the names the core registers them under.
"""

from __future__ import annotations

from qcore.observers.base import ObserverBase, UniformQuantizationObserverBase
from qcore.observers.defaults import *  # noqa: F401,F403
from qcore.observers.defaults import __all__ as _default_names
from qcore.observers.fixed_qparams import FixedQParamsObserver
from qcore.observers.histogram import HistogramObserver
from qcore.observers.minmax import MinMaxObserver, MovingAverageMinMaxObserver
from qcore.observers.passthrough import NoopObserver, PlaceholderObserver, RecordingObserver, ReuseInputObserver
from qcore.observers.per_channel import MovingAveragePerChannelMinMaxObserver, PerChannelMinMaxObserver

#: The observers qcore itself provides, by the name the registry knows them under.
CORE_OBSERVERS: dict[str, type] = {
    "minmax": MinMaxObserver,
    "moving_average_minmax": MovingAverageMinMaxObserver,
    "per_channel_minmax": PerChannelMinMaxObserver,
    "moving_average_per_channel_minmax": MovingAveragePerChannelMinMaxObserver,
    "histogram": HistogramObserver,
    "placeholder": PlaceholderObserver,
    "noop": NoopObserver,
    "fixed_qparams": FixedQParamsObserver,
    "reuse_input": ReuseInputObserver,
    "recording": RecordingObserver,
}

__all__ = [
    "CORE_OBSERVERS",
    "ObserverBase",
    "UniformQuantizationObserverBase",
    "MinMaxObserver",
    "MovingAverageMinMaxObserver",
    "PerChannelMinMaxObserver",
    "MovingAveragePerChannelMinMaxObserver",
    "HistogramObserver",
    "PlaceholderObserver",
    "NoopObserver",
    "ReuseInputObserver",
    "RecordingObserver",
    "FixedQParamsObserver",
    *_default_names,
]
