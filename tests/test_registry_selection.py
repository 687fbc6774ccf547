"""Plugin selection: environment, then [tool.qcore] in pyproject.toml, then configure_plugins.

Three throwaway plugins (alpha, beta, gamma) are installed in a temporary
site directory. One subprocess runs every scenario in turn: for each it sets
the environment and the working directory, drops the plugin modules from
``sys.modules`` and calls ``qcore.registry.reset()`` so the scenario starts
fresh, and records each plugin's status, the plugin modules imported, and the
error raised, if any.
"""

from __future__ import annotations

import textwrap

import pytest

import fakedists

NAMES = ("alpha", "beta", "gamma")
ALL = ",".join(NAMES)  # pins the selection to the fake plugins when bundled plugins are installed

CHILD = r"""
import json, os, sys
import qcore.registry as R

scenarios = json.loads(sys.argv[1])
modules = ["qcore_test_" + n for n in ("alpha", "beta", "gamma")]
base_env = dict(os.environ)
results = {}
for sc in scenarios:
    os.environ.clear()
    os.environ.update(base_env)
    os.environ.update(sc.get("env", {}))
    os.chdir(sc["cwd"])
    for m in modules:
        sys.modules.pop(m, None)
    R.reset()
    result = {"error": None, "status": {}, "reasons": {}}
    try:
        if "api" in sc:
            R.configure_plugins(**sc["api"])
        for info in R.list_plugins():
            result["status"][info.name] = info.status
            result["reasons"][info.name] = info.reason
        R.get_registry()
    except Exception as e:
        result["error"] = [type(e).__name__, str(e)]
    result["imported"] = sorted(m[len("qcore_test_"):] for m in modules if m in sys.modules)
    results[sc["id"]] = result
print(json.dumps(results))
"""

# id: (environment, pyproject [tool.qcore] body or None, configure_plugins kwargs or None)
SCENARIOS = {
    "env_none": ({"QCORE_PLUGINS": ALL}, None, None),
    "env_allow_one": ({"QCORE_PLUGINS": "alpha"}, None, None),
    "env_allow_spaces": ({"QCORE_PLUGINS": " alpha , beta "}, None, None),
    "env_allow_empty": ({"QCORE_PLUGINS": ""}, None, None),
    "env_disabled": ({"QCORE_PLUGINS": ALL, "QCORE_DISABLED_PLUGINS": "beta"}, None, None),
    "env_disabled_only": ({"QCORE_DISABLED_PLUGINS": "beta"}, None, None),
    "env_no_autoload": ({"QCORE_DISABLE_PLUGIN_AUTOLOAD": "1"}, None, None),
    "env_no_autoload_allow": ({"QCORE_DISABLE_PLUGIN_AUTOLOAD": "1", "QCORE_PLUGINS": "gamma"}, None, None),
    "env_unknown": ({"QCORE_PLUGINS": "alpha,nosuch"}, None, None),
    "env_disable_core": ({"QCORE_PLUGINS": ALL, "QCORE_DISABLED_PLUGINS": "core"}, None, None),
    "toml_allow": ({}, 'plugins = ["alpha"]', None),
    "toml_over_env": ({"QCORE_PLUGINS": "beta"}, 'plugins = ["alpha"]', None),
    "toml_key_by_key": ({"QCORE_DISABLED_PLUGINS": "gamma"}, 'plugins = ["alpha", "gamma"]', None),
    "toml_no_autoload": ({}, "autoload = false", None),
    "toml_required_no_autoload": ({}, 'autoload = false\nrequired_plugins = ["beta"]', None),
    "toml_disabled": ({"QCORE_PLUGINS": ALL}, 'disabled_plugins = ["alpha"]', None),
    "toml_unknown_required": ({"QCORE_PLUGINS": ALL}, 'required_plugins = ["nosuch"]', None),
    "toml_required_blocked": ({"QCORE_DISABLED_PLUGINS": "beta"}, 'required_plugins = ["beta"]\nplugins = ["alpha", "beta"]', None),
    "toml_bad_type": ({}, 'plugins = "alpha"', None),
    "toml_other_table": ({"QCORE_PLUGINS": "alpha"}, None, None),
    "api_over_toml": ({}, 'plugins = ["alpha"]', {"plugins": ["beta"]}),
    "api_all": ({"QCORE_PLUGINS": "alpha", "QCORE_DISABLED_PLUGINS": "gamma"}, None, {"plugins": None}),
    "api_disabled_key_by_key": ({"QCORE_PLUGINS": "alpha,beta"}, None, {"disabled": ["alpha"]}),
    "api_no_autoload": ({"QCORE_DISABLED_PLUGINS": "alpha"}, None, {"autoload": False}),
    "api_autoload_over_env": ({"QCORE_DISABLE_PLUGIN_AUTOLOAD": "1", "QCORE_DISABLED_PLUGINS": "gamma"}, None, {"autoload": True}),
    "api_unknown": ({"QCORE_PLUGINS": ALL}, None, {"disabled": ["nosuch"]}),
    "api_bad_type": ({}, None, {"plugins": "alpha"}),
    "api_required_not_allowed": ({}, None, {"plugins": ["alpha"], "required": ["beta"]}),
}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    site = tmp_path_factory.mktemp("site")
    for name in NAMES:
        fakedists.plugin_dist(site, name, fakedists.observer_plugin(f"{name}_observer"))
    scenarios = []
    for scenario_id, (env, toml, api) in SCENARIOS.items():
        cwd = tmp_path_factory.mktemp(scenario_id)
        if toml is not None:
            (cwd / "pyproject.toml").write_text("[project]\nname = 'deployment'\n\n[tool.qcore]\n" + toml + "\n")
        elif scenario_id == "toml_other_table":
            (cwd / "pyproject.toml").write_text(textwrap.dedent("""
                [tool.other]
                plugins = ["beta"]
            """))
        scenario = {"id": scenario_id, "env": env, "cwd": str(cwd)}
        if api is not None:
            scenario["api"] = api
        scenarios.append(scenario)
    import json

    return fakedists.run_json(CHILD, tmp_path_factory.mktemp("cwd"), [site], args=[json.dumps(scenarios)])


