"""The pluggy markers of the ``qcore`` project: specs in qcore.spec, implementations in plugins."""

from __future__ import annotations

import pluggy

PROJECT_NAME = "qcore"

#: Marks a function in ``qcore.spec`` as a hook specification.
hookspec = pluggy.HookspecMarker(PROJECT_NAME)

#: Marks a plugin function as the implementation of the ``qcore_*`` hook of the same name.
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)
