"""The digits CNN, static int8: eager fuse / prepare / calibrate / convert with qcore and with torch.ao.

Both start from the same trained weights (``qcore.demo``'s cached DigitsCNN)
and calibrate on the same 256 training images, each with its backend's
default qconfig (qcore: fbgemm, lowered to its kernels; torch.ao: x86). The
fp32 baseline has its BatchNorms folded into the convolutions, as a deployed
float model would.
"""

from __future__ import annotations

import copy
from typing import Iterator

import torch

import qcore
from qcore.demo.data import load_digits_split
from qcore.demo.eager_rows import quantize_static_cnn
from qcore.demo.model import fold_batchnorm
from qcore.demo.train import load_or_train

from benchmarks.common import Context, quiet, torch_ao_api, torch_ao_engine
from benchmarks.harness import Row, Workload, size_ratios, workload_rows

NAME = "digits CNN (static)"
BATCHES = (1, 32, 256)


def _accuracy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> tuple[float, torch.Tensor]:
    with torch.inference_mode(), quiet():
        predicted = torch.cat([model(images[i:i + 128]).argmax(1) for i in range(0, len(images), 128)])
    return 100.0 * (predicted == labels).float().mean().item(), predicted


def build(ctx: Context) -> Workload:
    data = load_digits_split()
    trained = load_or_train(data, cache_dir=ctx.cache_dir, quiet=True).model.eval()
    calibration = [data.train_images[i:i + 64] for i in range(0, 256, 64)]
    fp32 = fold_batchnorm(trained)
    with qcore.backend("fbgemm"):
        ours = quantize_static_cnn(trained, qcore.get_default_qconfig("fbgemm"), calibration)
    with quiet(), torch_ao_engine("x86"):
        import torch.ao.quantization as tq

        theirs = quantize_static_cnn(trained, tq.get_default_qconfig("x86"), calibration, api=torch_ao_api())
    models = {"fp32": fp32, "fp32 A/A": copy.deepcopy(fp32), "qcore": ours, "torch.ao": theirs}
    with quiet():
        sizes = size_ratios(models)
    acc, predictions = {}, {}
    for name in ("fp32", "qcore", "torch.ao"):
        acc[name], predictions[name] = _accuracy(models[name], data.test_images, data.test_labels)
    agree = 100.0 * (predictions["qcore"] == predictions["torch.ao"]).float().mean().item()
    accuracy = (f"test acc fp32 {acc['fp32']:.1f}%, qcore {acc['qcore']:.1f}%, torch.ao {acc['torch.ao']:.1f}%; "
                f"qcore/torch.ao agree {agree:.1f}%")
    ctx.note(f"{NAME}: {len(data.test_labels)} test images; fp32 baseline with BatchNorm folded; calibration 256 "
             "training images; qcore qconfig get_default_qconfig('fbgemm'), torch.ao get_default_qconfig('x86')")
    return Workload(NAME, models, sizes, {"qcore": accuracy}, lambda batch: (data.test_images[:batch],), BATCHES)


def rows(ctx: Context) -> Iterator[Row]:
    return workload_rows(build(ctx), ctx.settings, quiet)
