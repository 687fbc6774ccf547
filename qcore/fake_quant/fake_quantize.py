"""FakeQuantize: observe a tensor and round it onto the integer grid, differentiably, during training."""

from __future__ import annotations

from typing import Any, Optional

import torch

from qcore import dtypes
from qcore.affine import fake_quantize_affine
from qcore.dtypes import QScheme
from qcore.errors import ConfigError
from qcore.fake_quant.base import FakeQuantizeBase
from qcore.fake_quant.validation import build_observer, check_quant_range, declared_dtype, observer_factory
from qcore.observers import MovingAverageMinMaxObserver


class FakeQuantize(FakeQuantizeBase):
    """Simulates quantize-then-dequantize in training: ``(clamp(round(x/s + z), qmin, qmax) - z) * s``.

    The observer (``activation_post_process``) tracks the input's range and
    yields ``scale``/``zero_point``; the gradient is straight-through inside the
    clamping range and zero outside it, as in torch.ao.
    """

    scale: torch.Tensor
    zero_point: torch.Tensor

    def __init__(
        self,
        observer: Any = MovingAverageMinMaxObserver,
        quant_min: Optional[int] = None,
        quant_max: Optional[int] = None,
        is_dynamic: bool = False,
        **observer_kwargs: Any,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        factory = observer_factory(observer, owner)
        if quant_min is not None or quant_max is not None:
            check_quant_range(owner, quant_min, quant_max, declared_dtype(factory, observer_kwargs))
            observer_kwargs.update(quant_min=quant_min, quant_max=quant_max)
        observer_kwargs["is_dynamic"] = is_dynamic
        self.activation_post_process = build_observer(factory, observer_kwargs, owner)
        post = self.activation_post_process
        # Kept for torch.ao compatibility; the observer holds the effective range.
        self.quant_min: int = post.quant_min
        self.quant_max: int = post.quant_max
        self.is_dynamic: bool = bool(getattr(post, "is_dynamic", is_dynamic))
        self.dtype = post.dtype
        self.qscheme: QScheme = dtypes.qscheme(post.qscheme)
        self.is_per_channel: bool = self.qscheme.is_per_channel
        if self.is_per_channel and getattr(post, "ch_axis", None) is None:
            raise ConfigError(
                f"{owner}: qscheme {self.qscheme.value} is per channel but {type(post).__name__} has no ch_axis; "
                "use a per-channel observer such as MovingAveragePerChannelMinMaxObserver"
            )
        self.ch_axis: int = int(post.ch_axis) if self.is_per_channel else -1
        float_qparams = self.qscheme is QScheme.PER_CHANNEL_AFFINE_FLOAT_QPARAMS
        self.register_buffer("scale", torch.tensor([1.0], dtype=torch.float))
        self.register_buffer("zero_point", torch.tensor([0], dtype=torch.float if float_qparams else torch.int))

    def calculate_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        return self.activation_post_process.calculate_qparams()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observer_enabled[0] == 1:
            self.activation_post_process(x.detach())
            scale, zero_point = self.calculate_qparams()
            self._store_qparams(scale, zero_point)
        if self.fake_quant_enabled[0] == 1:
            x = fake_quantize_affine(
                x,
                self.scale,
                self.zero_point,
                self.activation_post_process.quant_min,
                self.activation_post_process.quant_max,
                axis=self.ch_axis if self.is_per_channel else None,
            )
        return x

    def _store_qparams(self, scale: torch.Tensor, zero_point: torch.Tensor) -> None:
        scale = scale.to(self.scale.device)
        zero_point = zero_point.to(self.zero_point.device)
        with torch.no_grad():
            if self.scale.shape != scale.shape:
                self.scale.resize_(scale.shape)
                self.zero_point.resize_(zero_point.shape)
            self.scale.copy_(scale)
            self.zero_point.copy_(zero_point)

    def extra_repr(self) -> str:
        post = self.activation_post_process
        return (
            f"fake_quant_enabled={self.fake_quant_enabled}, observer_enabled={self.observer_enabled}, "
            f"quant_min={post.quant_min}, quant_max={post.quant_max}, "
            f"dtype={self.dtype}, qscheme={self.qscheme}, ch_axis={self.ch_axis}, "
            f"scale={self.scale}, zero_point={self.zero_point}"
        )

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        # scale/zero_point are [1] until the first observation; a saved per-channel
        # module has [C]. Resize to what is loaded so the default loader can copy.
        with torch.no_grad():
            for name in ("scale", "zero_point"):
                value = state_dict.get(prefix + name)
                if isinstance(value, torch.Tensor):
                    getattr(self, name).resize_(value.shape)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
