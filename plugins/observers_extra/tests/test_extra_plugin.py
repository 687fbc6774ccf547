"""The observers_extra plugin registers everything through qcore's hooks, and disabling it takes it all away."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import qcore.registry as R
from qcore_observers_extra import plugin

OBSERVER_NAMES = {
    "percentile", "per_channel_percentile", "mse", "per_channel_mse", "entropy", "moving_average_histogram",
}
FAKE_QUANT_NAMES = {"lsq_fake_quantize", "lsqplus_fake_quantize"}


def test_registry_holds_every_class_under_its_name_added_by_this_plugin():
    registry = R.get_registry()
    for name, cls in plugin.observers().items():
        entry = registry.observers.entry(name)
        assert entry.value is cls and entry.plugin == "observers_extra"
        assert registry.lookup_class(name) is cls and registry.name_of_class(cls) == name
    for name, cls in plugin.fake_quantizers().items():
        entry = registry.fake_quantizers.entry(name)
        assert entry.value is cls and entry.plugin == "observers_extra"
        assert registry.lookup_class(name) is cls
    assert set(plugin.observers()) == OBSERVER_NAMES and set(plugin.fake_quantizers()) == FAKE_QUANT_NAMES
    info = next(p for p in R.list_plugins() if p.name == "observers_extra")
    assert info.status == "loaded" and info.distribution == "qcore-observers-extra"
    assert set(info.hooks) == {"qcore_register_observers", "qcore_register_fake_quantizers"}


SCENARIO = """
    import json, sys
    import qcore

    out = {}
    try:
        qcore.QConfig(activation="percentile", weight=qcore.default_weight_observer)
        out["disabled"] = "no error"
    except qcore.ConfigError as exc:
        out["disabled"] = str(exc)
    out["imported_while_disabled"] = "qcore_observers_extra.plugin" in sys.modules
    qcore.configure_plugins(disabled=[])  # the API overrides the environment
    qconfig = qcore.QConfig(activation="percentile", weight=qcore.default_weight_observer)
    out["enabled"] = type(qconfig.activation()).__name__
    print(json.dumps(out))
"""


def test_disabled_plugin_is_named_when_its_observer_is_asked_for(tmp_path):
    # The plugin is installed (scripts/setup.sh); the environment blocks it, the working directory has no pyproject.toml.
    env = {k: v for k, v in os.environ.items() if not k.startswith("QCORE_")}
    env["QCORE_DISABLED_PLUGINS"] = "observers_extra"
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SCENARIO)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    message = result["disabled"]
    assert "no observer or fake-quantizer is registered as 'percentile'" in message
    assert "observers: minmax, " in message and "histogram" in message  # what is available instead
    assert "observers_extra (qcore-observers-extra" in message and "blocked" in message
    assert "QCORE_DISABLED_PLUGINS" in message
    assert result["imported_while_disabled"] is False
    assert result["enabled"] == "PercentileObserver"
