"""`sdr train all` end to end on a small image tree, `sdr info` on its checkpoint, BN rows, plots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from sdr_model import load_checkpoint
from sdr_model.batchnorm import SplitBatchNorm2d
from sdr_model.cli import main as sdr
from sdr_model.extract import extract_subnet
from sdr_model.torch_threads import torch_threads
from training.config import TrainConfig
from training.data import eval_transform
from training.data.image_folder import ImageFolderSource

from .conftest import make_image_folder, smoke_config, write_config


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, TrainConfig]:
    tmp = tmp_path_factory.mktemp("pipeline")
    images = make_image_folder(tmp / "images", classes=4, per_class=130, size=28, corrupt=2)
    config = smoke_config(tmp, data={"kind": "image_folder", "root": str(images), "storage_size": 32})
    file = write_config(config, tmp / "recipe.yaml")
    with torch_threads(1):  # as the autouse fixture does for function-scoped tests (conftest.py)
        assert sdr(["train", "all", "--config", str(file)]) == 0
    return Path(config.run_dir), config


def test_checkpoint_is_readable_by_sdr_info(
    trained_run: tuple[Path, TrainConfig], capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir, _ = trained_run
    capsys.readouterr()
    assert sdr(["info", str(run_dir / "supernet.safetensors")]) == 0
    out = capsys.readouterr().out
    assert "mapping identity, 256 clusters" in out


def test_provenance_records_data_recipe_steps_and_code(trained_run: tuple[Path, TrainConfig]) -> None:
    run_dir, config = trained_run
    _, meta = load_checkpoint(run_dir / "supernet.safetensors")
    prov = meta.provenance
    source = ImageFolderSource(config.data.root, 1, 32)
    assert prov["data_fingerprint"] == source.fingerprint()
    assert prov["data"]["unreadable_images"] == 2
    assert prov["config"] == config.to_dict()
    assert prov["epochs"] == config.baseline.epochs
    assert prov["steps"]["progressive"] == sum(config.progressive.phase_steps)
    assert prov["code_version"] and prov["git_commit"]
    assert meta.clusters is not None and sum(meta.clusters["sizes"].values()) == 520


def test_all_256_bn_rows_are_calibrated_and_differ(trained_run: tuple[Path, TrainConfig]) -> None:
    run_dir, _ = trained_run
    model, _ = load_checkpoint(run_dir / "supernet.safetensors")
    last_stage = [m for m in model.modules() if isinstance(m, SplitBatchNorm2d) and m.stage == 3]
    assert last_stage
    for bn in last_stage:
        assert bn.prefix_mean.shape[0] == 256
        assert (bn.prefix_batches > 0).all()  # every path's row was written by calibration
        distance = torch.cdist(bn.prefix_mean, bn.prefix_mean) + torch.eye(256) * 1e9
        assert distance.min() > 0  # no two paths share statistics
        assert not torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))  # W0 calibrated too


def test_calibrated_subnets_give_sane_features(trained_run: tuple[Path, TrainConfig]) -> None:
    """Leave-one-out 1-NN on the (easy, brightness-coded) classes, through extracted timm sub-nets."""
    run_dir, config = trained_run
    model, meta = load_checkpoint(run_dir / "supernet.safetensors")
    source = ImageFolderSource(config.data.root, 1, 32)
    readable = [i for i in range(len(source)) if source.load(i) is not None]
    images = torch.stack([source.load(i) for i in readable])  # type: ignore[misc]
    labels = source.labels[readable]  # type: ignore[index]
    x = eval_transform(images, meta.preprocessing)
    for path in ("0000", "3210", "1333"):
        with torch.no_grad():
            features = F.normalize(extract_subnet(model, path).eval()(x), dim=1)
            torch.testing.assert_close(features, F.normalize(model.forward_features(x, path), dim=1), atol=1e-5, rtol=0)
        similarity = features @ features.T - 2 * torch.eye(len(x))
        accuracy = (labels[similarity.argmax(dim=1)] == labels).float().mean()
        assert accuracy > 0.6, (path, float(accuracy))  # chance is 0.25


def test_plots_and_metrics(trained_run: tuple[Path, TrainConfig]) -> None:
    run_dir, config = trained_run
    assert sdr(["train", "plot", str(run_dir)]) == 0
    assert {p.name for p in (run_dir / "plots").iterdir()} == {"losses.png", "collapse_std.png", "cluster_sizes.png"}
    lines = (run_dir / "progressive" / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["step"] for r in records] == list(range(1, sum(config.progressive.phase_steps) + 1))
    assert {r["phase"] for r in records} == {1, 2, 3, 4}
    assert all(0 < r["collapse_std"] < 1 for r in records)
    assert any("loss_kd" in r for r in records)


def test_rerunning_a_finished_run_changes_nothing(trained_run: tuple[Path, TrainConfig], tmp_path: Path) -> None:
    run_dir, config = trained_run
    before = (run_dir / "supernet.safetensors").stat().st_mtime_ns
    file = write_config(config, tmp_path / "same.yaml")
    assert sdr(["train", "all", "--config", str(file)]) == 0
    assert (run_dir / "supernet.safetensors").stat().st_mtime_ns == before


def test_a_different_recipe_is_refused_in_the_same_run_dir(
    trained_run: tuple[Path, TrainConfig], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, config = trained_run
    other = TrainConfig.from_dict({**config.to_dict(), "seed": 1})
    file = write_config(other, tmp_path / "other.yaml")
    assert sdr(["train", "all", "--config", str(file)]) == 2
    assert "different recipe" in capsys.readouterr().err


def test_missing_data_folder_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = smoke_config(tmp_path, data={"kind": "image_folder", "root": str(tmp_path / "no_such_folder")})
    assert sdr(["train", "baseline", "--config", str(write_config(config, tmp_path / "r.yaml"))]) == 2
    assert "no_such_folder" in capsys.readouterr().err
