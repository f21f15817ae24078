"""Model tests over every registered preset (timm style), plus the preset size contract."""

import pytest
import torch

from sdr_model import SDRConfig, create_model, list_models, preset_config
from sdr_model.batchnorm import SplitBatchNorm2d
from sdr_model.config import ConfigError
from sdr_model.supernet import SplitConv2d
from tests.sdr_model.helpers import randomize_bn

SAMPLED_PATHS = ["0000", "3333", "0312", "2101"]


@pytest.fixture(scope="module", params=list_models())
def model(request):
    torch.manual_seed(0)
    return create_model(request.param)


def _input(model, batch=2, side=64):
    return torch.randn(batch, model.config.in_chans, side, side)


def test_registry_lists_both_presets():
    assert {"sdr_tiny", "sdr_resnet50"} <= set(list_models())
    with pytest.raises(KeyError, match="known models"):
        create_model("resnet_nope")


def test_sdr_resnet50_sizes_match_the_design():
    model = create_model("sdr_resnet50")
    n = model.num_params()
    assert 56e6 <= n <= 58e6, n
    assert model.config.subnet_planes == (60, 125, 250, 500)
    assert model.subnet_num_features == 2000
    assert round(model.num_params("0312") / 1e6, 1) == 22.4


@pytest.mark.parametrize("path", [None, *SAMPLED_PATHS])
def test_shapes_and_finiteness(model, path):
    model.eval()
    with torch.no_grad():
        out = model.forward_features(_input(model), path)
    dim = model.num_features if path is None else model.subnet_num_features
    assert out.shape == (2, dim)
    assert torch.isfinite(out).all()
    assert model(_input(model), path).shape == (2, dim)


def test_feature_info_reports_channels_and_reduction(model):
    info = model.feature_info
    assert [i["reduction"] for i in info] == [2, 4, 8, 16, 32]
    assert info[-1]["num_chs"] == model.num_features
    x = _input(model, side=64)
    h = model.forward_stem(x)
    assert h.shape[1] == info[0]["num_chs"] and h.shape[-1] == 64 // 4


def _active(width: int, group: int, cfg: SDRConfig) -> set[int]:
    """Independent statement of DESIGN §2: shared half, then group `group` of C/(2G) channels."""
    shared = width // 2
    gw = width // (2 * cfg.num_groups)
    return set(range(shared)) | set(range(shared + group * gw, shared + (group + 1) * gw))


@pytest.mark.parametrize("path", ["0312", "3333"])
def test_backward_reaches_exactly_the_path_parameters(model, path):
    cfg = model.config
    randomize_bn(model)  # nonzero last-BN weights: every residual branch carries gradient
    model.train()
    model.zero_grad(set_to_none=True)
    model.forward_features(_input(model, batch=4), path).square().sum().backward()
    for name, p in model.named_parameters():
        module = model.get_submodule(name.rsplit(".", 1)[0])
        expected = torch.zeros_like(p, dtype=torch.bool)
        if isinstance(module, SplitConv2d):
            outs = sorted(_active(p.shape[0], int(path[module.out_stage]), cfg))
            ins = (
                sorted(_active(p.shape[1], int(path[module.in_stage]), cfg))
                if module.in_stage is not None
                else list(range(p.shape[1]))
            )
            expected[torch.tensor(outs)[:, None], torch.tensor(ins)[None, :]] = True
        elif isinstance(module, SplitBatchNorm2d):
            expected[sorted(_active(p.shape[0], int(path[module.stage]), cfg))] = True
        else:  # the shared stem
            expected[:] = True
        assert p.grad is not None, name
        reached = p.grad != 0
        assert not (reached & ~expected).any(), f"{name}: gradient leaked outside path {path}"
        assert reached[expected].float().mean() > 0.9, f"{name}: path {path} parameters got no gradient"
    model.eval()


def test_per_path_bn_rows_are_used_only_by_their_paths(model):
    randomize_bn(model)
    model.eval()
    x = _input(model)
    last_bn = [m for m in model.stage(3).modules() if isinstance(m, SplitBatchNorm2d)][-1]
    first_bn = next(m for m in model.stage(0).modules() if isinstance(m, SplitBatchNorm2d))
    with torch.no_grad():
        before = {p: model.forward_features(x, p) for p in ("0312", "0313", "1312")}
        last_bn.prefix_mean[last_bn.row("0313")] += 1.0  # row of another path, same prefix up to stage 3
        assert torch.equal(model.forward_features(x, "0312"), before["0312"])
        assert not torch.allclose(model.forward_features(x, "0313"), before["0313"])
        last_bn.prefix_mean[last_bn.row("0312")] += 1.0
        assert not torch.allclose(model.forward_features(x, "0312"), before["0312"])
        # stage-1 statistics are per prefix: row "1" is used by 1312 and not by 0312
        first_bn.prefix_var[first_bn.row("1312")] *= 3.0
        after_0312 = model.forward_features(x, "0312")
        assert torch.equal(after_0312, model.forward_features(x, "0312"))
        assert not torch.allclose(model.forward_features(x, "1312"), before["1312"])


def test_train_mode_updates_only_the_rows_of_the_path(model):
    model.train()
    bn = [m for m in model.stage(3).modules() if isinstance(m, SplitBatchNorm2d)][-1]
    snapshot = bn.prefix_mean.clone()
    model.forward_features(_input(model), "2101")
    changed = (bn.prefix_mean != snapshot).any(dim=1).nonzero().flatten().tolist()
    assert changed == [bn.row("2101")]
    model.eval()


def test_config_rejects_widths_that_do_not_split():
    with pytest.raises(ConfigError, match="stage 1"):
        SDRConfig(block="basic", depths=(1, 1, 1, 1), planes=(30, 64, 128, 256))
    with pytest.raises(ConfigError, match="stem_width"):
        SDRConfig(stem_width=32)
    assert preset_config("sdr_tiny") == SDRConfig.from_dict(preset_config("sdr_tiny").to_dict())


def test_training_works_after_an_inference_mode_forward_on_a_fresh_channel_cache():
    """The channel index cache is shared by routing (inference_mode) and training (autograd)."""
    from sdr_model import channels

    channels._INDEX_CACHE.clear()
    model = create_model("sdr_tiny")
    x = torch.randn(2, 1, 64, 64)
    with torch.inference_mode():
        model.forward_features(x, "3213")
    model.train()
    model.forward_features(x, "3213").sum().backward()  # raised "Inference tensors cannot be saved"
    assert model.layer4[0].conv1.weight.grad is not None
