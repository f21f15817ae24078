"""The served copy of a sub-net: BatchNorm folded and channels_last, the same features as extracted."""

from __future__ import annotations

import pytest
import torch
from timm.models.resnet import ResNet
from torch import nn

from sdr_model import create_model, extract_subnet, inference_subnet, list_models
from tests.sdr_model.helpers import randomize_bn


@pytest.fixture(scope="module", params=list_models())
def subnet(request: pytest.FixtureRequest) -> ResNet:
    torch.manual_seed(2)
    supernet = create_model(request.param)
    randomize_bn(supernet, seed=2)  # fresh statistics (mean 0, var 1) would fold to almost nothing
    return extract_subnet(supernet.eval(), "2130")


def test_prepared_copy_gives_the_extracted_features(subnet: ResNet) -> None:
    before = {k: v.clone() for k, v in subnet.state_dict().items()}
    prepared = inference_subnet(subnet)
    assert type(prepared) is ResNet
    assert not any(isinstance(m, nn.BatchNorm2d) for m in prepared.modules())
    assert prepared.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(3, subnet.conv1.in_channels, 64, 64)
    with torch.inference_mode():
        expected, got = subnet(x), prepared(x)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert expected.abs().max() > 0.1  # features of a real size, not a comparison of zeros
    after = subnet.state_dict()  # the extracted sub-net (what the weights endpoint serves) is untouched
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    assert any(isinstance(m, nn.BatchNorm2d) for m in subnet.modules())


def test_activations_are_nhwc_behind_a_one_channel_input() -> None:
    """A [B, 1, H, W] input is NCHW and NHWC at once; the weights' layout must decide it."""
    torch.manual_seed(0)
    prepared = inference_subnet(extract_subnet(create_model("sdr_tiny").eval(), "0000"))
    assert prepared.conv1.in_channels == 1
    seen: list[bool] = []
    prepared.maxpool.register_forward_hook(lambda _m, _i, out: seen.append(out.stride(1) == 1))
    with torch.inference_mode():
        prepared(torch.randn(2, 1, 64, 64))
    assert seen == [True]  # channels are the innermost dimension


def test_a_training_mode_subnet_is_refused() -> None:
    subnet = extract_subnet(create_model("sdr_tiny").eval(), "0000").train()
    with pytest.raises(ValueError, match="eval mode"):
        inference_subnet(subnet)
