"""The demo's eager-mode rows: static PTQ, QAT and dynamic int8, converted with qcore's eager flow.

Everything runs on the ``reference`` backend (exact integer numerics in plain
PyTorch). The flows take an :class:`EagerAPI` so the accuracy tests can run
torch.ao's functions through the very same pipeline for comparison.
"""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional

import attrs
import torch
from torch import nn

from qcore.demo.data import Digits, batches
from qcore.demo.model import DigitsCNN, DigitsRNN, QuantizableDigitsCNN, RecurrentConfig
from qcore.demo.progress import progress_bar
from qcore.demo.train import TrainConfig, cache_key, cache_path, fit, load_or_fit
from qcore.errors import QcoreError

__all__ = [
    "EagerAPI",
    "QATSchedule",
    "RECURRENT_TRAINING",
    "TrainedRecurrent",
    "dynamic_rows",
    "fine_tune",
    "load_or_train_recurrent",
    "qat_rows",
    "quantize_dynamic_rnn",
    "quantize_qat_cnn",
    "quantize_static_cnn",
    "serialized_size_bytes",
    "static_rows",
]

#: How the recurrent classifiers are trained (part of their cache key).
RECURRENT_TRAINING = TrainConfig(epochs=15, batch_size=32, learning_rate=1e-2)


@attrs.frozen
class EagerAPI:
    """The eager-mode functions a flow calls: qcore's by default, torch.ao's in differential tests."""

    fuse_modules: Callable[..., nn.Module]
    fuse_modules_qat: Callable[..., nn.Module]
    prepare: Callable[..., nn.Module]
    prepare_qat: Callable[..., nn.Module]
    convert: Callable[..., nn.Module]
    quantize_dynamic: Callable[..., nn.Module]
    quant_stub: Callable[[], nn.Module]
    dequant_stub: Callable[[], nn.Module]
    disable_observer: Callable[[nn.Module], None]
    freeze_bn_stats: Callable[[nn.Module], None]

    @classmethod
    def qcore(cls) -> "EagerAPI":
        import qcore
        from qcore.nn.intrinsic.qat import freeze_bn_stats

        return cls(qcore.fuse_modules, qcore.fuse_modules_qat, qcore.prepare, qcore.prepare_qat, qcore.convert,
                   qcore.quantize_dynamic, qcore.QuantStub, qcore.DeQuantStub, qcore.disable_observer,
                   freeze_bn_stats)


@attrs.frozen
class QATSchedule:
    """A short QAT fine-tune from the trained weights: SGD with momentum, seeded batch order.

    From epoch ``freeze_after`` on, BatchNorm statistics and observers are frozen,
    as torch.ao's QAT tutorial does, so the last epoch trains against fixed qparams.
    """

    epochs: int = 2
    batch_size: int = 32
    learning_rate: float = 1e-3
    momentum: float = 0.9
    freeze_after: int = 1
    seed: int = 0


