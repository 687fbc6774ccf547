"""Accuracy of eager-mode quantization on real data (scikit-learn's digits), against fp32 and torch.ao.

Static PTQ and QAT of the digits CNN, dynamic int8 of an LSTM and a GRU
classifier reading the digits row by row. Every test runs torch.ao's eager
flow on the same trained weights, the same calibration data and the same
seeded QAT schedule (through :class:`qcore.demo.eager_rows.EagerAPI`), and
asserts qcore is no worse than torch.ao by more than 0.3 points (one test
image is 0.28 points). ``pytest -s`` prints the table. qcore runs on its
``reference`` backend; torch.ao on the engine named by the qconfig.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Iterator

import pytest
import torch
from torch import nn

import qcore
from qcore.demo.data import Digits, load_digits_split
from qcore.demo.eager_rows import (
    EagerAPI,
    QATSchedule,
    load_or_train_recurrent,
    quantize_dynamic_rnn,
    quantize_qat_cnn,
    quantize_static_cnn,
)
from qcore.demo.measure import accuracy, num_threads
from qcore.demo.model import RecurrentConfig
from qcore.demo.train import load_or_train

pytest.importorskip("sklearn")
pytestmark = pytest.mark.slow

STATIC_TOLERANCE = 1.0  # points below fp32
QAT_TOLERANCE = 0.5
DYNAMIC_TOLERANCE = 1.0
VERSUS_TORCH_AO = 0.3  # points qcore may trail torch.ao by
BATCH = 256
CALIBRATION_BATCH = 64
QAT_SCHEDULE = QATSchedule(epochs=2, learning_rate=1e-3, freeze_after=1, seed=0)


# --- fixtures: data and models trained once per session -----------------------------------------


@pytest.fixture(scope="session")
def digits() -> Digits:
    return load_digits_split()


@pytest.fixture(scope="session")
def weights_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("qcore-accuracy-cache")


@pytest.fixture(scope="session")
def cnn(digits, weights_cache) -> nn.Module:
    with num_threads(1):
        return load_or_train(digits, cache_dir=weights_cache, quiet=True).model.eval()


@pytest.fixture(scope="session")
def recurrent(digits, weights_cache):
    """{"LSTM": model, "GRU": model}, trained on first use."""
    models: dict[str, nn.Module] = {}

    def get(cell: str) -> nn.Module:
        if cell not in models:
            with num_threads(1):
                trained = load_or_train_recurrent(digits, RecurrentConfig(cell=cell), cache_dir=weights_cache,
                                                  quiet=True)
            models[cell] = trained.model.eval()
        return models[cell]

    return get


@pytest.fixture(scope="session")
def calibration(digits) -> list[torch.Tensor]:
    """Every training image, in a fixed order: what both flows calibrate on."""
    return list(digits.train_images.split(CALIBRATION_BATCH))


@pytest.fixture(scope="session")
def accuracy_table():
    rows: list[tuple[str, str, float, float, float]] = []
    yield rows
    if rows:
        lines = [f"{'model':<6} {'flow':<28} {'fp32':>7} {'qcore':>7} {'torch.ao':>8}"]
        lines += [f"{m:<6} {f:<28} {a:7.2f} {b:7.2f} {c:8.2f}" for m, f, a, b, c in rows]
        print("\n\neager-mode accuracy on the digits test set (%):\n" + "\n".join(lines))


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    with num_threads(1):
        yield


# --- helpers --------------------------------------------------------------------------------------


def score(model: nn.Module, digits: Digits) -> float:
    """Top-1 accuracy (%) on the digits test set."""
    return accuracy(model, digits.test_images, digits.test_labels, BATCH)


@contextlib.contextmanager
def torch_ao(engine: str) -> Iterator[EagerAPI]:
    """torch.ao's eager API with its warnings silenced and ``engine`` pinned (restored after)."""
    tq = pytest.importorskip("torch.ao.quantization")
    nniqat = pytest.importorskip("torch.ao.nn.intrinsic.qat")
    if engine not in torch.backends.quantized.supported_engines:
        pytest.skip(f"torch was built without the {engine} engine")
    previous = torch.backends.quantized.engine
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.backends.quantized.engine = engine
        try:
            yield EagerAPI(tq.fuse_modules, tq.fuse_modules_qat, tq.prepare, tq.prepare_qat, tq.convert,
                           tq.quantize_dynamic, tq.QuantStub, tq.DeQuantStub, tq.disable_observer,
                           nniqat.freeze_bn_stats)
        finally:
            torch.backends.quantized.engine = previous


