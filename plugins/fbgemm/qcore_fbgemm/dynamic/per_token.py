"""Per-token dynamic Linear on ``torch._int_mm`` (int8 x int8 -> int32; oneDNN on the CPU), bit-exact with qcore's reference.

The reference (:func:`qcore.nn.quantized.dynamic.functional.linear_dynamic_per_token`)
quantizes each row of the input to uint8 codes ``q`` with its own scale and
zero point ``zp``, sums ``(q - zp) * w`` exactly and scales the sums with
:func:`~qcore.nn.quantized.dynamic.functional.per_token_epilogue`. Here the
codes are made directly as ``q - 128`` (int8, an exact shift), ``_int_mm``
sums ``(q - 128) * w`` exactly in int32, and the shift is folded back with
the weight's column sums: ``sum (q - zp) w = acc + (128 - zp) * sum w``, an
in-place int32 rank-1 update. The same rounding and the same float32 epilogue
follow, so the results are ``torch.equal`` to the reference's.

The weight is stored transposed (``[in, out]``, contiguous int8) with its int32
column sums and float32 scales, prepared once (:func:`prepare_weight`).

Exactness conditions, checked before a module uses this path
(:func:`unsupported_reason`):

- int32 cannot overflow: ``in_features * 255 * 128 < 2**31`` (``in_features <= 65793``);
- oneDNN's int8 matmul is exact for these weights. On CPUs without VNNI
  (AVX2), it adds pairs of u8 x s8 products in int16 with saturation:
  ``2 * 255 * 64 = 32640`` fits, ``2 * 255 * 127`` does not. So weights with
  ``|w| > 64`` (8-bit) are refused there; 7-bit weights ([-63, 63], the
  recommended ones) are exact everywhere. :func:`exact_weight_bound` finds out
  once per process by a probe multiplication at the extremes, and, on x86
  Linux, also requires a VNNI flag in ``/proc/cpuinfo`` for 8-bit weights.
"""

from __future__ import annotations

import functools
import platform
from typing import List, Optional, Tuple

import torch
from torch import Tensor

from qcore.nn.quantized.dynamic.functional import choose_per_token_qparams, per_token_codes, per_token_epilogue

__all__ = [
    "MAX_IN_FEATURES",
    "prepare_weight",
    "linear_per_token",
    "exact_weight_bound",
    "weight_magnitude",
    "unsupported_reason",
]

#: The largest ``in_features`` whose sums ``sum (q - zp) * w`` fit int32 (``|sum| <= in_features * 255 * 128``).
MAX_IN_FEATURES = (2**31 - 1) // (255 * 128)

_VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def prepare_weight(w_int8: Tensor, w_scale: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """(weight ``[in, out]`` contiguous int8, its int32 column sums ``[out]``, float32 scales) for :func:`linear_per_token`.

    The weight is copied into freshly allocated memory: ``_int_mm`` misreads
    a ``[1, out]`` view whose strides are not the default ones, and
    ``.contiguous()`` keeps such a view.
    """
    w_kn = torch.empty((w_int8.size(1), w_int8.size(0)), dtype=torch.int8, device=w_int8.device).copy_(w_int8.t())
    colsum = w_int8.sum(dim=1, dtype=torch.int32)
    return w_kn, colsum, w_scale.to(torch.float32)


def linear_per_token(x: Tensor, w_kn: Tensor, colsum: Tensor, w_scale: Tensor, bias: Optional[Tensor]) -> Tensor:
    """The per-token dynamic linear of ``x`` (``[..., in]``, any float dtype) on ``torch._int_mm``; result in ``x``'s dtype.

    Temporaries: one float32 and one int8 for the codes, and the int32 sums,
    which become the float32 result in place. Few, cheap calls: at 14 tokens
    the per-call overhead is most of the time.
    """
    k = w_kn.size(0)
    shape: List[int] = list(x.shape[:-1])
    shape.append(w_kn.size(1))
    rows = x if x.dim() == 2 else x.reshape(-1, k)
    if rows.dtype != torch.float32:
        rows = rows.to(torch.float32)
    scale, zero_point = choose_per_token_qparams(rows)
    shifted = zero_point.sub_(128.0)  # codes q - 128 = clamp(round(x / s) + zp - 128, -128, 127), exactly
    # Into default strides: _int_mm misreads some views with a size-1 dimension (their strides look contiguous).
    codes = torch.empty(rows.shape, dtype=torch.int8, device=rows.device)
    codes.copy_(per_token_codes(rows, scale, shifted, -128, 127))
    acc = torch._int_mm(codes, w_kn)  # sum (q - 128) * w
    acc.addr_(shifted.view(-1).to(torch.int32), colsum, alpha=-1)  # + (128 - zp) * sum w = sum (q - zp) * w
    y = per_token_epilogue(_to_float32_in_place(acc), scale, w_scale, bias)
    if len(shape) != 2:
        y = y.view(shape)
    return y if x.dtype == torch.float32 else y.to(x.dtype)


def _to_float32_in_place(acc: Tensor) -> Tensor:
    """The int32 ``acc`` converted to float32 in its own memory (no fresh temporary: large ones cost page faults).

    Element for element, as ``acc.to(torch.float32)`` rounds. TorchScript
    cannot view int32 memory as float32 (``Tensor.view(dtype)``), so scripted
    code converts into a new tensor.
    """
    if torch.jit.is_scripting():
        return acc.to(torch.float32)
    return acc.view(torch.float32).copy_(acc)


def weight_magnitude(w_int8: Tensor) -> int:
    """``max |w|`` of an int8 weight (0 for an empty one), computed without int8's ``abs(-128)`` wrap-around."""
    return int(w_int8.to(torch.int16).abs().max()) if w_int8.numel() else 0


@functools.lru_cache(maxsize=None)
def exact_weight_bound() -> int:
    """The largest ``|w|`` for which ``torch._int_mm`` is exact here on codes ``q - 128`` (128, 64, or 0: never).

    Probed once per process at the extremes (all codes 0 or 255, weights at
    ``±bound``). 8-bit weights (128) also need a VNNI flag on x86 Linux, in
    case another shape takes a kernel the probe did not reach.
    """
    for bound in (128, 64):
        if _probe_exact(bound) and (bound <= 64 or _has_vnni()):
            return bound
    return 0


def _probe_exact(bound: int) -> bool:
    k = 256
    low, high = -min(bound, 128), min(bound, 127)
    a = torch.full((4, k), 127, dtype=torch.int8)  # codes 255
    a[1] = -128  # codes 0
    a[2, ::2] = -128
    a[3, 1::2] = -128
    w = torch.full((k, 4), high, dtype=torch.int8)
    w[:, 1] = low
    w[::2, 2] = low
    w[1::2, 3] = low
    try:
        got = torch._int_mm(a, w)
    except RuntimeError:
        return False
    return bool(torch.equal(got.to(torch.int64), a.to(torch.int64) @ w.to(torch.int64)))


def _has_vnni() -> bool:
    """Whether the CPU multiplies int8 without int16 saturation (VNNI / AMX); True off x86 Linux, where the probe decides."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686"):
        return True
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return True
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
    return any(flag in flags for flag in _VNNI_FLAGS)


def unsupported_reason(in_features: int, w_int8: Tensor) -> Optional[str]:
    """Why ``torch._int_mm`` cannot compute this per-token linear exactly here (None when it can)."""
    if in_features > MAX_IN_FEATURES:
        return f"in_features={in_features} could overflow the int32 sums (at most {MAX_IN_FEATURES})"
    bound = exact_weight_bound()
    magnitude = weight_magnitude(w_int8)
    if magnitude > bound:
        if bound == 0:
            return "torch._int_mm is not exact on this machine (probe failed)"
        return (f"weights up to |w| = {magnitude} would saturate int8 matrix multiplication without VNNI "
                f"(int16 pair sums hold |w| <= {bound}); use 7-bit weights such as the recommended configuration's")
    return None
