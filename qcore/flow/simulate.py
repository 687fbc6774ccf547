"""A fake-quant simulation of static integer quantization for eager models.

This is a small, honest stand-in for the demo and for accuracy studies, not
the eager flow: it swaps no module for a quantized one and runs no integer
kernel. Every ``Conv1d/2d/3d`` and ``Linear`` (exact types) computes with its
weight rounded to the qconfig's weight grid, and its output (and the model's
first input) is rounded to the qconfig's activation grid, all in float math.
BatchNorm is *not* folded here: fold it into the convolutions first (for
example with ``torch.nn.utils.fusion.fuse_conv_bn_eval``) to simulate what an
int8 deployment runs. The real ``prepare``/``convert`` come with the eager flow.
"""

from __future__ import annotations

import copy
from typing import Any, Iterable, Optional

import torch
from torch import nn

from qcore import dtypes
from qcore.affine import fake_quantize_affine
from qcore.errors import ConfigError
from qcore.factory import as_factory

SIMULATED_TYPES: tuple[type, ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


class ObserveThenFakeQuantize(nn.Module):
    """Passes values through while its observer records them; after :meth:`freeze`, fake-quantizes them.

    A fake-quant module from the qconfig contributes its observer
    (``activation_post_process``); the rounding is always qcore's
    :func:`~qcore.affine.fake_quantize_affine` with the frozen qparams.
    """

    def __init__(self, quantizer: nn.Module, role: str) -> None:
        super().__init__()
        observer = getattr(quantizer, "activation_post_process", quantizer)
        described = f"the {role} observer {type(observer).__name__}"
        if not callable(getattr(observer, "calculate_qparams", None)):
            raise ConfigError(
                f"{described} computes no qparams; simulate_quantization needs a quantizing observer "
                "such as MinMaxObserver or HistogramObserver"
            )
        if getattr(observer, "is_dynamic", False):
            raise ConfigError(f"{described} is dynamic; simulate_quantization simulates static quantization only")
        dtype = dtypes.qdtype(getattr(observer, "dtype", dtypes.uint8))
        if dtype.is_float:
            raise ConfigError(f"{described} keeps {dtype.name}; simulate_quantization simulates integer dtypes only")
        scheme = dtypes.qscheme(getattr(observer, "qscheme", dtypes.per_tensor_affine))
        if scheme is dtypes.per_channel_affine_float_qparams:
            raise ConfigError(f"{described} uses {scheme.value} (embedding tables); use an affine or symmetric scheme")
        self.observer = observer
        self.role = role
        self.bits = dtype.bits
        self.axis: Optional[int] = _channel_axis(observer) if scheme.is_per_channel else None
        self.frozen = False
        self.quant_min = 0
        self.quant_max = 0
        self.register_buffer("scale", torch.tensor([1.0]))
        self.register_buffer("zero_point", torch.tensor([0], dtype=torch.int32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.frozen:
            self.observer(x.detach())
            return x
        return fake_quantize_affine(x, self.scale, self.zero_point, self.quant_min, self.quant_max, axis=self.axis)

    def freeze(self) -> None:
        """Turn the observer off and fake-quantize from now on with the qparams it computed."""
        scale, zero_point = self.observer.calculate_qparams()
        self.scale = scale.detach().to(torch.float32).clone()
        self.zero_point = zero_point.detach().to(torch.int32).clone()
        self.quant_min, self.quant_max = int(self.observer.quant_min), int(self.observer.quant_max)
        self.frozen = True

    def extra_repr(self) -> str:
        state = "frozen" if self.frozen else "observing"
        scope = "per tensor" if self.axis is None else f"per channel (axis {self.axis})"
        return f"role={self.role}, {state}, {scope}, range=({self.quant_min}, {self.quant_max})"


class SimulatedModule(nn.Module):
    """A Conv/Linear whose weight and output are fake-quantized; the float module stays inside, unchanged."""

    def __init__(self, module: nn.Module, weight_fake_quant: ObserveThenFakeQuantize,
                 output_fake_quant: ObserveThenFakeQuantize) -> None:
        super().__init__()
        self.module = module
        self.weight_fake_quant = weight_fake_quant
        self.output_fake_quant = output_fake_quant

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.weight_fake_quant.frozen:
            weight = self.weight_fake_quant(self.module.weight)
            y = torch.func.functional_call(self.module, {"weight": weight}, (x,))
        else:
            y = self.module(x)
        return self.output_fake_quant(y)

    def freeze(self) -> None:
        """Observe the weight once, then freeze the weight and output quantizers."""
        self.weight_fake_quant(self.module.weight)
        self.weight_fake_quant.freeze()
        self.output_fake_quant.freeze()


class SimulatedModel(nn.Module):
    """The simulated model: its first input is fake-quantized, then ``model`` runs."""

    def __init__(self, model: nn.Module, input_fake_quant: ObserveThenFakeQuantize) -> None:
        super().__init__()
        self.input_fake_quant = input_fake_quant
        self.model = model

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        return self.model(self.input_fake_quant(x), *args, **kwargs)


def simulate_quantization(model: nn.Module, qconfig: Any, calibration_data: Iterable[Any],
                          inplace: bool = False) -> SimulatedModel:
    """Fake-quantize ``model`` as static int quantization with ``qconfig``, calibrated on ``calibration_data``.

    Each batch of ``calibration_data`` is the model's input, or a tuple/list
    (such as ``(images, labels)``) whose first item is. Returns a
    :class:`SimulatedModel` in eval mode with its observers off. The caller's
    model is deep-copied first unless ``inplace=True``.
    """
    activation, weight = _factories(qconfig)
    if not inplace:
        model = copy.deepcopy(model)
    simulated = SimulatedModel(_swap(model, activation, weight), ObserveThenFakeQuantize(activation(), "input"))
    simulated.eval()
    batches = 0
    with torch.no_grad():
        for batch in calibration_data:
            simulated(batch[0] if isinstance(batch, (tuple, list)) else batch)
            batches += 1
        if batches == 0:
            raise ConfigError("calibration_data yielded no batches; pass at least one batch of representative inputs")
        simulated.input_fake_quant.freeze()
        for module in simulated.modules():
            if isinstance(module, SimulatedModule):
                module.freeze()
    return simulated


def _channel_axis(observer: nn.Module) -> int:
    axis = getattr(observer, "ch_axis", None)
    if axis is None:
        axis = getattr(getattr(observer, "spec", None), "ch_axis", 0)
    return int(axis)


def _factories(qconfig: Any) -> tuple[Any, Any]:
    if qconfig is None:
        raise ConfigError("simulate_quantization needs a qconfig, got None; pass e.g. qcore.default_qconfig")
    factories = []
    for role in ("activation", "weight"):
        value = getattr(qconfig, role, None)
        if value is None:
            raise ConfigError(
                f"the qconfig {qconfig!r} has no {role}; static quantization needs both an activation "
                "and a weight observer, e.g. QConfig(activation=MinMaxObserver, weight=PerChannelMinMaxObserver)"
            )
        factories.append(as_factory(value, f"{role} observer"))
    return factories[0], factories[1]


def _swap(model: nn.Module, activation: Any, weight: Any) -> nn.Module:
    def simulated(module: nn.Module) -> SimulatedModule:
        return SimulatedModule(module, ObserveThenFakeQuantize(weight(), "weight"),
                               ObserveThenFakeQuantize(activation(), "activation"))

    if type(model) in SIMULATED_TYPES:
        return simulated(model)
    targets = [name for name, module in model.named_modules() if type(module) in SIMULATED_TYPES]
    if not targets:
        raise ConfigError(
            f"{type(model).__name__} has no Conv1d/Conv2d/Conv3d/Linear module; there is nothing to simulate"
        )
    for name in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, simulated(getattr(parent, child)))
    return model