def loaded(result):
    return sorted(name for name in NAMES if result["status"].get(name) == "loaded")


EXPECTED_LOADED = {
    "env_none": ["alpha", "beta", "gamma"],
    "env_allow_one": ["alpha"],
    "env_allow_spaces": ["alpha", "beta"],
    "env_allow_empty": [],
    "env_disabled": ["alpha", "gamma"],
    "env_no_autoload": [],
    "env_no_autoload_allow": ["gamma"],
    "toml_allow": ["alpha"],
    "toml_over_env": ["alpha"],
    "toml_key_by_key": ["alpha"],
    "toml_no_autoload": [],
    "toml_required_no_autoload": ["beta"],
    "toml_disabled": ["beta", "gamma"],
    "toml_other_table": ["alpha"],
    "api_over_toml": ["beta"],
    "api_disabled_key_by_key": ["beta"],
    "api_no_autoload": [],
}


@pytest.mark.parametrize("scenario", sorted(EXPECTED_LOADED))
def test_selection_loads_exactly_the_selected_plugins(results, scenario):
    result = results[scenario]
    assert result["error"] is None, result["error"]
    assert loaded(result) == EXPECTED_LOADED[scenario]
    # A plugin that is not selected is blocked, and its module is never imported.
    assert all(result["status"][n] == "blocked" for n in NAMES if n not in EXPECTED_LOADED[scenario])
    assert result["imported"] == EXPECTED_LOADED[scenario]
    assert result["status"]["core"] == "loaded"


def test_without_allow_list_every_installed_plugin_loads(results):
    # Bundled plugins may be installed too: only check the fake ones.
    for scenario in ("env_disabled_only", "api_all", "api_autoload_over_env"):
        result = results[scenario]
        assert result["error"] is None, (scenario, result["error"])
    assert loaded(results["env_disabled_only"]) == ["alpha", "gamma"]
    assert loaded(results["api_all"]) == ["alpha", "beta"]  # plugins=None drops the env allow-list, not the deny-list
    assert loaded(results["api_autoload_over_env"]) == ["alpha", "beta"]


def test_block_reasons_name_their_source(results):
    assert results["env_disabled"]["reasons"]["beta"] == "disabled by QCORE_DISABLED_PLUGINS"
    assert results["env_allow_one"]["reasons"]["beta"] == "not in the allow-list QCORE_PLUGINS"
    assert "QCORE_DISABLE_PLUGIN_AUTOLOAD=1" in results["env_no_autoload"]["reasons"]["alpha"]
    toml_reason = results["toml_over_env"]["reasons"]["beta"]
    assert "pyproject.toml [tool.qcore] plugins" in toml_reason
    assert results["toml_key_by_key"]["reasons"]["gamma"] == "disabled by QCORE_DISABLED_PLUGINS"
    assert results["api_over_toml"]["reasons"]["alpha"] == "not in the allow-list configure_plugins(plugins=...)"


@pytest.mark.parametrize("scenario, source", [
    ("env_unknown", "QCORE_PLUGINS"),
    ("toml_unknown_required", "[tool.qcore] required_plugins"),
    ("api_unknown", "configure_plugins(disabled=...)"),
])
def test_unknown_plugin_names_are_errors(results, scenario, source):
    kind, message = results[scenario]["error"]
    assert kind == "PluginError"
    assert "'nosuch'" in message and source in message
    installed = message.split("installed plugins: ")[1].split(", ")
    assert installed[0] == "core" and {"alpha", "beta", "gamma"} <= set(installed)


def test_the_core_cannot_be_disabled(results):
    kind, message = results["env_disable_core"]["error"]
    assert kind == "PluginError" and "core plugin cannot be disabled" in message


def test_required_plugin_that_is_blocked_is_an_error(results):
    kind, message = results["toml_required_blocked"]["error"]
    assert kind == "PluginError"
    assert "'beta'" in message and "blocked" in message and "QCORE_DISABLED_PLUGINS" in message
    kind, message = results["api_required_not_allowed"]["error"]
    assert kind == "PluginError" and "'beta'" in message and "allow-list" in message


def test_malformed_selection_values_are_config_errors(results):
    kind, message = results["toml_bad_type"]["error"]
    assert kind == "ConfigError" and "[tool.qcore] plugins" in message and "list of plugin names" in message
    kind, message = results["api_bad_type"]["error"]
    assert kind == "ConfigError" and "configure_plugins(plugins=...)" in message
