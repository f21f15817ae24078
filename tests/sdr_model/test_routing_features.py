"""Shared-prefix features equal per-path `forward_features`, for every path of both presets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sdr_model import all_paths, create_model, default_preprocessing
from sdr_model.batchnorm import SplitBatchNorm2d
from sdr_model.datasets import normalize
from sdr_model.routing import RouteCancelled, prefix_tree_features
from sdr_model.supernet import SDRResNet

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py::one_thread


def _randomized(name: str) -> SDRResNet:
    """A preset with random BN affine weights and per-prefix statistics.

    Fresh BN tables are identical across prefixes (zeros and ones) and timm's zero-init of the last
    BN silences residual branches, so a walk that used the wrong prefix row would go unnoticed.
    """
    torch.manual_seed(0)
    model = create_model(name)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, SplitBatchNorm2d | torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0.0, 0.1)
                module.running_mean.normal_(0.0, 0.1)
                module.running_var.uniform_(0.5, 2.0)
            if isinstance(module, SplitBatchNorm2d):
                module.prefix_mean.normal_(0.0, 0.1)
                module.prefix_var.uniform_(0.5, 2.0)
    return model.eval()


def _check_all_paths(name: str, size: int, batch_siblings: bool) -> None:
    model = _randomized(name)
    preprocessing = default_preprocessing(name)
    pixels = torch.randint(0, 256, (2, model.config.in_chans, size, size), dtype=torch.uint8)
    paths = [None, *all_paths()]
    shared = prefix_tree_features(model, pixels, preprocessing, paths, batch_size=2, batch_siblings=batch_siblings)
    x = normalize(pixels, preprocessing)
    with torch.inference_mode():
        for path in paths:
            expected = model.forward_features(x, path).numpy()
            np.testing.assert_allclose(shared[path], expected, rtol=0, atol=1e-5, err_msg=f"path {path}")
    # The check can fail: paths really differ, so a mix-up of prefixes would show.
    assert np.abs(shared["0000"] - shared["3210"]).max() > 1e-2


@pytest.mark.parametrize("batch_siblings", [False, True], ids=["one-by-one", "siblings-grouped"])
def test_shared_prefix_equals_per_path_sdr_tiny(batch_siblings: bool) -> None:
    _check_all_paths("sdr_tiny", 64, batch_siblings)


@pytest.mark.slow
@pytest.mark.parametrize("batch_siblings", [False, True], ids=["one-by-one", "siblings-grouped"])
def test_shared_prefix_equals_per_path_sdr_resnet50(batch_siblings: bool) -> None:
    _check_all_paths("sdr_resnet50", 64, batch_siblings)


def test_siblings_need_eval_mode() -> None:
    model = _randomized("sdr_tiny").train()
    with pytest.raises(RuntimeError, match="eval mode only"):
        model.forward_stage(model.forward_stem(torch.randn(2, 1, 64, 64)), 0, ("0", "1"))


def test_subsets_batches_and_order_do_not_change_features() -> None:
    model = _randomized("sdr_tiny")
    preprocessing = default_preprocessing("sdr_tiny")
    pixels = torch.randint(0, 256, (5, 1, 64, 64), dtype=torch.uint8)
    whole = prefix_tree_features(model, pixels, preprocessing, [None, "0123", "0120", "3333"], batch_size=5)
    part = prefix_tree_features(model, pixels, preprocessing, ["3333", "0123"], batch_size=2)
    for path in ("0123", "3333"):
        np.testing.assert_allclose(part[path], whole[path], atol=1e-5)
    assert whole[None].shape == (5, model.num_features) and whole["0120"].shape == (5, model.subnet_num_features)


def test_progress_cancel_and_input_checks() -> None:
    model = _randomized("sdr_tiny")
    preprocessing = default_preprocessing("sdr_tiny")
    pixels = torch.randint(0, 256, (5, 1, 64, 64), dtype=torch.uint8)
    calls: list[tuple[int, int]] = []
    prefix_tree_features(
        model, pixels, preprocessing, ["0000"], batch_size=2, on_batch=lambda d, t: calls.append((d, t))
    )
    assert calls == [(1, 3), (2, 3), (3, 3)]

    polls = []

    def cancel_after_two() -> bool:
        polls.append(1)
        return len(polls) > 2

    with pytest.raises(RouteCancelled, match="after 2 of 3"):
        prefix_tree_features(model, pixels, preprocessing, ["0000"], batch_size=2, should_cancel=cancel_after_two)
    with pytest.raises(ValueError, match="duplicate"):
        prefix_tree_features(model, pixels, preprocessing, ["0000", "0000"])
    with pytest.raises(ValueError, match="eval mode"):
        prefix_tree_features(model.train(), pixels, preprocessing, ["0000"])


@pytest.mark.parametrize("batch_siblings", [False, True], ids=["one-by-one", "siblings-grouped"])
def test_batches_walked_side_by_side_give_the_same_features_bit_for_bit(batch_siblings: bool) -> None:
    """`workers` threads, one torch thread each: same batches, so the same bytes as one thread."""
    model = _randomized("sdr_tiny")
    preprocessing = default_preprocessing("sdr_tiny")
    pixels = torch.randint(0, 256, (7, 1, 64, 64), dtype=torch.uint8)
    paths = [None, "0000", "0123", "0130", "3210", "3333"]
    serial = prefix_tree_features(
        model, pixels, preprocessing, paths, batch_size=2, workers=1, batch_siblings=batch_siblings
    )
    threads_before = torch.get_num_threads()
    calls: list[tuple[int, int]] = []
    parallel = prefix_tree_features(
        model,
        pixels,
        preprocessing,
        paths,
        batch_size=2,
        workers=3,
        batch_siblings=batch_siblings,
        on_batch=lambda d, t: calls.append((d, t)),
    )
    for path in paths:
        assert parallel[path].tobytes() == serial[path].tobytes(), path
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]  # from this thread, in order
    assert torch.get_num_threads() == threads_before

    polls: list[int] = []

    def cancel_after_two() -> bool:
        polls.append(1)
        return len(polls) > 2

    with pytest.raises(RouteCancelled, match="after 2 of 4"):
        prefix_tree_features(
            model, pixels, preprocessing, ["0000"], batch_size=2, workers=2, should_cancel=cancel_after_two
        )
    assert torch.get_num_threads() == threads_before


def test_bf16_autocast_stays_close_to_float32() -> None:
    """bf16 is on by default only for CUDA; forced on here (CPU autocast runs the same code path)."""
    model = _randomized("sdr_tiny")
    preprocessing = default_preprocessing("sdr_tiny")
    pixels = torch.randint(0, 256, (4, 1, 64, 64), dtype=torch.uint8)
    paths = [None, "0123", "3210"]
    exact = prefix_tree_features(model, pixels, preprocessing, paths, batch_size=4)
    assert prefix_tree_features(model, pixels, preprocessing, paths, batch_size=4, bf16=False)["0123"].tobytes() == (
        exact["0123"].tobytes()
    )
    fast = prefix_tree_features(model, pixels, preprocessing, paths, batch_size=4, bf16=True)
    for path in paths:
        assert fast[path].dtype == np.float32
        scale = np.abs(exact[path]).max()
        error = np.abs(fast[path] - exact[path]).max() / scale
        assert 0 < error < 0.05, (path, error)  # really bf16 (not bit-equal), and close to float32


@pytest.mark.parametrize("name", ["sdr_tiny", "sdr_resnet50"])  # 1-channel and 3-channel inputs
def test_channels_last_walks_nhwc_activations_with_the_same_features(name: str) -> None:
    """A [B, 1, S, S] batch counts as channels_last already; the walk must still make the stem NHWC."""
    model = _randomized(name)
    preprocessing = default_preprocessing(name)
    pixels = torch.randint(0, 256, (2, model.config.in_chans, 64, 64), dtype=torch.uint8)
    nhwc: list[bool] = []
    hook = model.conv1.register_forward_hook(lambda _m, _i, out: nhwc.append(out.stride(1) == 1))
    try:
        plain = prefix_tree_features(model, pixels, preprocessing, [None, "0123"], batch_size=2)
        fast = prefix_tree_features(model, pixels, preprocessing, [None, "0123"], batch_size=2, channels_last=True)
    finally:
        hook.remove()
    assert nhwc == [False, True]
    for path in (None, "0123"):  # float rounding of another summation order, relative to the features' size
        np.testing.assert_allclose(fast[path], plain[path], rtol=0, atol=1e-6 * np.abs(plain[path]).max())
