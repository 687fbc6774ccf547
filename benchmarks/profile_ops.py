"""Where the time goes: torch.profiler over one benchmark workload, qcore's model beside torch.ao's.

    python -m benchmarks.profile_ops digits --batch 256 --threads 1
    python -m benchmarks.profile_ops minilm --batch 32 --models "qcore recommended,torch.ao"

For each model: milliseconds per call, the operators with the most self CPU
time (per call), and the time outside any operator (Python and module
overhead: wall time minus the operators' self time).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path
from typing import Optional

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks.common import Context, quiet
from benchmarks.harness import Settings, threads
from benchmarks.run import WORKLOADS


def profile_model(name: str, model: torch.nn.Module, args: tuple, calls: int, top: int) -> None:
    with torch.inference_mode(), quiet():
        for _ in range(3):
            model(*args)
        start = time.perf_counter()
        for _ in range(calls):
            model(*args)
        wall_ms = (time.perf_counter() - start) * 1000 / calls
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(calls):
                model(*args)
    events = prof.key_averages()
    ops_ms = sum(e.self_cpu_time_total for e in events) / 1000 / calls
    print(f"\n== {name}: {wall_ms:.3f} ms per call (unprofiled); operators' self time {ops_ms:.3f} ms per call "
          "under the profiler")
    print(f"   {'operator':<52} {'self ms/call':>12} {'calls/call':>10}")
    for e in sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]:
        print(f"   {e.key[:52]:<52} {e.self_cpu_time_total / 1000 / calls:>12.4f} {e.count / calls:>10.1f}")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workload", choices=list(WORKLOADS))
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--models", default="qcore,torch.ao", help="comma-separated model names of the workload")
    parser.add_argument("--cell", default="LSTM", help="rnn workload: LSTM or GRU")
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args(argv)
    module = importlib.import_module(WORKLOADS[args.workload])
    ctx = Context(Settings.for_quick())
    workload = module.build(ctx, args.cell) if args.workload == "rnn" else module.build(ctx)
    inputs = workload.inputs(args.batch)
    with threads(args.threads):
        for name in args.models.split(","):
            profile_model(name.strip(), workload.models[name.strip()], inputs, args.calls, args.top)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
