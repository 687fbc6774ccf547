"""Pickle-free checkpoints of quantized models: :func:`save` and :func:`load` (``qcore.save`` / ``qcore.load``).

One safetensors file holds the tensors; its metadata holds a JSON manifest of
the module tree (class, constructor arguments, plain attributes, qconfig,
qparams), the ``_extra_state`` values, each tensor's sha256, the backend the
model was converted for and the qcore version. The format is described in
docs/checkpoint.md.
"""

from __future__ import annotations

from qcore.checkpoint.classes import QCORE_PACKAGES, ClassResolver, class_name
from qcore.checkpoint.errors import (
    CheckpointClassError,
    CheckpointError,
    CheckpointFormatError,
    CheckpointIntegrityError,
    CheckpointVersionError,
    CheckpointWarning,
)
from qcore.checkpoint.fileformat import FORMAT, FORMAT_VERSION
from qcore.checkpoint.load import load, read_manifest
from qcore.checkpoint.manifest import Manifest, ModuleEntry
from qcore.checkpoint.save import save

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "QCORE_PACKAGES",
    "CheckpointClassError",
    "CheckpointError",
    "CheckpointFormatError",
    "CheckpointIntegrityError",
    "CheckpointVersionError",
    "CheckpointWarning",
    "ClassResolver",
    "Manifest",
    "ModuleEntry",
    "class_name",
    "load",
    "read_manifest",
    "save",
]
