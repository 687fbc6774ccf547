"""fuse_modules / fuse_modules_qat: every core pattern against torch.ao, errors, inplace, hooks, plugins."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

import qcore.registry
from qcore.errors import ConfigError
from qcore.flow.eager.fuse import fuse_known_modules, fuse_modules, fuse_modules_qat, get_fuser_method
from qcore.flow.eager.fusion_patterns import CORE_FUSION_PATTERNS
from qcore.nn import intrinsic as nni
from qcore.spec.markers import hookimpl

torch.set_num_threads(1)

_DIM = {nn.Conv1d: 1, nn.Conv2d: 2, nn.Conv3d: 3, nn.ConvTranspose1d: 1, nn.ConvTranspose2d: 2,
        nn.ConvTranspose3d: 3, nn.BatchNorm1d: 1, nn.BatchNorm2d: 2, nn.BatchNorm3d: 3}
_SIZE = {1: 7, 2: 5, 3: 4}


def _torch_ao():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pytest.importorskip("torch.ao.quantization")


def _randomize_bn(bn: nn.Module, gen: torch.Generator) -> None:
    with torch.no_grad():
        n = bn.num_features
        bn.running_mean.copy_(torch.randn(n, generator=gen))
        bn.running_var.copy_(torch.rand(n, generator=gen) * 2 + 0.1)
        bn.weight.copy_(torch.randn(n, generator=gen))
        bn.bias.copy_(torch.randn(n, generator=gen))


def _build(pattern: tuple[type, ...], seed: int = 0) -> tuple[nn.Sequential, torch.Tensor]:
    """A Sequential of the pattern's modules (children '0', '1', ...) and an input for it."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    first = pattern[0]
    mods: list[nn.Module] = []
    if first is nn.Linear:
        mods.append(nn.Linear(6, 4))
        x = torch.randn(8, 6, generator=gen)
        channels = 4
    elif first in (nn.BatchNorm2d, nn.BatchNorm3d):
        d = _DIM[first]
        x = torch.randn(2, 3, *[_SIZE[d]] * d, generator=gen)
        channels = 3
    else:
        d = _DIM[first]
        mods.append(first(3, 4, 3))
        x = torch.randn(2, 3, *[_SIZE[d]] * d, generator=gen)
        channels = 4
    for cls in pattern[1:] if mods else pattern:
        if cls in _DIM:
            bn = cls(channels)
            _randomize_bn(bn, gen)
            mods.append(bn)
        else:
            mods.append(cls())
    return nn.Sequential(*mods), x


def _names(pattern: tuple[type, ...]) -> list[str]:
    return [str(i) for i in range(len(pattern))]


def _child_types(model: nn.Module) -> list[str]:
    return [type(m).__name__ for m in model.children()]


PATTERNS = list(CORE_FUSION_PATTERNS)
IDS = ["-".join(t.__name__ for t in p) for p in PATTERNS]


def test_core_patterns_registered_for_ptq_and_qat():
    table = qcore.registry.get_registry().fusion_patterns
    for pattern, fuser in CORE_FUSION_PATTERNS.items():
        assert table.get(pattern) is fuser
        assert table.get(pattern, qat=True) is fuser
        assert table.entry((pattern, False)).plugin == "core"


@pytest.mark.parametrize("pattern", PATTERNS, ids=IDS)
def test_eval_fusion_matches_torch_ao(pattern):
    tq = _torch_ao()
    model, x = _build(pattern)
    model.eval()
    expected = model(x)
    ours = fuse_modules(model, _names(pattern))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = tq.fuse_modules(copy.deepcopy(model), _names(pattern))
    assert _child_types(ours) == _child_types(theirs)
    assert all(isinstance(m, nn.Identity) for m in list(ours.children())[1:])
    with torch.no_grad():
        out, ref = ours(x), theirs(x)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    # same torch utility underneath: the folded parameters are bit-identical to torch.ao's
    for (name, p), (tname, tp) in zip(ours.state_dict().items(), theirs.state_dict().items()):
        assert name == tname and torch.equal(p, tp)
    assert not ours.training and not ours[0].training


