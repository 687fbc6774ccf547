"""The errors qcore.load and qcore.save raise (to move to qcore/errors.py once the API settles)."""

from __future__ import annotations

from qcore.errors import QcoreError

__all__ = [
    "CheckpointError",
    "CheckpointFormatError",
    "CheckpointIntegrityError",
    "CheckpointVersionError",
    "CheckpointClassError",
    "CheckpointWarning",
]


class CheckpointError(QcoreError, ValueError):
    """A checkpoint that cannot be written, read or applied to a model."""


class CheckpointFormatError(CheckpointError):
    """The file is not a qcore checkpoint, is truncated, or its header or manifest is malformed."""


class CheckpointIntegrityError(CheckpointError):
    """A tensor or the manifest does not match the checksum written with it (corrupted or edited)."""


class CheckpointVersionError(CheckpointError):
    """The checkpoint was written in a newer format than this qcore reads."""


class CheckpointClassError(CheckpointError):
    """The checkpoint names a module or observer class qcore.load is not allowed to build."""


class CheckpointWarning(UserWarning):
    """Something of the model that a checkpoint does not keep (forward hooks, for instance)."""
