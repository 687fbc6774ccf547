"""Per-token dynamic Linear on torch's int8 matrix multiplications, bit-exact with qcore's reference.

The reference (:func:`qcore.nn.quantized.dynamic.functional.linear_dynamic_per_token`)
quantizes each row of the input to uint8 codes ``q`` with its own scale and
zero point ``zp``, sums ``(q - zp) * w`` exactly and scales the sums with
:func:`~qcore.nn.quantized.dynamic.functional.per_token_epilogue`. Here the
codes are made directly as ``q - 128`` (an exact shift), a kernel sums
``(q - 128) * w`` exactly, and the shift is folded back with the weight's
column sums: ``sum (q - zp) w = acc + (128 - zp) * sum w``, a rank-1 update.
The same rounding and the same float32 epilogue follow, so the results are
``torch.equal`` to the reference's. Two kernels, picked per call:

- fbgemm's ``linear_with_input_q_dq_qweight_dq_output_fp32`` on the weight
  packed with unit scales: it takes the codes as float values on the grid
  (scale 1, zero point 128) and returns the integer sums as float32, exact
  while they stay below ``2**24`` (``128 * in_features * max|w| <= 2**24``);
  the rank-1 update then runs in float32, also exactly. Fast at every size
  on every x86 CPU.
- ``torch._int_mm`` (oneDNN, int32 sums): faster on large inputs where the
  CPU has VNNI, and the only exact kernel for wider layers.

The weight is prepared once (:func:`prepare_weight`): transposed (``[in, out]``,
contiguous int8) with its int32 column sums and float32 scales, and packed for fbgemm.

Exactness conditions, checked before a module uses a kernel (:func:`kernel_plan`):

- int32 cannot overflow: ``in_features * 255 * 128 < 2**31`` (``in_features <= 65793``);
- the int8 kernels are exact for these weights. On CPUs without VNNI (AVX2),
  fbgemm and oneDNN add pairs of u8 x s8 products in int16 with saturation:
  ``2 * 255 * 64 = 32640`` fits, ``2 * 255 * 127`` does not. So weights with
  ``|w| > 64`` (8-bit) are refused there; 7-bit weights ([-63, 63], the
  recommended ones) are exact everywhere. :func:`exact_weight_bound` finds out
  once per process and kernel by a probe multiplication at the extremes, and, on x86
  Linux, also requires a VNNI flag in ``/proc/cpuinfo`` for 8-bit weights.
"""

from __future__ import annotations

import functools
import platform
from typing import List, Optional, Tuple

import torch
from torch import Tensor

from qcore.nn.quantized.dynamic.functional import choose_per_token_qparams, per_token_codes, per_token_epilogue

from qcore_fbgemm.torch_quantized import engine, quiet

__all__ = [
    "MAX_IN_FEATURES",
    "INT_MM_MIN_ROWS",
    "prepare_weight",
    "linear_per_token",
    "exact_weight_bound",
    "weight_magnitude",
    "kernel_plan",
    "unsupported_reason",
]

#: The largest ``in_features`` whose sums ``sum (q - zp) * w`` fit int32 (``|sum| <= in_features * 255 * 128``).
MAX_IN_FEATURES = (2**31 - 1) // (255 * 128)

#: Inputs with at least this many rows (tokens) run ``torch._int_mm`` where it is exact for 8-bit
#: weights (VNNI); fewer run fbgemm, whose fixed cost per call is lower (benchmarks/RESULTS.md).
INT_MM_MIN_ROWS = 128

_VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
_FLOAT_EXACT = 2**24  # float32 holds every integer up to this


def prepare_weight(w_int8: Tensor, w_scale: Tensor) -> Tuple[Tensor, Tensor, Tensor, object]:
    """(weight ``[in, out]`` int8, int32 column sums ``[out]``, float32 scales, fbgemm packing) for :func:`linear_per_token`.

    The transposed weight is copied into freshly allocated memory: ``_int_mm``
    misreads a ``[1, out]`` view whose strides are not the default ones, and
    ``.contiguous()`` keeps such a view. The fbgemm packing has unit scales and
    no bias: it returns the integer sums themselves.
    """
    w_kn = torch.empty((w_int8.size(1), w_int8.size(0)), dtype=torch.int8, device=w_int8.device).copy_(w_int8.t())
    colsum = w_int8.sum(dim=1, dtype=torch.int32)
    with quiet(), engine("fbgemm"):
        packed = torch.ops.quantized.linear_prepack(torch._make_per_tensor_quantized_tensor(w_int8, 1.0, 0), None)
    return w_kn, colsum, w_scale.to(torch.float32), packed


