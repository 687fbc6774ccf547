"""FusedMovingAvgObsFakeQuantize: observe and fake-quantize in one vectorised pass (QAT's fast default)."""

from __future__ import annotations

from typing import Any

import torch

from qcore.dtypes import QScheme
from qcore.errors import ConfigError
from qcore.fake_quant.fake_quantize import FakeQuantize
from qcore.fake_quant.fused_ops import fused_moving_avg_obs_fake_quant
from qcore.observers import MovingAverageMinMaxObserver, MovingAveragePerChannelMinMaxObserver


class FusedMovingAvgObsFakeQuantize(FakeQuantize):
    """FakeQuantize with a moving-average min/max observer folded into the forward pass.

    Each forward updates the observer's ``min_val``/``max_val``, refreshes
    ``scale``/``zero_point`` from them (fbgemm's choice of qparams, as torch's
    fused kernel makes it) and fake-quantizes; the observer module itself is
    never called. ``calculate_qparams`` still asks the observer, as in torch.ao.
    """

    def __init__(
        self,
        observer: Any = MovingAverageMinMaxObserver,
        quant_min: int = 0,
        quant_max: int = 255,
        **observer_kwargs: Any,
    ) -> None:
        super().__init__(observer, quant_min, quant_max, **observer_kwargs)
        owner = type(self).__name__
        post = self.activation_post_process
        if not isinstance(post, (MovingAverageMinMaxObserver, MovingAveragePerChannelMinMaxObserver)):
            raise ConfigError(
                f"{owner} folds a moving-average min/max observer into its forward; got {type(post).__name__}. "
                "Use MovingAverageMinMaxObserver / MovingAveragePerChannelMinMaxObserver, or FakeQuantize for other observers"
            )
        if self.qscheme is QScheme.PER_CHANNEL_AFFINE_FLOAT_QPARAMS:
            raise ConfigError(
                f"{owner} computes integer zero points and cannot use {self.qscheme.value}; use FakeQuantize for it"
            )
        # torch's fused kernel reads these as int64.
        self.register_buffer("fake_quant_enabled", torch.tensor([1], dtype=torch.long))
        self.register_buffer("observer_enabled", torch.tensor([1], dtype=torch.long))
        self.is_symmetric_quant: bool = self.qscheme.is_symmetric

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        post = self.activation_post_process
        return fused_moving_avg_obs_fake_quant(
            x,
            bool(self.observer_enabled[0] != 0),
            bool(self.fake_quant_enabled[0] != 0),
            post.min_val,
            post.max_val,
            self.scale,
            self.zero_point,
            float(post.averaging_constant),
            int(post.quant_min),
            int(post.quant_max),
            self.ch_axis if self.is_per_channel else None,
            self.is_symmetric_quant,
        )

    def extra_repr(self) -> str:
        post = self.activation_post_process
        return (
            f"fake_quant_enabled={self.fake_quant_enabled}, observer_enabled={self.observer_enabled}, "
            f"scale={self.scale}, zero_point={self.zero_point}, dtype={self.dtype}, "
            f"quant_min={post.quant_min}, quant_max={post.quant_max}, "
            f"qscheme={self.qscheme}, reduce_range={post.reduce_range}"
        )
