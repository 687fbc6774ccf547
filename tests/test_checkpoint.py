"""qcore.save / qcore.load: pickle-free checkpoints of converted models.

Round trips of static (fused conv-bn-relu, per-channel, int8 activations),
dynamic (LSTM/GRU/Linear) and weight-only (embedding tables, int4 Linear)
models give bit-identical outputs; loading lowers through the
``qcore_lower_module`` hook for the active backend; a truncated, corrupted,
edited, newer-format, pickle or crafted file raises a clear checkpoint error
and runs nothing from the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import sys
import warnings

import pytest
import torch
from torch import nn

import qcore
import qcore.registry as R
from qcore.checkpoint import (
    CheckpointClassError,
    CheckpointError,
    CheckpointFormatError,
    CheckpointIntegrityError,
    CheckpointVersionError,
    CheckpointWarning,
    load,
    read_manifest,
    save,
)
from qcore import dtypes
from qcore.errors import QcoreError
from qcore.qtensor import QTensor
from qcore.spec import hookimpl

torch.set_num_threads(1)


# --- models -----------------------------------------------------------------------------------------


class ConvNet(nn.Module):
    """The static example: conv-bn-relu fused, a linear, a float head after the DeQuantStub."""

    def __init__(self) -> None:
        super().__init__()
        self.quant = qcore.QuantStub()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(4 * 4 * 4, 6)
        self.dequant = qcore.DeQuantStub()
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.quant(x)
        x = self.pool(self.relu(self.bn(self.conv(x))))
        x = self.fc(self.flat(x))
        return self.head(self.dequant(x))


def calibration_data() -> torch.Tensor:
    return torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(1))


def converted_convnet(qconfig=None, remove_qconfig: bool = True) -> nn.Module:
    torch.manual_seed(0)
    model = ConvNet().eval()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-0.5, 0.5)
        model.bn.running_var.uniform_(0.5, 2.0)
    model.qconfig = qconfig or qcore.default_per_channel_qconfig
    model.head.qconfig = None
    qcore.fuse_modules(model, [["conv", "bn", "relu"]], inplace=True)
    prepared = qcore.prepare(model)
    prepared(calibration_data())
    return qcore.convert(prepared, remove_qconfig=remove_qconfig)


class RecurrentNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(6, 8, num_layers=2, batch_first=True, bidirectional=True)
        self.gru = nn.GRU(16, 8, batch_first=True)
        self.cell = nn.GRUCell(8, 5)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.lstm(x)
        y, _ = self.gru(y)
        last = y[:, -1]
        return self.fc(last) + self.cell(last).sum(1, keepdim=True)


class EmbeddingNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(20, 8, padding_idx=0)
        self.bag = nn.EmbeddingBag(20, 8, mode="mean")
        self.fc = nn.Linear(8, 4)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.fc(self.emb(ids).mean(1) + self.bag(ids))


def as_float(y):
    return y.dequantize() if isinstance(y, QTensor) else y


def assert_same_outputs(a: nn.Module, b: nn.Module, *inputs) -> None:
    ya, yb = as_float(a(*inputs)), as_float(b(*inputs))
    assert ya.dtype == yb.dtype and torch.equal(ya, yb)


@pytest.fixture
def ckpt(tmp_path):
    return tmp_path / "model.qcore"


@pytest.fixture(autouse=True)
def no_test_plugins():
    yield
    try:
        R.unregister_plugin("checkpoint_test_lowering")
    except Exception:
        pass


# --- round trips ------------------------------------------------------------------------------------


class TestRoundTrip:
    def test_static_fused_convnet_is_bit_identical_and_keeps_structure(self, ckpt):
        q = converted_convnet()
        x = torch.randn(5, 1, 8, 8)
        save(q, ckpt)
        loaded = load(ckpt, model=ConvNet())
        assert_same_outputs(q, loaded, x)
        assert [(n, type(m)) for n, m in loaded.named_modules()] == [(n, type(m)) for n, m in q.named_modules()]
        assert type(loaded.conv).__name__ == "ConvReLU2d" and isinstance(loaded.bn, nn.Identity)
        assert not loaded.training and loaded.conv._qcore_name == "conv" and loaded.head._qcore_name == "head"
        assert int(loaded.conv.weight_axis) == 0  # per channel survived
        original, restored = q.state_dict(), loaded.state_dict()
        assert original.keys() == restored.keys()
        for key, value in original.items():
            if isinstance(value, torch.Tensor):
                assert value.dtype == restored[key].dtype and torch.equal(value, restored[key]), key
            else:
                assert value == restored[key], key

    def test_extra_state_with_int8_activations_survives(self, ckpt):
        symmetric = qcore.QConfig(
            activation=qcore.MinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric),
            weight=qcore.default_weight_observer,
        )
        q = converted_convnet(symmetric)
        assert q.fc.dtype == qcore.int8
        save(q, ckpt)
        loaded = load(ckpt, model=ConvNet())
        for key in ("quant._extra_state", "conv._extra_state", "fc._extra_state"):
            assert loaded.state_dict()[key] == q.state_dict()[key]
        assert loaded.fc.dtype == qcore.int8 and (loaded.fc.quant_min, loaded.fc.quant_max) == (-128, 127)
        assert_same_outputs(q, loaded, torch.randn(3, 1, 8, 8))

    def test_float_module_after_dequant_keeps_the_quantized_input_guard(self, ckpt):
        q = converted_convnet()
        save(q, ckpt)
        loaded = load(ckpt, model=ConvNet())
        quantized = qcore.quantize_per_tensor(torch.randn(2, 6), 0.1, 128, torch.quint8)
        with pytest.raises(qcore.QuantizationError, match="DeQuantStub"):
            loaded.head(quantized)

    def test_dynamic_recurrent_and_linear(self, ckpt):
        pytest.importorskip("qcore.nn.quantized.dynamic.rnn", reason="the dynamic modules are not written yet")
        torch.manual_seed(0)
        q = qcore.quantize_dynamic(RecurrentNet().eval(), {nn.LSTM, nn.GRU, nn.GRUCell, nn.Linear}, dtype=torch.qint8)
        from qcore.nn.quantized.dynamic import LSTM as ReferenceDynamicLSTM

        assert isinstance(q.lstm, ReferenceDynamicLSTM)  # the reference class, or a backend's kernel subclass of it
        save(q, ckpt)
        loaded = load(ckpt, model=RecurrentNet())
        assert type(loaded.lstm) is type(q.lstm) and type(loaded.cell) is type(q.cell)
        assert_same_outputs(q, loaded, torch.randn(3, 7, 6))

    def test_dynamic_float16_weights(self, ckpt):
        pytest.importorskip("qcore.nn.quantized.dynamic.rnn", reason="the dynamic modules are not written yet")
        torch.manual_seed(0)
        q = qcore.quantize_dynamic(RecurrentNet().eval(), {nn.LSTM, nn.Linear}, dtype=torch.float16)
        save(q, ckpt)
        loaded = load(ckpt, model=RecurrentNet())
        assert loaded.fc.weight_dtype == qcore.float16
        assert_same_outputs(q, loaded, torch.randn(2, 4, 6))

    def test_weight_only_embeddings_and_int4_linear(self, ckpt):
        pytest.importorskip("qcore.nn.quantized.weight_only.linear", reason="the weight-only modules are not written yet")
        torch.manual_seed(0)
        model = EmbeddingNet().eval()
        q = qcore.quantize_dynamic(model, {
            nn.Embedding: qcore.float_qparams_weight_only_qconfig,
            nn.EmbeddingBag: qcore.float_qparams_weight_only_qconfig_4bit,
            nn.Linear: qcore.weight_only_int4_qconfig,
        })
        assert q.bag.weight_dtype == qcore.uint4 and q.fc.weight_dtype == dtypes.int4
        save(q, ckpt)
        loaded = load(ckpt, model=EmbeddingNet())
        assert loaded.bag.weight_dtype == qcore.uint4 and loaded.emb.padding_idx == 0 and loaded.bag.mode == "mean"
        assert_same_outputs(q, loaded, torch.randint(0, 20, (4, 5)))

    def test_sequential_of_allowed_modules_loads_without_a_model(self, ckpt):
        torch.manual_seed(0)
        seq = nn.Sequential(
            qcore.QuantStub(), nn.Conv2d(2, 4, 3, padding=1, padding_mode="reflect"), nn.BatchNorm2d(4), nn.ReLU6(),
            nn.Hardswish(), nn.LeakyReLU(0.2), nn.ConvTranspose2d(4, 4, 2, stride=2), nn.GroupNorm(2, 4),
            nn.LayerNorm([8, 8]), nn.Sigmoid(), nn.Dropout(0.1), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64, 10),
            nn.Softmax(dim=1), qcore.DeQuantStub(),
        ).eval()
        seq.qconfig = qcore.default_qconfig
        prepared = qcore.prepare(seq)
        x = torch.randn(4, 2, 4, 4)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the fixed-qparams modules warn about the default observer
            prepared(x)
            q = qcore.convert(prepared)
        save(q, ckpt)
        loaded = load(ckpt)
        assert [type(m) for m in loaded] == [type(m) for m in q]
        assert loaded[7].num_groups == 2 and loaded[14].dim == 1
        assert_same_outputs(q, loaded, x)

    def test_float_torch_modules_rebuild_from_their_attributes(self, ckpt):
        torch.manual_seed(0)
        model = nn.Sequential(
            nn.Embedding(10, 4, padding_idx=0), nn.LSTM(4, 6, proj_size=3, batch_first=True), nn.RNN(4, 5, nonlinearity="relu"),
            nn.GRU(4, 5, bias=False), nn.MultiheadAttention(8, 2, bias=False, kdim=3, batch_first=True),
            nn.BatchNorm1d(3, affine=False), nn.ConvTranspose1d(2, 3, 3, stride=2, output_padding=1),
            nn.ModuleDict({"a": nn.Linear(2, 2)}), nn.GELU("tanh"),
        ).eval()
        save(model, ckpt)
        loaded = load(ckpt)
        assert loaded[1].proj_size == 3 and loaded[2].nonlinearity == "relu" and loaded[3].bias is False
        assert loaded[4].in_proj_bias is None and loaded[4].kdim == 3 and loaded[8].approximate == "tanh"
        ids = torch.randint(0, 10, (2, 3))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch: LSTM projections are not supported by oneDNN
            assert torch.equal(loaded[1](loaded[0](ids))[0], model[1](model[0](ids))[0])
        for key, value in model.state_dict().items():
            assert torch.equal(value, loaded.state_dict()[key]), key

    def test_shared_modules_stay_shared(self, ckpt):
        linear = nn.Linear(3, 3)
        model = nn.Sequential(linear, nn.ReLU(), linear)
        save(model, ckpt)
        loaded = load(ckpt)
        assert loaded[0] is loaded[2]
        assert_same_outputs(model, loaded, torch.randn(2, 3))

    def test_user_root_class_from_classes(self, ckpt):
        q = converted_convnet()
        save(q, ckpt)
        loaded = load(ckpt, classes=[ConvNet])
        assert type(loaded) is ConvNet
        assert_same_outputs(q, loaded, torch.randn(2, 1, 8, 8))

    def test_save_leaves_no_temporary_files_and_does_not_touch_the_model(self, tmp_path, ckpt):
        q = converted_convnet()
        before = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in q.state_dict().items()}
        save(q, ckpt)
        save(q, ckpt)  # overwrite in place
        assert os.listdir(tmp_path) == [ckpt.name]
        for key, value in q.state_dict().items():
            assert (torch.equal(value, before[key]) if isinstance(value, torch.Tensor) else value == before[key])


# --- manifest: qconfig, metadata, versions ------------------------------------------------------


class TestManifest:
    def test_records_structure_backend_versions_and_qparams(self, ckpt):
        q = converted_convnet()
        save(q, ckpt, metadata={"task": "digits", "accuracy": 0.97, "classes": (0, 1, 2)})
        manifest = read_manifest(ckpt)
        assert manifest.format_version == 1 and manifest.qcore_version == qcore.__version__
        assert manifest.torch_version == torch.__version__ and manifest.backend == q._qcore_backend
        assert manifest.metadata == {"task": "digits", "accuracy": 0.97, "classes": (0, 1, 2)}
        conv = manifest.module("conv")
        assert conv.class_name == "qcore.nn.intrinsic.quantized:ConvReLU2d"
        assert conv.config["in_channels"] == 1 and conv.config["kernel_size"] == (3, 3)
        assert conv.qparams["scale"] == pytest.approx(float(q.conv.scale)) and conv.qparams["weight_dtype"] == "int8"
        assert manifest.module("head").class_name == "torch.nn:Linear"
        assert set(manifest.tensors) == {k for k, v in q.state_dict().items() if isinstance(v, torch.Tensor)}

    def test_qconfig_round_trips(self, ckpt):
        qconfig = qcore.QConfig(
            activation=qcore.HistogramObserver.with_args(reduce_range=True),
            weight=qcore.PerChannelMinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_channel_symmetric),
        )
        q = converted_convnet(remove_qconfig=False)
        save(q, ckpt, qconfig=qconfig)
        assert read_manifest(ckpt).qconfig() == qconfig
        loaded = load(ckpt, model=ConvNet())
        assert loaded.qconfig == q.qconfig == qcore.default_per_channel_qconfig
        assert loaded.flat.qconfig == q.flat.qconfig == qcore.default_per_channel_qconfig
        assert "qconfig" in vars(loaded.head) and loaded.head.qconfig is None

    def test_newer_format_version_is_refused(self, ckpt):
        save(converted_convnet(), ckpt)
        rewrite(ckpt, lambda manifest: manifest.update(format_version=2), format_version="2")
        with pytest.raises(CheckpointVersionError, match=r"format version 2.*upgrade qcore"):
            load(ckpt, model=ConvNet())
        with pytest.raises(CheckpointVersionError):
            read_manifest(ckpt)


# --- backends and lowering -------------------------------------------------------------------------


class LoweredLinear(nn.Module):
    """What a backend plugin's lowering returns in this test: a wrapper that can give back the reference module."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x)

    def to_reference(self) -> nn.Module:
        return self.inner


