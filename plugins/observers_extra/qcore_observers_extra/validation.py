"""Argument checks shared by the extra observers: each failure is a ConfigError naming the observer and the fix."""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor

from qcore.errors import ConfigError, UncalibratedError


def positive_int(owner: str, name: str, value: Any) -> int:
    """``value`` if it is a positive int (not a bool), else a ConfigError."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{owner}: {name} must be a positive integer, got {value!r}")
    return value


def percent(owner: str, name: str, value: Any) -> float:
    """``value`` as a float in [0, 100], else a ConfigError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{owner}: {name} must be a number between 0 and 100, got {value!r}")
    value = float(value)
    if not 0.0 <= value <= 100.0:
        raise ConfigError(f"{owner}: {name} must be between 0 and 100 (a percentage, e.g. 99.99), got {value}")
    return value


def require_data(owner: str, min_val: Tensor, max_val: Tensor) -> None:
    """UncalibratedError unless the observer has recorded at least one value (its min/max are set)."""
    if min_val.numel() == 0 or bool(((min_val == float("inf")) & (max_val == float("-inf"))).all()):
        raise UncalibratedError(
            f"{owner} saw no data; run calibration (pass representative inputs through the prepared model) "
            "before asking for qparams"
        )
