"""``qcore demo``: train (or load) a small CNN on real digits and compare fp32 with simulated int8.

The table's rows come from :data:`qcore.demo.rows.ROW_PRODUCERS`; later flows add theirs.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import attrs
import torch

from qcore.demo.data import load_digits_split
from qcore.demo.measure import num_threads
from qcore.demo.model import ModelConfig, fold_batchnorm
from qcore.demo.report import format_report
from qcore.demo.rows import ROW_PRODUCERS, DemoContext, Row
from qcore.demo.train import TrainConfig, TrainedModel, load_or_train
from qcore.errors import QcoreError

__all__ = ["DemoOptions", "DemoResult", "main", "run_demo"]


@attrs.frozen
class DemoOptions:
    """The command line's choices."""

    quiet: bool = False
    batch_size: int = 64
    use_cache: bool = True
    cache_dir: Optional[Path] = None
    rounds: int = 30
    calibration_batches: int = 4
    calibration_batch_size: int = 64


@attrs.frozen
class DemoResult:
    """What a demo run produced: the rows, the trained model's provenance, header lines and notes."""

    rows: tuple[Row, ...]
    trained: TrainedModel
    header: tuple[str, ...]
    notes: tuple[str, ...]
    seconds: float

    def report(self) -> str:
        return format_report(self.header, self.rows, self.notes)


def run_demo(options: DemoOptions = DemoOptions()) -> DemoResult:
    """Train or load the CNN, then run every row producer."""
    start = time.perf_counter()
    torch.manual_seed(0)
    data = load_digits_split()
    trained = load_or_train(data, ModelConfig(), TrainConfig(), cache_dir=options.cache_dir,
                            use_cache=options.use_cache, quiet=options.quiet)
    float_model = trained.model.eval()
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(len(data.train_images), generator=generator)
    size = options.calibration_batch_size
    calibration = [data.train_images[order[i * size:(i + 1) * size]] for i in range(options.calibration_batches)]
    context = DemoContext(data=data, float_model=float_model, folded_model=fold_batchnorm(float_model),
                          batch_size=options.batch_size, rounds=options.rounds,
                          calibration_batches=calibration, quiet=options.quiet,
                          cache_dir=options.cache_dir, use_cache=options.use_cache)
    with num_threads(1):
        rows = tuple(row for produce in ROW_PRODUCERS for row in produce(context))
    params = sum(p.numel() for p in float_model.parameters())
    if trained.from_cache:
        weights = f"weights: loaded from cache {trained.path}"
    elif trained.path is not None:
        weights = f"weights: trained in {trained.seconds:.1f} s, cached at {trained.path}"
    else:
        weights = f"weights: trained in {trained.seconds:.1f} s (cache off)"
    header = (
        f"qcore demo: scikit-learn digits, {len(data.train_images)} train / {len(data.test_images)} test "
        f"images (8x8); DigitsCNN, {params:,} parameters",
        weights,
        f"calibration: {sum(len(b) for b in calibration)} training images; "
        f"evaluation and latency batch: {options.batch_size}; latency rounds: {options.rounds}",
    )
    return DemoResult(rows, trained, header, tuple(context.notes), time.perf_counter() - start)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qcore demo",
        description="Train (or load) a small CNN on scikit-learn's digits and compare fp32 "
                    "with simulated int8 quantization: accuracy, size and latency.",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--batch", type=int, default=64, metavar="N",
                        help="batch size for evaluation and latency (default 64)")
    parser.add_argument("--no-cache", action="store_true", help="train even if cached weights exist, and cache nothing")
    parser.add_argument("--cache-dir", type=Path, default=None, metavar="DIR",
                        help="where trained weights are cached (default $QCORE_CACHE_DIR or ~/.cache/qcore)")
    parser.add_argument("--rounds", type=int, default=30, metavar="N",
                        help="latency rounds per row, each timing fp32 and the row's model (default 30)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``qcore demo``; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.batch < 1 or args.rounds < 1:
        print("qcore demo: error: --batch and --rounds must be at least 1", file=sys.stderr)
        return 2
    options = DemoOptions(quiet=args.quiet, batch_size=args.batch, use_cache=not args.no_cache,
                          cache_dir=args.cache_dir, rounds=args.rounds)
    try:
        result = run_demo(options)
    except QcoreError as exc:
        print(f"qcore demo: error: {exc}", file=sys.stderr)
        return 1
    print(result.report())
    return 0
