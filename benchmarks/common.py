"""What the benchmark workloads share: the run context, torch.ao's eager API, quiet imports."""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

import torch

from benchmarks.harness import Settings

__all__ = ["Context", "quiet", "torch_ao_api", "torch_ao_engine"]


@dataclass
class Context:
    """Settings of this run, where trained weights are cached, and the notes the workloads leave."""

    settings: Settings
    cache_dir: Optional[Path] = None
    notes: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def log(self, text: str) -> None:
        print(f"  .. {text}", flush=True)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """torch.ao's deprecation warnings silenced (torch.ao is the comparison here, deprecated or not)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@contextlib.contextmanager
def torch_ao_engine(name: str = "x86") -> Iterator[None]:
    """torch.ao's quantized engine inside the block (``x86``: torch.ao's default on x86 servers)."""
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = name
    try:
        yield
    finally:
        torch.backends.quantized.engine = previous


def torch_ao_api() -> Any:
    """torch.ao's eager functions in the shape of ``qcore.demo.eager_rows.EagerAPI``."""
    from qcore.demo.eager_rows import EagerAPI

    with quiet():
        import torch.ao.nn.intrinsic.qat as nniqat
        import torch.ao.quantization as tq
    return EagerAPI(tq.fuse_modules, tq.fuse_modules_qat, tq.prepare, tq.prepare_qat, tq.convert,
                    tq.quantize_dynamic, tq.QuantStub, tq.DeQuantStub, tq.disable_observer, nniqat.freeze_bn_stats)