class LoweringPlugin:
    lowered: list = []

    @hookimpl
    def qcore_lower_module(self, backend, module):
        from qcore.nn.quantized import Linear

        if backend == "reference" and type(module) is Linear:
            LoweringPlugin.lowered.append(type(module).__name__)
            return LoweredLinear(module)
        return None


class TestBackends:
    def test_load_under_another_active_backend(self, ckpt):
        q = converted_convnet()
        assert q._qcore_backend == qcore.get_backend()
        save(q, ckpt)
        with qcore.backend("reference"):
            loaded = load(ckpt, model=ConvNet())
        assert loaded._qcore_backend == "reference"
        assert read_manifest(ckpt).backend == q._qcore_backend
        assert_same_outputs(q, loaded, torch.randn(2, 1, 8, 8))
        assert load(ckpt, model=ConvNet(), lower=False)._qcore_backend == "reference"

    def test_load_lowers_through_the_hook_and_save_writes_the_reference_form(self, ckpt):
        R.register_plugin(LoweringPlugin(), "checkpoint_test_lowering")
        with qcore.backend("reference"):
            q = converted_convnet()
        assert isinstance(q.fc, LoweredLinear)
        save(q, ckpt)
        assert isinstance(q.fc, LoweredLinear)  # the caller's model is left as it was
        assert read_manifest(ckpt).module("fc").class_name == "qcore.nn.quantized:Linear"
        LoweringPlugin.lowered.clear()
        with qcore.backend("reference"):
            loaded = load(ckpt, model=ConvNet())
            reference = load(ckpt, model=ConvNet(), lower=False)
        assert LoweringPlugin.lowered == ["Linear"]
        assert isinstance(loaded.fc, LoweredLinear) and loaded.fc._qcore_name == "fc"
        assert type(reference.fc).__name__ == "Linear" and reference.fc._qcore_name == "fc"
        x = torch.randn(2, 1, 8, 8)
        assert_same_outputs(q, loaded, x)
        assert_same_outputs(q, reference, x)


