"""qcore's hook specifications: what a plugin may implement, and the markers to do it with.

A plugin module marks its functions with :data:`hookimpl` and names them
after a hook below; see docs/hooks.md for each hook with an example.
"""

from __future__ import annotations

from qcore.spec import dispatch, registration
from qcore.spec.markers import PROJECT_NAME, hookimpl, hookspec

#: The modules holding hook specifications, in the order they are added to the plugin manager.
SPEC_MODULES = (registration, dispatch)


def hook_names() -> list[str]:
    """Every hook qcore specifies, in definition order."""
    marker = PROJECT_NAME + "_spec"
    return [name for module in SPEC_MODULES for name, obj in vars(module).items() if hasattr(obj, marker)]


__all__ = ["PROJECT_NAME", "SPEC_MODULES", "hook_names", "hookimpl", "hookspec"]
