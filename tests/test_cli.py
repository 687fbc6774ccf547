"""The ``qcore`` command line: plugins, backends, demo, ``python -m qcore``."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import pytest

import fakedists
import qcore
from qcore import cli


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    site = tmp_path_factory.mktemp("site")
    fakedists.plugin_dist(site, "good", fakedists.GOOD, version="3.1")
    fakedists.plugin_dist(site, "broken", fakedists.BROKEN_IMPORT)
    fakedists.plugin_dist(site, "unavailable", fakedists.UNAVAILABLE)
    fakedists.plugin_dist(site, "dupe_a", fakedists.observer_plugin("shared"))
    fakedists.plugin_dist(site, "dupe_b", fakedists.observer_plugin("shared"))
    return site


def _rows(output):
    lines = output.splitlines()
    assert lines[0].split() == ["name", "distribution", "version", "hooks", "status", "reason"]
    assert set(lines[1].replace(" ", "")) == {"-"}
    return {line.split()[0]: line for line in lines[2:] if line.strip() and not line.startswith("error")}


def test_python_m_qcore_plugins_prints_every_plugin(site, tmp_path):
    done = fakedists.run_python(
        "import runpy; runpy.run_module('qcore', run_name='__main__')", tmp_path, [site],
        {"QCORE_PLUGINS": "good,broken,unavailable", "QCORE_DISABLED_PLUGINS": "dupe_a"}, args=["plugins"],
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rows = _rows(done.stdout)
    assert rows["core"].split()[:3] == ["core", "qcore", qcore_version()]
    assert rows["good"].split() == ["good", "qcore-test-good", "3.1", "register_backends,register_observers,select_kernel", "loaded"]
    assert rows["broken"].split()[:5] == ["broken", "qcore-test-broken", "1.0", "-", "failed"]
    assert "No module named 'qcore_module_that_does_not_exist'" in rows["broken"]
    assert rows["unavailable"].split()[4] == "skipped" and rows["unavailable"].endswith("no widget accelerator on this machine")
    assert "disabled by QCORE_DISABLED_PLUGINS" in rows["dupe_a"]
    assert "not in the allow-list QCORE_PLUGINS" in rows["dupe_b"]
    assert "QcorePluginWarning" in done.stderr  # the failed plugin warned, once
    assert done.stderr.count("QcorePluginWarning") == 1


def qcore_version():
    from importlib.metadata import version

    return version("qcore")


def test_console_script_backends_marks_the_active_backend(site, tmp_path):
    script = Path(sys.executable).with_name("qcore")
    if not script.exists():
        pytest.skip("the qcore console script is not installed next to this Python")
    done = subprocess.run(
        [str(script), "backends"], cwd=tmp_path, env=fakedists.clean_env([site], {"QCORE_PLUGINS": "good"}),
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["name", "aliases", "priority", "available", "summary"]
    rows = {line.split()[0] if not line.startswith("*") else line.split()[1]: line for line in lines[2:] if line.strip()}
    assert rows["goodbe"].startswith("*") and "goodalias" in rows["goodbe"] and " yes " in rows["goodbe"]
    assert "no: needs hardware this machine lacks" in rows["nowhere"]
    assert "reference" in rows and not rows["reference"].startswith("*")
    assert lines[-1] == "* active backend: goodbe"


def test_plugins_reports_conflicts_and_bad_selection_with_exit_status_1(site, tmp_path):
    code = """
        import contextlib, io, json
        import qcore.registry as R
        from qcore.cli import main
        out = {}
        for label, names in (("conflict", ["dupe_a", "dupe_b"]), ("unknown", ["nosuch"])):
            R.configure_plugins(plugins=names)
            buffer = io.StringIO()
            with contextlib.redirect_stdout(buffer):
                status = main(["plugins"])
            out[label] = [status, buffer.getvalue()]
        print(json.dumps(out))
    """
    out = fakedists.run_json(code, tmp_path, [site])
    status, text = out["conflict"]
    assert status == 1 and "dupe_a" in _rows(text) and "dupe_b" in _rows(text)
    assert "error: the observer 'shared' is registered by both plugins 'dupe_a' and 'dupe_b'" in text
    status, text = out["unknown"]
    assert status == 1 and "error: unknown plugin name 'nosuch'" in text


def test_demo_passes_its_arguments_through(monkeypatch):
    calls = []
    fake = types.ModuleType("qcore.demo")
    fake.main = lambda argv: calls.append(argv) or 3
    monkeypatch.setitem(sys.modules, "qcore.demo", fake)
    monkeypatch.setattr(qcore, "demo", fake, raising=False)
    assert cli.main(["demo", "--rows", "quick", "-h"]) == 3
    assert calls == [["--rows", "quick", "-h"]]


def test_usage_errors(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main([])
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        cli.main(["--help"])
    assert info.value.code == 0
    assert "plugins" in capsys.readouterr().out


def test_format_table_aligns_columns():
    assert cli.format_table(("a", "bb"), [("xxx", "y"), ("", "zz")]).splitlines() == [
        "a    bb", "---  --", "xxx  y", "     zz",
    ]
