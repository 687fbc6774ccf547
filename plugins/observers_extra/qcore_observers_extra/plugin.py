"""The ``observers_extra`` plugin: registers this distribution's observers and fake-quantizers with qcore.

qcore loads this module through the ``qcore.plugins`` entry point; the core
knows nothing else about it. The classes are imported inside the hooks so
that a blocked plugin costs nothing.
"""

from __future__ import annotations

from typing import Any

from qcore.spec import hookimpl


def observers() -> dict[str, type]:
    """The observer classes this plugin provides, by registered name."""
    from qcore_observers_extra.entropy import EntropyObserver
    from qcore_observers_extra.moving_average_histogram import MovingAverageHistogramObserver
    from qcore_observers_extra.mse import MSEObserver, PerChannelMSEObserver
    from qcore_observers_extra.percentile import PercentileObserver, PerChannelPercentileObserver

    return {
        "percentile": PercentileObserver,
        "per_channel_percentile": PerChannelPercentileObserver,
        "mse": MSEObserver,
        "per_channel_mse": PerChannelMSEObserver,
        "entropy": EntropyObserver,
        "moving_average_histogram": MovingAverageHistogramObserver,
    }


def fake_quantizers() -> dict[str, type]:
    """The fake-quant classes this plugin provides, by registered name."""
    from qcore_observers_extra.lsq import LSQFakeQuantize, LSQPlusFakeQuantize

    return {"lsq_fake_quantize": LSQFakeQuantize, "lsqplus_fake_quantize": LSQPlusFakeQuantize}


@hookimpl
def qcore_register_observers(registry: Any) -> None:
    for name, cls in observers().items():
        registry.add(name, cls)


@hookimpl
def qcore_register_fake_quantizers(registry: Any) -> None:
    for name, cls in fake_quantizers().items():
        registry.add(name, cls)
