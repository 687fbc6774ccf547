"""ResNet-18's layer shapes at 224x224 (random weights) as a plain float model, static int8 in FX graph mode.

The same shapes as :mod:`benchmarks.bench_resnet`, written torchvision style:
no stubs, no FloatFunctional, the skip is ``relu(bn2(conv2(out)) + identity)``
with torchvision's in-place ``nn.ReLU`` modules, and the same seeds (the
same weights). Both frameworks trace it with ``prepare_fx`` and their ``x86``
default qconfig mapping, calibrate on the same random images as the eager
benchmark and ``convert_fx``. qcore's fbgemm backend fuses each
block's ``conv -> add -> relu`` into one ``ConvAddReLU2d`` (onednn's
``quantized::conv2d_add_relu``; in the three downsampling blocks the conv
fused is the 1x1 downsample, the first in graph order); torch.ao runs a
quantized conv, then a quantized ``add_relu``. Accuracy has no meaning with
random weights: the table gives the centred logit cosine to fp32's and the
top-1 agreement with fp32.
"""

from __future__ import annotations

import copy
from typing import Iterator, Optional

import torch
from torch import nn

import qcore

from benchmarks.bench_resnet import BATCHES, SIZE, _fold, settle_batchnorm, sizes_and_accuracy
from benchmarks.common import Context, quiet, torch_ao_engine
from benchmarks.harness import Row, Workload, workload_rows

NAME = "ResNet-18 224x224 FX (static, random weights)"


class BasicBlock(nn.Module):
    """torchvision's basic block: conv-bn-relu, conv-bn, ``+ identity``, relu (one in-place ReLU, called twice)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample: Optional[nn.Sequential] = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)

    def fuse_groups(self, prefix: str) -> list[list[str]]:
        """The (conv, bn) pairs to fold, as ``bench_resnet._fold`` takes them."""
        groups = [[f"{prefix}.conv1", f"{prefix}.bn1"], [f"{prefix}.conv2", f"{prefix}.bn2"]]
        if self.downsample is not None:
            groups.append([f"{prefix}.downsample.0", f"{prefix}.downsample.1"])
        return groups


class ResNet18(nn.Module):
    """ResNet-18's layer shapes as a plain float model (FX traces it; nothing to prepare by hand)."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        blocks = []
        cin = 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            blocks += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.avgpool(self.blocks(x))
        return self.fc(self.flatten(x))

    def fuse_groups(self) -> list[list[str]]:
        groups = [["conv1", "bn1"]]
        for i, block in enumerate(self.blocks):
            groups += block.fuse_groups(f"blocks.{i}")
        return groups


def build_model(seed: int = 0) -> ResNet18:
    """Random weights and BatchNorm statistics settled as in ``bench_resnet.build_model`` (same seeds)."""
    torch.manual_seed(seed)
    return settle_batchnorm(ResNet18(), seed)


def _calibrate(prepared: nn.Module, calibration: list[torch.Tensor]) -> None:
    with torch.inference_mode():
        for images in calibration:
            prepared(images)


def _qcore(model: ResNet18, example: tuple[torch.Tensor], calibration: list[torch.Tensor]) -> nn.Module:
    with qcore.backend("fbgemm"):
        prepared = qcore.fx.prepare_fx(copy.deepcopy(model).eval(), qcore.get_default_qconfig_mapping("x86"), example)
        _calibrate(prepared, calibration)
        return qcore.fx.convert_fx(prepared).eval()


def _torch_ao(model: ResNet18, example: tuple[torch.Tensor], calibration: list[torch.Tensor]) -> nn.Module:
    with quiet(), torch_ao_engine("x86"):
        from torch.ao.quantization import get_default_qconfig_mapping
        from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

        prepared = prepare_fx(copy.deepcopy(model).eval(), get_default_qconfig_mapping("x86"), example)
        _calibrate(prepared, calibration)
        return convert_fx(prepared).eval()


def count_fused(model: nn.Module) -> int:
    """How many of ``model``'s modules are quantized ``ConvAddReLU2d`` (a residual block's conv + add + relu)."""
    from qcore.nn.intrinsic.quantized import ConvAddReLU2d

    return sum(isinstance(m, ConvAddReLU2d) for m in model.modules())


def build(ctx: Context) -> Workload:
    float_model = build_model()
    g = torch.Generator().manual_seed(1)  # the same calibration, probe and timing images as bench_resnet
    n_calib = 2 if ctx.settings.quick else 8
    calibration = [torch.randn(2, 3, SIZE, SIZE, generator=g) for _ in range(n_calib // 2)]
    example = (calibration[0],)
    ctx.log(f"{NAME}: calibrating on {n_calib} random images")
    ours = _qcore(float_model, example, calibration)
    theirs = _torch_ao(float_model, example, calibration)
    fused = count_fused(ours)
    if "onednn" in torch.backends.quantized.supported_engines:
        assert fused > 0, "qcore's FX model has no ConvAddReLU2d although torch has onednn's conv2d_add_relu"
    fp32 = _fold(float_model)
    models = {"fp32": fp32, "fp32 A/A": copy.deepcopy(fp32), "qcore": ours, "torch.ao": theirs}
    sizes, accuracy = sizes_and_accuracy(models, g)
    ctx.note(f"{NAME}: plain float model through each framework's prepare_fx/convert_fx with its x86 default "
             f"qconfig mapping; fp32 baseline with BatchNorm folded into the convolutions; qcore's model has "
             f"{fused} ConvAddReLU2d (conv + residual add + relu in one onednn kernel), torch.ao's runs conv then "
             "add_relu; both pool the quantized tensor (average pooling shares its input's qparams)")
    inputs = {batch: torch.randn(batch, 3, SIZE, SIZE, generator=g) for batch in BATCHES}
    return Workload(NAME, models, sizes, {"qcore": accuracy}, lambda batch: (inputs[batch],), BATCHES)


def rows(ctx: Context) -> Iterator[Row]:
    return workload_rows(build(ctx), ctx.settings, quiet)
