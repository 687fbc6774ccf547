"""One stored weight for dynamic and weight-only modules: integers (8-bit, or 4-bit packed two per byte) or float16.

:class:`QuantizedWeightStorage` is the base of every module in
``qcore.nn.quantized.dynamic`` and ``qcore.nn.quantized.weight_only`` and of
``qcore.nn.quantized.Embedding``/``EmbeddingBag``. It keeps the weight in
buffers with the state-dict keys every quantized module uses (``weight``,
``weight_scale``, ``weight_zero_point``, ``weight_axis``, ``bias``), offers
torch.ao's ``weight()``/``bias()`` methods, and gives the forward pass the
float32 weight through :meth:`~QuantizedWeightStorage.dequantized_weight`,
which is TorchScript-compatible.

Memory versus speed: with ``cache_dequantized=True`` the dequantized float32
weight is also kept (a non-persistent buffer, rebuilt after loading): forward
is as fast as the float module, but the module holds the float weight *plus*
the integers. With ``cache_dequantized=False`` only the integers stay resident
(1/4 of float32 for int8, 1/8 for packed int4, plus one scale per channel or
group) and every forward dequantizes the weight again (one extra elementwise
pass over the weight). Either way the numbers are the same.
"""

from __future__ import annotations

from typing import Any, Optional, Union

import torch
from torch import Tensor, nn

from qcore import dtypes
from qcore.dtypes import DTypeLike, QDType, QScheme
from qcore.errors import ConfigError, QuantizationError
from qcore.int4_packing import pack_int4, unpack_int4
from qcore.qtensor import QTensor, quantize_per_channel, quantize_per_tensor
from qcore.nn.quantized.weight_only.functional import dequantize_weight

__all__ = ["QuantizedWeightStorage", "quantize_weight", "weight_dtype_of"]

_FLOAT_QPARAMS = QScheme.PER_CHANNEL_AFFINE_FLOAT_QPARAMS
_STORABLE = (dtypes.int8, dtypes.uint8, dtypes.int4, dtypes.uint4, dtypes.float16)


def weight_dtype_of(observer: Any, owner: str) -> QDType:
    """The qcore dtype an observer or fake-quant (or its factory's product) quantizes to."""
    dtype = getattr(observer, "dtype", None)
    if dtype is None:
        raise ConfigError(f"{owner}: {type(observer).__name__} has no dtype; expected an observer or fake-quant module")
    try:
        return dtypes.qdtype(dtype)
    except Exception as exc:
        raise ConfigError(f"{owner}: unsupported weight dtype {dtype!r}: {exc}") from None


def quantize_weight(weight: Tensor, observer: Any, owner: str = "quantize_weight") -> Union[QTensor, Tensor]:
    """Quantize a float weight with the qparams ``observer`` computed (it must have seen the weight).

    torch.ao's ``_quantize_weight``: per tensor or per channel, float zero
    points for ``per_channel_affine_float_qparams``; the returned QTensor
    records the observer's qscheme. A float16 observer gives ``weight.to(torch.float16)``.
    """
    d = weight_dtype_of(observer, owner)
    if d is dtypes.float16:
        return weight.detach().to(torch.float16)
    if d.is_float:
        raise ConfigError(f"{owner}: weights cannot be stored as {d.name}; use an int8, int4 or float16 weight observer")
    w = weight.detach().to(torch.float32)
    qscheme = dtypes.qscheme(observer.qscheme)
    try:
        scale, zero_point = observer.calculate_qparams()
    except Exception as exc:
        raise ConfigError(f"{owner}: the weight observer {type(observer).__name__} gave no qparams: {exc}") from exc
    if qscheme.is_per_channel:
        axis = int(getattr(observer, "ch_axis", 0))
        zp = zero_point.to(torch.float32) if qscheme is _FLOAT_QPARAMS else zero_point.to(torch.int64)
        q = quantize_per_channel(w, scale.to(torch.float64), zp, axis, d)
        return QTensor.from_int(q.int_repr(), q.q_per_channel_scales(), q.q_per_channel_zero_points(), d, axis=q.q_per_channel_axis(), qscheme=qscheme)
    q = quantize_per_tensor(w, float(scale.reshape(-1)[0]), int(zero_point.reshape(-1)[0]), d)
    return QTensor.from_int(q.int_repr(), q.q_scale(), q.q_zero_point(), d, qscheme=qscheme)


