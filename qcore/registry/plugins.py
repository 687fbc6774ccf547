"""What qcore knows and says about each discovered plugin: PluginInfo and QcorePluginWarning."""

from __future__ import annotations

from typing import Optional

import attrs

LOADED = "loaded"
SKIPPED = "skipped"  # the plugin raised PluginUnavailable: it cannot run on this machine
FAILED = "failed"  # import error, hook validation error, or a registration hook that raised
BLOCKED = "blocked"  # deselected by QCORE_PLUGINS / QCORE_DISABLED_PLUGINS / [tool.qcore] / the API
STATUSES = (LOADED, SKIPPED, FAILED, BLOCKED)


class QcorePluginWarning(UserWarning):
    """A plugin failed to load or validate and was skipped (emitted once per failure)."""


@attrs.frozen
class PluginInfo:
    """One discovered plugin: where it comes from, which hooks it implements, and its status.

    ``error`` is the original exception of a failed plugin (not part of equality).
    """

    name: str
    distribution: str
    version: str
    hooks: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    status: str = attrs.field(default=LOADED, validator=attrs.validators.in_(STATUSES))
    reason: Optional[str] = None
    error: Optional[BaseException] = attrs.field(default=None, eq=False, repr=False)

    def describe(self) -> str:
        """``name (distribution version): status[: reason]``, for error messages."""
        text = f"{self.name} ({self.distribution} {self.version}): {self.status}"
        return f"{text}: {self.reason}" if self.reason else text
