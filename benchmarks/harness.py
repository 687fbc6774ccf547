"""Timing, sizes and rows shared by the benchmarks (these are measurements, not tests).

Latency: every contender (fp32, an identical fp32 copy for the A/A row,
qcore, torch.ao, ...) is timed in the same rounds, interleaved, in an order
rotated each round so that none always runs first. A round times a block of
calls per contender (enough calls for the fp32 block to last ``block_s``).
Ratios are formed within a round (qcore / fp32 of the same round) and the
medians over rounds are reported, so slow drifts of a shared machine cancel.
The A/A ratio (fp32 copy / fp32) shows how large that noise still is.
"""

from __future__ import annotations

import copy
import io
import math
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional, Sequence

import torch
from torch import nn

from qcore.demo.measure import num_threads as threads  # run torch on n intra-op threads inside the block

__all__ = [
    "Settings", "Timing", "Row", "Workload", "threads", "serialized_bytes", "size_ratios", "time_contenders", "spread",
    "fmt_ratio", "workload_rows",
]


@dataclass(frozen=True)
class Settings:
    """How long to measure: rounds, the minimum fp32 block time, the thread counts."""

    rounds: int = 15
    block_s: float = 0.08
    warmup: int = 3
    threads: tuple[int, ...] = (1, 2)
    quick: bool = False

    @classmethod
    def for_quick(cls) -> "Settings":
        return cls(rounds=5, block_s=0.015, warmup=1, quick=True)


def serialized_bytes(model: nn.Module) -> int:
    """Bytes of ``torch.save(model.state_dict())``: what the model takes on disk."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def size_ratios(models: dict[str, nn.Module], baseline: str = "fp32") -> dict[str, float]:
    """Serialized size of each model over the baseline's."""
    base = serialized_bytes(models[baseline])
    return {name: serialized_bytes(m) / base for name, m in models.items()}


@dataclass
class Timing:
    """Per-call seconds of each contender in each round (same round index = measured together)."""

    seconds: dict[str, list[float]]

    def median_ms(self, name: str) -> float:
        return 1000 * statistics.median(self.seconds[name])

    def ratios(self, name: str, baseline: str) -> list[float]:
        return [a / b for a, b in zip(self.seconds[name], self.seconds[baseline])]

    def ratio(self, name: str, baseline: str) -> float:
        """Median over rounds of the within-round ratio ``name / baseline``."""
        return statistics.median(self.ratios(name, baseline))


def spread(values: Sequence[float]) -> float:
    """Half the interquartile range: how far a typical round strays from the median."""
    if len(values) < 4:
        return (max(values) - min(values)) / 2
    q = statistics.quantiles(values, n=4)
    return (q[2] - q[0]) / 2


def time_contenders(calls: dict[str, Callable[[], Any]], settings: Settings, n_threads: int,
                    baseline: str = "fp32") -> Timing:
    """Time every ``calls[name]()`` (one inference each) in interleaved rounds on ``n_threads`` threads."""
    names = list(calls)
    with threads(n_threads), torch.inference_mode():
        for _ in range(settings.warmup):
            for name in names:
                calls[name]()
        start = time.perf_counter()
        calls[baseline]()
        one = max(time.perf_counter() - start, 1e-6)
        per_block = max(1, math.ceil(settings.block_s / one))
        seconds: dict[str, list[float]] = {name: [] for name in names}
        for r in range(settings.rounds):
            order = names[r % len(names):] + names[: r % len(names)]
            for name in order:
                call = calls[name]
                start = time.perf_counter()
                for _ in range(per_block):
                    call()
                seconds[name].append((time.perf_counter() - start) / per_block)
    return Timing(seconds)


@dataclass
class Workload:
    """Built models of one benchmark: timed contenders, their size ratios, accuracy text, inputs per batch."""

    name: str
    models: dict[str, nn.Module]
    sizes: dict[str, float]
    accuracy: dict[str, str]
    inputs: Callable[[int], tuple[Any, ...]]
    batches: tuple[int, ...]
    contenders: tuple[tuple[str, str], ...] = (("qcore", "qcore"),)  # (model name, label in the table)

    def calls(self, batch: int) -> dict[str, Callable[[], Any]]:
        """One inference per contender, each on a fresh copy of its model (see :func:`workload_rows`)."""
        args = self.inputs(batch)
        return {name: (lambda m=copy.deepcopy(m): m(*args)) for name, m in self.models.items()}


