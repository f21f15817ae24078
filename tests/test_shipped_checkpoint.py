"""The shipped checkpoint is the product's proof: it must be what its header says, and route the demo."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sdr_model import all_paths, load_checkpoint, read_metadata
from sdr_model.batchnorm import SplitBatchNorm2d
from sdr_model.extract import subnet_state_dict

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "checkpoints" / "sdr_tiny_fmnist.safetensors"
DEMO = ROOT / "examples" / "fmnist_tops_demo.zip"


@pytest.fixture(scope="module")
def shipped():
    return load_checkpoint(SHIPPED)


def test_header_says_what_and_how_it_was_trained():
    meta = read_metadata(SHIPPED)
    assert SHIPPED.stat().st_size < 25 * 1024 * 1024
    assert meta.format == "sdr-supernet" and meta.config.num_paths == 256
    assert meta.preprocessing.channels == 1 and meta.preprocessing.input_size == meta.config.input_size
    prov = meta.provenance
    for key in ("data_fingerprint", "code_version", "git_commit"):
        assert prov.get(key), f"provenance lacks {key}"
    sizes = meta.clusters["sizes"]
    assert len(sizes) == 256 and sum(sizes.values()) == 60000  # every Fashion-MNIST train image has a path


def test_every_path_has_its_own_calibrated_bn_statistics(shipped):
    model, _ = shipped
    for module in model.modules():
        if isinstance(module, SplitBatchNorm2d):
            assert (module.prefix_batches > 0).all(), "a BN row was never calibrated"
    # the full per-path statistics (every BN layer's row for that path) are distinct for all 256 paths
    signatures = set()
    for path in all_paths():
        state = subnet_state_dict(model, path)
        stats = torch.cat([v.flatten() for k, v in sorted(state.items()) if k.endswith("running_mean")])
        signatures.add(tuple(stats.tolist()))
    assert len(signatures) == 256


def test_routes_the_demo_archive_end_to_end(shipped, tmp_path):
    from sdr_model import create_model, default_preprocessing, save_checkpoint
    from sdr_model.routing import route

    result = route(shipped, DEMO).to_dict()
    assert len(result["paths"]) == 256
    assert result["dataset"]["classes"] == ["coat", "pullover", "shirt", "t-shirt_top"]
    assert result["best"]["path"] == result["paths"][0]["path"]
    # Training must show: the shipped W0 separates the demo's classes clearly better than the same
    # network at random init. k=20: the demo's 160-image bank makes k=200 a vote over everything.
    torch.manual_seed(0)
    random_init = save_checkpoint(
        tmp_path / "random.safetensors", create_model("sdr_tiny"), preprocessing=default_preprocessing("sdr_tiny")
    )
    untrained = route(str(random_init), DEMO).to_dict()
    assert result["supernet"]["knn_top1"]["20"] > untrained["supernet"]["knn_top1"]["20"] + 0.1
