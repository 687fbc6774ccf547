"""The hook specifications: naming, typing, documentation, firstresult, and that plugins validate against them."""

from __future__ import annotations

import inspect

import pluggy
import pytest

import qcore.spec
from qcore.spec import SPEC_MODULES, hook_names, hookimpl, hookspec
from qcore.spec import dispatch, registration

REGISTRATION = [
    "qcore_register_backends", "qcore_register_observers", "qcore_register_fake_quantizers",
    "qcore_register_fusion_patterns", "qcore_register_custom_modules", "qcore_register_quantized_modules",
]
DISPATCH = ["qcore_pack_weight", "qcore_select_kernel", "qcore_lower_module"]


def _spec(name):
    for module in SPEC_MODULES:
        if hasattr(module, name):
            return getattr(module, name)
    raise KeyError(name)


def test_markers_belong_to_the_qcore_project():
    assert isinstance(hookspec, pluggy.HookspecMarker) and hookspec.project_name == "qcore"
    assert isinstance(hookimpl, pluggy.HookimplMarker) and hookimpl.project_name == "qcore"
    assert qcore.spec.PROJECT_NAME == "qcore"


def test_the_contracted_hooks_exist():
    assert hook_names() == REGISTRATION + DISPATCH


@pytest.mark.parametrize("name", REGISTRATION + DISPATCH)
def test_each_hook_is_named_typed_and_documented(name):
    function = _spec(name)
    assert name.startswith("qcore_")
    doc = inspect.getdoc(function)
    assert doc and "Receives" in doc and "Return" in doc and "firstresult" in doc
    signature = inspect.signature(function)
    assert signature.parameters and signature.return_annotation is not inspect.Signature.empty
    assert all(p.annotation is not inspect.Parameter.empty for p in signature.parameters.values())


@pytest.mark.parametrize("name", REGISTRATION)
def test_registration_hooks_receive_a_registry_and_are_not_firstresult(name):
    function = getattr(registration, name)
    assert list(inspect.signature(function).parameters) == ["registry"]
    assert function.qcore_spec["firstresult"] is False
    assert "Not firstresult" in " ".join(inspect.getdoc(function).split())


@pytest.mark.parametrize("name, args", [
    ("qcore_pack_weight", ["backend", "op", "weight", "bias", "params"]),
    ("qcore_select_kernel", ["backend", "op", "params"]),
    ("qcore_lower_module", ["backend", "module"]),
])
def test_dispatch_hooks_are_firstresult(name, args):
    function = getattr(dispatch, name)
    assert list(inspect.signature(function).parameters) == args
    assert function.qcore_spec["firstresult"] is True


def test_a_plugin_module_validates_against_the_specs():
    from qcore.registry.loading import new_manager

    class Plugin:
        @hookimpl
        def qcore_pack_weight(self, backend, weight):  # a subset of the arguments is allowed
            return ("packed", backend) if backend == "mine" else None

        @hookimpl(trylast=True)
        def qcore_select_kernel(self, op):
            return None

    manager = new_manager()
    manager.register(Plugin(), name="plugin")
    manager.check_pending()
    assert manager.hook.qcore_pack_weight(backend="mine", op="linear", weight=1, bias=None, params={}) == (
        "packed", "mine"
    )
    assert manager.hook.qcore_pack_weight(backend="other", op="linear", weight=1, bias=None, params={}) is None

    class Bad:
        @hookimpl
        def qcore_lower_module(self, backend, module, device):
            return None

    with pytest.raises(pluggy.PluginValidationError, match="device"):
        manager.register(Bad(), name="bad")
