"""The rows of the demo's table, each made by a row producer.

A row producer takes the :class:`DemoContext` and yields :class:`Row` s; later
flows (eager convert, FX, backend kernels) add rows by appending a producer to
the list ``ROW_PRODUCERS``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional

import attrs
import torch
from torch import nn

from qcore import dtypes
from qcore.demo.data import Digits
from qcore.demo.measure import accuracy, float_size_bytes, interleaved_latency, simulated_size_bytes
from qcore.demo.progress import progress_bar
from qcore.errors import QcoreError
from qcore.factory import as_factory


@attrs.frozen
class Row:
    """One line of the table; ratios are against the fp32 model."""

    mode: str
    backend: str
    activation: str
    weight: str
    accuracy: float
    size_bytes: int
    size_ratio: float
    latency_ms: float
    latency_ratio: float


@attrs.define
class DemoContext:
    """What every row producer needs: the data, the float model, and how to measure."""

    data: Digits
    float_model: nn.Module
    folded_model: nn.Module
    batch_size: int
    rounds: int
    calibration_batches: list
    quiet: bool = False
    notes: list = attrs.Factory(list)
    #: Where producers that train their own models cache the weights (as ``--cache-dir`` / ``--no-cache``).
    cache_dir: Optional[Path] = None
    use_cache: bool = True

    @property
    def latency_batch(self) -> torch.Tensor:
        images = self.data.test_images
        repeats = -(-self.batch_size // len(images))
        return images.repeat(repeats, 1, 1, 1)[: self.batch_size]

    @property
    def float_size(self) -> int:
        return float_size_bytes(self.float_model)

    def measure(self, model: nn.Module, mode: str, backend: str, activation: str, weight: str,
                size_bytes: int, baseline: Optional[nn.Module] = None, baseline_size: Optional[int] = None) -> Row:
        """Accuracy on the test set, and latency interleaved with the fp32 model.

        ``baseline`` (default: the float CNN) is the fp32 model the latency is
        timed against; ``baseline_size`` (default: :attr:`float_size`) the size
        the ratio divides by.
        """
        baseline = self.float_model if baseline is None else baseline
        model.eval()
        acc = accuracy(model, self.data.test_images, self.data.test_labels, self.batch_size)
        ms, fp32_ms = interleaved_latency(model, baseline, self.latency_batch, self.rounds)
        if model is baseline:
            ms = fp32_ms  # the same model timed twice: report one median, ratio exactly 1
        size_ratio = size_bytes / (self.float_size if baseline_size is None else baseline_size)
        return Row(mode, backend, activation, weight, acc, size_bytes, size_ratio, ms, ms / fp32_ms)

    def calibration(self, label: str) -> Iterable[Any]:
        """The calibration batches, behind a progress bar named ``label``."""
        return progress_bar(self.calibration_batches, desc=f"calibrating {label}", unit="batch", quiet=self.quiet)


RowProducer = Callable[[DemoContext], Iterable[Row]]


def fp32_rows(context: DemoContext) -> Iterator[Row]:
    """The float model as trained (BatchNorm unfolded)."""
    yield context.measure(context.float_model, "fp32", "-", "-", "-", context.float_size)


def _name(factory: Any) -> str:
    """The class name without its ``Observer`` suffix, to keep the table narrow."""
    cls = as_factory(factory).cls
    name = getattr(cls, "__name__", repr(cls))
    return name[: -len("Observer")] if name.endswith("Observer") and name != "Observer" else name


def simulate_row(context: DemoContext, qconfig: Any, mode: str, backend: str) -> Row:
    """Calibrate a fake-quant simulation of ``qconfig`` on the BN-folded model and measure it."""
    from qcore.flow.simulate import simulate_quantization

    activation, weight = _name(qconfig.activation), _name(qconfig.weight)
    model = simulate_quantization(context.folded_model, qconfig, context.calibration(f"{activation}/{weight}"))
    return context.measure(model, mode, backend, activation, weight, simulated_size_bytes(model))


def core_observer_qconfigs() -> list:
    """The core's activation observers (uint8, per-tensor affine) crossed with int8 per-tensor and per-channel weights."""
    from qcore.observers import (HistogramObserver, MinMaxObserver, MovingAverageMinMaxObserver,
                                 PerChannelMinMaxObserver)
    from qcore.qconfig import QConfig

    activations = [cls.with_args(dtype=dtypes.uint8, qscheme=dtypes.per_tensor_affine)
                   for cls in (MinMaxObserver, MovingAverageMinMaxObserver, HistogramObserver)]
    weights = [MinMaxObserver.with_args(dtype=dtypes.int8, qscheme=dtypes.per_tensor_symmetric),
               PerChannelMinMaxObserver.with_args(dtype=dtypes.int8, qscheme=dtypes.per_channel_symmetric)]
    return [QConfig(activation=a, weight=w) for a in activations for w in weights]


def simulation_rows(context: DemoContext) -> Iterator[Row]:
    """Fake-quant simulation (reference numerics) with each core observer combination."""
    for qconfig in core_observer_qconfigs():
        yield simulate_row(context, qconfig, "fake-quant sim*", "reference")


def default_qconfig_rows(context: DemoContext) -> Iterator[Row]:
    """The active backend's default qconfig (``get_default_qconfig(get_backend())``), simulated."""
    try:
        from qcore.backend_selection import get_backend
        from qcore.qconfig import get_default_qconfig
    except ImportError as exc:
        context.notes.append(f"default-qconfig row skipped: {exc}")
        return
    try:
        backend = get_backend()
        qconfig = get_default_qconfig(backend)
    except QcoreError as exc:
        context.notes.append(f"default-qconfig row skipped: {exc}")
        return
    yield simulate_row(context, qconfig, "fake-quant sim* (default)", backend)


def eager_static_rows(context: DemoContext) -> Iterator[Row]:
    """Eager static PTQ (fuse, prepare, calibrate, convert) on the reference backend; see qcore.demo.eager_rows."""
    from qcore.demo.eager_rows import static_rows

    yield from static_rows(context)


def eager_qat_rows(context: DemoContext) -> Iterator[Row]:
    """Eager QAT (fuse, prepare_qat, a short fine-tune, convert) on the reference backend."""
    from qcore.demo.eager_rows import qat_rows

    yield from qat_rows(context)


def eager_dynamic_rows(context: DemoContext) -> Iterator[Row]:
    """Dynamic int8 of small LSTM and GRU classifiers (fp32 rows first) on the reference backend."""
    from qcore.demo.eager_rows import dynamic_rows

    yield from dynamic_rows(context)


ROW_PRODUCERS: list[RowProducer] = [fp32_rows, simulation_rows, default_qconfig_rows, eager_static_rows,
                                    eager_qat_rows, eager_dynamic_rows]
