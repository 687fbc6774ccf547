"""``qcore demo``: the table's rows, fp32 and int8-simulation accuracy, and the weights cache."""

from __future__ import annotations

import contextlib
import io
import re
import time

import pytest
import torch

import qcore.demo
from qcore.demo import train
from qcore.demo.model import DigitsCNN, ModelConfig, fold_batchnorm
from qcore.demo.report import format_table
from qcore.demo.rows import Row

pytest.importorskip("sklearn")

# Observer class names, shown without their "Observer" suffix.
ACTIVATIONS = ("MinMax", "MovingAverageMinMax", "Histogram")
WEIGHTS = ("MinMax", "PerChannelMinMax")


def run_main(*argv: str) -> tuple[int, str, float]:
    out = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(out):
        status = qcore.demo.main(["--quiet", "--rounds", "3", *argv])
    return status, out.getvalue(), time.perf_counter() - start


def table_rows(text: str) -> list[list[str]]:
    """The table's body: the lines between the dashed rule and the first blank line, split into cells."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("---")) + 1
    end = lines.index("", start)
    return [re.split(r"\s{2,}", line.strip()) for line in lines[start:end]]


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    cache = tmp_path_factory.mktemp("qcore-cache")
    status, text, seconds = run_main("--cache-dir", str(cache))
    return cache, status, text, seconds


@pytest.mark.slow
def test_the_table_has_every_row_and_int8_simulation_keeps_accuracy(first_run):
    _, status, text, _ = first_run
    assert status == 0
    assert "weights: trained in" in text
    assert "not int8 kernel latency" in text
    rows = table_rows(text)
    fp32 = rows[0]
    assert fp32[:3] == ["fp32", "-", "-"]
    fp32_accuracy = float(fp32[3])
    assert fp32_accuracy >= 95.0
    simulated = [row for row in rows if row[1] == "reference"]
    assert {tuple(row[2].split(" / ")) for row in simulated} == {(a, w) for a in ACTIVATIONS for w in WEIGHTS}
    assert len(rows) == 8
    assert rows[-1][0] == "fake-quant sim* (default)"
    for row in rows[1:]:
        assert row[0].startswith("fake-quant sim*")
        assert float(row[3]) >= fp32_accuracy - 2.0, row
        assert 0.2 < float(row[5]) < 0.3, row  # int8 weights: about a quarter of fp32
        assert float(row[6]) > 0 and float(row[7]) > 0


@pytest.mark.slow
def test_a_second_run_loads_the_cached_weights(first_run, monkeypatch):
    cache, _, first_text, first_seconds = first_run
    assert list((cache / "demo").glob("digits-cnn-*.pt"))

    def no_training(*args, **kwargs):
        raise AssertionError("the second run trained instead of loading the cache")

    monkeypatch.setattr(train, "train_model", no_training)
    status, text, seconds = run_main("--cache-dir", str(cache))
    assert status == 0
    assert "weights: loaded from cache" in text
    assert seconds < first_seconds
    # Same weights, same calibration: the same accuracies.
    assert [row[3] for row in table_rows(text)] == [row[3] for row in table_rows(first_text)]


def test_the_cache_dir_comes_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("QCORE_CACHE_DIR", str(tmp_path))
    assert train.default_cache_dir() == tmp_path
    monkeypatch.delenv("QCORE_CACHE_DIR")
    assert train.default_cache_dir().parts[-2:] == (".cache", "qcore")


def test_the_cache_key_follows_the_configuration():
    key = train.cache_key(ModelConfig(), train.TrainConfig())
    assert key == train.cache_key(ModelConfig(), train.TrainConfig(threads=2))
    assert key != train.cache_key(ModelConfig(hidden=32), train.TrainConfig())
    assert key != train.cache_key(ModelConfig(), train.TrainConfig(epochs=3))


def test_folding_batchnorm_keeps_the_function():
    torch.manual_seed(0)
    model = DigitsCNN().train()
    model(torch.rand(16, 1, 8, 8))  # give BatchNorm non-trivial running statistics
    model.eval()
    folded = fold_batchnorm(model)
    x = torch.rand(4, 1, 8, 8)
    torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-5)
    assert isinstance(model.bn1, torch.nn.BatchNorm2d) and isinstance(folded.bn1, torch.nn.Identity)


def test_the_table_aligns_its_columns():
    rows = [Row("fp32", "-", "-", "-", 98.6, 154_000, 1.0, 1.5, 1.0),
            Row("fake-quant sim*", "reference", "HistogramObserver", "MinMaxObserver", 98.3, 39_000, 0.25, 3.0, 2.0)]
    lines = format_table(rows).splitlines()
    assert len(lines) == 4
    right_edge = lines[0].index("accuracy (%)") + len("accuracy (%)")
    assert lines[2].index("98.60") + len("98.60") == right_edge == lines[3].index("98.30") + len("98.30")
    assert lines[2].split()[:3] == ["fp32", "-", "-"]
    assert "HistogramObserver / MinMaxObserver" in lines[3] and lines[3].rstrip().endswith("2.00")


def test_bad_arguments_are_refused(capsys):
    assert qcore.demo.main(["--batch", "0"]) == 2
    assert "--batch" in capsys.readouterr().err
