"""The checkpoint file: one safetensors file whose header metadata holds the JSON manifest.

Layout (see docs/checkpoint.md): safetensors' 8-byte little-endian header
length, its JSON header (tensor dtypes, shapes, offsets, and ``__metadata__``
with ``format``, ``format_version``, ``manifest`` and ``manifest_sha256``),
then the raw tensor bytes. The manifest lists every tensor's dtype, shape and
sha256, so a flipped byte, a truncated file or an edited manifest is caught
before anything is built.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Union

import torch
from torch import Tensor

from qcore.checkpoint.errors import CheckpointError, CheckpointFormatError, CheckpointIntegrityError, CheckpointVersionError

__all__ = ["FORMAT", "FORMAT_VERSION", "tensor_sha256", "tensor_table", "write_checkpoint", "read_checkpoint", "read_header"]

FORMAT = "qcore.checkpoint"
#: The format this qcore writes and the newest it reads.
FORMAT_VERSION = 1
# safetensors' own limit on the JSON header.
_MAX_HEADER = 100_000_000

PathLike = Union[str, "os.PathLike[str]"]


def tensor_sha256(tensor: Tensor) -> str:
    """sha256 of a tensor's raw bytes (row-major, native byte order)."""
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    return hashlib.sha256(flat.view(torch.uint8).numpy().tobytes()).hexdigest()


def _dtype_name(tensor: Tensor) -> str:
    return str(tensor.dtype).replace("torch.", "")


def tensor_table(tensors: dict[str, Tensor]) -> dict[str, dict[str, Any]]:
    """What the manifest records of each tensor: dtype, shape and sha256."""
    return {
        key: {"dtype": _dtype_name(t), "shape": list(t.shape), "sha256": tensor_sha256(t)}
        for key, t in sorted(tensors.items())
    }


def _safetensors_torch() -> Any:
    """safetensors.torch, or a clear error saying to install it."""
    try:
        import safetensors.torch
    except ImportError as exc:
        raise CheckpointError(
            "qcore.save and qcore.load need the safetensors package; install it (pip install safetensors)"
        ) from exc
    return safetensors.torch


def _manifest_text(manifest: dict[str, Any]) -> str:
    return json.dumps(manifest, sort_keys=True, separators=(",", ":"), allow_nan=False)


