"""Entry point of the qnnpack plugin: checks torch has the engine, then registers the backend."""

from __future__ import annotations

import torch

from qcore.errors import PluginUnavailable
from qcore.spec import hookimpl

if "qnnpack" not in torch.backends.quantized.supported_engines:
    raise PluginUnavailable("this torch build has no qnnpack quantized engine")


@hookimpl
def qcore_register_backends(registry) -> None:
    from qcore_qnnpack.backend import describe

    registry.add(describe())
