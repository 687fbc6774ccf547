"""The exceptions qcore raises, so callers can catch qcore's errors apart from torch's."""

from __future__ import annotations


class QcoreError(Exception):
    """Base class of every error qcore raises on purpose."""


class ConfigError(QcoreError, ValueError):
    """A configuration (spec, qconfig, mapping, backend) that cannot be honoured."""


class QuantizationError(QcoreError, ValueError):
    """Bad input to a quantization function: wrong dtype, NaN, mismatched qparams."""


class ObserverError(QcoreError, RuntimeError):
    """An observer saw invalid data (NaN/inf) or was asked for qparams before seeing any."""


class UncalibratedError(ObserverError):
    """An observer was asked for qparams before it saw any data (no calibration ran)."""


class UncalibratedWarning(UserWarning):
    """convert() used placeholder qparams because an observer saw no data; calibrate or load a state_dict."""


class PluginError(QcoreError, RuntimeError):
    """A plugin could not be found, loaded, validated or selected."""


class PluginConflictError(PluginError):
    """Two plugins registered the same name (backend, observer, ...)."""


class PluginUnavailable(QcoreError):
    """Raised by a plugin, at import, to say it cannot run on this machine.

    The plugin is then listed as *skipped* with ``reason``, not as failed.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