# --- damaged and hostile files ------------------------------------------------------------------------


def rewrite(path, edit, format_version: str = "1", keep_manifest_hash: bool = False) -> None:
    """Write the checkpoint again with its manifest edited by ``edit`` (a crafted file: hashes recomputed)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), "pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    manifest = json.loads(meta["manifest"])
    edit(manifest)
    text = json.dumps(manifest)
    meta.update(manifest=text, format_version=format_version)
    if not keep_manifest_hash:
        meta["manifest_sha256"] = hashlib.sha256(text.encode()).hexdigest()
    save_file(tensors, str(path), metadata=meta)


def set_class(name: str, class_name: str):
    def edit(manifest):
        for entry in manifest["modules"]:
            if entry["name"] == name:
                entry["class"] = class_name
    return edit


class TestDamagedFiles:
    @pytest.fixture
    def saved(self, ckpt):
        save(converted_convnet(), ckpt)
        return ckpt

    def test_truncated_file(self, saved):
        data = saved.read_bytes()
        for size in (len(data) - 7, 100, 5, 0):
            saved.write_bytes(data[:size])
            with pytest.raises(CheckpointFormatError, match="truncated|empty"):
                load(saved, model=ConvNet())

    def test_flipped_byte_in_tensor_data(self, saved):
        data = bytearray(saved.read_bytes())
        data[-3] ^= 0x10
        saved.write_bytes(bytes(data))
        with pytest.raises(CheckpointIntegrityError, match=r"tensor '.*' does not match its sha256"):
            load(saved, model=ConvNet())

    def test_edited_manifest_bytes(self, saved):
        data = saved.read_bytes()
        edited = data.replace(b'\\"in_features\\":64', b'\\"in_features\\":65', 1)
        assert edited != data and len(edited) == len(data)
        saved.write_bytes(edited)
        with pytest.raises(CheckpointIntegrityError, match="manifest does not match"):
            load(saved, model=ConvNet())

    def test_edited_manifest_keeping_the_old_hash(self, saved):
        rewrite(saved, set_class("fc", "torch.nn:Linear"), keep_manifest_hash=True)
        with pytest.raises(CheckpointIntegrityError, match="edited or corrupted"):
            load(saved, model=ConvNet())

    def test_manifest_and_tensors_disagree(self, saved):
        def drop_tensor(manifest):
            manifest["tensors"].pop("fc.bias")
        rewrite(saved, drop_tensor)
        with pytest.raises(CheckpointIntegrityError, match="do not match its manifest"):
            load(saved, model=ConvNet())

    def test_unknown_class_is_named_with_how_to_allow_it(self, saved):
        rewrite(saved, set_class("fc", "mypackage.layers:FancyLinear"))
        with pytest.raises(CheckpointClassError) as info:
            load(saved, model=ConvNet())
        message = str(info.value)
        assert "'fc'" in message and "mypackage.layers:FancyLinear" in message and "classes=[FancyLinear]" in message
        assert "mypackage" not in sys.modules

    def test_user_root_without_model_says_how_to_allow_it(self, saved):
        with pytest.raises(CheckpointClassError, match=r"ConvNet.*classes=\[ConvNet\].*model="):
            load(saved)

    @pytest.mark.parametrize("name", ["os:system", "subprocess:Popen", "builtins:eval", "torch.nn:functional",
                                      "qcore.__main__:main", "qcore.stubs:nn", "torch.nn.modules.module:Module.__init__"])
    def test_hostile_class_names_are_refused_without_running_anything(self, saved, monkeypatch, name):
        def forbidden(*args, **kwargs):
            raise AssertionError("qcore.load ran code named by the file")

        monkeypatch.setattr(os, "system", forbidden)
        rewrite(saved, set_class("conv", name))
        was_loaded = "qcore.__main__" in sys.modules
        with pytest.raises(CheckpointClassError):
            load(saved, model=ConvNet())
        assert ("qcore.__main__" in sys.modules) == was_loaded

    def test_importable_module_named_by_the_file_is_never_imported(self, saved, tmp_path, monkeypatch):
        marker = tmp_path / "imported"
        (tmp_path / "ckpt_side_effect.py").write_text(
            f"open({str(marker)!r}, 'w').close()\nimport torch\nclass Evil(torch.nn.Module):\n    pass\n"
        )
        monkeypatch.syspath_prepend(str(tmp_path))

        def edit(manifest):
            set_class("conv", "ckpt_side_effect:Evil")(manifest)
            manifest["qconfig"] = {"activation": {"class": "ckpt_side_effect:Evil", "kwargs": {}},
                                   "weight": {"class": "minmax", "kwargs": {}}}
        rewrite(saved, edit)
        with pytest.raises(CheckpointClassError, match="ckpt_side_effect:Evil"):
            load(saved, model=ConvNet())
        with pytest.raises(CheckpointClassError, match="ckpt_side_effect:Evil"):
            read_manifest(saved).qconfig()
        assert not marker.exists() and "ckpt_side_effect" not in sys.modules

    def test_crafted_attributes_and_hooks_only_set_plain_values(self, saved):
        def edit(manifest):
            fc = next(e for e in manifest["modules"] if e["name"] == "fc")
            fc["attributes"].update(forward="not a method", weight="not a tensor", note="kept")
        rewrite(saved, edit)
        loaded = load(saved, model=ConvNet())
        assert loaded.fc.note == "kept" and callable(loaded.fc.forward) and callable(loaded.fc.weight)
        loaded(torch.randn(1, 1, 8, 8))

        def reserved(manifest):
            manifest["modules"][1]["attributes"]["_buffers"] = {"$dict": {}}
        rewrite(saved, reserved)
        with pytest.raises(CheckpointFormatError, match="reserved attribute '_buffers'"):
            load(saved, model=ConvNet())

    def test_unknown_hook_name_is_refused(self, saved):
        def edit(manifest):
            manifest["modules"][-1]["hooks"] = [{"kind": "forward", "name": "os.system"}]
        rewrite(saved, edit)
        with pytest.raises(CheckpointFormatError, match="unknown hook 'os.system'"):
            load(saved, model=ConvNet())

    def test_pickle_and_torch_save_files_are_refused_unread(self, tmp_path, ckpt):
        marker = tmp_path / "unpickled"

        class Payload:
            def __reduce__(self):
                return (os.mkdir, (str(marker),))

        ckpt.write_bytes(pickle.dumps(Payload(), protocol=4))
        with pytest.raises(CheckpointFormatError, match="pickle file.*never unpickles"):
            load(ckpt)
        torch.save(nn.Linear(2, 2).state_dict(), ckpt)
        with pytest.raises(CheckpointFormatError, match="zip archive.*torch.save"):
            load(ckpt)
        assert not marker.exists()

    def test_plain_safetensors_file_is_not_a_checkpoint(self, ckpt):
        from safetensors.torch import save_file

        save_file({"w": torch.zeros(2)}, str(ckpt))
        with pytest.raises(CheckpointFormatError, match="not a qcore checkpoint"):
            load(ckpt)

    def test_errors_are_qcore_errors(self):
        for error in (CheckpointFormatError, CheckpointIntegrityError, CheckpointVersionError, CheckpointClassError):
            assert issubclass(error, CheckpointError) and issubclass(error, QcoreError)


# --- what cannot be saved or rebuilt ---------------------------------------------------------------------


class TestLimits:
    def test_module_with_unsaveable_constructor_arguments_needs_the_model(self, ckpt):
        torch.manual_seed(0)
        model = nn.Sequential(nn.TransformerEncoderLayer(8, 2, 16)).eval()
        save(model, ckpt)
        assert set(read_manifest(ckpt).module("0").unsaved) >= {"d_model", "nhead"}
        with pytest.raises(CheckpointError, match=r"'0'.*d_model.*model="):
            load(ckpt)
        loaded = load(ckpt, model=nn.Sequential(nn.TransformerEncoderLayer(8, 2, 16)))
        assert_same_outputs(model, loaded, torch.randn(3, 2, 8))

    def test_wrong_model_class_is_refused(self, ckpt):
        save(converted_convnet(), ckpt)
        with pytest.raises(CheckpointError, match="ConvNet.*model= is a"):
            load(ckpt, model=nn.Sequential())

    def test_user_hooks_are_not_saved_and_say_so(self, ckpt):
        model = nn.Sequential(nn.Linear(2, 2))
        model[0].register_forward_hook(lambda m, i, o: o)
        with pytest.warns(CheckpointWarning, match="hooks .*'0'"):
            save(model, ckpt)
        assert not load(ckpt)[0]._forward_hooks

    def test_non_module_and_non_json_metadata_are_refused(self, ckpt):
        with pytest.raises(CheckpointError, match="nn.Module"):
            save({"weight": torch.zeros(2)}, ckpt)
        with pytest.raises(CheckpointError, match="metadata"):
            save(nn.Linear(2, 2), ckpt, metadata={"fn": print})
