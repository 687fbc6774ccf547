"""Run qcore's benchmarks: fp32, qcore (fbgemm kernels) and torch.ao, measured together.

    python -m benchmarks.run            # the full run (~2.5 minutes on 2 cores)
    python benchmarks/run.py --quick    # fewer, shorter rounds (~1-2 minutes)
    python -m benchmarks.run --only minilm,rnn --threads 1 --out table.md

Prints one markdown table (also written to ``--out``), the notes of each
workload and which of the issue's targets each row meets. The timing method
is in :mod:`benchmarks.harness`.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path
from typing import Callable, Iterable, Optional

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from benchmarks.common import Context
from benchmarks.harness import Row, Settings

WORKLOADS = {
    "digits": "benchmarks.bench_digits_cnn",
    "resnet": "benchmarks.bench_resnet",
    "resnet_fx": "benchmarks.bench_resnet_fx",
    "minilm": "benchmarks.bench_minilm",
    "rnn": "benchmarks.bench_rnn",
}


# --- the targets -----------------------------------------------------------------------------------------


def _parse_accuracy(text: str, key: str) -> Optional[float]:
    """A number after ``key`` in an accuracy cell ("cos mean 0.9925 min ..., top-1 NN 0.812")."""
    if key not in text:
        return None
    try:
        return float(text.split(key, 1)[1].split()[0].rstrip(",%"))
    except (IndexError, ValueError):
        return None


Check = tuple[str, str]  # (target, "met" / "within noise" / "MISSED")


def _latency(target: str, value: float, limit: float, noise: float) -> Check:
    """Met, or within noise: above the limit by less than the spread (half IQR) of the row's ratio over rounds."""
    if value <= limit:
        return target, "met"
    return target, "within noise" if value - noise <= limit else "MISSED"


def _plain(target: str, met: bool) -> Check:
    return target, "met" if met else "MISSED"


def targets(row: Row) -> list[Check]:
    """The issue's targets that apply to ``row`` and whether the row meets them."""
    checks: list[Check] = []
    if row.label != "recommended" and row.qcore_vs_ao is not None:
        checks.append(_latency("qcore/torch.ao <= 1.0", row.qcore_vs_ao, 1.0, row.vs_ao_spread))
    if row.workload.startswith("digits CNN"):
        if row.batch == 256:
            checks.append(_latency("int8/fp32 <= 0.45 at batch 256", row.qcore_vs_fp32, 0.45, row.vs_fp32_spread))
        if row.batch == 1:
            checks.append(_latency("int8/fp32 <= 0.75 at batch 1", row.qcore_vs_fp32, 0.75, row.vs_fp32_spread))
    if row.workload.startswith("MiniLM"):
        if row.label == "default" and row.batch == 32:
            checks.append(_latency("int8/fp32 <= 0.65 at batch 32", row.qcore_vs_fp32, 0.65, row.vs_fp32_spread))
        if row.label == "recommended" and row.batch == 32:
            mean_cos = _parse_accuracy(row.accuracy, "cos mean")
            top1 = _parse_accuracy(row.accuracy, "top-1 NN")
            checks.append(_plain("recommended: mean cosine >= 0.99", mean_cos is not None and mean_cos >= 0.99))
            checks.append(_plain("recommended: top-1 NN >= 0.90", top1 is not None and top1 >= 0.90))
            checks.append(_plain("recommended: size <= 0.30", row.qcore_size is not None and row.qcore_size <= 0.30))
    return checks


# --- running -----------------------------------------------------------------------------------------------------


def machine() -> str:
    capability = torch.backends.cpu.get_cpu_capability()
    isa_vars = ("FBGEMM_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS")
    limits = [f"{k}={os.environ[k]}" for k in isa_vars
              if os.environ.get(k)]
    isa = f"; ISA limited by {' '.join(limits)}" if limits else ""
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
            f"(ATen CPU capability {capability}{isa}), quantized engine {torch.backends.quantized.engine}")


def load() -> str:
    """The machine's 1-minute load average: other processes competing for the cores skew 2-thread rows most."""
    try:
        return f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    except OSError:
        return "load average unknown"


def run(names: Iterable[str], settings: Settings, cache_dir: Optional[Path],
        emit: Callable[[str], None] = print) -> tuple[list[Row], Context]:
    import importlib

    ctx = Context(settings, cache_dir)
    rows: list[Row] = []
    emit(Row.HEADER)
    emit(Row.RULE)
    for name in names:
        module = importlib.import_module(WORKLOADS[name])
        start = time.perf_counter()
        for row in module.rows(ctx):
            rows.append(row)
            emit(row.markdown())
        ctx.note(f"{module.NAME.format(cell='LSTM/GRU')}: measured in {time.perf_counter() - start:.0f} s")
    return rows, ctx


def summary(rows: list[Row]) -> list[str]:
    lines = []
    for row in rows:
        for target, mark in targets(row):
            vs_ao = "-" if row.qcore_vs_ao is None else f"{row.qcore_vs_ao:.2f} ±{row.vs_ao_spread:.2f}"
            lines.append(f"- {mark}: {row.workload}, {row.label}, batch {row.batch}, {row.n_threads} thread(s): "
                         f"{target} (qcore/fp32 {row.qcore_vs_fp32:.2f} ±{row.vs_fp32_spread:.2f}, qcore/torch.ao "
                         f"{vs_ao}, A/A {row.aa:.2f} ±{row.aa_spread:.2f})")
    return lines


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer and shorter rounds (~1-2 minutes)")
    parser.add_argument("--only", default=",".join(WORKLOADS), help=f"comma-separated subset of {', '.join(WORKLOADS)}")
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds per measurement")
    parser.add_argument("--cache-dir", type=Path, default=None, help="where trained weights are cached ($QCORE_CACHE_DIR)")
    parser.add_argument("--out", type=Path, default=None, help="also write the table, notes and targets here")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workload(s) {', '.join(unknown)}; choose from {', '.join(WORKLOADS)}")
    settings = Settings.for_quick() if args.quick else Settings()
    threads = tuple(int(t) for t in args.threads.split(","))
    settings = Settings(args.rounds or settings.rounds, settings.block_s, settings.warmup, threads, settings.quick)
    command = "python -m benchmarks.run " + " ".join(argv if argv is not None else sys.argv[1:])
    print(f"# {command.strip()}\n# {machine()}\n# {settings}\n", flush=True)
    start = time.perf_counter()
    load_at_start = load()
    lines: list[str] = []

    def emit(line: str) -> None:
        lines.append(line)
        print(line, flush=True)

    rows, ctx = run(names, settings, args.cache_dir, emit)
    total = time.perf_counter() - start
    tail = ["", "Notes:"] + [f"- {n}" for n in ctx.notes] + ["", "Targets:"] + summary(rows)
    tail.append(f"\nTotal {total:.0f} s; {load()} (start: {load_at_start}).")
    for line in tail:
        print(line)
    if args.out is not None:
        header = [f"Command: `{command.strip()}`", f"Machine: {machine()}", f"Settings: {settings}", ""]
        args.out.write_text("\n".join(header + lines + tail) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
