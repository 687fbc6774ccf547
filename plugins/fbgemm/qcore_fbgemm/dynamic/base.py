"""What every fbgemm dynamic / weight-only kernel module shares: how it is built from a reference module.

A kernel module *is* its reference module (a subclass) whose weights are also
packed for fbgemm: same state-dict keys, same ``weight()``/``bias()``, same
repr plus ``kernel=fbgemm``. It packs when the weights change (construction,
``set_weight_bias``, ``load_state_dict``), never per call. Configurations the
kernels cannot compute exactly like the reference are refused by
:meth:`KernelModule.unsupported_reason`, and lowering keeps the reference module.
"""

from __future__ import annotations

from typing import Any, Optional

from torch import nn

from qcore.errors import ConfigError

__all__ = ["KernelModule", "cpu_only_reason"]


def cpu_only_reason(module: nn.Module) -> Optional[str]:
    """fbgemm runs on the CPU: the reason a module with tensors elsewhere cannot be lowered, or None."""
    devices = {t.device.type for t in module.state_dict().values() if hasattr(t, "device")}
    devices.discard("cpu")
    return f"its tensors are on {', '.join(sorted(devices))}; fbgemm kernels run on the CPU" if devices else None


class KernelModule:
    """Mixin for kernel modules: ``unsupported_reason``, ``from_reference``, ``lower`` and ``to_reference``.

    A kernel class lists its reference class right after the mixin in its
    bases and implements :meth:`_constructor_args` (read from a module of
    either class).
    """

    @classmethod
    def unsupported_reason(cls, ref: nn.Module) -> Optional[str]:
        """Why ``ref`` cannot run on this kernel with the reference's numerics, or None when it can."""
        return cpu_only_reason(ref)

    @staticmethod
    def _constructor_args(module: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """(args, kwargs) building an empty module shaped like ``module`` (its weights follow from the state dict)."""
        raise NotImplementedError

    @classmethod
    def reference_class(cls) -> type:
        """The reference module class this kernel computes (the first base that is not a kernel class)."""
        return next(c for c in cls.__mro__ if issubclass(c, nn.Module) and not issubclass(c, KernelModule))

    @classmethod
    def from_reference(cls, ref: Any) -> Any:
        """The kernel module computing what ``ref`` computes, its weights packed once here.

        The reference's state dict (weights, qparams, settings) is loaded into
        a new kernel module, which packs on load. Hooks, training mode and the
        qualified name (``_qcore_name``) carry over. Raises ConfigError naming
        the reason when the kernel cannot compute ``ref``.
        """
        reason = cls.unsupported_reason(ref)
        if reason is not None:
            raise ConfigError(f"{cls.__name__}.from_reference: {type(ref).__name__} cannot run on fbgemm: {reason}")
        return _rebuilt(ref, cls, cls._constructor_args(ref))

    @classmethod
    def lower(cls, ref: nn.Module) -> Optional[nn.Module]:
        """``from_reference(ref)``, or None (keep the reference module) when the kernel cannot compute it."""
        if cls.unsupported_reason(ref) is not None:
            return None
        return cls.from_reference(ref)

    def to_reference(self) -> nn.Module:
        """The reference module with this module's weights and settings (what ``qcore.save`` writes)."""
        return _rebuilt(self, self.reference_class(), self._constructor_args(self))


def _rebuilt(source: Any, target: type, arguments: tuple[tuple[Any, ...], dict[str, Any]]) -> Any:
    """A ``target(*args, **kwargs)`` holding ``source``'s state dict, training mode, hooks and qualified name."""
    args, kwargs = arguments
    new = target(*args, **kwargs)
    new.load_state_dict(source.state_dict())
    new.train(source.training)
    for hook in source._forward_pre_hooks.values():
        new.register_forward_pre_hook(hook)
    for hook in source._forward_hooks.values():
        new.register_forward_hook(hook)
    name = getattr(source, "_qcore_name", None)
    if name is not None:
        new._qcore_name = name
    return new
