"""Formatting the demo's rows as a plain-text table with footnotes."""

from __future__ import annotations

from typing import Sequence

from qcore.demo.rows import Row

HEADERS = ("mode", "backend", "observers (activation / weight)", "accuracy (%)", "size (MB)",
           "size ratio", "latency (ms)", "latency ratio")

FOOTNOTES = (
    "size: simulation rows count int8 weights + fp32 biases + qparams; fp32 rows the fp32 state_dict.",
    "latency: median ms per batch over rounds interleaved with fp32, one thread; ratios are against fp32.",
    "* simulation runs float math with int8 rounding, so its latency is not int8 kernel latency; "
    "eager rows on a hardware backend (fbgemm) run its int8 kernels.",
)


def cells(row: Row) -> tuple[str, ...]:
    observers = "-" if row.activation == "-" else f"{row.activation} / {row.weight}"
    return (row.mode, row.backend, observers, f"{row.accuracy:.2f}", f"{row.size_bytes / 1e6:.3f}",
            f"{row.size_ratio:.2f}", f"{row.latency_ms:.3f}", f"{row.latency_ratio:.2f}")


def format_table(rows: Sequence[Row]) -> str:
    """Columns padded to their widest cell; numbers right-aligned."""
    table = [HEADERS] + [cells(row) for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(HEADERS))]
    numeric = [False, False, False, True, True, True, True, True]

    def render(line: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if n else c.ljust(w) for c, w, n in zip(line, widths, numeric)).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([render(HEADERS), rule] + [render(line) for line in table[1:]])


def format_report(header: Sequence[str], rows: Sequence[Row], notes: Sequence[str] = ()) -> str:
    """Header lines, the table, the footnotes, then any notes from the row producers."""
    parts = list(header) + ["", format_table(rows), ""] + list(FOOTNOTES)
    parts += [f"note: {note}" for note in notes]
    return "\n".join(parts)
