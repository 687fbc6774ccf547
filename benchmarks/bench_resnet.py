"""A ResNet-18-shaped CNN at 224x224 (random weights), static int8 with qcore and with torch.ao.

Written in plain ``torch.nn`` (no torchvision): stem conv 7x7/2 + max-pool,
four stages of two basic blocks (64, 128, 256, 512 channels), skip
connections through ``FloatFunctional.add_relu``, average pool, 1000-way
linear. The weights are random; BatchNorm statistics come from a few
training-mode passes over random images so activations keep a sane scale.
Both flows fuse conv-bn(-relu), calibrate on the same random images and use
their backend's default qconfig. Accuracy has no meaning here: the table
gives the cosine of the logits to fp32's and the top-1 agreement with fp32.
"""

from __future__ import annotations

import copy
from typing import Callable, Iterator, Optional

import torch
from torch import nn

import qcore

from benchmarks.common import Context, quiet, torch_ao_api, torch_ao_engine
from benchmarks.harness import Row, Workload, size_ratios, workload_rows

NAME = "ResNet-18 224x224 (static, random weights)"
BATCHES = (1, 8)
SIZE = 224


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, functional: Callable[[], nn.Module]) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample: Optional[nn.Sequential] = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.skip = functional()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu1(self.bn1(self.conv1(x)))
        return self.skip.add_relu(self.bn2(self.conv2(out)), identity)

    def fuse_groups(self, prefix: str) -> list[list[str]]:
        groups = [[f"{prefix}.conv1", f"{prefix}.bn1", f"{prefix}.relu1"], [f"{prefix}.conv2", f"{prefix}.bn2"]]
        if self.downsample is not None:
            groups.append([f"{prefix}.downsample.0", f"{prefix}.downsample.1"])
        return groups


class ResNet18(nn.Module):
    """ResNet-18's layer shapes between a quant and a dequant stub (identities until prepare)."""

    def __init__(self, quant_stub: Callable[[], nn.Module], dequant_stub: Callable[[], nn.Module],
                 functional: Callable[[], nn.Module], num_classes: int = 1000) -> None:
        super().__init__()
        self.quant = quant_stub()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        blocks = []
        cin = 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            blocks += [BasicBlock(cin, cout, stride, functional), BasicBlock(cout, cout, 1, functional)]
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.avgpool = nn.AdaptiveAvgPool2d(1)  # pools the quantized tensor in both frameworks
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(512, num_classes)
        self.dequant = dequant_stub()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(self.quant(x)))))
        x = self.avgpool(self.blocks(x))
        return self.dequant(self.fc(self.flatten(x)))

    def fuse_groups(self) -> list[list[str]]:
        groups = [["conv1", "bn1", "relu"]]
        for i, block in enumerate(self.blocks):
            groups += block.fuse_groups(f"blocks.{i}")
        return groups


def build_model(api: object, seed: int = 0) -> ResNet18:
    """The model with ``api``'s stubs and FloatFunctional, random weights and settled BatchNorm statistics."""
    functional = api.float_functional  # type: ignore[attr-defined]
    torch.manual_seed(seed)
    model = ResNet18(api.quant_stub, api.dequant_stub, functional)  # type: ignore[attr-defined]
    return settle_batchnorm(model, seed)


def settle_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """``model`` in eval mode after two training-mode passes over random images (sane BatchNorm statistics)."""
    g = torch.Generator().manual_seed(seed)
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(4, 3, SIZE, SIZE, generator=g))
    return model.eval()


class _API:
    """Stubs, FloatFunctional and the eager functions of one framework."""

    def __init__(self, eager: object, float_functional: Callable[[], nn.Module]) -> None:
        self.eager = eager
        self.quant_stub = eager.quant_stub  # type: ignore[attr-defined]
        self.dequant_stub = eager.dequant_stub  # type: ignore[attr-defined]
        self.float_functional = float_functional


def _quantize(model: ResNet18, api: _API, qconfig: object, calibration: list[torch.Tensor]) -> nn.Module:
    eager = api.eager
    fused = eager.fuse_modules(copy.deepcopy(model).eval(), model.fuse_groups())  # type: ignore[attr-defined]
    fused.qconfig = qconfig
    prepared = eager.prepare(fused)  # type: ignore[attr-defined]
    with torch.inference_mode():
        for images in calibration:
            prepared(images)
    return eager.convert(prepared).eval()  # type: ignore[attr-defined]