@pytest.mark.parametrize("pattern", PATTERNS, ids=IDS)
def test_qat_fusion_matches_torch_ao(pattern):
    tq = _torch_ao()
    model, x = _build(pattern, seed=1)
    model.train()
    ours = fuse_modules_qat(model, _names(pattern))
    if nn.ConvTranspose1d in pattern or nn.ConvTranspose2d in pattern or nn.ConvTranspose3d in pattern:
        # torch.ao has no QAT fusion for ConvTranspose + BN; qcore keeps it as a fused float container
        assert type(ours[0]).__name__ == pattern[0].__name__.replace("ConvTranspose", "ConvTransposeBn")
        reference = copy.deepcopy(model)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reference = tq.fuse_modules_qat(copy.deepcopy(model), _names(pattern))
        assert _child_types(ours) == _child_types(reference)
    assert isinstance(ours[0], nni.FusedModule)
    assert [type(m) for m in ours[0]] == list(pattern)
    assert ours.training and ours[0].training
    torch.testing.assert_close(ours(x), reference(x), atol=1e-5, rtol=0)


@pytest.mark.parametrize("cls, dim", [(nn.ConvTranspose1d, 1), (nn.ConvTranspose2d, 2), (nn.ConvTranspose3d, 3)])
def test_grouped_transposed_conv_bn_folds_exactly(cls, dim):
    # torch's fuse_conv_bn_eval alone cannot fold a grouped transposed conv (wrong weight axis)
    gen = torch.Generator().manual_seed(3)
    bn = getattr(nn, f"BatchNorm{dim}d")(6)
    _randomize_bn(bn, gen)
    model = nn.Sequential(cls(4, 6, 3, groups=2, stride=2, bias=False), bn).eval()
    x = torch.randn(2, 4, *[_SIZE[dim]] * dim, generator=gen)
    fused = fuse_modules(model, ["0", "1"])
    assert type(fused[0]) is cls and fused[0].groups == 2
    torch.testing.assert_close(fused(x), model(x), atol=1e-5, rtol=1e-5)


def test_linear_bn_with_one_feature_broadcasts_in_eval():
    gen = torch.Generator().manual_seed(4)
    bn = nn.BatchNorm1d(1)
    _randomize_bn(bn, gen)
    model = nn.Sequential(nn.Linear(5, 1), bn).eval()
    x = torch.randn(3, 5, generator=gen)
    torch.testing.assert_close(fuse_modules(model, ["0", "1"])(x), model(x), atol=1e-5, rtol=1e-5)


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.bn(self.conv(x)))


