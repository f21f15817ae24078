import json
import pickle

import pytest
import torch
from safetensors.torch import save_file

from sdr_model import (
    CheckpointError,
    create_model,
    default_preprocessing,
    load_checkpoint,
    load_subnet,
    read_metadata,
    save_checkpoint,
    save_subnet,
)
from tests.sdr_model.helpers import randomize_bn

PRE = default_preprocessing("sdr_tiny")


@pytest.fixture
def tiny():
    torch.manual_seed(3)
    m = create_model("sdr_tiny")
    randomize_bn(m, seed=3)
    return m.eval()


@pytest.fixture
def ckpt(tmp_path, tiny):
    clusters = {"mapping": "identity", "sizes": {"0000": 10, "0312": 7}}
    return save_checkpoint(
        tmp_path / "m.safetensors",
        tiny,
        preprocessing=PRE,
        clusters=clusters,
        provenance={"epochs": 3, "data_fingerprint": "abc"},
    )


def test_round_trip_is_exact(ckpt, tiny):
    loaded, meta = load_checkpoint(ckpt)
    original, restored = tiny.state_dict(), loaded.state_dict()
    assert original.keys() == restored.keys()
    for k in original:
        assert torch.equal(original[k], restored[k]), k
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(tiny.forward_features(x, "0312"), loaded.forward_features(x, "0312"))
    assert meta.config == tiny.config and meta.preprocessing == PRE
    assert meta.clusters["sizes"]["0312"] == 7
    assert meta.provenance["epochs"] == 3 and "git_commit" in meta.provenance and "code_version" in meta.provenance


def test_subnet_file_round_trip(tmp_path, tiny):
    file = save_subnet(tmp_path / "s.safetensors", tiny, "2101", preprocessing=PRE)
    subnet, meta = load_subnet(file)
    assert meta.path == "2101" and meta.timm_kwargs["channels"] == [20, 40, 80, 160]
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(subnet(x), tiny.forward_features(x, "2101"), atol=1e-5, rtol=1e-5)
    with pytest.raises(CheckpointError, match="expected a supernet"):
        load_checkpoint(file)


def test_pickle_file_is_refused_and_named(tmp_path):
    bad = tmp_path / "model.pt"
    with bad.open("wb") as f:
        pickle.dump({"weight": [1, 2, 3]}, f)
    with pytest.raises(CheckpointError, match=r"model\.pt: is a pickle"):
        load_checkpoint(bad)


def test_torch_save_zip_is_refused(tmp_path):
    bad = tmp_path / "model.pth"
    torch.save({"w": torch.zeros(2)}, bad)
    with pytest.raises(CheckpointError, match="only safetensors is accepted"):
        read_metadata(bad)


@pytest.mark.parametrize("keep_bytes", [4, 200, -1000])
def test_truncated_file_is_refused(tmp_path, ckpt, keep_bytes):
    data = ckpt.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[:keep_bytes])
    with pytest.raises(CheckpointError, match=r"truncated|not a safetensors"):
        load_checkpoint(cut)


def test_header_with_missing_keys_is_refused(tmp_path, tiny):
    header = {"format": "sdr-supernet", "format_version": 1, "preprocessing": PRE.to_dict(), "provenance": {}}
    file = tmp_path / "nokeys.safetensors"
    save_file({k: v.contiguous() for k, v in tiny.state_dict().items()}, file, metadata={"sdr": json.dumps(header)})
    with pytest.raises(CheckpointError, match=r"missing keys \['config', 'clusters'\]"):
        load_checkpoint(file)


def test_plain_safetensors_without_header_is_refused(tmp_path):
    file = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(3)}, file)
    with pytest.raises(CheckpointError, match="without an 'sdr' metadata header"):
        read_metadata(file)


def test_header_that_does_not_match_the_tensors_is_refused(tmp_path, tiny):
    header = json.loads(
        json.dumps(
            {
                "format": "sdr-supernet",
                "format_version": 1,
                "preprocessing": PRE.to_dict(),
                "provenance": {},
                "clusters": None,
                "config": {**tiny.config.to_dict(), "planes": [32, 64, 128, 512]},
            }
        )
    )
    file = tmp_path / "mismatch.safetensors"
    save_file({k: v.contiguous() for k, v in tiny.state_dict().items()}, file, metadata={"sdr": json.dumps(header)})
    with pytest.raises(CheckpointError, match=r"has shape|do not match"):
        load_checkpoint(file)


def test_save_is_atomic_no_temp_left_behind(tmp_path, tiny):
    save_checkpoint(tmp_path / "a.safetensors", tiny, preprocessing=PRE)
    assert [p.name for p in tmp_path.iterdir()] == ["a.safetensors"]
