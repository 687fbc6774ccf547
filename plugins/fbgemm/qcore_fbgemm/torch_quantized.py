"""The one place qcore-fbgemm meets torch's deprecated quantized tensors (``torch.quint8`` & co.).

torch's int8 kernels take and return quantized torch tensors. Kernel modules
convert a :class:`qcore.QTensor` to one with :func:`to_torch`, run the op and
wrap the result with :func:`from_torch` as a :class:`KernelQTensor`: a QTensor
that is the torch tensor itself (the same memory and quantizer, no copy) and
keeps it, so the next kernel module, max-pooling, ``relu`` and reshapes run on
it directly. Everything else sees an ordinary QTensor, whose integers are a
uint8/int8 view of that memory.

torch warns once per process when a quantized tensor is first made; that
happens at import here, silenced (:func:`quiet`), so qcore users never see it.
Packing runs under :func:`quiet` and :func:`engine` too.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any, Callable, Iterator, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from qcore import dtypes
from qcore.dtypes import QScheme
from qcore.qtensor import QTensor, _QParams, integer_data

__all__ = [
    "KernelQTensor",
    "quiet",
    "engine",
    "to_torch",
    "from_torch",
    "output_qparams",
    "quantize_weight",
    "plain",
    "torch_avg_pool_agrees",
]

_QDTYPE = {torch.quint8: dtypes.uint8, torch.qint8: dtypes.int8}


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence torch's deprecation warnings about quantized tensors and the torch.ao API inside the block."""
    with warnings.catch_warnings():
        for category in (UserWarning, DeprecationWarning, FutureWarning):
            warnings.filterwarnings("ignore", message=r"(?s).*deprecat", category=category)
        yield


@contextlib.contextmanager
def engine(name: str) -> Iterator[None]:
    """Use torch's quantized engine ``name`` ("fbgemm", "x86", "onednn") inside the block, then restore the user's."""
    previous = torch.backends.quantized.engine
    if previous == name:
        yield
        return
    torch.backends.quantized.engine = name
    try:
        yield
    finally:
        torch.backends.quantized.engine = previous


def plain(x: Tensor) -> Tensor:
    """The integer storage of a QTensor as a plain tensor (an alias, no copy)."""
    return integer_data(x)


def output_qparams(scale: float, zero_point: int, qdtype: dtypes.QDType = dtypes.uint8) -> _QParams:
    """The per-tensor qparams a kernel module gives every output (built once, shared by its outputs)."""
    return _QParams(qdtype, QScheme.PER_TENSOR_AFFINE, scale=float(scale), zero_point=int(zero_point))


_STORAGE_DTYPE = {torch.quint8: torch.uint8, torch.qint8: torch.int8}
# Queries whose answer differs between the quantized tensor and its integers: answered for the integers.
_INTEGER_QUERIES = {
    torch.Tensor.dtype.__get__: lambda dtype: _STORAGE_DTYPE[dtype],  # a property reaches __torch_function__ as __get__
    torch.Tensor.is_signed: lambda dtype: _STORAGE_DTYPE[dtype].is_signed,
}
_DisableTorchFunctionSubclass = torch._C.DisableTorchFunctionSubclass


class KernelQTensor(QTensor):
    """A QTensor that is a torch quantized tensor (made from it without a copy), carrying it for the next kernel.

    Making one is an alias of the kernel's output given this class: the
    cheapest way to hand it on (a QTensor over a re-pointed uint8 tensor cost
    ~5 us more per kernel call). QTensor's operations reach its integers through
    ``_qcore_integers``, a uint8/int8 view of the same memory, and ``.dtype``
    and ``is_signed()`` answer for that view, as for every QTensor. The torch tensor is
    reused only while the qparams are still the ones it was made with
    (``copy_`` replaces them); the memory is shared, so in-place changes reach
    both. Max pooling, ``relu`` and reshapes run on the torch tensor and keep
    the pairing; every other operation is QTensor's own.
    """

    _torch: Tensor
    _torch_qparams: _QParams

    def _qcore_integers(self) -> Tensor:
        """The integers: a plain uint8/int8 tensor over this tensor's memory, with its shape and strides."""
        with _DisableTorchFunctionSubclass():
            ints = torch.empty(0, dtype=_STORAGE_DTYPE[self.dtype], device=self.device)
            return ints.set_(self.untyped_storage(), self.storage_offset(), self.size(), self.stride())

    @classmethod
    def __torch_function__(cls, func: Callable, types: tuple, args: tuple = (), kwargs: Optional[dict] = None) -> Any:
        handler = _FAST.get(func)
        if handler is not None and args:
            self = args[0]
            if type(self) is KernelQTensor and self._torch_qparams is self._qparams:
                result = handler(self, func, args[1:], kwargs or {})
                if result is not NotImplemented:
                    return result
        answer = _INTEGER_QUERIES.get(func)
        if answer is not None and len(args) == 1 and type(args[0]) is KernelQTensor:
            with _DisableTorchFunctionSubclass():
                return answer(args[0].dtype)
        return super().__torch_function__(func, types, args, kwargs)