def serialized_size_bytes(model: nn.Module) -> int:
    """Bytes of ``torch.save(model.state_dict())``: what the model really takes on disk."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def _on_backend(name: str) -> Any:
    from qcore.backend_selection import backend

    return backend(name)


def _lowering_backends(active: Optional[str], qconfig_backend: str) -> list[str]:
    """Run on the reference simulation, and on the active backend's kernels when the qconfig is that backend's own."""
    return ["reference"] + ([active] if active not in (None, "reference") and qconfig_backend == active else [])


def quantize_static_cnn(float_model: DigitsCNN, qconfig: Any, calibration: Iterable[torch.Tensor],
                        api: Optional[EagerAPI] = None) -> nn.Module:
    """Static PTQ of a trained DigitsCNN: add stubs, fuse conv-bn-relu and linear-relu, prepare, calibrate, convert."""
    api = api or EagerAPI.qcore()
    model = QuantizableDigitsCNN.from_trained(float_model, quant_stub=api.quant_stub, dequant_stub=api.dequant_stub)
    model = api.fuse_modules(model.eval(), model.fuse_groups)
    model.qconfig = qconfig
    prepared = api.prepare(model)
    with torch.no_grad():
        for images in calibration:
            prepared(images)
    return api.convert(prepared).eval()


def fine_tune(model: nn.Module, data: Digits, schedule: QATSchedule, api: EagerAPI, quiet: bool = True) -> nn.Module:
    """Train a QAT-prepared model on the training set with ``schedule``; returns it in eval mode."""
    torch.manual_seed(schedule.seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=schedule.learning_rate, momentum=schedule.momentum)
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(schedule.seed)
    with progress_bar(range(schedule.epochs), desc="QAT fine-tune", unit="epoch", quiet=quiet) as bar:
        for epoch in bar:
            model.train()
            if epoch >= schedule.freeze_after:
                model.apply(api.freeze_bn_stats)
                model.apply(api.disable_observer)
            for images, labels in batches(data.train_images, data.train_labels, schedule.batch_size, generator):
                optimizer.zero_grad()
                loss_fn(model(images), labels).backward()
                optimizer.step()
    return model.eval()


def quantize_qat_cnn(float_model: DigitsCNN, qat_qconfig: Any, data: Digits, schedule: QATSchedule = QATSchedule(),
                     api: Optional[EagerAPI] = None, quiet: bool = True) -> nn.Module:
    """QAT of a trained DigitsCNN: add stubs, fuse for QAT, prepare_qat, fine-tune with ``schedule``, convert."""
    api = api or EagerAPI.qcore()
    model = QuantizableDigitsCNN.from_trained(float_model, quant_stub=api.quant_stub, dequant_stub=api.dequant_stub)
    model = api.fuse_modules_qat(model.train(), model.fuse_groups)
    model.qconfig = qat_qconfig
    prepared = fine_tune(api.prepare_qat(model), data, schedule, api, quiet=quiet)
    return api.convert(prepared).eval()


def quantize_dynamic_rnn(float_model: DigitsRNN, api: Optional[EagerAPI] = None) -> nn.Module:
    """Dynamic int8: the LSTM/GRU and the Linear get int8 weights, activations are quantized on the fly."""
    api = api or EagerAPI.qcore()
    return api.quantize_dynamic(float_model, {type(float_model.rnn), nn.Linear}, dtype=torch.qint8)


# --- the recurrent classifiers, trained once and cached like the CNN --------------------------


@attrs.frozen
class TrainedRecurrent:
    """A trained DigitsRNN and where its weights came from."""

    model: DigitsRNN
    from_cache: bool
    path: Optional[Path]
    seconds: float


def train_recurrent(config: RecurrentConfig, train_config: TrainConfig, data: Digits, quiet: bool = False) -> DigitsRNN:
    """Train a DigitsRNN from a fixed seed (see :func:`qcore.demo.train.fit`); returns the model in eval mode."""
    return fit(lambda: DigitsRNN(config), train_config, data, desc=f"training {config.cell}", quiet=quiet)


def load_or_train_recurrent(data: Digits, config: RecurrentConfig = RecurrentConfig(),
                            train_config: TrainConfig = RECURRENT_TRAINING, cache_dir: Optional[Path] = None,
                            use_cache: bool = True, quiet: bool = False) -> TrainedRecurrent:
    """Load the cached weights for this configuration, or train and cache them (as ``load_or_train`` does the CNN)."""
    start = time.perf_counter()
    path = None
    if use_cache:
        path = cache_path(f"digits-{config.cell.lower()}-{cache_key(config, train_config)}", cache_dir)  # type: ignore[arg-type]
    model, from_cache = load_or_fit(path, lambda: DigitsRNN(config),
                                    lambda: train_recurrent(config, train_config, data, quiet=quiet))
    return TrainedRecurrent(model, from_cache, path, time.perf_counter() - start)


# --- row producers ------------------------------------------------------------------------------


def _observer_name(factory: Any) -> str:
    """The observer a qconfig entry runs: a fake-quant's inner observer, "dynamic" for on-the-fly activations."""
    from qcore.demo.rows import _name
    from qcore.factory import as_factory

    built = as_factory(factory)
    kwargs = dict(built.kwargs)
    if kwargs.get("is_dynamic"):
        return "dynamic"
    return _name(kwargs["observer"]) if "observer" in kwargs else _name(built)


def _observers(qconfig: Any) -> tuple[str, str]:
    return _observer_name(qconfig.activation), _observer_name(qconfig.weight)


