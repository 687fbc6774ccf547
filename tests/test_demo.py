"""``qcore demo``: the table's rows (fp32, int8 simulation, eager static / QAT / dynamic), and the weights cache."""

from __future__ import annotations

import contextlib
import io
import re
import time

import pytest
import torch

import qcore
import qcore.demo
from qcore.demo import eager_rows, train
from qcore.demo.model import DigitsCNN, DigitsRNN, ModelConfig, QuantizableDigitsCNN, RecurrentConfig, fold_batchnorm
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
    with pytest.MonkeyPatch.context() as patch:
        # Every model the demo trains caches here, also where a producer falls back to the default directory.
        patch.setenv("QCORE_CACHE_DIR", str(cache))
        status, text, seconds = run_main("--cache-dir", str(cache))
    return cache, status, text, seconds


def check_latency_and_size(row: list[str], low: float, high: float) -> None:
    assert low < float(row[5]) < high, row
    assert float(row[6]) > 0 and float(row[7]) > 0, row


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
    simulated = [row for row in rows if row[0].startswith("fake-quant sim*")]
    assert [row[0] for row in rows[1:len(simulated) + 1]] == [row[0] for row in simulated]  # right after fp32
    assert {tuple(row[2].split(" / ")) for row in simulated if row[1] == "reference"} == {
        (a, w) for a in ACTIVATIONS for w in WEIGHTS}
    assert len(simulated) == 7
    assert simulated[-1][0] == "fake-quant sim* (default)"
    for row in simulated:
        assert float(row[3]) >= fp32_accuracy - 2.0, row
        check_latency_and_size(row, 0.2, 0.3)  # int8 weights: about a quarter of fp32


@pytest.mark.slow
def test_the_eager_rows_run_on_the_reference_backend_and_keep_accuracy(first_run):
    """Eager rows run on the reference simulation, and again on the active backend's kernels for its own qconfig."""
    _, status, text, _ = first_run
    assert status == 0
    rows = table_rows(text)
    fp32_accuracy = float(rows[0][3])
    eager = rows[8:]
    active = qcore.get_backend()
    kernels = [active] if active != "reference" else []
    qconfigs = ([active] if active != "reference" else []) + ["reference"]
    expected = [(f"eager static ({name} qconfig)", backend)
                for name in qconfigs for backend in ["reference"] + (kernels if name == active else [])]
    expected += [(f"eager QAT ({active} qconfig, {eager_rows.QATSchedule().epochs} ep)", backend)
                 for backend in ["reference"] + kernels]
    cnn_rows = len(expected)
    for cell in ("LSTM", "GRU"):
        expected += [(f"fp32 ({cell})", "-")] + [(f"eager dynamic int8 ({cell})", b) for b in ["reference"] + kernels]
    assert [(row[0], row[1]) for row in eager] == expected
    for row in eager[:cnn_rows]:  # static PTQ and QAT of the CNN
        assert float(row[3]) >= fp32_accuracy - 1.0, row
        # The serialized int8 state_dict, qparams and pickling overhead included: under a third of fp32's.
        check_latency_and_size(row, 0.25, 0.34)
    fp32_row = None
    for row in eager[cnn_rows:]:
        if row[0].startswith("fp32"):
            fp32_row = row
            assert row[1:3] == ["-", "-"] and row[5] == row[7] == "1.00", row
            assert float(row[3]) >= 95.0, row
            continue
        assert row[2] == "dynamic / MinMax", row
        assert float(row[3]) >= float(fp32_row[3]) - 1.0, row
        check_latency_and_size(row, 0.25, 0.4)
    assert "torch.save of the converted model's state_dict" in text
    assert "note: LSTM rows: DigitsRNN (LSTM" in text and "note: GRU rows: DigitsRNN (GRU" in text


@pytest.mark.slow
def test_a_second_run_loads_the_cached_weights(first_run, monkeypatch):
    cache, _, first_text, first_seconds = first_run
    assert list((cache / "demo").glob("digits-cnn-*.pt"))

    def no_training(*args, **kwargs):
        raise AssertionError("the second run trained instead of loading the cache")

    monkeypatch.setattr(train, "train_model", no_training)
    monkeypatch.setattr(eager_rows, "train_recurrent", no_training)
    monkeypatch.setenv("QCORE_CACHE_DIR", str(cache))
    status, text, seconds = run_main("--cache-dir", str(cache))
    assert status == 0
    assert "weights: loaded from cache" in text
    assert {p.name.split("-")[1] for p in (cache / "demo").glob("digits-*.pt")} == {"cnn", "lstm", "gru"}
    assert text.count("weights loaded from cache") == 2  # the LSTM and the GRU
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


def test_the_quantizable_cnn_loads_the_trained_weights_and_computes_the_same():
    torch.manual_seed(0)
    model = DigitsCNN().train()
    model(torch.rand(16, 1, 8, 8))
    model.eval()
    quantizable = QuantizableDigitsCNN.from_trained(model)
    assert quantizable.state_dict().keys() == model.state_dict().keys()
    assert not quantizable.training
    x = torch.rand(4, 1, 8, 8)
    torch.testing.assert_close(quantizable(x), model(x), rtol=0, atol=0)
    fused = qcore.fuse_modules(quantizable, quantizable.fuse_groups)
    torch.testing.assert_close(fused(x), model(x), rtol=1e-4, atol=1e-5)
    assert isinstance(fused.bn1, torch.nn.Identity) and isinstance(fused.relu3, torch.nn.Identity)


@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_the_recurrent_classifier_reads_the_rows_as_steps(cell):
    model = DigitsRNN(RecurrentConfig(cell=cell, hidden=16))
    assert isinstance(model.rnn, getattr(torch.nn, cell)) and model.rnn.input_size == 8
    assert model(torch.rand(5, 1, 8, 8)).shape == (5, 10)
    with pytest.raises(ValueError):
        RecurrentConfig(cell="RNN")


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