def from_torch(tq: Tensor, qparams: Optional[_QParams] = None) -> KernelQTensor:
    """Wrap a per-tensor quantized torch tensor as a QTensor without copying.

    ``qparams`` must describe ``tq`` (kernel modules pass their cached output
    qparams); without it they are read from ``tq``. The QTensor's integers are
    a uint8/int8 view of ``tq``'s memory (``int_repr()`` without the copy).
    """
    if qparams is None:
        qparams = output_qparams(tq.q_scale(), tq.q_zero_point(), _QDTYPE[tq.dtype])
    # The same memory and quantizer, a new tensor object: an alias made a KernelQTensor by class assignment
    # (0.7 us; _make_subclass takes 1.15 us, and this runs once per kernel call).
    obj = tq.detach()
    obj.__class__ = KernelQTensor
    d = obj.__dict__  # plain dict stores
    d["_qparams"] = qparams
    d["_torch"] = tq
    d["_torch_qparams"] = qparams
    return obj


def to_torch(x: Any, qdtype: dtypes.QDType = dtypes.uint8) -> Optional[Tensor]:
    """The torch quantized tensor for a per-tensor QTensor of ``qdtype``; None for anything else.

    Reuses the tensor a kernel produced; otherwise copies the integers once.
    """
    if type(x) is KernelQTensor and x._torch_qparams is x._qparams:
        tq = x._torch
        return tq if _QDTYPE[tq.dtype] is qdtype else None
    if not isinstance(x, QTensor):
        return None
    qp = x._qparams
    if qp.per_channel or qp.qdtype is not qdtype or x.device.type != "cpu":
        return None
    return torch._make_per_tensor_quantized_tensor(plain(x), qp.scale, qp.zero_point)


def quantize_weight(weight: QTensor) -> Tensor:
    """A qcore int8 weight QTensor (per tensor or per channel, integer zero points) as torch's ``qint8`` weight."""
    data = weight.int_repr()
    if weight.qscheme().is_per_channel:
        return torch._make_per_channel_quantized_tensor(
            data, weight.q_per_channel_scales().to(torch.float64), weight.q_per_channel_zero_points().to(torch.int64),
            weight.q_per_channel_axis(),
        )
    return torch._make_per_tensor_quantized_tensor(data, weight.q_scale(), weight.q_zero_point())


# --- the operations KernelQTensor runs on its torch tensor (all exact, so results equal QTensor's) -------------


_POOL_ARGS = ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
_POOL_KEYWORDS = frozenset(_POOL_ARGS[1:])
_TORCH_POOL = {F.max_pool1d: torch.max_pool1d, F.max_pool2d: torch.max_pool2d, F.max_pool3d: torch.max_pool3d}


def _max_pool_handler(self: KernelQTensor, func: Callable, rest: tuple, kwargs: dict) -> Any:
    torch_pool = _TORCH_POOL.get(func)
    if torch_pool is None:  # torch.max_poolNd itself
        return from_torch(func(self._torch, *rest, **kwargs), self._qparams)
    if len(rest) == 1 and _POOL_KEYWORDS.issuperset(kwargs):  # how F.max_poolNd hands itself on: the common case
        if kwargs.get("return_indices"):
            return NotImplemented
        get = kwargs.get
        stride = get("stride")
        out = torch_pool(self._torch, rest[0], [] if stride is None else stride, get("padding", 0), get("dilation", 1),
                         bool(get("ceil_mode", False)))
        return from_torch(out, self._qparams)
    bound = dict(zip(_POOL_ARGS, rest))
    bound.update(kwargs)
    if bound.get("return_indices") or "kernel_size" not in bound or len(bound) > len(_POOL_ARGS):
        return NotImplemented
    stride = bound.get("stride")
    out = torch_pool(
        self._torch, bound["kernel_size"], [] if stride is None else stride, bound.get("padding", 0),
        bound.get("dilation", 1), bool(bound.get("ceil_mode", False)),
    )
    return from_torch(out, self._qparams)