class QuantizedWeightStorage(nn.Module):
    """Base of modules that keep one quantized (or float16) weight and an optional float bias.

    Buffers: ``_qweight`` (state-dict key ``weight``: int8/uint8 values, 4-bit
    values packed two per byte along the last dimension, or float16 values),
    ``weight_scale`` (float64), ``weight_zero_point`` (int64, float32 for float
    qparams), ``weight_axis`` (0-d int64, -1 per tensor) and ``_bias`` (key
    ``bias``). Per tensor the qparams are 0-d, per channel 1-d, groupwise
    ``[rows, groups]``. float16 weights have no qparam buffers. The dtype,
    qscheme, logical shape and group size travel as ``_extra_state``; loading a
    state dict takes the saved shapes and dtypes.
    """

    # A TorchScript constant: the branch of dequantized_weight() not taken is not compiled.
    __constants__ = ["_cached"]

    _STATE_NAMES = {"weight": "_qweight", "bias": "_bias"}  # state-dict key -> buffer name
    _QPARAM_BUFFERS = ("weight_scale", "weight_zero_point", "weight_axis")

    def _init_weight(
        self,
        shape: tuple[int, ...],
        dtype: DTypeLike,
        bias: bool,
        cache_dequantized: bool = True,
    ) -> None:
        """Register a zero weight of logical ``shape`` (per tensor, scale 1) and, if ``bias``, a zero bias."""
        d = self._storable(dtype)
        self.weight_dtype: QDType = d
        self.weight_shape: tuple[int, ...] = tuple(int(s) for s in shape)
        self.group_size: int = 0
        self.cache_dequantized: bool = bool(cache_dequantized)
        if d is dtypes.float16:
            self.register_buffer("_qweight", torch.zeros(self.weight_shape, dtype=torch.float16))
            for name in self._QPARAM_BUFFERS:
                self.register_buffer(name, None)
            self.weight_qscheme = QScheme.PER_TENSOR_AFFINE
        else:
            zero = max(d.quant_min, 0)
            q = torch.full(self.weight_shape, zero, dtype=torch.int8 if d.is_signed else torch.uint8)
            self.register_buffer("_qweight", pack_int4(q, d) if d.bits == 4 else q)
            self.register_buffer("weight_scale", torch.tensor(1.0, dtype=torch.float64))
            self.register_buffer("weight_zero_point", torch.tensor(zero, dtype=torch.int64))
            self.register_buffer("weight_axis", torch.tensor(-1, dtype=torch.int64))
            self.weight_qscheme = QScheme.PER_TENSOR_AFFINE
        self.register_buffer("_bias", torch.zeros(self.weight_shape[0], dtype=torch.float32) if bias else None)
        self.register_buffer("_weight_float", torch.zeros(0), persistent=False)
        self._refresh()

    def _storable(self, dtype: DTypeLike) -> QDType:
        d = dtypes.qdtype(dtype)
        if d not in _STORABLE:
            names = ", ".join(x.name for x in _STORABLE)
            raise ConfigError(f"{type(self).__name__}: cannot store weights as {d.name}; supported: {names}")
        return d

    # --- torch.ao's API ---------------------------------------------------------------------

    def weight(self) -> Union[QTensor, Tensor]:
        """The weight as a QTensor (4-bit values unpacked; groupwise: one row per group), or the float16 tensor."""
        d = self.weight_dtype
        if d is dtypes.float16:
            return self._qweight
        q = self._int_weight()
        if self.group_size > 0:
            rows = q.reshape(-1, self.group_size)
            return QTensor.from_int(
                rows, self.weight_scale.reshape(-1), self.weight_zero_point.reshape(-1), d, axis=0, qscheme=self.weight_qscheme
            )
        axis = int(self.weight_axis)
        if axis < 0:
            return QTensor.from_int(q, float(self.weight_scale), self._zero_point_scalar(), d, qscheme=self.weight_qscheme)
        return QTensor.from_int(q, self.weight_scale, self.weight_zero_point, d, axis=axis, qscheme=self.weight_qscheme)

    def bias(self) -> Optional[Tensor]:
        """The float bias (None without one)."""
        return self._bias

    def _zero_point_scalar(self) -> int:
        return int(self.weight_zero_point)

    def _int_weight(self) -> Tensor:
        """The integer weight values, 4-bit storage unpacked (one value per element)."""
        if self.weight_dtype.bits == 4:
            return unpack_int4(self._qweight, self.weight_shape[-1], self.weight_dtype)
        return self._qweight

    def set_weight_bias(self, w: Union[QTensor, Tensor], b: Optional[Tensor]) -> None:
        """Store a quantized weight (QTensor per tensor or per channel) or a float weight for float16 storage, and a float bias."""
        owner = type(self).__name__
        if isinstance(w, QTensor):
            if w.qscheme().is_per_channel:
                self._store(w.int_repr(), w.q_per_channel_scales(), w.q_per_channel_zero_points(), w.q_per_channel_axis(), 0, w.qdtype, w.qscheme())
            else:
                self._store(
                    w.int_repr(), torch.tensor(w.q_scale(), dtype=torch.float64), torch.tensor(w.q_zero_point()), -1, 0, w.qdtype, w.qscheme()
                )
        elif isinstance(w, Tensor) and w.is_floating_point():
            if self.weight_dtype is not dtypes.float16:
                raise QuantizationError(
                    f"{owner}.set_weight_bias: this module stores {self.weight_dtype.name} weights and needs a QTensor "
                    "(qcore.quantize_per_tensor / quantize_per_channel); a float weight is only for float16 storage"
                )
            self._store_float16(w)
        else:
            raise QuantizationError(f"{owner}.set_weight_bias: the weight must be a QTensor or a float tensor, got {type(w).__name__}")
        self._set_bias(b)
        self._refresh()

    def set_groupwise_weight(self, q: Tensor, scale: Tensor, zero_point: Tensor, group_size: int, dtype: DTypeLike, qscheme: QScheme) -> None:
        """Store integers quantized in groups of ``group_size`` along the last dimension (``scale``: ``[rows, groups]``)."""
        self._store(q, scale, zero_point, -1, group_size, dtypes.qdtype(dtype), qscheme)
        self._refresh()

    def _store(self, q: Tensor, scale: Tensor, zero_point: Tensor, axis: int, group_size: int, d: QDType, qscheme: QScheme) -> None:
        owner = type(self).__name__
        if d is not self.weight_dtype:
            raise QuantizationError(f"{owner}: the weight is {d.name} but the module stores {self.weight_dtype.name}; build the module with dtype={d.name}")
        if tuple(q.shape) != self.weight_shape:
            raise QuantizationError(f"{owner}: weight shape {tuple(q.shape)} does not match the module's {self.weight_shape}")
        device = self._qweight.device
        q = q.to(device=device, dtype=torch.int8 if d.is_signed else torch.uint8)
        self._qweight = pack_int4(q, d) if d.bits == 4 else q.clone()
        self.weight_scale = scale.detach().to(device=device, dtype=torch.float64).clone()
        zp_dtype = torch.float32 if zero_point.is_floating_point() else torch.int64
        self.weight_zero_point = zero_point.detach().to(device=device, dtype=zp_dtype).clone()
        self.weight_axis = torch.tensor(axis, dtype=torch.int64, device=device)
        self.weight_qscheme = qscheme
        self.group_size = int(group_size)

    def _store_float16(self, w: Tensor) -> None:
        owner = type(self).__name__
        if tuple(w.shape) != self.weight_shape:
            raise QuantizationError(f"{owner}: weight shape {tuple(w.shape)} does not match the module's {self.weight_shape}")
        self._qweight = w.detach().to(device=self._qweight.device, dtype=torch.float16).clone()

    def _set_bias(self, b: Optional[Tensor]) -> None:
        if b is None:
            self._bias = None
            return
        if not isinstance(b, Tensor) or not b.is_floating_point():
            raise QuantizationError(f"{type(self).__name__}: the bias must be a float tensor or None")
        self._bias = b.detach().to(device=self._qweight.device, dtype=torch.float32).clone()

    # --- the float weight forward uses ---------------------------------------------------------

    def dequantized_weight(self) -> Tensor:
        """The float32 weight the reference numerics use (cached, or dequantized now). TorchScript-compatible."""
        if self._cached:
            return self._weight_float
        return dequantize_weight(
            self._qweight, self.weight_scale, self.weight_zero_point, self._axis, self._group_size, self._bits, self._signed, self._length
        )

    def _refresh(self) -> None:
        """Recompute the plain attributes TorchScript reads and, when caching, the float weight."""
        d = self.weight_dtype
        self._bits = d.bits
        self._signed = d.is_signed
        self._length = self.weight_shape[-1] if self.weight_shape else 1
        self._group_size = self.group_size
        self._axis = -1 if d is dtypes.float16 or self.weight_axis is None else int(self.weight_axis)
        self._cached = self.cache_dequantized or d is dtypes.float16
        device = self._qweight.device
        if not self._cached:
            self._weight_float = torch.zeros(0, device=device)
        elif d is dtypes.float16:
            self._weight_float = self._qweight.to(torch.float32)
        else:
            self._weight_float = dequantize_weight(
                self._qweight, self.weight_scale, self.weight_zero_point, self._axis, self._group_size, self._bits, self._signed, self._length
            )

    def set_cache_dequantized(self, enabled: bool) -> None:
        """Keep the dequantized float weight (fast forward, more memory) or dequantize on every forward."""
        self.cache_dequantized = bool(enabled)
        self._refresh()

    # --- repr --------------------------------------------------------------------------------

    def _weight_repr(self) -> str:
        d = self.weight_dtype
        if d is dtypes.float16:
            return "weight_dtype=float16"
        text = f"weight_dtype={d.name}, weight_qscheme={self.weight_qscheme.value}"
        if self.group_size > 0:
            text += f", group_size={self.group_size}"
        elif int(self.weight_axis) >= 0:
            text += f", weight_axis={int(self.weight_axis)}"
        else:
            text += f", weight_scale={float(self.weight_scale):.6g}, weight_zero_point={self._zero_point_scalar()}"
        return text

    # --- state dict ----------------------------------------------------------------------------

    def get_extra_state(self) -> dict[str, Any]:
        return {
            "weight_dtype": self.weight_dtype.name,
            "weight_qscheme": self.weight_qscheme.value,
            "weight_shape": list(self.weight_shape),
            "group_size": self.group_size,
        }

    def set_extra_state(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise ConfigError(f"{type(self).__name__}: unexpected _extra_state {state!r} in the state dict; expected a dict")
        if "weight_dtype" in state:
            self.weight_dtype = self._storable(state["weight_dtype"])
        if "weight_qscheme" in state:
            self.weight_qscheme = dtypes.qscheme(state["weight_qscheme"])
        if "weight_shape" in state:
            self.weight_shape = tuple(int(s) for s in state["weight_shape"])
        if "group_size" in state:
            self.group_size = int(state["group_size"])

    def _save_to_state_dict(self, destination: dict, prefix: str, keep_vars: bool) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        for key, buffer in self._STATE_NAMES.items():
            if prefix + buffer in destination:
                destination[prefix + key] = destination.pop(prefix + buffer)
        if prefix + "_extra_state" in destination:  # the tensors first, the small dict last
            destination[prefix + "_extra_state"] = destination.pop(prefix + "_extra_state")

    def _check_saved_weight(self, state_dict: dict, prefix: str, error_msgs: list) -> bool:
        """The saved weight may differ in dtype and qparam layout, not in its logical shape."""
        saved = state_dict.get(prefix + "_extra_state")
        saved = saved if isinstance(saved, dict) else {}
        try:
            d = self._storable(saved.get("weight_dtype", self.weight_dtype))
        except ConfigError as exc:
            error_msgs.append(f"{prefix}weight: {exc}")
            return False
        shape = tuple(int(n) for n in saved.get("weight_shape", self.weight_shape))
        value = state_dict.get(prefix + "_qweight")
        expected = shape[:-1] + ((shape[-1] + 1) // 2,) if d.bits == 4 and shape else shape
        if shape != self.weight_shape or (isinstance(value, Tensor) and tuple(value.shape) != expected):
            got = tuple(value.shape) if isinstance(value, Tensor) else shape
            error_msgs.append(
                f"size mismatch for {prefix}weight: the checkpoint holds a {d.name} weight of shape {got}, "
                f"this {type(self).__name__} expects logical shape {self.weight_shape}"
            )
            return False
        return True

    def _load_from_state_dict(
        self,
        state_dict: dict,
        prefix: str,
        local_metadata: dict,
        strict: bool,
        missing_keys: list,
        unexpected_keys: list,
        error_msgs: list,
    ) -> None:
        for key, buffer in self._STATE_NAMES.items():
            if prefix + key in state_dict:
                state_dict[prefix + buffer] = state_dict.pop(prefix + key)
        if not self._check_saved_weight(state_dict, prefix, error_msgs):
            return
        device = self._qweight.device
        for name in ("_qweight", "_bias", *self._QPARAM_BUFFERS):
            value = state_dict.get(prefix + name)
            if not isinstance(value, Tensor):
                continue
            current = self._buffers.get(name)
            if name == "_bias" and current is not None:
                continue  # a bias of another length is a different architecture: let torch report it
            if current is None or current.shape != value.shape or current.dtype != value.dtype:
                self._buffers[name] = torch.empty(value.shape, dtype=value.dtype, device=device)
        before = len(missing_keys)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)
        renames = {prefix + buffer: prefix + key for key, buffer in self._STATE_NAMES.items()}
        missing_keys[before:] = [renames.get(k, k) for k in missing_keys[before:]]
        if prefix + "_extra_state" not in state_dict and self.weight_dtype is not dtypes.float16 and self.weight_axis is not None:
            # No extra state: keep the dtype, infer per tensor / per channel from the axis.
            axis = int(self.weight_axis)
            if (axis >= 0) != self.weight_qscheme.is_per_channel:
                self.weight_qscheme = QScheme.PER_CHANNEL_AFFINE if axis >= 0 else QScheme.PER_TENSOR_AFFINE
        if self.weight_dtype is dtypes.float16:
            for name in self._QPARAM_BUFFERS:  # a float16 weight has no qparams
                self._buffers[name] = None
        if not error_msgs:
            self._refresh()