def fmt_ratio(value: Optional[float], digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


@dataclass
class Row:
    """One line of the results table: a workload at one batch size and thread count."""

    workload: str
    batch: int
    n_threads: int
    fp32_ms: float
    qcore_ms: float
    ao_ms: Optional[float]
    qcore_vs_fp32: float
    ao_vs_fp32: Optional[float]
    qcore_vs_ao: Optional[float]
    aa: float
    aa_spread: float
    qcore_size: Optional[float] = None
    ao_size: Optional[float] = None
    accuracy: str = ""
    contender: str = "qcore"
    label: str = "qcore"
    vs_fp32_spread: float = 0.0
    vs_ao_spread: float = 0.0

    @classmethod
    def from_timing(cls, workload: str, batch: int, n_threads: int, timing: Timing, contender: str = "qcore",
                    ao: Optional[str] = "torch.ao", **extra: Any) -> "Row":
        have_ao = ao is not None and ao in timing.seconds
        return cls(
            workload=workload, batch=batch, n_threads=n_threads,
            fp32_ms=timing.median_ms("fp32"), qcore_ms=timing.median_ms(contender),
            ao_ms=timing.median_ms(ao) if have_ao else None,
            qcore_vs_fp32=timing.ratio(contender, "fp32"),
            ao_vs_fp32=timing.ratio(ao, "fp32") if have_ao else None,
            qcore_vs_ao=timing.ratio(contender, ao) if have_ao else None,
            aa=timing.ratio("fp32 A/A", "fp32"), aa_spread=spread(timing.ratios("fp32 A/A", "fp32")),
            contender=contender, vs_fp32_spread=spread(timing.ratios(contender, "fp32")),
            vs_ao_spread=spread(timing.ratios(contender, ao)) if have_ao else 0.0, **extra,
        )

    HEADER = ("| workload | qcore config | batch | threads | fp32 ms | qcore ms | torch.ao ms | qcore/fp32 | "
              "torch.ao/fp32 | qcore/torch.ao | A/A (±) | size qcore/fp32 | size torch.ao/fp32 | accuracy |")
    RULE = "|" + "---|" * 14

    def markdown(self) -> str:
        ao_ms = "-" if self.ao_ms is None else f"{self.ao_ms:.3g}"
        return (
            f"| {self.workload} | {self.label} | {self.batch} | {self.n_threads} | {self.fp32_ms:.3g} | "
            f"{self.qcore_ms:.3g} | {ao_ms} | {fmt_ratio(self.qcore_vs_fp32)} | {fmt_ratio(self.ao_vs_fp32)} | "
            f"{fmt_ratio(self.qcore_vs_ao)} | {self.aa:.2f} (±{self.aa_spread:.2f}) | {fmt_ratio(self.qcore_size, 3)} | "
            f"{fmt_ratio(self.ao_size, 3)} | {self.accuracy} |"
        )


def workload_rows(workload: Workload, settings: Settings, wrap: Callable[[], Any]) -> Iterator[Row]:
    """Time ``workload`` at each thread count and batch; one row per qcore contender. ``wrap()`` is a context
    manager around each measurement (silencing torch.ao's warnings).

    Every row times fresh copies of the models, first called with the row's input on the row's threads:
    torch's onednn convolutions (torch.ao's ``x86`` engine) build their primitive for the first input shape
    and thread count a packed weight sees and rebuild it on every other call, so a model first run at
    another batch (the accuracy pass) would be timed on that slow path.
    """
    for n_threads in settings.threads:
        for batch in workload.batches:
            calls = workload.calls(batch)
            with wrap():
                timing = time_contenders(calls, settings, n_threads)
            for name, label in workload.contenders:
                yield Row.from_timing(workload.name, batch, n_threads, timing, contender=name,
                                      qcore_size=workload.sizes[name], ao_size=workload.sizes.get("torch.ao"),
                                      accuracy=workload.accuracy.get(name, ""), label=label)