def _relu_inplace(self: KernelQTensor, func: Callable, rest: tuple, kwargs: dict) -> Any:
    torch.relu_(self._torch)  # the integers are shared: self sees the change
    return self


def _relu(self: KernelQTensor, func: Callable, rest: tuple, kwargs: dict) -> Any:
    inplace = bool(rest[0]) if rest else bool(kwargs.get("inplace", False))
    if inplace:
        return _relu_inplace(self, func, rest, kwargs)
    return from_torch(torch.relu(self._torch), self._qparams)


def _reshape(self: KernelQTensor, func: Callable, rest: tuple, kwargs: dict) -> Any:
    if func is torch.Tensor.view and rest and isinstance(rest[0], torch.dtype):
        return NotImplemented
    return from_torch(func(self._torch, *rest, **kwargs), self._qparams)


# Average pooling: torch's quantized kernels, where qcore's QTensor gives the same integers (docs/numerics.md).
# Elsewhere (QNNPACK's kernels, torch's layout mix-ups on ambiguous channels-last inputs, the 3-d adaptive
# kernel on channels-last input, avg_pool3d without a batch dimension) the QTensor's own handler runs.
_AVG_POOLS: dict[Callable, tuple[bool, int]] = {}  # op -> (adaptive, spatial dimensions)
for _n in (1, 2, 3):
    for _adaptive, _name in ((False, f"avg_pool{_n}d"), (True, f"adaptive_avg_pool{_n}d")):
        for _owner in (F, torch, torch._C._nn):
            _op = getattr(_owner, _name, None)
            if _op is not None:
                _AVG_POOLS[_op] = (_adaptive, _n)


def torch_avg_pool_agrees(adaptive: bool, spatial: int, tq: Tensor) -> bool:
    """Whether torch's quantized (adaptive) average pooling of ``tq`` gives the integers QTensor's handler does."""
    if torch.backends.quantized.engine == "qnnpack":
        return False
    x = tq.unsqueeze(-2) if spatial == 1 else tq  # 1-d runs as 2-d over x.unsqueeze(-2)
    if spatial < 3:  # torch's NHWC kernels misplace the output of an input contiguous both ways, (N, C, 1, 1)
        return not (x.dim() == 4 and x.shape[1] > 1 and x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last))
    if not adaptive:
        return x.dim() == 5  # torch's avg_pool3d needs the batch dimension
    if x.dim() == 5:
        return not x.is_contiguous(memory_format=torch.channels_last_3d)  # qcore is within one step there
    return not x.is_contiguous(memory_format=torch.channels_last)  # torch takes it for a 2-d batch


def _avg_pool_handler(self: KernelQTensor, func: Callable, rest: tuple, kwargs: dict) -> Any:
    tq = self._torch
    if not torch_avg_pool_agrees(*_AVG_POOLS[func], tq):
        return NotImplemented
    return from_torch(func(tq, *rest, **kwargs), self._qparams)


_FAST: dict[Callable, Callable] = dict.fromkeys(_AVG_POOLS, _avg_pool_handler)
for _f in (F.max_pool1d, F.max_pool2d, F.max_pool3d, torch.max_pool1d, torch.max_pool2d, torch.max_pool3d):
    _FAST[_f] = _max_pool_handler
for _f in (F.relu, torch.relu, torch.Tensor.relu):
    _FAST[_f] = _relu
for _f in (torch.relu_, torch.Tensor.relu_, F.relu_):
    _FAST[_f] = _relu_inplace
for _f in (
    torch.Tensor.view, torch.Tensor.reshape, torch.reshape, torch.Tensor.flatten, torch.flatten,
    torch.Tensor.squeeze, torch.squeeze, torch.Tensor.unsqueeze, torch.unsqueeze, torch.Tensor.contiguous,
):
    _FAST[_f] = _reshape


def _prime() -> None:
    """Make torch's warn-once deprecation warnings fire now, silenced, so they never reach a user."""
    with quiet():
        x = torch.quantize_per_tensor(torch.zeros(1, 1, 2, 2), 1.0, 0, torch.quint8)
        torch._make_per_tensor_quantized_tensor(torch.zeros(1, dtype=torch.uint8), 1.0, 0)
        ones, zeros = torch.ones(1, dtype=torch.float64), torch.zeros(1, dtype=torch.int64)
        torch.quantize_per_channel(torch.zeros(1, 1), ones, zeros, 0, torch.qint8)
        x.dequantize()
        x.int_repr()


_prime()
