"""Entry point of the TensorRT plugin: registers the backend's description and defaults.

The description and qconfigs are useful without a GPU (they produce the
symmetric int8 Q/DQ model TensorRT consumes), so the plugin loads everywhere;
the backend reports itself unavailable for execution where TensorRT or CUDA is
missing, and is then never picked as the machine's default.
"""

from __future__ import annotations

from qcore.spec import hookimpl


@hookimpl
def qcore_register_backends(registry) -> None:
    from qcore_tensorrt.backend import describe

    registry.add(describe())
