"""FixedQParamsFakeQuantize: fake quantization with constant qparams (sigmoid, tanh, hardsigmoid outputs)."""

from __future__ import annotations

from typing import Any

import torch

from qcore.errors import ConfigError
from qcore.fake_quant.fake_quantize import FakeQuantize
from qcore.observers import FixedQParamsObserver


class FixedQParamsFakeQuantize(FakeQuantize):
    """FakeQuantize whose scale/zero_point are the FixedQParamsObserver's, never learned from data.

    Per tensor only. ``scale``/``zero_point`` are the observer's own buffers, so
    the two always agree.
    """

    def __init__(self, observer: Any) -> None:
        super().__init__(observer=observer)
        post = self.activation_post_process
        if not isinstance(post, FixedQParamsObserver):
            raise ConfigError(
                f"{type(self).__name__}'s observer must be a FixedQParamsObserver, got {type(post).__name__}; "
                "use FixedQParamsObserver.with_args(scale=..., zero_point=...) or FakeQuantize for learned qparams"
            )
        if self.is_per_channel:
            raise ConfigError(
                f"{type(self).__name__} supports per-tensor qschemes only, got {self.qscheme.value}"
            )
        self._observer_ctr = observer
        self.scale = post.scale
        self.zero_point = post.zero_point

    def calculate_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        return self.scale, self.zero_point

    def extra_repr(self) -> str:
        post = self.activation_post_process
        return (
            f"fake_quant_enabled={self.fake_quant_enabled}, observer_enabled={self.observer_enabled}, "
            f"scale={self.scale}, zero_point={self.zero_point}, "
            f"dtype={self.dtype}, quant_min={post.quant_min}, "
            f"quant_max={post.quant_max}, qscheme={self.qscheme}"
        )