def qconfigs(backend: str, qat: bool) -> tuple[qcore.QConfig, object]:
    """qcore's and torch.ao's default (QAT) qconfig for ``backend``; skips when qcore lacks the backend."""
    getter = qcore.get_default_qat_qconfig if qat else qcore.get_default_qconfig
    try:
        ours = getter(backend)
    except qcore.QcoreError as exc:
        pytest.skip(f"qcore has no {backend!r} backend description here: {exc}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tq = pytest.importorskip("torch.ao.quantization")
        theirs = (tq.get_default_qat_qconfig if qat else tq.get_default_qconfig)(backend)
    return ours, theirs


def check(table: list, model: str, flow: str, fp32: float, ours: float, theirs: float, tolerance: float) -> None:
    table.append((model, flow, fp32, ours, theirs))
    print(f"\n{model} {flow}: fp32 {fp32:.2f}  qcore {ours:.2f}  torch.ao {theirs:.2f}")
    assert ours >= fp32 - tolerance, f"{flow}: qcore {ours:.2f}% is more than {tolerance} points below fp32 {fp32:.2f}%"
    assert ours >= theirs - VERSUS_TORCH_AO, (
        f"{flow}: qcore {ours:.2f}% trails torch.ao {theirs:.2f}% by more than {VERSUS_TORCH_AO} points")


def assert_static_cnn(model: nn.Module) -> None:
    """The converted CNN really runs qcore's quantized modules (not float ones)."""
    import qcore.nn.intrinsic.quantized as nniq
    import qcore.nn.quantized as nnq

    assert isinstance(model.quant, nnq.Quantize) and isinstance(model.dequant, nnq.DeQuantize)
    assert isinstance(model.conv1, nniq.ConvReLU2d) and isinstance(model.conv2, nniq.ConvReLU2d)
    assert isinstance(model.fc1, nniq.LinearReLU) and type(model.fc2) is nnq.Linear
    assert model.conv1.weight().int_repr().dtype == torch.int8


# --- the tests --------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["fbgemm", "qnnpack"])
def test_static_ptq_of_the_digits_cnn(backend, digits, cnn, calibration, accuracy_table):
    ours_qconfig, theirs_qconfig = qconfigs(backend, qat=False)
    fp32 = score(cnn, digits)
    assert fp32 >= 95.0
    with qcore.backend("reference"):
        ours = quantize_static_cnn(cnn, ours_qconfig, calibration)
        assert_static_cnn(ours)
        ours_accuracy = score(ours, digits)
    with torch_ao(backend) as api:
        theirs = quantize_static_cnn(cnn, theirs_qconfig, calibration, api=api)
        theirs_accuracy = score(theirs, digits)
    check(accuracy_table, "CNN", f"static PTQ ({backend} qconfig)", fp32, ours_accuracy, theirs_accuracy,
          STATIC_TOLERANCE)


@pytest.mark.parametrize("backend", ["fbgemm", "qnnpack"])
def test_qat_of_the_digits_cnn(backend, digits, cnn, accuracy_table):
    ours_qconfig, theirs_qconfig = qconfigs(backend, qat=True)
    fp32 = score(cnn, digits)
    with qcore.backend("reference"):
        ours = quantize_qat_cnn(cnn, ours_qconfig, digits, QAT_SCHEDULE)
        assert_static_cnn(ours)
        ours_accuracy = score(ours, digits)
    with torch_ao(backend) as api:
        theirs = quantize_qat_cnn(cnn, theirs_qconfig, digits, QAT_SCHEDULE, api=api)
        theirs_accuracy = score(theirs, digits)
    check(accuracy_table, "CNN", f"QAT ({backend}, {QAT_SCHEDULE.epochs} epochs)", fp32, ours_accuracy,
          theirs_accuracy, QAT_TOLERANCE)


@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_dynamic_int8_of_a_recurrent_classifier(cell, digits, recurrent, accuracy_table):
    import qcore.nn.quantized.dynamic as nnqd

    model = recurrent(cell)
    fp32 = score(model, digits)
    assert fp32 >= 95.0
    with qcore.backend("reference"):
        ours = quantize_dynamic_rnn(model)
        assert isinstance(ours.rnn, getattr(nnqd, cell)) and isinstance(ours.fc, nnqd.Linear)
        ours_accuracy = score(ours, digits)
    with torch_ao("fbgemm") as api:
        theirs = quantize_dynamic_rnn(model, api=api)
        theirs_accuracy = score(theirs, digits)
    check(accuracy_table, cell, "dynamic int8", fp32, ours_accuracy, theirs_accuracy, DYNAMIC_TOLERANCE)
