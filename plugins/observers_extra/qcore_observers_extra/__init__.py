"""qcore-observers-extra: calibration observers beyond min/max, registered through qcore's observer hook.

``qcore_observers_extra.plugin`` is loaded by qcore through the ``qcore.plugins`` entry point.
"""

__version__ = "0.1.0"
