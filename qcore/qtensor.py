"""QTensor: a quantized tensor that is an integer tensor plus its qparams, without torch's quantized dtypes.

A QTensor *is* its integer storage (a ``torch.Tensor`` subclass over uint8,
int8 or int32 data; 4-bit values unpacked one per byte; a subclass may keep
its integers elsewhere, see :func:`_plain`) and carries its qparams as
attributes. It offers torch's quantized-tensor methods (``dequantize``,
``int_repr``, ``q_scale``, ...) and lets through only the operations that are
exact on quantized values (shape changes, max pooling, relu, concatenation
with equal qparams) and average pooling, which keeps the input's qparams and
rounds as torch's quantized kernels do. Any other torch operation raises a
QuantizationError telling the user to dequantize first, which is the error
a float module meeting a quantized input should give.

QTensor is an eager-mode object; graphs that must script carry plain integer
tensors and explicit qparams instead (docs/numerics.md).
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Optional, Sequence, Union

import attrs
import torch
import torch.nn.functional as F
from torch import Tensor

from qcore import affine, dtypes
from qcore.dtypes import DTypeLike, QDType, QScheme
from qcore.errors import QuantizationError

__all__ = [
    "QTensor",
    "integer_data",
    "quantize_per_tensor",
    "quantize_per_channel",
    "quantize_per_tensor_dynamic",
    "dequantize",
]


@attrs.frozen(eq=False)
class _QParams:
    """The qparams of one QTensor; per-channel fields are None per tensor and vice versa."""

    qdtype: QDType
    qscheme: QScheme
    scale: Optional[float] = None
    zero_point: Optional[int] = None
    scales: Optional[Tensor] = None  # float64, 1-d
    zero_points: Optional[Tensor] = None  # int64 (float32 for float qparams), 1-d
    axis: Optional[int] = None

    @property
    def per_channel(self) -> bool:
        return self.axis is not None

    def same_as(self, other: "_QParams") -> bool:
        if (self.qdtype, self.qscheme, self.axis) != (other.qdtype, other.qscheme, other.axis):
            return False
        if not self.per_channel:
            return (self.scale, self.zero_point) == (other.scale, other.zero_point)
        return _same_values(self.scales, other.scales) and _same_values(self.zero_points, other.zero_points)

    def to(self, device: torch.device) -> "_QParams":
        if not self.per_channel or self.scales.device == device:
            return self
        return attrs.evolve(self, scales=self.scales.to(device), zero_points=self.zero_points.to(device))

    def select(self, axis: int, channels: Optional[slice] = None) -> "_QParams":
        """The qparams after the channel dimension moved to ``axis``, keeping only ``channels``."""
        if channels is None:
            return attrs.evolve(self, axis=axis)
        return attrs.evolve(self, axis=axis, scales=self.scales[channels], zero_points=self.zero_points[channels])


def _same_values(a: Tensor, b: Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and bool(torch.equal(a.cpu(), b.cpu()))


def _storage_dtype(qdtype: QDType) -> torch.dtype:
    """The unpacked integer dtype a QTensor of ``qdtype`` holds (4-bit values one per byte)."""
    if qdtype.bits == 4:
        return torch.int8 if qdtype.is_signed else torch.uint8
    return qdtype.storage


def _plain(t: Tensor) -> Tensor:
    """The integer storage of a QTensor as a plain tensor (an alias, not a copy).

    A QTensor subclass whose own tensor is not its integers (a kernel plugin's
    QTensor over torch's quantized tensor) reaches them through its
    ``_qcore_integers`` method; every QTensor operation goes through here.
    """
    cls = type(t)
    if cls is not QTensor and cls is not Tensor:
        integers = getattr(cls, "_qcore_integers", None)
        if integers is not None:
            return integers(t)
    with torch._C.DisableTorchFunctionSubclass():
        return torch.Tensor.as_subclass(t, torch.Tensor)


def integer_data(t: Tensor) -> Tensor:
    """The integers of the QTensor ``t`` as a plain tensor sharing its memory (``int_repr()`` without the copy)."""
    return _plain(t)


def _wrap(data: Tensor, qp: _QParams) -> "QTensor":
    obj = torch.Tensor._make_subclass(QTensor, data, False)
    obj._qparams = qp.to(data.device)
    return obj


class QTensor(torch.Tensor):
    """A quantized tensor: integer storage plus scale/zero_point (per tensor) or scales/zero_points/axis (per channel).

    Make one with :func:`quantize_per_tensor`, :func:`quantize_per_channel`,
    :func:`quantize_per_tensor_dynamic` or :meth:`QTensor.from_int`.
    """

    _qparams: _QParams

    def __new__(cls, *args: Any, **kwargs: Any) -> "QTensor":
        raise TypeError("QTensor cannot be built directly; use qcore.quantize_per_tensor / quantize_per_channel or QTensor.from_int")

    @classmethod
    def from_int(
        cls,
        int_data: Tensor,
        scale: Union[float, Tensor, Sequence[float]],
        zero_point: Union[int, Tensor, Sequence[int]],
        qdtype: DTypeLike,
        axis: Optional[int] = None,
        qscheme: Optional[Union[QScheme, str]] = None,
    ) -> "QTensor":
        """Wrap already-quantized integers (any integer dtype, values within ``qdtype``'s range).

        Per tensor when ``axis`` is None, per channel along ``axis`` otherwise.
        ``qscheme`` may record that the qparams are symmetric; it defaults to
        the affine scheme of the right kind. Like torch's
        ``_make_per_tensor_quantized_tensor``, the result shares memory with
        ``int_data`` when that already has the storage dtype.
        """
        fn = "QTensor.from_int"
        d = _integer_qdtype(qdtype, fn)
        if not isinstance(int_data, Tensor) or int_data.is_floating_point() or int_data.is_complex() or int_data.dtype == torch.bool:
            got = int_data.dtype if isinstance(int_data, Tensor) else type(int_data).__name__
            raise QuantizationError(f"{fn}: int_data must be an integer tensor, got {got}; use quantize_per_tensor for float data")
        if isinstance(int_data, QTensor):
            int_data = _plain(int_data)
        if int_data.requires_grad:
            int_data = int_data.detach()
        lo, hi = (int(int_data.min()), int(int_data.max())) if int_data.numel() else (0, 0)
        if lo < d.quant_min or hi > d.quant_max:
            raise QuantizationError(f"{fn}: values span [{lo}, {hi}], outside {d.name}'s range [{d.quant_min}, {d.quant_max}]")
        qp = _make_qparams(int_data, scale, zero_point, d, axis, fn)
        if qscheme is not None:
            wanted = dtypes.qscheme(qscheme)
            if wanted.is_per_channel != qp.per_channel:
                kind = "per-channel" if qp.per_channel else "per-tensor"
                raise QuantizationError(f"{fn}: qscheme {wanted.value} does not match the {kind} qparams given (axis={axis})")
            qp = attrs.evolve(qp, qscheme=wanted)
        return _wrap(int_data.to(_storage_dtype(d)), qp)

    # --- torch's quantized-tensor API ---------------------------------------------

    @property
    def is_quantized(self) -> bool:  # type: ignore[override]
        return True

    @property
    def qdtype(self) -> QDType:
        """The quantized dtype (qcore.uint8, qcore.int8, ...); ``.dtype`` is the storage dtype."""
        return self._qparams.qdtype

    def qscheme(self) -> QScheme:  # type: ignore[override]
        return self._qparams.qscheme

    def dequantize(self) -> Tensor:  # type: ignore[override]
        """float32 values ``(q - zero_point) * scale``, rounded as torch's ``dequantize()`` rounds them."""
        qp = self._qparams
        data = _plain(self)
        if qp.per_channel:
            return affine.dequantize_affine(data, qp.scales, qp.zero_points, axis=qp.axis)
        return affine.dequantize_affine(data, qp.scale, qp.zero_point)

    def int_repr(self) -> Tensor:  # type: ignore[override]
        """A new plain tensor holding the integers (4-bit values unpacked, one per element)."""
        return _plain(self).clone()

    def q_scale(self) -> float:  # type: ignore[override]
        return self._per_tensor("q_scale").scale

    def q_zero_point(self) -> int:  # type: ignore[override]
        return self._per_tensor("q_zero_point").zero_point

    def q_per_channel_scales(self) -> Tensor:  # type: ignore[override]
        return self._per_channel("q_per_channel_scales").scales.clone()

    def q_per_channel_zero_points(self) -> Tensor:  # type: ignore[override]
        return self._per_channel("q_per_channel_zero_points").zero_points.clone()

    def q_per_channel_axis(self) -> int:  # type: ignore[override]
        return self._per_channel("q_per_channel_axis").axis

    def _per_tensor(self, what: str) -> _QParams:
        if self._qparams.per_channel:
            raise QuantizationError(f"{what}() needs a per-tensor quantized tensor, this one is {self._qparams.qscheme.value}; use q_per_channel_*()")
        return self._qparams

    def _per_channel(self, what: str) -> _QParams:
        if not self._qparams.per_channel:
            raise QuantizationError(f"{what}() needs a per-channel quantized tensor, this one is {self._qparams.qscheme.value}; use q_scale()/q_zero_point()")
        return self._qparams

    # --- Python protocol --------------------------------------------------------

    def __repr__(self, *, tensor_contents: Any = None) -> str:  # type: ignore[override]
        qp = self._qparams
        body = repr(self.dequantize())
        body = body[len("tensor(") : -1].replace("\n ", "\n  ")
        parts = [body] if "size=" in body else [body, f"size={tuple(self.shape)}"]  # torch adds it for empty tensors
        parts += [f"qdtype={qp.qdtype!r}", f"qscheme={qp.qscheme!r}"]
        if qp.per_channel:
            parts += [f"scales={qp.scales.tolist()}", f"zero_points={qp.zero_points.tolist()}", f"axis={qp.axis}"]
        else:
            parts += [f"scale={qp.scale}", f"zero_point={qp.zero_point}"]
        device = _plain(self).device
        if device.type != "cpu":
            parts.append(f"device='{device}'")
        return "QTensor(" + ", ".join(parts) + ")"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return format(repr(self), spec)

    def __reduce_ex__(self, protocol: int) -> tuple:
        qp = self._qparams
        args = (_plain(self), qp.qdtype.name, qp.qscheme.value, qp.scale, qp.zero_point, qp.scales, qp.zero_points, qp.axis)
        return (_rebuild_qtensor, args)

    def __deepcopy__(self, memo: dict) -> "QTensor":
        if id(self) in memo:
            return memo[id(self)]
        qp = self._qparams
        if qp.per_channel:
            qp = attrs.evolve(qp, scales=qp.scales.clone(), zero_points=qp.zero_points.clone())
        new = _wrap(_plain(self).clone(), qp)
        memo[id(self)] = new
        return new

    @classmethod
    def __torch_function__(cls, func: Callable, types: tuple, args: tuple = (), kwargs: Optional[dict] = None) -> Any:
        kwargs = kwargs or {}
        handler = _HANDLERS.get(func)
        if handler is not None:
            return handler(func, args, kwargs)
        if func in _QUERIES:
            with torch._C.DisableTorchFunctionSubclass():
                return func(*args, **kwargs)
        raise QuantizationError(
            f"{_op_name(func)} is not supported on a quantized tensor (QTensor). Dequantize first "
            "(`x.dequantize()`), or put a DeQuantStub before the float module that receives it."
        )


def _rebuild_qtensor(
    data: Tensor,
    qdtype: str,
    qscheme: str,
    scale: Optional[float],
    zero_point: Optional[int],
    scales: Optional[Tensor],
    zero_points: Optional[Tensor],
    axis: Optional[int],
) -> QTensor:
    """Unpickle a QTensor (module-level so torch.load can allow it under weights_only)."""
    qp = _QParams(dtypes.qdtype(qdtype), dtypes.qscheme(qscheme), scale, zero_point, scales, zero_points, axis)
    return _wrap(data, qp)


_add_safe_globals = getattr(getattr(torch, "serialization", None), "add_safe_globals", None)
if _add_safe_globals is not None:
    _add_safe_globals([_rebuild_qtensor])


def _op_name(func: Callable) -> str:
    try:
        return torch.overrides.resolve_name(func) or repr(func)
    except Exception:
        return getattr(func, "__name__", repr(func))


# --- building qparams -----------------------------------------------------------------


def _integer_qdtype(value: DTypeLike, fn: str) -> QDType:
    try:
        d = dtypes.qdtype(value)
    except Exception as exc:
        raise QuantizationError(f"{fn}: {exc}") from None
    if d.is_float:
        raise QuantizationError(f"{fn}: {d.name} is not an integer dtype; float16 'quantization' is x.to(torch.float16)")
    return d


def _make_qparams(data: Tensor, scale: Any, zero_point: Any, d: QDType, axis: Optional[int], fn: str) -> _QParams:
    """Validated qparams for ``data``: floats and ints per tensor, float64/int64 tensors per channel."""
    if axis is None:
        s = affine._scalar_scale(scale, fn)
        zp = affine._scalar_zero_point(zero_point, fn)
        if not d.quant_min <= zp <= d.quant_max:
            raise QuantizationError(f"{fn}: zero_point {zp} is outside {d.name}'s range [{d.quant_min}, {d.quant_max}]")
        return _QParams(d, QScheme.PER_TENSOR_AFFINE, scale=s, zero_point=zp)
    ax, s64, _, zps = affine._channel_params(data, scale, zero_point, axis, fn)
    if not zps.is_floating_point():
        affine._check_zero_points_in_range(zps, d.quant_min, d.quant_max, fn)
        scheme = QScheme.PER_CHANNEL_AFFINE
    else:
        scheme = QScheme.PER_CHANNEL_AFFINE_FLOAT_QPARAMS
    return _QParams(d, scheme, scales=s64.reshape(-1).clone(), zero_points=zps.reshape(-1).clone(), axis=ax)


# --- public quantize / dequantize functions ----------------------------------------------


def quantize_per_tensor(
    input: Union[Tensor, Sequence[Tensor]], scale: Union[float, Tensor], zero_point: Union[int, Tensor], dtype: DTypeLike
) -> Union[QTensor, list[QTensor]]:
    """torch.quantize_per_tensor without torch's quantized dtypes: same integers, returned as a QTensor.

    ``dtype`` is ``torch.quint8``/``qint8``/``qint32``, a string (``"uint8"``) or a
    qcore dtype (uint4/int4 too). A list of tensors takes one-element-per-tensor
    ``scale``/``zero_point`` tensors and returns a list, as torch's does.
    """
    fn = "quantize_per_tensor"
    d = _integer_qdtype(dtype, fn)
    if isinstance(input, (list, tuple)):
        scales = torch.as_tensor(scale).reshape(-1)
        zero_points = torch.as_tensor(zero_point).reshape(-1)
        if scales.numel() != len(input) or zero_points.numel() != len(input):
            raise QuantizationError(f"{fn}: a list of {len(input)} tensors needs {len(input)} scales and zero points")
        return [quantize_per_tensor(t, scales[i], zero_points[i], d) for i, t in enumerate(input)]
    affine._check_float_input(input, fn)
    qp = _make_qparams(input, scale, zero_point, d, None, fn)
    q = affine._quantize(input, qp.scale, qp.zero_point, d.quant_min, d.quant_max, d, None, fn)
    return _wrap(q, qp)


def quantize_per_channel(input: Tensor, scales: Any, zero_points: Any, axis: int, dtype: DTypeLike) -> QTensor:
    """torch.quantize_per_channel without torch's quantized dtypes; ``axis`` may be negative.

    Integer zero points give ``per_channel_affine``; float zero points give
    ``per_channel_affine_float_qparams`` (embedding tables).
    """
    fn = "quantize_per_channel"
    d = _integer_qdtype(dtype, fn)
    affine._check_float_input(input, fn)
    qp = _make_qparams(input, scales, zero_points, d, int(axis), fn)
    q = affine._quantize(input, qp.scales, qp.zero_points, d.quant_min, d.quant_max, d, qp.axis, fn)
    return _wrap(q, qp)


def quantize_per_tensor_dynamic(input: Tensor, dtype: DTypeLike, reduce_range: bool) -> Union[QTensor, Tensor]:
    """torch.quantize_per_tensor_dynamic: qparams from the tensor's own min/max (including 0), then quantize.

    uint8 and int8 give a QTensor with the same scale, zero point and integers
    as torch; float16 gives ``input.to(torch.float16)``. ``reduce_range`` halves
    the integer range (torch ignores it under the qnnpack engine; qcore never does).
    """
    fn = "quantize_per_tensor_dynamic"
    try:
        d = dtypes.qdtype(dtype)
    except Exception as exc:
        raise QuantizationError(f"{fn}: {exc}") from None
    affine._check_float_input(input, fn)
    if d is dtypes.float16:
        return affine.quantize_float16(input)
    if d not in (dtypes.uint8, dtypes.int8):
        raise QuantizationError(f"{fn}: dtype must be uint8, int8 or float16, got {d.name}")
    if input.numel() == 0:
        raise QuantizationError(f"{fn}: cannot choose qparams for an empty tensor")
    affine._check_no_nan(input, fn)
    x = input.detach().to(torch.float32)
    x_min, x_max = float(x.min()), float(x.max())
    if not (math.isfinite(x_min) and math.isfinite(x_max)):
        raise QuantizationError(f"{fn}: the input has infinite values, so no scale can cover its range; clamp it first")
    scale, zero_point = affine.choose_dynamic_qparams(x_min, x_max, d.quant_min, d.quant_max, bool(reduce_range))
    return quantize_per_tensor(input, scale, zero_point, d)


def dequantize(x: Union[Tensor, Sequence[Tensor]]) -> Union[Tensor, list[Tensor]]:
    """torch.dequantize: a QTensor to float32, a float tensor (e.g. float16) to float32, a list element-wise."""
    if isinstance(x, (list, tuple)):
        return [dequantize(t) for t in x]
    if isinstance(x, QTensor):
        return x.dequantize()
    if isinstance(x, Tensor) and x.is_floating_point():
        return x.to(torch.float32)
    got = x.dtype if isinstance(x, Tensor) else type(x).__name__
    raise QuantizationError(f"dequantize: expected a QTensor or a float tensor, got {got}")


# --- __torch_function__: the operations a QTensor allows --------------------------------------

_HANDLERS: dict[Callable, Callable[[Callable, tuple, dict], Any]] = {}


def _implements(*funcs: Any) -> Callable:
    def register(handler: Callable) -> Callable:
        for f in funcs:
            if f is not None:
                _HANDLERS[f] = handler
        return handler

    return register


def _attr(*names: str) -> list[Any]:
    """torch.Tensor's methods and property getters of these names, where this torch version has them."""
    found = []
    for name in names:
        value = getattr(torch.Tensor, name, None)
        if value is None:
            continue
        # Properties arrive in __torch_function__ as their ``__get__``.
        found.append(value if callable(value) else value.__get__)
    return found


_QUERIES = frozenset(
    _attr(
        "size", "dim", "ndimension", "numel", "nelement", "stride", "storage_offset", "is_contiguous",
        "element_size", "get_device", "data_ptr", "__len__", "__hash__", "is_floating_point", "is_complex",
        "is_signed", "untyped_storage", "is_pinned", "is_shared", "has_names",
        "shape", "ndim", "device", "dtype", "layout", "requires_grad", "is_cuda", "is_cpu", "is_meta",
        "is_sparse", "is_mkldnn", "is_nested", "grad", "grad_fn", "is_leaf", "names", "output_nr",
        "_version", "itemsize", "nbytes", "_base",
    )
    + [torch.numel, torch.is_floating_point, torch.is_complex]
)


def _self_and_rest(args: tuple) -> tuple[QTensor, tuple]:
    self = args[0]
    if not isinstance(self, QTensor):
        raise QuantizationError(f"expected a QTensor first argument, got {type(self).__name__}")
    return self, args[1:]


def _unwrap(value: Any) -> Any:
    if isinstance(value, QTensor):
        return _plain(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_unwrap(v) for v in value)
    return value


def _get(rest: tuple, kwargs: dict, index: int, names: Sequence[str], default: Any) -> Any:
    """A call argument given positionally (``rest[index]``) or by any of ``names``."""
    if index < len(rest):
        return rest[index]
    for name in names:
        if name in kwargs:
            return kwargs[name]
    return default


def _channel_axis_error(op: str, qp: _QParams, detail: str) -> QuantizationError:
    return QuantizationError(
        f"{op} on a per-channel QTensor (axis {qp.axis}) {detail}; per-channel qparams need the channel "
        "dimension kept whole. Dequantize first (`x.dequantize()`), or reshape along other dimensions."
    )


# Layout-preserving ops: the result has the same shape and channel axis.
@_implements(
    torch.Tensor.contiguous, torch.Tensor.clone, torch.clone, torch.Tensor.detach, torch.detach,
    *_attr("data"), torch.Tensor.cpu, torch.Tensor.cuda,
)
def _same_layout(func: Callable, args: tuple, kwargs: dict) -> QTensor:
    self, rest = _self_and_rest(args)
    qp = self._qparams
    out = func(_plain(self), *rest, **kwargs)
    if qp.per_channel and func in (torch.Tensor.clone, torch.clone):
        qp = attrs.evolve(qp, scales=qp.scales.clone(), zero_points=qp.zero_points.clone())
    return _wrap(out, qp)


@_implements(torch.Tensor.to)
def _to(func: Callable, args: tuple, kwargs: dict) -> QTensor:
    self, rest = _self_and_rest(args)
    kwargs = dict(kwargs)
    copy_ = kwargs.pop("copy", False)
    device, dtype, non_blocking, memory_format = torch._C._nn._parse_to(*_unwrap(rest), **kwargs)
    storage = _plain(self).dtype
    if dtype is not None and dtype != storage:
        raise QuantizationError(
            f"QTensor.to({dtype}): a quantized tensor holds {storage} integers; call x.dequantize() to get float values"
        )
    out = _plain(self).to(
        device=device, non_blocking=non_blocking, copy=copy_, memory_format=memory_format or torch.preserve_format
    )
    return _wrap(out, self._qparams)


def _axis_after_reshape(old_shape: Sequence[int], axis: int, new_shape: Sequence[int]) -> Optional[int]:
    """Where the channel dimension is after a reshape, or None when the reshape merged or split it."""
    before = math.prod(old_shape[:axis])
    channels = old_shape[axis]
    prefix = 1
    for j, size in enumerate(new_shape):
        if prefix == before and size == channels:
            return j
        prefix *= size
    return None


@_implements(
    torch.Tensor.view, torch.Tensor.reshape, torch.reshape, torch.Tensor.flatten, torch.flatten,
    torch.Tensor.squeeze, torch.squeeze, torch.Tensor.unsqueeze, torch.unsqueeze,
    torch.Tensor.view_as, torch.Tensor.reshape_as, torch.Tensor.unflatten, torch.unflatten,
)
def _reshape(func: Callable, args: tuple, kwargs: dict) -> QTensor:
    self, rest = _self_and_rest(args)
    if func is torch.Tensor.view and rest and isinstance(rest[0], torch.dtype):
        raise QuantizationError(
            "QTensor.view(dtype) would reinterpret the quantized integers; dequantize first (`x.dequantize()`) "
            "for float values, or use x.int_repr().view(dtype) for the raw bits"
        )
    plain = _plain(self)
    out = func(plain, *_unwrap(rest), **kwargs)
    qp = self._qparams
    if not qp.per_channel:
        return _wrap(out, qp)
    axis = _axis_after_reshape(plain.shape, qp.axis, out.shape)
    if axis is None:
        raise _channel_axis_error(
            _op_name(func), qp, f"would merge or split the channel dimension (shape {tuple(plain.shape)} -> {tuple(out.shape)})"
        )
    return _wrap(out, qp.select(axis))


@_implements(torch.Tensor.permute, torch.permute)
def _permute(func: Callable, args: tuple, kwargs: dict) -> QTensor:
    self, rest = _self_and_rest(args)
    plain = _plain(self)
    out = func(plain, *rest, **kwargs)
    qp = self._qparams
    if not qp.per_channel:
        return _wrap(out, qp)
    dims = _get(rest, kwargs, 0, ("dims",), None)
    if isinstance(dims, int) or (rest and len(rest) > 1):
        dims = rest
    dims = [int(d) % plain.dim() for d in dims]
    return _wrap(out, qp.select(dims.index(qp.axis)))


_REVERSE = _attr("T")
_MATRIX_T = _attr("mT")


@_implements(
    torch.Tensor.transpose, torch.transpose, torch.Tensor.swapaxes, torch.swapaxes, torch.Tensor.swapdims,
    torch.swapdims, torch.Tensor.t, torch.t, *_REVERSE, *_MATRIX_T,
    torch.Tensor.movedim, torch.movedim,
)
def _transpose(func: Callable, args: tuple, kwargs: dict) -> QTensor:
    self, rest = _self_and_rest(args)
    plain = _plain(self)
    out = func(plain, *rest, **kwargs)
    qp = self._qparams
    if not qp.per_channel:
        return _wrap(out, qp)
    ndim = plain.dim()
    order = list(range(ndim))
    if func in (torch.Tensor.t, torch.t) or func in _REVERSE:
        order.reverse()
    elif func in _MATRIX_T:
        order[-2:] = order[-1], order[-2]
    elif func in (torch.Tensor.movedim, torch.movedim):
        src = _get(rest, kwargs, 0, ("source",), None)
        dst = _get(rest, kwargs, 1, ("destination",), None)
        src = [src] if isinstance(src, int) else list(src)
        dst = [dst] if isinstance(dst, int) else list(dst)
        src = [s % ndim for s in src]
        dst = [d % ndim for d in dst]
        order = [-1] * ndim
        for s, d in zip(src, dst):
            order[d] = s
        remaining = iter(i for i in range(ndim) if i not in src)
        order = [o if o >= 0 else next(remaining) for o in order]
    else:
        d0 = int(_get(rest, kwargs, 0, ("dim0", "axis0"), 0)) % ndim
        d1 = int(_get(rest, kwargs, 1, ("dim1", "axis1"), 0)) % ndim
        order[d0], order[d1] = order[d1], order[d0]
    return _wrap(out, qp.select(order.index(qp.axis)))


@_implements(torch.Tensor.expand, torch.Tensor.expand_as)
def _expand(func: Callable, args: tuple, kwargs: dict) -> QTensor:
    self, rest = _self_and_rest(args)
    plain = _plain(self)
    out = func(plain, *_unwrap(rest), **kwargs)
    qp = self._qparams
    if not qp.per_channel:
        return _wrap(out, qp)
    axis = qp.axis + out.dim() - plain.dim()
    if out.shape[axis] != plain.shape[qp.axis]:
        raise _channel_axis_error(_op_name(func), qp, "would expand the channel dimension")
    return _wrap(out, qp.select(axis))


@_implements(torch.Tensor.__getitem__)
def _getitem(func: Callable, args: tuple, kwargs: dict) -> QTensor:
    self, rest = _self_and_rest(args)
    index = rest[0]
    plain = _plain(self)
    qp = self._qparams
    if not qp.per_channel:
        return _wrap(plain[_unwrap(index)], qp)
    items = index if isinstance(index, tuple) else (index,)
    basic = all(
        item is None or item is Ellipsis or isinstance(item, slice)
        or (isinstance(item, numbers.Integral) and not isinstance(item, bool))
        for item in items
    )
    if not basic:
        raise _channel_axis_error("indexing", qp, "uses advanced indexing (tensors, lists or bools)")
    consumed = sum(1 for item in items if item is not None and item is not Ellipsis)
    in_dim = out_dim = 0
    axis: Optional[int] = None
    channels: Optional[slice] = None
    for item in items:
        if item is Ellipsis:
            for _ in range(plain.dim() - consumed):
                if in_dim == qp.axis:
                    axis = out_dim
                in_dim += 1
                out_dim += 1
        elif item is None:
            out_dim += 1
        elif isinstance(item, slice):
            if in_dim == qp.axis:
                axis, channels = out_dim, item
            in_dim += 1
            out_dim += 1
        else:
            if in_dim == qp.axis:
                raise _channel_axis_error("indexing", qp, "selects a single channel with an integer, dropping the channel dimension; use a slice (x[i:i+1])")
            in_dim += 1
    if axis is None:
        axis = out_dim + qp.axis - in_dim
    return _wrap(plain[index], qp.select(axis, channels))


@_implements(torch.Tensor.chunk, torch.chunk, torch.Tensor.split, torch.split, torch.Tensor.unbind, torch.unbind,
             torch.Tensor.tensor_split, torch.tensor_split)
def _split(func: Callable, args: tuple, kwargs: dict) -> tuple[QTensor, ...]:
    self, rest = _self_and_rest(args)
    plain = _plain(self)
    pieces = func(plain, *rest, **kwargs)
    qp = self._qparams
    if not qp.per_channel:
        return tuple(_wrap(p, qp) for p in pieces)
    unbind = func in (torch.Tensor.unbind, torch.unbind)
    dim = int(_get(rest, kwargs, 0 if unbind else 1, ("dim",), 0)) % plain.dim()
    if unbind:
        if dim == qp.axis:
            raise _channel_axis_error(_op_name(func), qp, "along the channel dimension would drop it")
        return tuple(_wrap(p, qp.select(qp.axis - (dim < qp.axis))) for p in pieces)
    if dim != qp.axis:
        return tuple(_wrap(p, qp) for p in pieces)
    out, start = [], 0
    for p in pieces:
        stop = start + p.shape[dim]
        out.append(_wrap(p, qp.select(qp.axis, slice(start, stop))))
        start = stop
    return tuple(out)


@_implements(torch.Tensor.__iter__)
def _iter(func: Callable, args: tuple, kwargs: dict) -> Any:
    return iter(_split(torch.Tensor.unbind, args[:1], {}))


@_implements(torch.cat, getattr(torch, "concat", None), getattr(torch, "concatenate", None))
def _cat(func: Callable, args: tuple, kwargs: dict) -> QTensor:
    kwargs = dict(kwargs)
    tensors = list(args[0] if args else kwargs.pop("tensors"))
    dim = args[1] if len(args) > 1 else kwargs.pop("dim", kwargs.pop("axis", 0))
    if kwargs.get("out") is not None:
        raise QuantizationError("torch.cat(..., out=...) is not supported for QTensors")
    if not tensors or not all(isinstance(t, QTensor) for t in tensors):
        raise QuantizationError(
            "torch.cat: all inputs must be QTensors with the same qparams; dequantize the others first (`x.dequantize()`)"
        )
    first = tensors[0]._qparams
    plains = [_plain(t) for t in tensors]
    out = torch.cat(plains, dim)
    dim = int(dim) % out.dim()
    if first.per_channel and dim == first.axis:
        if any((t._qparams.qdtype, t._qparams.qscheme, t._qparams.axis) != (first.qdtype, first.qscheme, first.axis) for t in tensors):
            raise QuantizationError("torch.cat along the channel axis needs QTensors of one qdtype, qscheme and axis")
        qp = attrs.evolve(
            first,
            scales=torch.cat([t._qparams.scales.to(out.device) for t in tensors]),
            zero_points=torch.cat([t._qparams.zero_points.to(out.device) for t in tensors]),
        )
        return _wrap(out, qp)
    for i, t in enumerate(tensors[1:], start=1):
        if not t._qparams.same_as(first):
            raise QuantizationError(
                f"torch.cat: input {i} has different qparams from input 0; requantize them to common qparams "
                "(e.g. quantize_per_tensor(x.dequantize(), scale, zero_point, dtype)) before concatenating"
            )
    return _wrap(out, first)


def _zero_point_like(qp: _QParams, data: Tensor) -> Union[int, Tensor]:
    if qp.qscheme is QScheme.PER_CHANNEL_AFFINE_FLOAT_QPARAMS:
        raise QuantizationError("relu on a QTensor with float zero points (per_channel_affine_float_qparams) is not exact; dequantize first")
    if not qp.per_channel:
        return qp.zero_point
    shape = [1] * data.dim()
    shape[qp.axis] = -1
    return qp.zero_points.to(device=data.device, dtype=data.dtype).reshape(shape)


@_implements(F.relu, torch.relu, torch.Tensor.relu, torch.relu_, torch.Tensor.relu_, getattr(F, "relu_", None))
def _relu(func: Callable, args: tuple, kwargs: dict) -> QTensor:
    self, rest = _self_and_rest(args)
    inplace = func in (torch.relu_, torch.Tensor.relu_, getattr(F, "relu_", None)) or bool(_get(rest, kwargs, 0, ("inplace",), False))
    plain = _plain(self)
    zp = _zero_point_like(self._qparams, plain)
    out = plain.clamp_min(zp) if isinstance(zp, int) else torch.maximum(plain, zp)
    if inplace:
        plain.copy_(out)
        return self
    return _wrap(out, self._qparams)


def _pool(spatial: int) -> Callable:
    def handler(func: Callable, args: tuple, kwargs: dict) -> Any:
        self, rest = _self_and_rest(args)
        plain = _plain(self)
        qp = self._qparams
        if qp.per_channel and qp.axis >= plain.dim() - spatial:
            raise _channel_axis_error(_op_name(func), qp, f"would pool over the channel dimension (pooling uses the last {spatial})")
        # Max pooling only compares values, so pooling the integers (held exactly in a float
        # dtype, as the pooling kernels want floats) gives the quantized result.
        exact = torch.float64 if plain.dtype == torch.int32 else torch.float32
        result = func(plain.to(exact), *rest, **kwargs)
        if isinstance(result, tuple):
            values, indices = result
            return _wrap(values.to(plain.dtype), qp), indices
        return _wrap(result.to(plain.dtype), qp)

    return handler


for _n in (1, 2, 3):
    _implements(
        getattr(F, f"max_pool{_n}d"), getattr(F, f"max_pool{_n}d_with_indices"),
        getattr(F, f"adaptive_max_pool{_n}d"), getattr(F, f"adaptive_max_pool{_n}d_with_indices"),
        getattr(torch, f"max_pool{_n}d", None), getattr(torch, f"adaptive_max_pool{_n}d", None),
        getattr(torch, f"max_pool{_n}d_with_indices", None),
    )(_pool(_n))


@_implements(torch.Tensor.copy_)
def _copy(func: Callable, args: tuple, kwargs: dict) -> QTensor:
    self, rest = args[0], args[1:]
    src = _get(rest, kwargs, 0, ("src",), None)
    non_blocking = bool(_get(rest, kwargs, 1, ("non_blocking",), False))
    if not (isinstance(self, QTensor) and isinstance(src, QTensor)):
        raise QuantizationError(
            "copy_ between a QTensor and a plain tensor is not supported; copy a QTensor into a QTensor "
            "(it takes the source's qparams), or dequantize first (`x.dequantize()`)"
        )
    if _plain(self).dtype != _plain(src).dtype:
        raise QuantizationError(f"copy_: cannot copy a {src.qdtype.name} QTensor into a {self.qdtype.name} one")
    _plain(self).copy_(_plain(src), non_blocking=non_blocking)
    self._qparams = src._qparams.to(_plain(self).device)
    return self


# --- average pooling: torch's quantized kernels' integer arithmetic, step for step ------------------------------
#
# torch's quantized average pooling keeps the input's qparams and averages the integers, rounding as its
# kernels do. Its NCHW kernels and its channels-last (NHWC) kernels round differently, so each handler
# follows the kernel torch picks for the input's memory format (docs/numerics.md, "Average pooling").

_F32 = torch.float32
_AVG_POOL_ARGS = ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override")


def _avg_pool_qparams(self: QTensor, op: str) -> _QParams:
    qp = self._qparams
    if qp.per_channel:
        raise QuantizationError(
            f"{op} on a per-channel QTensor is not supported: torch's quantized average pooling is per tensor. "
            "Dequantize first (`x.dequantize()`), or quantize the input per tensor."
        )
    if qp.qdtype not in (dtypes.uint8, dtypes.int8):
        raise QuantizationError(f"{op} needs a uint8 or int8 QTensor, got {qp.qdtype.name}; dequantize first (`x.dequantize()`)")
    return qp


def _ntuple(value: Any, n: int, what: str, op: str) -> tuple[int, ...]:
    if isinstance(value, numbers.Integral):
        return (int(value),) * n
    values = tuple(int(v) for v in value)
    if len(values) == 1:
        return values * n
    if len(values) != n:
        raise QuantizationError(f"{op}: {what} must be an int or {n} ints, got {value!r}")
    return values


def _outer(per_dim: Sequence[Tensor]) -> Tensor:
    """The product over dimensions of per-dimension 1-d values, as a tensor of the output's spatial shape."""
    n = len(per_dim)
    result = torch.ones((1,) * n, dtype=per_dim[0].dtype)
    for i, values in enumerate(per_dim):
        shape = [1] * n
        shape[i] = -1
        result = result * values.reshape(shape)
    return result


def _requantize(acc: Tensor, divisor: Tensor, zero_point: int, qp: _QParams, rule: str, vector: Optional[Tensor] = None) -> Tensor:
    """``acc / divisor + zero_point`` rounded (``nearbyint``: ties to even) and clamped as torch's kernels do.

    ``rule="nchw"`` (avg_pool2d_out_frame): ``float(acc) * float(1.0 / divisor) + zero_point``, each step
    rounded to float32. NHWC kernels, channels their scalar loop handles: the same with the multiplier
    ``inv = 1 / (1 / (1.0f / divisor))`` in float32 (quantize_val). Channels their vector loop handles
    (``vector``, True per channel): ``rule="avg"`` (_qavg_pool_nhwc_kernel) rounds ``float(acc) * m`` and
    adds the zero point after; ``rule="adaptive"`` (_qadaptive_avg_pool_kernel) rounds the fused
    ``acc * inv + zero_point`` (fbgemm's FMA: exact, one rounding to float32).
    """
    lo, hi = qp.qdtype.quant_min, qp.qdtype.quant_max
    zp = torch.tensor(float(zero_point), dtype=_F32)
    if rule == "nchw":
        multiplier = (1.0 / divisor.to(torch.float64)).to(_F32)
        return torch.round(acc.to(_F32) * multiplier + zp).clamp(lo, hi)
    one = torch.ones_like(divisor, dtype=_F32)
    multiplier = torch.div(one, divisor.to(_F32))
    inverse = torch.div(one, torch.div(one, multiplier))
    q = torch.round(acc.to(_F32) * inverse + zp)
    if vector is not None:
        if rule == "avg":
            vectorized = torch.round(acc.to(_F32) * multiplier) + zp
        else:  # acc * inv is exact in float64 (a 24-bit by at most 31-bit product), so this is one rounding
            vectorized = torch.round((acc.to(torch.float64) * inverse.to(torch.float64) + float(zero_point)).to(_F32))
        q = torch.where(vector, vectorized, q)
    return q.clamp(lo, hi)


def _vector_channels(rule: str, channels: int, channel_dim: int, ndim: int) -> Optional[Tensor]:
    """Which channels torch's NHWC kernel quantizes in its vector loop (True), or None when none do.

    The loop takes whole blocks of channels: 16 (avg_pool, AVX-512 builds) or 8 (avg_pool on AVX2;
    adaptive_avg_pool, measured on both); torch builds without AVX2 have no vector loop.
    """
    capability = torch.backends.cpu.get_cpu_capability()
    if not capability.startswith(("AVX2", "AVX512")):
        return None
    width = 16 if rule == "avg" and capability.startswith("AVX512") else 8
    if channels < width:
        return None
    shape = [1] * ndim
    shape[channel_dim] = channels
    return (torch.arange(channels) < channels // width * width).reshape(shape)


def _suggested_format(x: Tensor, nhwc: bool) -> torch.memory_format:
    """The memory format torch's kernels give the output: channels-last only for an unambiguously channels-last input."""
    if not nhwc or x.is_contiguous():
        return torch.contiguous_format
    return torch.channels_last if x.dim() == 4 else torch.channels_last_3d


def _is_format(t: Tensor, memory_format: torch.memory_format) -> bool:
    try:
        return bool(t.is_contiguous(memory_format=memory_format))
    except RuntimeError:
        return False


def _avg_pool(spatial: int) -> Callable:
    def handler(func: Callable, args: tuple, kwargs: dict) -> QTensor:
        """Average pooling on the integers, equal to torch's quantized ``avg_pool{1,2,3}d`` (same qparams out).

        2-d: torch's NCHW kernel for most inputs, its NHWC kernel when the 4-d input is channels-last
        contiguous (``is_contiguous(memory_format=torch.channels_last)``); 1-d runs as 2-d over
        ``x.unsqueeze(-2)``, as torch's does; 3-d always uses the NHWC kernel (torch makes the input
        channels-last first; without a batch dimension, where torch raises, as a batch of one). The two
        round ties differently (:func:`_requantize`). The output has the memory format torch's kernel gives.
        """
        op = _op_name(func)
        self, rest = _self_and_rest(args)
        qp = _avg_pool_qparams(self, op)
        names = _AVG_POOL_ARGS if spatial > 1 else _AVG_POOL_ARGS[:-1]
        if len(rest) > len(names) or not set(kwargs) <= set(names):
            raise QuantizationError(f"{op}: unexpected arguments; takes input, {', '.join(names)}")
        bound = dict(zip(names, rest), **kwargs)
        if "kernel_size" not in bound:
            raise QuantizationError(f"{op}: kernel_size is required")
        n = max(spatial, 2)
        kernel = _ntuple(bound["kernel_size"], spatial, "kernel_size", op)
        stride_arg = bound.get("stride")
        stride = kernel if stride_arg is None or (not isinstance(stride_arg, int) and len(stride_arg) == 0) else (
            _ntuple(stride_arg, spatial, "stride", op))
        padding = _ntuple(bound.get("padding", 0), spatial, "padding", op)
        ceil_mode = bool(bound.get("ceil_mode", False))
        count_include_pad = bool(bound.get("count_include_pad", True))
        divisor_override = bound.get("divisor_override")
        if divisor_override is not None and int(divisor_override) == 0:
            raise QuantizationError(f"{op}: divisor_override must not be zero")
        plain = _plain(self)
        x = plain.unsqueeze(-2) if spatial == 1 else plain
        if spatial == 1:
            kernel, stride, padding = (1, *kernel), (1, *stride), (0, *padding)
        if spatial == 3:  # torch runs x.contiguous(memory_format=torch.channels_last_3d) through its NHWC kernel
            nhwc, memory_format = True, (torch.channels_last_3d if x.dim() == 5 else torch.contiguous_format)
        else:
            nhwc = x.dim() == 4 and _is_format(x, torch.channels_last)
            memory_format = _suggested_format(x, nhwc)
        # Window sums of the integers: float64 pooling with divisor 1 adds them exactly (padding adds 0).
        pool = F.avg_pool3d if n == 3 else F.avg_pool2d
        sums = pool(x.to(torch.float64), kernel, stride, padding, ceil_mode, True, 1)
        sizes, padded = [], []
        for d in range(n):
            in_len, out_len = x.shape[x.dim() - n + d], sums.shape[sums.dim() - n + d]
            start = torch.arange(out_len, dtype=torch.int64) * stride[d] - padding[d]
            end = torch.clamp_max(start + kernel[d], in_len + padding[d])
            padded.append(end - start)
            sizes.append(end.clamp_max(in_len) - start.clamp_min(0))
        size = _outer(sizes)
        if divisor_override is not None:
            divisor = torch.full_like(size, int(divisor_override))
        else:
            divisor = _outer(padded) if count_include_pad else size
        zp = qp.zero_point
        acc = sums.to(torch.int64) - size * zp
        vector = _vector_channels("avg", x.shape[x.dim() - n - 1], x.dim() - n - 1, x.dim()) if nhwc else None
        q = _requantize(acc, divisor, zp, qp, "avg" if nhwc else "nchw", vector)
        q = q.to(plain.dtype).contiguous(memory_format=memory_format)
        return _wrap(q.squeeze(-2) if spatial == 1 else q, qp)

    return handler


def _adaptive_sizes(output_size: Any, in_sizes: Sequence[int], op: str) -> tuple[int, ...]:
    n = len(in_sizes)
    if isinstance(output_size, numbers.Integral):
        return (int(output_size),) * n
    values = tuple(output_size)
    if len(values) == 1:
        values = values * n
    if len(values) != n:
        raise QuantizationError(f"{op}: output_size must be an int or {n} values, got {output_size!r}")
    return tuple(int(size) if v is None else int(v) for v, size in zip(values, in_sizes))


def _adaptive_avg_pool(spatial: int) -> Callable:
    def handler(func: Callable, args: tuple, kwargs: dict) -> QTensor:
        """Adaptive average pooling on the integers, equal to torch's quantized ``adaptive_avg_pool{1,2,3}d``.

        torch's NCHW kernel (rounds ``sum * (1/kD/kH/kW)`` in float32, zero point untouched) for most
        inputs; its NHWC kernel (subtracts the zero point, rounds like fbgemm's Quantize) when the input is
        channels-last contiguous (4-d) or channels-last-3d contiguous (5-d). 1-d runs as 2-d over
        ``x.unsqueeze(-2)``, as torch's does. Windows start at ``floor(o * in / out)`` and end at
        ``ceil((o + 1) * in / out)``, computed in float32 as torch does. Not bit-exact in one case:
        torch's 3-d NHWC kernel resolves some exact ties inconsistently; qcore is within one step there.
        Where torch's kernels misread the layout (docs/numerics.md) qcore gives the right average.
        """
        op = _op_name(func)
        self, rest = _self_and_rest(args)
        qp = _avg_pool_qparams(self, op)
        output_size = _get(rest, kwargs, 0, ("output_size",), None)
        if output_size is None or len(rest) > 1 or not set(kwargs) <= {"output_size"}:
            raise QuantizationError(f"{op}: takes input and output_size")
        plain = _plain(self)
        x = plain.unsqueeze(-2) if spatial == 1 else plain
        n = max(spatial, 2)
        if x.dim() not in (n + 1, n + 2) or any(s == 0 for s in x.shape[1:]):
            raise QuantizationError(f"{op}: expected a {n + 1}-d or {n + 2}-d input with non-empty dimensions, got shape {tuple(plain.shape)}")
        in_sizes = tuple(x.shape[-n:])
        out_sizes = _adaptive_sizes(output_size, in_sizes if spatial > 1 else in_sizes[1:], op)
        if spatial == 1:
            out_sizes = (1, *out_sizes)
        nhwc = x.dim() == n + 2 and _is_format(x, torch.channels_last if n == 2 else torch.channels_last_3d)
        memory_format = _suggested_format(x, nhwc)
        sums = x.to(torch.float64)
        lengths = []
        for d, (in_len, out_len) in enumerate(zip(in_sizes, out_sizes)):
            o = torch.arange(out_len, dtype=torch.int64)
            denominator = torch.full((out_len,), float(out_len), dtype=_F32)
            start = torch.floor(torch.div((o * in_len).to(_F32), denominator)).to(torch.int64)
            end = torch.ceil(torch.div(((o + 1) * in_len).to(_F32), denominator)).to(torch.int64)
            i = torch.arange(in_len, dtype=torch.int64)
            window = ((i >= start[:, None]) & (i < end[:, None])).to(torch.float64)  # (out, in)
            dim = x.dim() - n + d
            sums = torch.matmul(sums.movedim(dim, -1), window.t()).movedim(-1, dim)  # exact: integer sums in float64
            lengths.append(end - start)
        if nhwc:
            size = _outer(lengths)
            zp = qp.zero_point
            vector = _vector_channels("adaptive", x.shape[x.dim() - n - 1], x.dim() - n - 1, x.dim())
            q = _requantize(sums.to(torch.int64) - size * zp, size, zp, qp, "adaptive", vector)
        else:
            # adaptive_avg_pool_single_out_frame: r = float(1.0 / kD) / kH / kW in float32 (kD = 1 in 2-d)
            per_dim = [torch.ones(1, dtype=torch.int64)] * (3 - n) + lengths
            rates = [(1.0 / per_dim[0].to(torch.float64)).to(_F32)] + [v.to(_F32) for v in per_dim[1:]]
            shaped = [r.reshape([-1 if j == k else 1 for j in range(3)]) for k, r in enumerate(rates)]
            rate = torch.div(torch.div(shaped[0], shaped[1]), shaped[2]).reshape([len(v) for v in lengths])
            q = torch.round(sums.to(_F32) * rate).clamp(qp.qdtype.quant_min, qp.qdtype.quant_max)
        q = q.to(plain.dtype).contiguous(memory_format=memory_format)
        return _wrap(q.squeeze(-2) if spatial == 1 else q, qp)

    return handler


for _n in (1, 2, 3):
    _implements(
        getattr(F, f"avg_pool{_n}d"), getattr(torch, f"avg_pool{_n}d", None), getattr(torch._C._nn, f"avg_pool{_n}d", None),
    )(_avg_pool(_n))
    _implements(
        getattr(F, f"adaptive_avg_pool{_n}d"), getattr(torch, f"adaptive_avg_pool{_n}d", None),
        getattr(torch._C._nn, f"adaptive_avg_pool{_n}d", None),
    )(_adaptive_avg_pool(_n))