def _active_backend(context: Any, what: str) -> Optional[str]:
    try:
        from qcore.backend_selection import get_backend

        return get_backend()
    except QcoreError as exc:
        context.notes.append(f"{what}: the active backend is unknown ({exc}); using 'reference' defaults")
        return None


def _size_note(context: Any) -> None:
    note = ("eager rows: size is torch.save of the converted model's state_dict, its ratio against torch.save of the "
            "fp32 state_dict; rows on 'reference' run its integer simulation, rows on a hardware backend its int8 kernels")
    if note not in context.notes:
        context.notes.append(note)


def static_rows(context: Any) -> Iterator[Any]:
    """Eager static PTQ of the CNN with the active backend's default qconfig and the reference one."""
    from qcore.qconfig import get_default_qconfig

    active = _active_backend(context, "eager static rows")
    names = [active] if active not in (None, "reference") else []
    fp32_size = serialized_size_bytes(context.float_model)
    for name in names + ["reference"]:
        try:
            qconfig = get_default_qconfig(name)
        except QcoreError as exc:
            context.notes.append(f"eager static row for {name!r} skipped: {exc}")
            continue
        activation, weight = _observers(qconfig)
        for lowered_on in _lowering_backends(active, name):
            with _on_backend(lowered_on):
                model = quantize_static_cnn(context.float_model, qconfig, context.calibration(f"{name} static"))
            size = serialized_size_bytes(model)
            yield context.measure(model, f"eager static ({name} qconfig)", lowered_on, activation, weight, size,
                                  baseline_size=fp32_size)
    _size_note(context)


def qat_rows(context: Any, schedule: QATSchedule = QATSchedule()) -> Iterator[Any]:
    """Eager QAT of the CNN: the active backend's default QAT qconfig, a short fine-tune, convert."""
    from qcore.qconfig import get_default_qat_qconfig

    name = _active_backend(context, "eager QAT row") or "reference"
    try:
        qconfig = get_default_qat_qconfig(name)
    except QcoreError as exc:
        context.notes.append(f"eager QAT row skipped: {exc}")
        return
    activation, weight = _observers(qconfig)
    for lowered_on in _lowering_backends(name, name):
        with _on_backend(lowered_on):
            model = quantize_qat_cnn(context.float_model, qconfig, context.data, schedule, quiet=context.quiet)
        yield context.measure(model, f"eager QAT ({name} qconfig, {schedule.epochs} ep)", lowered_on, activation,
                              weight, serialized_size_bytes(model),
                              baseline_size=serialized_size_bytes(context.float_model))
    _size_note(context)


def dynamic_rows(context: Any, cells: tuple[str, ...] = ("LSTM", "GRU")) -> Iterator[Any]:
    """A small LSTM and GRU classifier on the digits' rows: fp32, then dynamic int8 (each against its own fp32)."""
    from qcore.qconfig import default_dynamic_qconfig

    activation, weight = _observers(default_dynamic_qconfig)
    active = _active_backend(context, "eager dynamic rows")
    for cell in cells:
        trained = load_or_train_recurrent(context.data, RecurrentConfig(cell=cell), cache_dir=context.cache_dir,
                                          use_cache=context.use_cache, quiet=context.quiet)
        float_model = trained.model
        params = sum(p.numel() for p in float_model.parameters())
        origin = (f"loaded from cache {trained.path}" if trained.from_cache
                  else f"trained in {trained.seconds:.1f} s" + (f", cached at {trained.path}" if trained.path else ""))
        context.notes.append(f"{cell} rows: DigitsRNN ({cell}, {params:,} parameters, the 8 image rows as 8 steps), "
                             f"weights {origin}; ratios against its own fp32 row")
        fp32_size = serialized_size_bytes(float_model)
        yield context.measure(float_model, f"fp32 ({cell})", "-", "-", "-", fp32_size,
                              baseline=float_model, baseline_size=fp32_size)
        for lowered_on in _lowering_backends(active, active or "reference"):
            with _on_backend(lowered_on):
                model = quantize_dynamic_rnn(float_model)
            yield context.measure(model, f"eager dynamic int8 ({cell})", lowered_on, activation, weight,
                                  serialized_size_bytes(model), baseline=float_model, baseline_size=fp32_size)
    _size_note(context)
