"""qcore-tensorrt: qcore's backend for NVIDIA GPUs through TensorRT explicit-quantization (Q/DQ) networks.

``qcore_tensorrt.plugin`` is loaded by qcore through the ``qcore.plugins`` entry point.
"""

__version__ = "0.1.0"
