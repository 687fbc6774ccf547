"""Entry point of the fbgemm plugin: checks the machine, then registers the backend."""

from __future__ import annotations

import platform

import torch

from qcore.errors import PluginUnavailable
from qcore.spec import hookimpl

X86_MACHINES = frozenset({"x86_64", "amd64", "i386", "i686", "x86"})


def unavailable_reason() -> str | None:
    """Why fbgemm cannot run here, or None when it can."""
    machine = platform.machine().lower()
    if machine not in X86_MACHINES:
        return f"fbgemm needs an x86 CPU; this machine is {machine or 'unknown'}"
    if "fbgemm" not in torch.backends.quantized.supported_engines:
        return "this torch build has no fbgemm quantized engine"
    return None


_reason = unavailable_reason()
if _reason is not None:
    raise PluginUnavailable(_reason)


@hookimpl
def qcore_register_backends(registry) -> None:
    from qcore_fbgemm.backend import describe

    registry.add(describe())
