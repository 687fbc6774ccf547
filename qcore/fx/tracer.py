"""QcoreTracer: torch.fx tracing that keeps quantizable modules whole and explains what cannot be traced.

Leaves (one ``call_module`` node each, never traced through): torch.nn
modules other than containers, every ``qcore.nn`` module (fused, QAT,
quantized), observers and fake-quants, and the modules the caller names:
non-traceable modules (run in float), custom and standalone modules. Each
node records in ``node.meta["qcore_scope"]`` the qualified name and class
of the module whose forward holds it, which qconfig lookup uses for
functions and methods. A tracing failure becomes a
:class:`~qcore.fx.errors.SymbolicTraceError` naming the module, the source
line and the ``non_traceable_module_names`` / ``non_traceable_module_classes``
way out.
"""

from __future__ import annotations

import os
import traceback
from typing import Any, Callable, Iterable, Optional

import torch
from torch import fx, nn

from qcore.errors import QcoreError
from qcore.fx.errors import SymbolicTraceError

__all__ = ["QcoreTracer", "SCOPE", "trace", "scope_of"]

#: node.meta key: (qualified name, class) of the module whose forward holds the node.
SCOPE = "qcore_scope"

_TORCH_DIR = os.path.dirname(torch.__file__)
_QCORE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _is_qcore_leaf(module: nn.Module) -> bool:
    from qcore.fake_quant import FakeQuantizeBase
    from qcore.observers import ObserverBase

    return type(module).__module__.startswith("qcore.nn.") or isinstance(module, (ObserverBase, FakeQuantizeBase))


class QcoreTracer(fx.Tracer):
    """A torch.fx Tracer for quantization (torch.ao's QuantizationTracer).

    ``skipped_module_names`` / ``skipped_module_classes`` are kept whole (the
    non-traceable modules); ``leaf_module_names`` / ``leaf_module_classes``
    too (custom and standalone modules), named apart so the flows can tell
    them from the non-traceable ones.
    """

    def __init__(
        self,
        skipped_module_names: Iterable[str] = (),
        skipped_module_classes: Iterable[type] = (),
        leaf_module_names: Iterable[str] = (),
        leaf_module_classes: Iterable[type] = (),
    ) -> None:
        super().__init__()
        self.skipped_module_names = set(skipped_module_names)
        self.skipped_module_classes = tuple(skipped_module_classes)
        self.leaf_module_names = set(leaf_module_names)
        self.leaf_module_classes = tuple(leaf_module_classes)
        self._scopes: list[tuple[str, type]] = []
        #: (qualified name, class) of the innermost module whose forward raised while tracing.
        self.failed_module: Optional[tuple[str, type]] = None

    def is_skipped(self, module: nn.Module, name: str) -> bool:
        """Whether ``module`` is listed as non-traceable (kept whole and run in float)."""
        return name in self.skipped_module_names or (
            bool(self.skipped_module_classes) and isinstance(module, self.skipped_module_classes))

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if self.is_skipped(m, module_qualified_name) or module_qualified_name in self.leaf_module_names:
            return True
        if self.leaf_module_classes and isinstance(m, self.leaf_module_classes):
            return True
        if _is_qcore_leaf(m):
            return True
        return super().is_leaf_module(m, module_qualified_name)

    def trace(self, root: Any, concrete_args: Optional[dict[str, Any]] = None) -> fx.Graph:
        self._scopes = [("", type(root))]
        self.failed_module = None
        return super().trace(root, concrete_args)

    def call_module(self, m: nn.Module, forward: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
        name = self.path_of_module(m)
        self._scopes.append((name, type(m)))
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            if self.failed_module is None:
                self.failed_module = (name, type(m))
            raise
        finally:
            self._scopes.pop()

    def create_node(self, kind: str, target: Any, args: tuple, kwargs: dict, name: Optional[str] = None,
                    type_expr: Optional[Any] = None) -> fx.Node:
        node = super().create_node(kind, target, args, kwargs, name, type_expr)
        scopes = self._scopes or [("", nn.Module)]
        if kind == "call_module" and len(scopes) > 1 and scopes[-1][0] == target:
            node.meta[SCOPE] = scopes[-2]  # a leaf's own call: its scope is the caller
        else:
            node.meta[SCOPE] = scopes[-1]
        return node


def scope_of(node: fx.Node) -> tuple[str, type]:
    """(qualified name, class) of the module whose forward holds ``node`` (the model's for unknown nodes)."""
    return node.meta.get(SCOPE, ("", nn.Module))


def _user_frame(exc: BaseException) -> Optional[traceback.FrameSummary]:
    """The innermost traceback frame outside torch and qcore: the user's offending line."""
    frames = traceback.extract_tb(exc.__traceback__)
    for frame in reversed(frames):
        path = os.path.abspath(frame.filename)
        if path.startswith(_TORCH_DIR) or path.startswith(_QCORE_DIR) or frame.filename.startswith("<"):
            continue
        return frame
    return None


def _describe_module(name: str, cls: type) -> str:
    return f"the submodule {name!r} ({cls.__name__})" if name else f"the model itself ({cls.__name__})"


def _trace_error(exc: Exception, tracer: QcoreTracer, root: nn.Module, api: str) -> SymbolicTraceError:
    name, cls = tracer.failed_module or ("", type(root))
    frame = _user_frame(exc)
    location = f"{frame.filename}:{frame.lineno}" if frame is not None else ""
    where = f"\n  at {location}: {frame.line}" if frame is not None else ""
    if name:
        fix = (
            f"Keep it out of tracing and run it in float: prepare_custom_config=qcore.fx.PrepareCustomConfig()"
            f".set_non_traceable_module_names([{name!r}]) (or .set_non_traceable_module_classes([{cls.__name__}])); "
            "the rest of the model is still quantized"
        )
    else:
        fix = (
            "The offending code is in the model's own forward: move it into a submodule and list that submodule "
            "with PrepareCustomConfig().set_non_traceable_module_names([...]) (or set_non_traceable_module_classes), "
            "or make the code traceable"
        )
    message = (
        f"{api}: torch.fx cannot trace {_describe_module(name, cls)} symbolically: "
        f"{type(exc).__name__}: {exc}{where}\n  {fix}. FX graph mode needs symbolically traceable code "
        "(no control flow on tensor values); eager mode quantization (qcore.prepare / qcore.convert) has no such limit"
    )
    return SymbolicTraceError(message, name, location)


def trace(root: nn.Module, tracer: QcoreTracer, api: str = "prepare_fx") -> fx.GraphModule:
    """``root`` traced by ``tracer`` into a GraphModule; a failure raises SymbolicTraceError."""
    try:
        graph = tracer.trace(root)
    except QcoreError:
        raise
    except Exception as exc:
        raise _trace_error(exc, tracer, root, api) from exc
    return fx.GraphModule(tracer.root, graph, type(root).__name__)