def linear_per_token(x: Tensor, w_kn: Tensor, colsum: Tensor, w_scale: Tensor, bias: Optional[Tensor],
                     packed: Optional[torch.classes.quantized.LinearPackedParamsBase] = None,
                     int_mm_min_rows: int = 0, colsum_f32: Optional[Tensor] = None) -> Tensor:
    """The per-token dynamic linear of ``x`` (``[..., in]``, any float dtype); result in ``x``'s dtype.

    Runs fbgemm on ``packed`` for inputs of fewer than ``int_mm_min_rows``
    rows, ``torch._int_mm`` otherwise (``packed=None``: always ``_int_mm``).
    ``colsum_f32``: ``colsum`` as float32, prepared once (else made per call).
    Temporaries: one float32 for the codes (and an int8 copy for ``_int_mm``)
    and the sums, which become the result in place.
    """
    k = w_kn.size(0)
    shape: List[int] = list(x.shape[:-1])
    shape.append(w_kn.size(1))
    rows = x if x.dim() == 2 else x.reshape(-1, k)
    if rows.dtype != torch.float32:
        rows = rows.to(torch.float32)
    scale, zero_point = choose_per_token_qparams(rows)
    shifted = zero_point.sub_(128.0)  # codes q - 128 = clamp(round(x / s) + zp - 128, -128, 127), exactly
    codes = per_token_codes(rows, scale, shifted, -128, 127)
    if packed is not None and rows.size(0) < int_mm_min_rows:
        # fbgemm reads the float codes on the grid (scale 1, zero point 128): q exactly, then sum (q - 128) w
        acc = torch.ops.quantized.linear_with_input_q_dq_qweight_dq_output_fp32(codes, 1.0, 128, packed)
        if colsum_f32 is None:
            colsum_f32 = colsum.to(torch.float32)
        acc.addr_(shifted.view(-1), colsum_f32, alpha=-1)  # exact products, one rounding
    else:
        # Into default strides: _int_mm misreads some views with a size-1 dimension (their strides look contiguous).
        q = torch.empty(rows.shape, dtype=torch.int8, device=rows.device).copy_(codes)
        sums = torch._int_mm(q, w_kn)  # sum (q - 128) * w
        sums.addr_(shifted.view(-1).to(torch.int32), colsum, alpha=-1)  # + (128 - zp) * sum w = sum (q - zp) * w
        acc = _to_float32_in_place(sums)
    y = per_token_epilogue(acc, scale, w_scale, bias)
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
def exact_weight_bound(kernel: str = "int_mm") -> int:
    """The largest ``|w|`` for which ``kernel`` ("int_mm" or "fbgemm") is exact here on codes ``q - 128`` (128, 64 or 0).

    Probed once per process at the extremes (all codes 0 or 255, weights at
    ``±bound``). 8-bit weights (128) also need a VNNI flag on x86 Linux, in
    case another shape takes a kernel the probe did not reach.
    """
    for bound in (128, 64):
        if _probe_exact(kernel, bound) and (bound <= 64 or _has_vnni()):
            return bound
    return 0


def _probe_exact(kernel: str, bound: int) -> bool:
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
    expected = a.to(torch.int64) @ w.to(torch.int64)
    try:
        if kernel == "fbgemm":
            *_, packed = prepare_weight(w.t().contiguous(), torch.ones(4))
            got = torch.ops.quantized.linear_with_input_q_dq_qweight_dq_output_fp32(a.to(torch.float32), 1.0, 128, packed)
        else:
            got = torch._int_mm(a, w)
    except RuntimeError:
        return False
    return bool(torch.equal(got.to(torch.int64), expected))


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


def kernel_plan(in_features: int, w_int8: Tensor) -> Tuple[Optional[str], bool, int]:
    """(why no kernel is exact here or None, whether fbgemm is, the fewest rows that run ``_int_mm``).

    fbgemm is used where its float32 sums are exact and its int8 products do
    not saturate; ``_int_mm`` where it is exact, for inputs of at least
    :data:`INT_MM_MIN_ROWS` rows when fbgemm is also exact (all of them otherwise).
    The rows are 2**62 (never) where ``_int_mm`` is not exact.
    """
    magnitude = weight_magnitude(w_int8)
    if in_features > MAX_IN_FEATURES:
        return f"in_features={in_features} could overflow the int32 sums (at most {MAX_IN_FEATURES})", False, 0
    fbgemm = magnitude <= exact_weight_bound("fbgemm") and 128 * in_features * max(magnitude, 1) <= _FLOAT_EXACT
    bound = exact_weight_bound("int_mm")
    int_mm = magnitude <= bound
    if fbgemm:
        return None, True, INT_MM_MIN_ROWS if int_mm else 2**62
    if int_mm:
        return None, False, 0
    if bound == 0:
        return "torch's int8 matrix multiplications are not exact on this machine (probe failed)", False, 0
    return (f"weights up to |w| = {magnitude} would saturate int8 matrix multiplication without VNNI "
            f"(int16 pair sums hold |w| <= {bound}); use 7-bit weights such as the recommended configuration's",
            False, 0)


def unsupported_reason(in_features: int, w_int8: Tensor) -> Optional[str]:
    """Why no int8 kernel computes this per-token linear exactly here (None when one does)."""
    return kernel_plan(in_features, w_int8)[0]
