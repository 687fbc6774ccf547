"""Loading real (throwaway) plugin distributions: good, broken, unavailable, invalid, clashing.

One subprocess holds all the plugins below and reports, as JSON, what
qcore.registry made of them; the tests read that report.
"""

from __future__ import annotations

import pytest

import fakedists

FAKE = ["good", "broken", "unavailable", "late", "mismatched", "unknownhook", "raising", "dupe_a", "dupe_b"]

CHILD = r"""
import json, sys, threading, warnings
import qcore.registry as R

def err(fn):
    try:
        fn()
    except Exception as e:
        original = getattr(e, "original", None)
        return {"type": type(e).__name__, "msg": str(e), "original": type(original).__name__ if original else None,
                "cause": type(e.__cause__).__name__ if e.__cause__ else None}
    return None

out = {}
R.configure_plugins(disabled=["dupe_b"])
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    R.list_plugins()
    reg = R.get_registry()
    R.get_registry()
out["warnings"] = [[w.category.__name__, str(w.message)] for w in caught]
out["warning_files"] = sorted({w.filename for w in caught})
out["plugins"] = {i.name: [i.distribution, i.version, list(i.hooks), i.status, i.reason] for i in R.list_plugins()}
out["dupe_b_imported"] = "qcore_test_dupe_b" in sys.modules
cls = reg.lookup_class("myobs")
out["myobs"] = [cls.__name__, [c.__name__ for c in cls.__mro__], reg.name_of_class(cls), reg.observers.entry("myobs").plugin]
out["minmax_plugin"] = reg.observers.entry("minmax").plugin
out["half_registered"] = "half_registered" in reg.observers
out["get_good"] = R.get_plugin("good").__name__
out["get_broken"] = err(lambda: R.get_plugin("broken"))
out["get_unavailable"] = err(lambda: R.get_plugin("unavailable"))
out["get_blocked"] = err(lambda: R.get_plugin("dupe_b"))
out["get_unknown"] = err(lambda: R.get_plugin("nosuch"))
out["lookup_missing"] = err(lambda: reg.lookup_class("percentile"))
out["kernel"] = reg.hook.qcore_select_kernel(backend="goodbe", op="linear", params={})()
out["kernel_other"] = reg.hook.qcore_select_kernel(backend="reference", op="linear", params={})
out["backend_of_failed"] = err(lambda: reg.backend_description("broken"))

with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    R.configure_plugins(disabled=["dupe_b"])
    R.get_registry()
out["warnings_after_rebuild"] = len(caught)

R.configure_plugins(disabled=["dupe_b"])
ids = []
threads = [threading.Thread(target=lambda: ids.append(id(R.get_registry()))) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
out["registries_built"] = len(set(ids))

R.configure_plugins(disabled=["dupe_b"], required=["broken"])
out["required_broken"] = err(R.get_registry)
R.configure_plugins(disabled=["dupe_b"], required=["unavailable"])
out["required_unavailable"] = err(R.get_registry)
R.configure_plugins(disabled=["dupe_b"], required=["good"])
out["required_good"] = err(R.get_registry)

R.configure_plugins()
out["conflict"] = err(R.get_registry)
out["statuses_during_conflict"] = {i.name: i.status for i in R.list_plugins()}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    site = tmp_path_factory.mktemp("site")
    fakedists.plugin_dist(site, "good", fakedists.GOOD, version="2.5")
    fakedists.plugin_dist(site, "broken", fakedists.BROKEN_IMPORT)
    fakedists.plugin_dist(site, "unavailable", fakedists.UNAVAILABLE)
    fakedists.plugin_dist(site, "late", fakedists.LATE_UNAVAILABLE)
    fakedists.plugin_dist(site, "mismatched", fakedists.MISMATCHED_ARGS)
    fakedists.plugin_dist(site, "unknownhook", fakedists.UNKNOWN_HOOK)
    fakedists.plugin_dist(site, "raising", fakedists.RAISING_HOOK)
    fakedists.plugin_dist(site, "dupe_a", fakedists.observer_plugin("shared"))
    fakedists.plugin_dist(site, "dupe_b", fakedists.observer_plugin("shared"))
    env = {"QCORE_PLUGINS": ",".join(FAKE)}  # isolate from any bundled plugin installed in the venv
    return fakedists.run_json(CHILD, tmp_path_factory.mktemp("cwd"), [site], env)


def test_statuses_and_metadata(report):
    plugins = report["plugins"]
    assert plugins["core"][0] == "qcore" and plugins["core"][3] == "loaded"
    assert "qcore_register_backends" in plugins["core"][2]
    assert plugins["good"] == [
        "qcore-test-good", "2.5", ["qcore_register_backends", "qcore_register_observers", "qcore_select_kernel"],
        "loaded", None,
    ]
    assert plugins["unavailable"][3:] == ["skipped", "no widget accelerator on this machine"]
    assert plugins["late"][3:] == ["skipped", "driver found at import, but no device answered"]
    assert plugins["dupe_b"][:4] == ["qcore-test-dupe_b", "1.0", [], "blocked"]
    assert "configure_plugins(disabled=...)" in plugins["dupe_b"][4]
    for name, words in {
        "broken": ["import failed", "ModuleNotFoundError", "qcore_module_that_does_not_exist"],
        "mismatched": ["invalid hooks", "colour"],
        "unknownhook": ["invalid hooks", "qcore_register_observer"],
        "raising": ["registration hook raised", "RuntimeError", "registration went wrong"],
    }.items():
        assert plugins[name][3] == "failed", name
        assert all(word in plugins[name][4] for word in words), plugins[name]
    assert list(plugins)[0] == "core"


def test_each_failure_warns_once(report):
    warned = report["warnings"]
    assert {category for category, _ in warned} == {"QcorePluginWarning"}
    failed = ["broken", "mismatched", "unknownhook", "raising"]
    assert sorted(len([m for _, m in warned if f"plugin {name!r}" in m]) for name in failed) == [1, 1, 1, 1]
    assert len(warned) == 4
    assert all("QCORE_DISABLED_PLUGINS=" in message for _, message in warned)
    assert report["warnings_after_rebuild"] == 0
    assert report["warning_files"] == ["<string>"]  # points at the caller's line, not into qcore


def test_blocked_plugin_is_never_imported(report):
    assert report["dupe_b_imported"] is False


def test_good_plugin_entries_record_their_plugin(report):
    name, mro, registered_name, plugin = report["myobs"]
    assert name == "MyObserver" and "MinMaxObserver" in mro
    assert registered_name == "myobs" and plugin == "good"
    assert report["minmax_plugin"] == "core"


def test_failed_registration_hook_withdraws_its_entries(report):
    assert report["half_registered"] is False


def test_asking_for_a_failed_plugin_carries_the_original_error(report):
    broken = report["get_broken"]
    assert broken["type"] == "PluginError"
    assert broken["original"] == "ModuleNotFoundError" and broken["cause"] == "ModuleNotFoundError"
    assert "broken" in broken["msg"] and "qcore_module_that_does_not_exist" in broken["msg"]
    backend = report["backend_of_failed"]
    assert backend["type"] == "PluginError" and backend["original"] == "ModuleNotFoundError"
    assert report["get_good"] == "qcore_test_good"


def test_asking_for_skipped_blocked_or_unknown_plugins(report):
    assert report["get_unavailable"]["type"] == "PluginError"
    assert "no widget accelerator" in report["get_unavailable"]["msg"]
    assert report["get_blocked"]["type"] == "PluginError" and "blocked" in report["get_blocked"]["msg"]
    unknown = report["get_unknown"]
    assert unknown["type"] == "PluginError" and "nosuch" in unknown["msg"]
    assert "installed plugins: core, broken, dupe_a" in unknown["msg"]


def test_unknown_class_name_lists_names_and_unloaded_plugins(report):
    missing = report["lookup_missing"]
    assert missing["type"] == "ConfigError"
    assert "'percentile'" in missing["msg"] and "minmax" in missing["msg"] and "myobs" in missing["msg"]
    assert "dupe_b" in missing["msg"] and "blocked" in missing["msg"]
    assert "broken" in missing["msg"] and "failed" in missing["msg"]


def test_dispatch_hooks_are_firstresult(report):
    assert report["kernel"] == "good-kernel"
    assert report["kernel_other"] is None


def test_registry_is_built_once_across_threads(report):
    assert report["registries_built"] == 1


def test_required_plugins(report):
    assert report["required_good"] is None
    broken = report["required_broken"]
    assert broken["type"] == "PluginError" and broken["original"] == "ModuleNotFoundError"
    unavailable = report["required_unavailable"]
    assert unavailable["type"] == "PluginError" and "skipped" in unavailable["msg"]
    assert "installed plugins:" in unavailable["msg"]


def test_name_clash_names_both_plugins(report):
    conflict = report["conflict"]
    assert conflict["type"] == "PluginConflictError"
    assert "'dupe_a'" in conflict["msg"] and "'dupe_b'" in conflict["msg"] and "'shared'" in conflict["msg"]
    assert "QCORE_DISABLED_PLUGINS=" in conflict["msg"]
    assert report["statuses_during_conflict"]["dupe_b"] == "loaded"