class _Net(nn.Module):
    """The reference doc's shape: conv, bn, relu at the top plus a nested block and a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.relu = nn.ReLU()
        self.block = _Block()
        self.fc = nn.Linear(4 * 6 * 6, 5)
        self.fc_relu = nn.ReLU()

    def forward(self, x):
        x = self.block(self.relu(self.bn(self.conv(x))))
        return self.fc_relu(self.fc(x.flatten(1)))


def _trained_net(seed: int = 5) -> _Net:
    torch.manual_seed(seed)
    net = _Net()
    net.train()
    with torch.no_grad():
        for _ in range(3):  # give the BNs real running statistics
            net(torch.randn(4, 1, 8, 8))
    return net


def test_list_of_lists_with_nested_names_matches_torch_ao():
    tq = _torch_ao()
    net = _trained_net().eval()
    groups = [["conv", "bn", "relu"], ["block.conv", "block.bn", "block.relu"], ["fc", "fc_relu"]]
    x = torch.randn(3, 1, 8, 8)
    ours = fuse_modules(net, groups)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = tq.fuse_modules(copy.deepcopy(net), groups)
    assert [type(m).__name__ for m in ours.modules()] == [type(m).__name__ for m in theirs.modules()]
    assert type(ours.block.conv) is nni.ConvReLU2d and type(ours.fc) is nni.LinearReLU
    torch.testing.assert_close(ours(x), theirs(x), atol=1e-5, rtol=0)
    torch.testing.assert_close(ours(x), net(x), atol=1e-5, rtol=1e-5)

    qat = fuse_modules_qat(_trained_net(), groups)
    assert type(qat.conv) is nni.ConvBnReLU2d and type(qat.block.conv) is nni.ConvBnReLU2d
    assert qat.training


def test_inplace_false_never_mutates_the_callers_model():
    net = _trained_net().eval()
    before = copy.deepcopy(net.state_dict())
    fused = fuse_modules(net, ["conv", "bn", "relu"])
    assert fused is not net
    assert type(net.conv) is nn.Conv2d and type(net.bn) is nn.BatchNorm2d and type(net.relu) is nn.ReLU
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items()) and before.keys() == net.state_dict().keys()
    assert type(fused.conv) is nni.ConvReLU2d

    qat_net = _trained_net()
    fused_qat = fuse_modules_qat(qat_net, ["conv", "bn"])
    assert type(qat_net.conv) is nn.Conv2d and type(fused_qat.conv) is nni.ConvBn2d
    assert fused_qat.conv[0] is not qat_net.conv


def test_inplace_true_fuses_the_given_model():
    net = _trained_net().eval()
    out = fuse_modules(net, [["conv", "bn"], ["fc", "fc_relu"]], inplace=True)
    assert out is net
    assert type(net.conv) is nn.Conv2d and isinstance(net.bn, nn.Identity) and type(net.fc) is nni.LinearReLU


def test_hooks_move_to_the_fused_module_once():
    calls: list[str] = []
    net = _trained_net().eval()
    net.conv.register_forward_pre_hook(lambda m, args: calls.append("pre"))
    net.relu.register_forward_hook(lambda m, args, out: calls.append("post"))
    net.block.conv.register_forward_pre_hook(lambda m, args, kwargs: calls.append("pre-kw"), with_kwargs=True)
    fused = fuse_modules(net, [["conv", "bn", "relu"], ["block.conv", "block.bn"]])
    fused(torch.randn(1, 1, 8, 8))
    assert sorted(calls) == ["post", "pre", "pre-kw"]
    assert len(fused.conv._forward_pre_hooks) == 1 and len(fused.conv._forward_hooks) == 1
    assert not fused.conv[0]._forward_pre_hooks  # moved, not duplicated inside the container
    calls.clear()
    net(torch.randn(1, 1, 8, 8))  # the caller's model keeps its hooks (inplace=False)
    assert sorted(calls) == ["post", "pre", "pre-kw"]


def test_activation_registered_apart_is_adjacent():
    # torchvision's quantizable Bottleneck declares relu1/relu2 after all convs: stateless members may sit anywhere
    class Bottleneck(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(2, 2, 1), nn.BatchNorm2d(2)
            self.conv2, self.bn2 = nn.Conv2d(2, 2, 1), nn.BatchNorm2d(2)
            self.relu1, self.relu2 = nn.ReLU(), nn.ReLU()

        def forward(self, x):
            return self.relu2(self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x))))))

    model = Bottleneck().eval()
    x = torch.randn(2, 2, 4, 4)
    fused = fuse_modules(model, [["conv1", "bn1", "relu1"], ["conv2", "bn2", "relu2"]])
    assert type(fused.conv1) is nni.ConvReLU2d and type(fused.conv2) is nni.ConvReLU2d
    torch.testing.assert_close(fused(x), model(x), atol=1e-5, rtol=1e-5)


# -- errors ---------------------------------------------------------------------------


def test_missing_name_lists_children_and_close_matches():
    net = _trained_net().eval()
    with pytest.raises(ConfigError, match=r"no module named 'bnn'.*children: conv, bn, relu, block, fc, fc_relu.*'bn'"):
        fuse_modules(net, ["conv", "bnn"])
    with pytest.raises(ConfigError, match=r"'block.bn2'.*_Block at 'block' has no child 'bn2'.*children: conv, bn, relu"):
        fuse_modules(net, ["block.conv", "block.bn2"])


def test_non_adjacent_modules_are_rejected():
    net = _trained_net().eval()
    with pytest.raises(ConfigError, match=r"not adjacent.*children of one module.*'block.bn' in 'block'"):
        fuse_modules(net, ["conv", "block.bn"])
    seq = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2), nn.Conv2d(2, 2, 1), nn.BatchNorm2d(2)).eval()
    with pytest.raises(ConfigError, match=r"not adjacent: '0' and '3'.*in between: 1, 2"):
        fuse_modules(seq, ["0", "3"])
    with pytest.raises(ConfigError, match=r"'1' comes before '2'"):
        fuse_modules(seq, ["2", "1"])


def test_unsupported_types_name_them_and_list_supported_patterns():
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.ReLU6()).eval()
    with pytest.raises(ConfigError) as info:
        fuse_modules(model, ["0", "1"])
    message = str(info.value)
    assert "(Conv2d, ReLU6) (modules '0', '1')" in message
    assert "(Conv2d, BatchNorm2d, ReLU)" in message and "(ConvTranspose3d, BatchNorm3d)" in message
    with pytest.raises(ConfigError, match=r"no fusion pattern for \(Linear, Sigmoid\)"):
        get_fuser_method((nn.Linear, nn.Sigmoid))


def test_mode_errors_for_batchnorm_fusion():
    with pytest.raises(ConfigError, match=r"cannot fuse \(Conv2d, BatchNorm2d\) \(modules 'conv', 'bn'\).*model.eval\(\)"):
        fuse_modules(_trained_net(), ["conv", "bn"])  # train mode: folding needs eval
    with pytest.raises(ConfigError, match=r"fuse_modules_qat.*train mode.*model.train\(\)"):
        fuse_modules_qat(_trained_net().eval(), ["conv", "bn", "relu"])
    # conv + relu has no BatchNorm: either mode fuses
    seq = nn.Sequential(nn.Conv2d(1, 2, 1), nn.ReLU())
    assert type(fuse_modules(seq, ["0", "1"])[0]) is nni.ConvReLU2d
    assert type(fuse_modules_qat(seq.eval(), ["0", "1"])[0]) is nni.ConvReLU2d


def test_batchnorm_without_running_stats_or_wrong_width_is_rejected():
    seq = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2, track_running_stats=False)).eval()
    with pytest.raises(ConfigError, match="track_running_stats=False"):
        fuse_modules(seq, ["0", "1"])
    seq = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(3)).train()
    with pytest.raises(ConfigError, match="one feature per output channel"):
        fuse_modules_qat(seq, ["0", "1"])


@pytest.mark.parametrize(
    "spec, pattern",
    [
        ("conv", "list of module names"),
        (["conv"], "at least two modules"),
        (["conv", ["bn"]], "not a mix"),
        ([["conv", "bn"], ["bn", "relu"]], "'bn' is named in both fusion groups"),
        (["conv", "conv"], "'conv' is named twice"),
    ],
)
def test_malformed_modules_to_fuse(spec, pattern):
    with pytest.raises(ConfigError, match=pattern):
        fuse_modules(_trained_net().eval(), spec)


def test_failing_call_leaves_inplace_model_untouched():
    net = _trained_net().eval()
    net.block.train()  # the second group's fuser refuses to fold a train-mode BatchNorm
    with pytest.raises(ConfigError, match=r"'block.conv', 'block.bn'.*eval mode"):
        fuse_modules(net, [["conv", "bn", "relu"], ["block.conv", "block.bn"]], inplace=True)
    assert type(net.conv) is nn.Conv2d and type(net.bn) is nn.BatchNorm2d and type(net.relu) is nn.ReLU
    with pytest.raises(ConfigError, match=r"no fusion pattern for \(_Block, Linear\)"):
        fuse_modules(net.eval(), [["conv", "bn", "relu"], ["block", "fc"]], inplace=True)
    assert type(net.conv) is nn.Conv2d


def test_empty_list_is_a_no_op_and_unknown_config_keys_fail():
    net = _trained_net().eval()
    assert _child_types(fuse_modules(net, [])) == _child_types(net)
    with pytest.raises(ConfigError, match=r"unknown fuse_custom_config_dict keys \['extra'\]"):
        fuse_modules(net, ["conv", "bn"], fuse_custom_config_dict={"extra": 1})


def test_fused_module_checks_its_parts():
    with pytest.raises(ConfigError, match=r"ConvBn2d fuses \(Conv2d, BatchNorm2d\); got \(Conv1d, BatchNorm2d\)"):
        nni.ConvBn2d(nn.Conv1d(1, 2, 1), nn.BatchNorm2d(2))
    with pytest.raises(ConfigError, match="LinearReLU"):
        nni.LinearReLU(nn.Linear(2, 2), nn.ReLU6())
    add = nni.ConvAddReLU2d(nn.Conv2d(1, 1, 1), torch.add, nn.ReLU())
    x = torch.randn(1, 1, 3, 3)
    torch.testing.assert_close(add(x, x), torch.relu(add[0](x) + x))


# -- extension points ---------------------------------------------------------------


class LinearSigmoid(nni.FusedModule):
    _part_types = (nn.Linear, nn.Sigmoid)


def _fuse_linear_sigmoid(is_qat, linear, sigmoid):
    return LinearSigmoid(linear, sigmoid)


class _SigmoidPlugin:
    @staticmethod
    @hookimpl
    def qcore_register_fusion_patterns(registry):
        registry.add((nn.Linear, nn.Sigmoid), _fuse_linear_sigmoid, qat=False)


def test_plugin_pattern_is_used_by_fuse_modules():
    model = nn.Sequential(nn.Linear(3, 2), nn.Sigmoid()).eval()
    qcore.registry.register_plugin(_SigmoidPlugin, "test_fusion_sigmoid")
    try:
        fused = fuse_modules(model, ["0", "1"])
        assert type(fused[0]) is LinearSigmoid and isinstance(fused[1], nn.Identity)
        x = torch.randn(4, 3)
        torch.testing.assert_close(fused(x), model(x))
        entry = qcore.registry.get_registry().fusion_patterns.entry(((nn.Linear, nn.Sigmoid), False))
        assert entry.plugin == "test_fusion_sigmoid"
        with pytest.raises(ConfigError, match=r"\(Linear, Sigmoid\).*registered for fuse_modules only"):
            fuse_modules_qat(model.train(), ["0", "1"])
    finally:
        qcore.registry.unregister_plugin("test_fusion_sigmoid")
    with pytest.raises(ConfigError, match="no fusion pattern"):
        fuse_modules(model.eval(), ["0", "1"])


def test_additional_mapping_and_fuser_func():
    model = nn.Sequential(nn.Linear(3, 2), nn.Sigmoid()).eval()
    config = {"additional_fuser_method_mapping": {(nn.Linear, nn.Sigmoid): _fuse_linear_sigmoid}}
    assert type(fuse_modules(model, ["0", "1"], fuse_custom_config_dict=config)[0]) is LinearSigmoid

    seen = []

    def fuser_func(mod_list, is_qat, additional):
        seen.append((len(mod_list), is_qat))
        return [nn.Sequential(*mod_list), nn.Identity()]

    fused = fuse_modules_qat(model.train(), ["0", "1"], fuser_func=fuser_func)
    assert seen == [(2, True)] and type(fused[0]) is nn.Sequential
    with pytest.raises(ConfigError, match="one nn.Module per input module"):
        fuse_modules(model, ["0", "1"], fuser_func=lambda mods, is_qat, extra: [mods[0]])


def test_fuse_known_modules_is_torch_aos_default_fuser_func():
    conv, bn = nn.Conv2d(1, 2, 1).eval(), nn.BatchNorm2d(2).eval()
    fused, identity = fuse_known_modules([conv, bn], is_qat=False)
    assert type(fused) is nn.Conv2d and isinstance(identity, nn.Identity) and not identity.training
