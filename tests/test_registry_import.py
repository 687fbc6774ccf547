"""``import qcore`` stays cheap: it discovers and imports no plugin."""

from __future__ import annotations

import re

import fakedists


def test_import_qcore_imports_no_plugin_and_no_entry_point_loading(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    fakedists.plugin_dist(site, "good", fakedists.GOOD)
    done = fakedists.run_python("import qcore", tmp_path, [site], python_flags=["-X", "importtime"])
    assert done.returncode == 0, done.stderr
    imported = [line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")]
    assert "qcore" in imported
    plugin_modules = [m for m in imported if re.match(r"qcore_\w+", m)]  # qcore_test_good, qcore_fbgemm, ...
    assert plugin_modules == []
    assert not {"qcore.registry.discovery", "qcore.registry.loading", "qcore.registry.builtin"} & set(imported)


def test_importing_the_registry_discovers_nothing_until_first_use(tmp_path):
    site, copy = tmp_path / "site", tmp_path / "copy"
    for folder in (site, copy):  # the same distribution twice on sys.path is one plugin
        folder.mkdir()
        fakedists.plugin_dist(folder, "good", fakedists.GOOD)
    code = """
        import json, sys
        import qcore.registry, qcore.registry.state as state, qcore.backend_selection, qcore.cli, qcore.spec
        before = [state._candidates is None, "qcore_test_good" in sys.modules, "qcore.registry.loading" in sys.modules]
        plugins = qcore.registry.list_plugins()
        after = [state._candidates is None, "qcore_test_good" in sys.modules, [p.name for p in plugins].count("good")]
        print(json.dumps([before, after]))
    """
    before, after = fakedists.run_json(code, tmp_path, [site, copy], {"QCORE_PLUGINS": "good"})
    assert before == [True, False, False]
    assert after == [False, True, 1]
