"""`route()` and `sdr route` end to end on small image datasets and a random-init sdr_tiny checkpoint."""

from __future__ import annotations

import itertools
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sdr_model import all_paths, create_model, default_preprocessing, load_checkpoint, save_checkpoint
from sdr_model.cli import main as sdr_main
from sdr_model.datasets import DatasetError, open_dataset
from sdr_model.routing import (
    RouteCancelled,
    RouteOptions,
    ShardResult,
    merge_scores,
    plan_shards,
    prepare_route_data,
    route,
    score_paths,
)

FAST = {"n_boot": 200}  # bootstrap resamples: enough for the tests, quicker than the default 1000


pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py::one_thread


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    file = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_checkpoint(file, create_model("sdr_tiny"), preprocessing=default_preprocessing("sdr_tiny"))
    return file


def _image(label: int, seed: int, size: tuple[int, int] = (28, 28), mode: str = "L") -> Image.Image:
    """Noise plus a bright square whose position encodes the class: learnable by kNN on any features."""
    rng = np.random.default_rng(seed)
    width, height = size
    pixels = rng.integers(0, 90, (height, width), dtype=np.uint8)
    x, y = (label % 3) * width // 3, (label // 3) * height // 3
    pixels[y : y + height // 3, x : x + width // 3] = 230
    img = Image.fromarray(pixels)
    return img.convert(mode) if mode != "L" else img


def _image_folder(root: Path, classes: int, train: int, test: int, seed: int = 0) -> Path:
    for split, n in (("train", train), ("test", test)):
        for c in range(classes):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                _image(c, seed + 1000 * c + 17 * i + (split == "test")).save(folder / f"{i}.png")
    if test == 0:
        shutil.rmtree(root / "test")
    return root


def _without_timings(result: dict) -> dict:
    return {k: v for k, v in result.items() if k not in ("timings",)} | {"dataset": result["dataset"]}


def test_route_reports_the_json_contract(checkpoint: Path, tmp_path: Path) -> None:
    dataset = _image_folder(tmp_path / "ds", classes=3, train=8, test=3)
    steps: list[tuple[int, int]] = []
    result = route(checkpoint, dataset, progress=lambda d, t: steps.append((d, t)), **FAST)
    report = json.loads(json.dumps(result.to_dict()))  # JSON-able as is

    assert {"path", "accuracy"} <= set(report["best"]) and "accuracy" in report["supernet"]
    assert sorted(p["path"] for p in report["paths"]) == all_paths()
    assert all(0.0 <= p["accuracy"] <= 1.0 for p in report["paths"]) and 0 <= report["supernet"]["accuracy"] <= 1
    ranks = [p["rank"] for p in report["paths"]]
    assert ranks == list(range(1, 257))
    scores = [p["selection_score"] for p in report["paths"]]
    assert scores == sorted(scores, reverse=True) and report["best"] == {**report["paths"][0], **report["best"]}
    assert report["best"]["path"] in report["ties"]
    assert report["best"]["accuracy_ci"][0] <= report["best"]["accuracy"] <= report["best"]["accuracy_ci"][1]
    assert report["gain"]["accuracy"] == pytest.approx(report["best"]["accuracy"] - report["supernet"]["accuracy"])
    assert report["dataset"]["counts"] == {
        "train": {f"class{c}": 8 for c in range(3)},
        "test": {f"class{c}": 3 for c in range(3)},
    }
    assert report["dataset"]["test_source"] == "given" and report["skipped"] == []
    assert report["selection"]["method"] == "loo" and report["selection"]["queries"] == 24
    assert steps[-1][0] == steps[-1][1] and all(a[0] <= b[0] for a, b in itertools.pairwise(steps))


def test_distributed_shards_through_json_equal_the_local_route(checkpoint: Path, tmp_path: Path) -> None:
    dataset = _image_folder(tmp_path / "ds", classes=3, train=6, test=2)
    local = route(checkpoint, dataset, **FAST).to_dict()

    # What the service does: each worker prepares the data itself, scores its shard, stores JSON.
    model, metadata = load_checkpoint(checkpoint)
    options = RouteOptions(**FAST)
    stored = []
    for shard in reversed(plan_shards(16)):
        with open_dataset(dataset) as labelled:
            data = prepare_route_data(labelled, metadata.preprocessing, options)
        stored.append(json.dumps(score_paths(model, data, shard, options).to_dict()))
    merged = merge_scores([ShardResult.from_dict(json.loads(s)) for s in stored]).to_dict()

    assert _without_timings(merged) == _without_timings(local)
    assert merged["timings"]["shards"] == 16


def test_test_labels_never_change_the_ranking(checkpoint: Path, tmp_path: Path) -> None:
    dataset = _image_folder(tmp_path / "ds", classes=3, train=6, test=3)
    before = route(checkpoint, dataset, **FAST)
    # Rotate the test labels: class0 -> class1 -> class2 -> class0. Test accuracy collapses...
    test = dataset / "test"
    for c in range(3):
        (test / f"class{c}").rename(test / f"tmp{c}")
    for c in range(3):
        (test / f"tmp{c}").rename(test / f"class{(c + 1) % 3}")
    after = route(checkpoint, dataset, **FAST)
    # ...but the choice, made on train alone, is untouched.
    assert [p.path for p in after.ranking] == [p.path for p in before.ranking]
    assert [p.selection_score for p in after.ranking] == [p.selection_score for p in before.ranking]
    assert after.ties == before.ties
    assert after.best.accuracy != before.best.accuracy


def test_awkward_datasets_route_or_fail_clearly(checkpoint: Path, tmp_path: Path) -> None:
    # 5 images per class, a single split: a stratified test split is held out (1 per class).
    small = _image_folder(tmp_path / "small", classes=3, train=5, test=0)
    result = route(checkpoint, small, **FAST).to_dict()
    assert result["dataset"]["test_source"] == "stratified"
    assert result["dataset"]["counts"]["test"] == {f"class{c}": 1 for c in range(3)}

    # One class only in train; grayscale, RGB, RGBA, 16-bit and odd sizes mixed; a corrupt file.
    mixed = _image_folder(tmp_path / "mixed", classes=3, train=4, test=2)
    shutil.rmtree(mixed / "test/class2")
    _image(0, 5, size=(97, 31), mode="RGB").save(mixed / "train/class0/rgb.jpg")
    _image(1, 6, size=(13, 200), mode="RGBA").save(mixed / "train/class1/rgba.png")
    Image.fromarray(np.asarray(_image(2, 7)).astype(np.uint16) * 257).save(mixed / "train/class2/wide.png")
    (mixed / "train/class2/broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    result = route(checkpoint, mixed, **FAST).to_dict()
    assert result["dataset"]["counts"]["train"] == {"class0": 5, "class1": 5, "class2": 5}
    assert set(result["dataset"]["counts"]["test"]) == {"class0", "class1"}
    assert [s["file"] for s in result["skipped"]] == ["train/class2/broken.png"]

    only_test = _image_folder(tmp_path / "only_test", classes=3, train=3, test=1)
    shutil.rmtree(only_test / "train/class2")
    with pytest.raises(DatasetError, match="appear in test but not in train"):
        route(checkpoint, only_test)

    unreadable = tmp_path / "unreadable"
    for c in ("a", "b"):
        (unreadable / c).mkdir(parents=True)
        (unreadable / c / "x.png").write_bytes(b"junk")
    with pytest.raises(DatasetError, match="none of the 2 images could be read"):
        route(checkpoint, unreadable)

    one_class = _image_folder(tmp_path / "one_class", classes=1, train=4, test=1)
    with pytest.raises(DatasetError, match="at least 2 classes"):
        route(checkpoint, one_class)


@pytest.mark.parametrize("scorer", ["logme", "sfda", "gbc"])
def test_transferability_scorers_rank_on_train_and_report_knn(checkpoint: Path, tmp_path: Path, scorer: str) -> None:
    dataset = _image_folder(tmp_path / "ds", classes=3, train=6, test=2)
    result = route(checkpoint, dataset, scorer, **FAST).to_dict()
    assert result["scorer"] == scorer and result["selection"]["method"] == "train-score"
    assert result["ties"] is None and len(result["paths"]) == 256
    assert len({p["selection_score"] for p in result["paths"]}) > 1
    assert all(0.0 <= p["accuracy"] <= 1.0 for p in result["paths"])


def test_screening_rescores_candidates_and_checks_agreement(checkpoint: Path, tmp_path: Path) -> None:
    dataset = _image_folder(tmp_path / "ds", classes=3, train=12, test=2)
    result = route(checkpoint, dataset, screen=True, verify_screen=True, screen_top=5, screen_fraction=0.5, **FAST)
    screening = result.to_dict()["screening"]
    assert screening["subset_images"] == 18 and len(screening["screen_scores"]) == 256
    assert [p.path for p in result.ranking] != [] and {p.path for p in result.ranking} == set(screening["candidates"])
    assert len(screening["candidates"]) == 5 and result.best.path in screening["candidates"]
    assert screening["full_route_seconds_measured"] is True
    assert screening["agrees_with_full_route"] == (screening["full_route_best"] == result.best.path)


def test_cancel_stops_a_route(checkpoint: Path, tmp_path: Path) -> None:
    dataset = _image_folder(tmp_path / "ds", classes=2, train=4, test=1)
    with pytest.raises(RouteCancelled):
        route(checkpoint, dataset, should_cancel=lambda: True)


def test_cli_routes_an_archive_and_writes_json_and_plot(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _image_folder(tmp_path / "ds", classes=3, train=5, test=2)
    archive = tmp_path / "ds.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for file in folder.rglob("*.png"):
            zf.write(file, Path("ds") / file.relative_to(folder))
    out_json, out_png = tmp_path / "route.json", tmp_path / "gain.png"
    code = sdr_main(
        [
            "route",
            str(archive),
            "--checkpoint",
            str(checkpoint),
            "--k",
            "20",
            "--json",
            str(out_json),
            "--plot",
            str(out_png),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "W0" in printed and "statistically tied" in printed and "rank" in printed
    report = json.loads(out_json.read_text())
    assert report["dataset"]["dataset"] == "ds.zip" and report["selection"]["k"] == 20
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    assert sdr_main(["route", str(tmp_path / "missing"), "--checkpoint", str(checkpoint)]) == 2
    assert "no such file" in capsys.readouterr().err