def write_checkpoint(path: PathLike, tensors: dict[str, Tensor], manifest: dict[str, Any]) -> None:
    """Write ``tensors`` and ``manifest`` to ``path`` atomically (a temporary file renamed into place)."""
    save_file = _safetensors_torch().save_file
    text = _manifest_text(manifest)
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "manifest": text,
        "manifest_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
    }
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent if str(target.parent) else ".")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _not_a_checkpoint(path: PathLike, start: bytes) -> CheckpointFormatError:
    if start[:4] == b"PK\x03\x04":
        kind = "a zip archive (what torch.save writes)"
    elif start[:1] == b"\x80" and start[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        kind = "a pickle file"
    else:
        return CheckpointFormatError(f"{os.fspath(path)} is not a qcore checkpoint (no safetensors header)")
    return CheckpointFormatError(
        f"{os.fspath(path)} is {kind}, not a qcore checkpoint. qcore.load never unpickles, since loading a pickle "
        "can run any code; if you trust the file, load it with torch.load(path, weights_only=True) and "
        "model.load_state_dict(...), then write a safe checkpoint with qcore.save(model, path)"
    )


def read_header(path: PathLike) -> tuple[dict[str, Any], dict[str, Any], int, int]:
    """``(safetensors header, manifest, file size, header length)`` after checking the format, version and manifest checksum."""
    name = os.fspath(path)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            start = f.read(8)
            if len(start) < 8:
                raise CheckpointFormatError(f"{name} is truncated or empty ({size} bytes); not a qcore checkpoint")
            length = int.from_bytes(start, "little")
            if length > min(size - 8, _MAX_HEADER):
                if start[:1] == b"\x80" or start[:2] == b"PK":
                    raise _not_a_checkpoint(path, start)
                raise CheckpointFormatError(
                    f"{name} is truncated or not a qcore checkpoint: its header claims {length} bytes but the file "
                    f"holds {size}"
                )
            raw = f.read(length)
    except OSError as exc:
        raise CheckpointFormatError(f"cannot read the checkpoint {name}: {exc}") from exc
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _not_a_checkpoint(path, start) from None
    if not isinstance(header, dict):
        raise _not_a_checkpoint(path, start)
    meta = header.get("__metadata__")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointFormatError(
            f"{name} is a safetensors file but not a qcore checkpoint (its metadata has no {FORMAT!r} format); "
            "load plain tensors with safetensors.torch.load_file"
        )
    version = meta.get("format_version")
    if not isinstance(version, str) or not version.isdigit():
        raise CheckpointFormatError(f"{name}: malformed format_version {version!r} in the checkpoint's metadata")
    if int(version) > FORMAT_VERSION:
        from qcore import __version__

        raise CheckpointVersionError(
            f"{name} was written in checkpoint format version {version}, newer than this qcore {__version__} reads "
            f"(up to version {FORMAT_VERSION}{_written_by(meta)}); upgrade qcore to load it"
        )
    text = meta.get("manifest")
    if not isinstance(text, str):
        raise CheckpointFormatError(f"{name}: the checkpoint's metadata has no manifest")
    if hashlib.sha256(text.encode("utf-8")).hexdigest() != meta.get("manifest_sha256"):
        raise CheckpointIntegrityError(
            f"{name}: the manifest does not match its sha256; the file was edited or corrupted after qcore.save wrote it"
        )
    try:
        manifest = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise CheckpointFormatError(f"{name}: the manifest is not valid JSON: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format_version") != int(version):
        raise CheckpointFormatError(f"{name}: the manifest's format_version does not match the file's ({version})")
    return header, manifest, size, length


def _written_by(meta: dict[str, Any]) -> str:
    try:
        written = json.loads(meta.get("manifest", "")).get("qcore_version")
    except (ValueError, AttributeError, RecursionError):
        return ""
    return f"; it was written by qcore {written}" if isinstance(written, str) else ""


def read_checkpoint(path: PathLike) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """``(manifest, tensors)`` of a checkpoint, every tensor checked against the manifest's dtype, shape and sha256."""
    load_file = _safetensors_torch().load_file
    name = os.fspath(path)
    header, manifest, size, length = read_header(path)
    table = manifest.get("tensors")
    if not isinstance(table, dict):
        raise CheckpointFormatError(f"{name}: the manifest has no tensor table")
    entries = {k: v for k, v in header.items() if k != "__metadata__"}
    try:
        end = max((int(v["data_offsets"][1]) for v in entries.values()), default=0)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise CheckpointFormatError(f"{name}: malformed tensor entry in the safetensors header: {exc}") from None
    expected = 8 + length + end
    if size != expected:
        what = "truncated" if size < expected else "followed by unexpected bytes"
        raise CheckpointFormatError(f"{name} is {what}: the header describes {expected} bytes, the file holds {size}")
    if set(entries) != set(table):
        missing = sorted(set(table) - set(entries))
        extra = sorted(set(entries) - set(table))
        raise CheckpointIntegrityError(
            f"{name}: the file's tensors do not match its manifest (missing: {missing[:5]}, not listed: {extra[:5]})"
        )
    try:
        tensors = load_file(path)
    except Exception as exc:  # safetensors raises its own error types for malformed data
        raise CheckpointFormatError(f"{name}: cannot read the tensors: {type(exc).__name__}: {exc}") from None
    for key, info in table.items():
        t = tensors.get(key)
        if not isinstance(info, dict) or t is None:
            raise CheckpointFormatError(f"{name}: malformed tensor entry {key!r} in the manifest")
        if info.get("dtype") != _dtype_name(t) or info.get("shape") != list(t.shape):
            raise CheckpointIntegrityError(
                f"{name}: tensor {key!r} is {_dtype_name(t)} {list(t.shape)} in the file but "
                f"{info.get('dtype')} {info.get('shape')} in the manifest; the file was edited or corrupted"
            )
        if tensor_sha256(t) != info.get("sha256"):
            raise CheckpointIntegrityError(
                f"{name}: tensor {key!r} does not match its sha256; the file was corrupted or edited after "
                "qcore.save wrote it"
            )
    return manifest, tensors