def _agreement(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """Mean cosine of the logits to fp32's, each centred over the batch (random weights give every image a
    large common logit vector, which would make any two models look alike), and top-1 agreement."""
    a_c, b_c = a - a.mean(0, keepdim=True), b - b.mean(0, keepdim=True)
    cosine = torch.nn.functional.cosine_similarity(a_c, b_c, dim=1).mean().item()
    return cosine, 100.0 * (a.argmax(1) == b.argmax(1)).float().mean().item()


def sizes_and_accuracy(models: dict[str, nn.Module], g: torch.Generator) -> tuple[dict[str, float], str]:
    """Serialized size ratios of ``models``, and qcore's and torch.ao's agreement with fp32 on 8 random images."""
    with quiet():
        sizes = size_ratios(models)
        probe = torch.randn(8, 3, SIZE, SIZE, generator=g)
        with torch.inference_mode():
            outputs = {name: models[name](probe) for name in ("fp32", "qcore", "torch.ao")}
    cos_q, top_q = _agreement(outputs["qcore"], outputs["fp32"])
    cos_t, top_t = _agreement(outputs["torch.ao"], outputs["fp32"])
    accuracy = (f"centred logit cosine to fp32: qcore {cos_q:.3f}, torch.ao {cos_t:.3f}; top-1 = fp32's: "
                f"qcore {top_q:.0f}%, torch.ao {top_t:.0f}% (8 random images)")
    return sizes, accuracy


def build(ctx: Context) -> Workload:
    from qcore.demo.eager_rows import EagerAPI

    with quiet():
        import torch.ao.nn.quantized as nnq
        import torch.ao.quantization as tq

    ours_api = _API(EagerAPI.qcore(), qcore.nn.quantized.FloatFunctional)
    theirs_api = _API(torch_ao_api(), nnq.FloatFunctional)
    fp32_stubbed = build_model(ours_api)
    theirs_float = build_model(theirs_api)
    theirs_float.load_state_dict(fp32_stubbed.state_dict())
    g = torch.Generator().manual_seed(1)
    n_calib = 2 if ctx.settings.quick else 8
    calibration = [torch.randn(2, 3, SIZE, SIZE, generator=g) for _ in range(n_calib // 2)]
    ctx.log(f"{NAME}: calibrating on {n_calib} random images")
    with qcore.backend("fbgemm"):
        ours = _quantize(fp32_stubbed, ours_api, qcore.get_default_qconfig("fbgemm"), calibration)
    with quiet(), torch_ao_engine("x86"):
        theirs = _quantize(theirs_float, theirs_api, tq.get_default_qconfig("x86"), calibration)
    fp32 = _fold(fp32_stubbed)
    models = {"fp32": fp32, "fp32 A/A": copy.deepcopy(fp32), "qcore": ours, "torch.ao": theirs}
    sizes, accuracy = sizes_and_accuracy(models, g)
    ctx.note(f"{NAME}: fp32 baseline with BatchNorm folded into the convolutions; qcore and torch.ao pool the "
             "quantized tensor")
    inputs = {batch: torch.randn(batch, 3, SIZE, SIZE, generator=g) for batch in BATCHES}
    return Workload(NAME, models, sizes, {"qcore": accuracy}, lambda batch: (inputs[batch],), BATCHES)


def rows(ctx: Context) -> Iterator[Row]:
    return workload_rows(build(ctx), ctx.settings, quiet)


def _fold(model: ResNet18) -> nn.Module:
    """A float copy with every conv-bn folded (the fp32 a deployment would run)."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = copy.deepcopy(model).eval()
    for group in model.fuse_groups():
        conv_name, bn_name = group[0], group[1]
        conv, bn = folded.get_submodule(conv_name), folded.get_submodule(bn_name)
        parent_c, _, attr_c = conv_name.rpartition(".")
        parent_b, _, attr_b = bn_name.rpartition(".")
        setattr(folded.get_submodule(parent_c) if parent_c else folded, attr_c, fuse_conv_bn_eval(conv, bn))
        setattr(folded.get_submodule(parent_b) if parent_b else folded, attr_b, nn.Identity())
    return folded
