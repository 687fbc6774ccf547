"""Finding the installed plugins: entry points in the ``qcore.plugins`` group, without importing them."""

from __future__ import annotations

from typing import Any

import attrs

GROUP = "qcore.plugins"


@attrs.frozen
class Candidate:
    """An installed plugin as its metadata describes it; ``entry_point.load()`` imports it."""

    name: str
    distribution: str
    version: str
    entry_point: Any = attrs.field(eq=False, repr=False)


def _normalise(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def discover() -> list[Candidate]:
    """Every ``qcore.plugins`` entry point, de-duplicated by (distribution, name), sorted by name.

    The same distribution seen twice on ``sys.path`` (an editable install and a
    copy, say) yields one candidate: the first, as Python's import would.
    """
    import importlib_metadata  # imported here: discovery happens on first use, not at import qcore

    seen: set[tuple[str, str]] = set()
    found: list[Candidate] = []
    for ep in importlib_metadata.entry_points(group=GROUP):
        dist = getattr(ep, "dist", None)
        dist_name = dist.name if dist is not None and dist.name else "unknown"
        version = dist.version if dist is not None and dist.version else "unknown"
        key = (_normalise(dist_name), ep.name)
        if key in seen:
            continue
        seen.add(key)
        found.append(Candidate(ep.name, dist_name, version, ep))
    found.sort(key=lambda c: (c.name, c.distribution))
    return found


def core_version() -> str:
    """The installed version of the qcore distribution itself."""
    import importlib_metadata

    try:
        return importlib_metadata.version("qcore")
    except importlib_metadata.PackageNotFoundError:
        return "unknown"
