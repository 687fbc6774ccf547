"""``qcore explain MODULE:FACTORY``: the user's model factory imported, the explanation table printed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

import qcore
from qcore import cli

MODEL = textwrap.dedent('''
    import torch.nn.functional as F
    from torch import nn


    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.bn = nn.BatchNorm2d(8)
            self.fc = nn.Linear(8 * 16 * 16, 10)

        def forward(self, x):
            y = F.relu(self.bn(self.conv(x)))
            return self.fc(F.max_pool2d(y, 2).flatten(1))


    def make():
        return Tiny()  # in training mode, as a fresh module is: explain picks the mode from --qconfig


    NOT_A_MODEL = 3


    def not_a_model():
        return "model"
''')


@pytest.fixture
def models(tmp_path, monkeypatch):
    """A model module ``qcore_cli_tiny_models`` importable in this process and in subprocesses."""
    (tmp_path / "qcore_cli_tiny_models.py").write_text(MODEL)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("qcore_cli_tiny_models", None)


def test_qcore_explain_prints_the_table_in_a_subprocess(models):
    env = dict(os.environ, PYTHONPATH=str(models) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run(
        [sys.executable, "-m", "qcore", "explain", "qcore_cli_tiny_models:make", "--input-shape", "1,3,32,32",
         "--backend", "reference", "--why", "bn"],
        capture_output=True, text=True, env=env, cwd=str(models.parent), timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "backend 'reference', post-training (prepare_fx)"
    assert lines[1].split() == ["node", "op", "target", "qconfig", "decision", "pattern", "observers", "reason"]
    rows = {line.split()[0]: line for line in lines[3:] if line and not line.startswith(("why", "4 node"))}
    assert list(rows) == ["conv", "bn", "relu", "max_pool2d", "flatten", "fc"]
    assert rows["conv"].split()[:4] == ["conv", "module", "ConvReLU2d", "global"]
    assert "static    (Conv2d, BatchNorm2d, ReLU)" in rows["conv"] and rows["bn"].endswith("fused into conv")
    assert "4 node(s) quantized, 2 fused into them, 0 float" in lines
    assert "why bn: 'bn' (BatchNorm2d) is fused into 'conv' (ConvReLU2d)" in done.stdout


def test_qconfig_choices_and_json(models, capsys):
    assert cli.main(["explain", "qcore_cli_tiny_models:make", "--input-shape", "1,3,32,32", "--qconfig", "dynamic",
                     "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    decisions = {row["node"]: row["decision"] for row in data["rows"]}
    assert decisions == {"conv": "float", "bn": "float", "relu": "float", "max_pool2d": "float", "flatten": "float",
                         "fc": "dynamic"}
    assert data["backend"] == qcore.get_backend() and not data["is_qat"]
    assert cli.main(["explain", "qcore_cli_tiny_models:make", "--input-shape", "1x3x32x32", "--qconfig", "qat",
                     "--backend", "reference"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("backend 'reference', quantization-aware training (prepare_qat_fx)")
    assert "ConvBnReLU2d" in out and "FakeQuantize" in out


@pytest.mark.parametrize("spec, message", [
    ("qcore_cli_tiny_models", "expected MODULE:FACTORY"),
    ("qcore_cli_no_such_module:make", "cannot import 'qcore_cli_no_such_module'"),
    ("qcore_cli_tiny_models:missing", "has no attribute 'missing'"),
    ("qcore_cli_tiny_models:NOT_A_MODEL", "is a int, not a function"),
    ("qcore_cli_tiny_models:not_a_model", "returned a str, not a torch.nn.Module"),
])
def test_bad_factories_exit_2_with_a_clear_message(models, capsys, spec, message):
    assert cli.main(["explain", spec, "--input-shape", "1,3,32,32"]) == 2
    assert message in capsys.readouterr().err


def test_a_bad_shape_is_a_usage_error(models, capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["explain", "qcore_cli_tiny_models:make", "--input-shape", "1,three"])
    assert exited.value.code == 2 and "expected a shape such as 1,3,32,32" in capsys.readouterr().err
