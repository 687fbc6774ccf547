"""End-task accuracy of the activation observers: MinMax, Histogram, Percentile (99.99), MSE and Entropy.

    python -m benchmarks.bench_calibration            # full run
    python -m benchmarks.bench_calibration --quick    # fewer MiniLM sentences, one digits calibration size

Two workloads (issue 6, item 4), each with 8-bit (0..255) and 4-bit (0..15) affine activations:

- **digits CNN, static PTQ.** qcore's eager flow (``quantize_static_cnn``: stubs, fuse conv-bn-relu and
  linear-relu, prepare, calibrate on training images, convert) on the ``reference`` backend, whose integer
  modules clamp to the observer's ``quant_min``/``quant_max``. Activation observer under test, weights with
  fbgemm's default per-channel symmetric int8 observer. Test accuracy (360 images) against the fp32 model.
- **MiniLM-L6 embeddings, activation fake-quant.** Every ``nn.Linear`` output of the BERT encoder (36 of them)
  is observed on the real tokens of the calibration half of ``benchmarks/sentences.txt`` and then rounded with
  the observer's qparams (``qcore.affine.fake_quantize_affine``) while the other half is embedded; weights stay
  fp32, so only the activation observer differs. Mean (and minimum) cosine of the embeddings to fp32's.

Prints one markdown table; not collected by pytest.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
import torch.nn.functional as F
from torch import nn

import qcore
from qcore.affine import fake_quantize_affine

from benchmarks.common import quiet

OBSERVERS: dict[str, Callable[..., Any]] = {
    "MinMax": lambda **kw: qcore.MinMaxObserver.with_args(**kw),
    "Histogram": lambda **kw: qcore.HistogramObserver.with_args(**kw),
    "Percentile 99.99": lambda **kw: _extra("percentile").with_args(percentile=99.99, **kw),
    "MSE": lambda **kw: _extra("mse").with_args(**kw),
    "Entropy": lambda **kw: _extra("entropy").with_args(**kw),
}
BITS = {8: dict(quant_min=0, quant_max=255), 4: dict(quant_min=0, quant_max=15)}


def _extra(name: str) -> Any:
    from qcore_observers_extra.plugin import observers

    return observers()[name]


# --- digits CNN, static PTQ --------------------------------------------------------------------


def _accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.inference_mode(), quiet():
        predicted = torch.cat([model(images[i:i + 128]).argmax(1) for i in range(0, len(images), 128)])
    return 100.0 * (predicted == labels).float().mean().item()


def digits(calibration_sizes: tuple[int, ...]) -> tuple[dict[str, dict[str, str]], str]:
    """Test accuracy per (bits, calibration size) column and observer; and the fp32 accuracy note."""
    from qcore.demo.data import load_digits_split
    from qcore.demo.eager_rows import quantize_static_cnn
    from qcore.demo.model import fold_batchnorm
    from qcore.demo.train import load_or_train

    data = load_digits_split()
    trained = load_or_train(data, quiet=True).model.eval()
    fp32 = _accuracy(fold_batchnorm(trained), data.test_images, data.test_labels)
    columns: dict[str, dict[str, str]] = {}
    for bits, qrange in BITS.items():
        for size in calibration_sizes:
            calibration = [data.train_images[i:i + 64] for i in range(0, size, 64)]
            column = columns.setdefault(f"digits CNN acc %, {bits}-bit act, calib {size}", {})
            for name, make in OBSERVERS.items():
                qconfig = qcore.QConfig(activation=make(**qrange), weight=qcore.default_per_channel_weight_observer)
                with qcore.backend("reference"):
                    model = quantize_static_cnn(trained, qconfig, calibration)
                column[name] = f"{_accuracy(model, data.test_images, data.test_labels):.1f}"
    return columns, f"digits CNN fp32 (BatchNorm folded) test accuracy {fp32:.1f}% on {len(data.test_labels)} images"


# --- MiniLM-L6, fake-quantized Linear outputs ----------------------------------------------------


class LinearOutputQuant:
    """Forward hooks on every nn.Linear: observe the real tokens' outputs, then fake-quantize with the qparams."""

    def __init__(self, model: nn.Module, observer: Callable[[], nn.Module]) -> None:
        self.mask: Optional[torch.Tensor] = None
        self.observers: dict[str, nn.Module] = {}
        self.qparams: dict[str, tuple[torch.Tensor, torch.Tensor, int, int]] = {}
        self.handles = []
        for name, module in model.named_modules():
            if type(module) is nn.Linear:
                self.observers[name] = observer()
                self.handles.append(module.register_forward_hook(self._hook(name)))

    def _hook(self, name: str) -> Callable[..., Any]:
        def hook(module: nn.Module, args: Any, output: torch.Tensor) -> Optional[torch.Tensor]:
            if name in self.qparams:
                scale, zero_point, qmin, qmax = self.qparams[name]
                return fake_quantize_affine(output, scale, zero_point, qmin, qmax)
            self.observers[name](output[self.mask] if self.mask is not None else output)
            return None

        return hook

    def freeze(self) -> None:
        for name, obs in self.observers.items():
            scale, zero_point = obs.calculate_qparams()
            self.qparams[name] = (scale, zero_point, obs.quant_min, obs.quant_max)

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def minilm(n_sentences: int) -> tuple[dict[str, dict[str, str]], str]:
    from benchmarks.bench_minilm import SENTENCES, SentenceEncoder, load_minilm

    bert, tokenizer = load_minilm()
    encoder = SentenceEncoder(bert).eval()
    sentences = [s for s in SENTENCES.read_text().splitlines() if s.strip()][:n_sentences]
    half = len(sentences) // 2
    calib = [dict(tokenizer(sentences[i:i + 16], padding=True, return_tensors="pt")) for i in range(0, half, 16)]
    evaluation = dict(tokenizer(sentences[half:], padding=True, return_tensors="pt"))

    def embed(batch: dict[str, torch.Tensor], hooks: Optional[LinearOutputQuant] = None) -> torch.Tensor:
        if hooks is not None:
            hooks.mask = batch["attention_mask"].bool()
        with torch.inference_mode():
            return encoder(batch["input_ids"], batch["attention_mask"])

    reference = embed(evaluation)
    columns: dict[str, dict[str, str]] = {}
    for bits, qrange in BITS.items():
        column = columns.setdefault(f"MiniLM cos mean (min), {bits}-bit act", {})
        for name, make in OBSERVERS.items():
            hooks = LinearOutputQuant(encoder, make(**qrange))
            try:
                for batch in calib:
                    embed(batch, hooks)
                hooks.freeze()
                cos = (embed(evaluation, hooks) * reference).sum(1)
            finally:
                hooks.remove()
            column[name] = f"{cos.mean():.4f} ({cos.min():.4f})"
    note = (f"MiniLM: {len(hooks.observers)} Linear outputs fake-quantized (weights fp32); calibrated on "
            f"sentences 1-{half}, evaluated on {half + 1}-{len(sentences)} of benchmarks/sentences.txt")
    return columns, note


# --- table ----------------------------------------------------------------------------------------


def table(columns: dict[str, dict[str, str]]) -> list[str]:
    names = list(columns)
    lines = ["| observer | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for observer in OBSERVERS:
        lines.append(f"| {observer} | " + " | ".join(columns[n][observer] for n in names) + " |")
    return lines


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="32 MiniLM sentences, one digits calibration size")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    start = time.perf_counter()
    columns, notes = {}, []
    for part, result in (("digits", lambda: digits((256,) if args.quick else (64, 256))),
                         ("minilm", lambda: minilm(32 if args.quick else 64))):
        t0 = time.perf_counter()
        cols, note = result()
        columns.update(cols)
        notes.append(f"{note} ({time.perf_counter() - t0:.0f} s)")
    from benchmarks.run import machine

    command = "python -m benchmarks.bench_calibration " + " ".join(argv if argv is not None else sys.argv[1:])
    print(f"Command: `{command.strip()}`")
    print(f"Date: {datetime.date.today().isoformat()}; machine: {machine()}; {args.threads} thread(s); "
          f"total {time.perf_counter() - start:.0f} s\n")
    print("\n".join(table(columns)))
    print()
    print("\n".join(f"- {n}" for n in notes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
