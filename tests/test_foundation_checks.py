"""The foundation issue's 'checked by' list, end to end, each in a fresh process.

The bundled plugins must be installed (scripts/setup.sh installs them);
tests that need one skip with the reason when it is not.
"""

from __future__ import annotations

import json
import sys

import pytest

import fakedists

BUNDLED = ("fbgemm", "qnnpack", "tensorrt", "observers_extra")


def _installed(name: str) -> bool:
    from importlib_metadata import entry_points

    return any(ep.name == name for ep in entry_points(group="qcore.plugins"))


needs_bundled = pytest.mark.skipif(
    not all(_installed(n) for n in BUNDLED), reason="the bundled plugins are not installed (run scripts/setup.sh)"
)


def _cli(tmp_path, *args, env=None):
    return fakedists.run_python("from qcore.cli import main; import sys; sys.exit(main(sys.argv[1:]))",
                                tmp_path, env=env, args=args)


@needs_bundled
def test_plugins_lists_the_four_bundled_plugins_and_the_core(tmp_path):
    done = _cli(tmp_path, "plugins")
    assert done.returncode == 0, done.stdout + done.stderr
    rows = {line.split()[0]: line for line in done.stdout.splitlines()[2:] if line.strip()}
    assert set(rows) >= {"core", *BUNDLED}
    for name in ("core", "fbgemm", "qnnpack", "tensorrt", "observers_extra"):
        assert " loaded" in rows[name], rows[name]


@needs_bundled
def test_allow_list_keeps_fbgemm_beside_the_core(tmp_path):
    done = _cli(tmp_path, "plugins", env={"QCORE_PLUGINS": "fbgemm"})
    assert done.returncode == 0, done.stderr
    loaded = [line.split()[0] for line in done.stdout.splitlines()[2:] if " loaded" in line]
    assert loaded == ["core", "fbgemm"]


@needs_bundled
def test_disabled_plugin_is_never_imported(tmp_path):
    code = """
        import json, sys, qcore
        qcore.get_default_qconfig("fbgemm")
        qcore.list_plugins()
        print(json.dumps({"imported": "qcore_tensorrt" in sys.modules,
                          "backends": qcore.list_backends()}))
    """
    out = fakedists.run_json(code, tmp_path, env={"QCORE_DISABLED_PLUGINS": "tensorrt"})
    assert out["imported"] is False
    assert "tensorrt" not in out["backends"] and "fbgemm" in out["backends"]


def test_external_plugin_observer_is_usable_by_name_in_a_qconfig(tmp_path):
    site = tmp_path / "site"
    fakedists.plugin_dist(site, "good", fakedists.GOOD)
    code = """
        import json, torch, qcore
        qconfig = qcore.QConfig(activation="myobs", weight=qcore.default_weight_observer)
        observer = qconfig.activation()
        observer(torch.tensor([-1.0, 3.0]))
        scale, zero_point = observer.calculate_qparams()
        again = qcore.QConfig.from_dict(json.loads(json.dumps(qconfig.to_dict())))
        print(json.dumps({"cls": type(observer).__name__, "scale": float(scale), "zp": int(zero_point),
                          "round_trip": again == qconfig, "name": qconfig.to_dict()["activation"]["class"]}))
    """
    out = fakedists.run_json(code, tmp_path, paths=[site], env={"QCORE_PLUGINS": "good"})
    assert out == {"cls": "MyObserver", "scale": pytest.approx(4.0 / 255), "zp": 64, "round_trip": True, "name": "myobs"}


def test_import_qcore_imports_no_plugin_module(tmp_path):
    done = fakedists.run_python("import qcore", tmp_path, python_flags=["-X", "importtime"])
    assert done.returncode == 0, done.stderr
    imported = [line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if "|" in line]
    assert "qcore" in imported
    assert not [m for m in imported if m.startswith("qcore_") or m.startswith("qcore.registry")]
