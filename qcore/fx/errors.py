"""The errors and warnings of FX graph mode: what could not be traced, what stays float and why."""

from __future__ import annotations

from qcore.errors import ConfigError

__all__ = ["SymbolicTraceError", "FloatFallbackWarning"]


class SymbolicTraceError(ConfigError):
    """torch.fx could not trace the model; the message names the module, the source line and the fix.

    ``module_name`` is the qualified name of the innermost module whose
    forward failed (``""`` for the model itself), ``location`` the
    ``file:line`` of the offending statement when it could be found.
    """

    def __init__(self, message: str, module_name: str = "", location: str = "") -> None:
        super().__init__(message)
        self.module_name = module_name
        self.location = location


class FloatFallbackWarning(UserWarning):
    """prepare_fx left a node in float because the backend cannot honour its qconfig (the message says why)."""
