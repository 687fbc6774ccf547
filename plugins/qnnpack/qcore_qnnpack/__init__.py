"""qcore-qnnpack: qcore's backend for ARM and mobile CPUs.

``qcore_qnnpack.plugin`` is loaded by qcore through the ``qcore.plugins`` entry point.
"""

__version__ = "0.1.0"
