"""Downstream dataset reading and the decode-once eval transform."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

from sdr_model import Preprocessing
from sdr_model.datasets import (
    DatasetError,
    decode_images,
    eval_transform,
    load_image,
    normalize,
    open_dataset,
    read_dataset,
    read_manifest,
    stratified_split,
)

RGB = Preprocessing(mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3), input_size=32, resize=36, channels=3)
GRAY = Preprocessing(mean=(0.5,), std=(0.25,), input_size=32, resize=32, channels=1)


def _save(path: Path, size: tuple[int, int] = (20, 30), mode: str = "L", value: int = 100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = {"L": (), "RGB": (3,), "RGBA": (4,)}[mode]
    Image.fromarray(np.full((size[1], size[0], *channels), value, dtype=np.uint8), mode=mode).save(path)
    return path


def test_image_folder_with_and_without_test_split(tmp_path: Path) -> None:
    for split, n in (("train", 3), ("test", 1)):
        for c in ("cat", "dog"):
            for i in range(n):
                _save(tmp_path / "two" / split / c / f"{i}.png")
    (tmp_path / "two/train/cat/notes.txt").write_text("not an image")
    dataset = read_dataset(tmp_path / "two")
    assert dataset.classes == ("cat", "dog") and dataset.has_test_split
    assert dataset.counts() == {"train": {"cat": 3, "dog": 3}, "test": {"cat": 1, "dog": 1}}

    for c in ("x", "y"):
        _save(tmp_path / "one" / c / "0.jpg")
    single = read_dataset(tmp_path / "one")
    assert not single.has_test_split and single.counts() == {"all": {"x": 1, "y": 1}}

    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no images found"):
        read_dataset(tmp_path / "empty")


def test_manifest_relative_paths_splits_and_errors(tmp_path: Path) -> None:
    _save(tmp_path / "img/a.png")
    _save(tmp_path / "img/b.png")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(
        '{"path": "img/a.png", "label": "cat", "split": "train"}\n\n'  # blank lines are skipped
        '{"path": "img/b.png", "label": 3, "split": "test"}\n'
    )
    dataset = read_manifest(manifest)
    assert [r.label for r in dataset.records] == ["cat", "3"] and dataset.has_test_split
    assert dataset.records[0].path == (tmp_path / "img/a.png").resolve()

    cases = {
        '{"path": "img/a.png"}': "line 1",
        "not json": "line 1: not valid JSON",
        '{"path": "https://x/y.png", "label": 1}': "URL",
        '{"path": "img/missing.png", "label": 1}': "does not exist",
        '{"path": "img/a.png", "label": 1, "split": "val"}': "split must be one of",
        '{"path": "img/a.png", "label": 1, "split": "train"}\n{"path": "img/b.png", "label": 2}': "on every line",
    }
    for text, message in cases.items():
        manifest.write_text(text + "\n")
        with pytest.raises(DatasetError, match=message):
            read_manifest(manifest)

    manifest.write_text('{"path": "img/a.png", "label": 1}\n')
    with pytest.raises(DatasetError, match="outside the allowed data roots"):
        read_manifest(manifest, allowed_roots=[tmp_path / "elsewhere"])
    assert len(read_manifest(manifest, allowed_roots=[tmp_path / "img"]).records) == 1


def test_folder_holding_a_manifest_and_open_dataset_passthrough(tmp_path: Path) -> None:
    _save(tmp_path / "d/x.png")
    (tmp_path / "d/manifest.jsonl").write_text('{"path": "x.png", "label": "a"}\n')
    with open_dataset(tmp_path / "d") as dataset:
        assert dataset.classes == ("a",)
        with open_dataset(dataset) as same:
            assert same is dataset
    with pytest.raises(DatasetError, match="no such file"), open_dataset(tmp_path / "nope"):
        pass


def test_eval_transform_matches_torchvision_pipeline_on_odd_sizes() -> None:
    rng = np.random.default_rng(0)
    reference = transforms.Compose(
        [transforms.Resize(RGB.resize), transforms.CenterCrop(RGB.input_size), transforms.PILToTensor()]
    )
    for width, height in ((37, 91), (300, 41), (36, 36), (5, 7)):
        img = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        out = eval_transform(img, RGB)
        assert out.shape == (3, 32, 32) and out.dtype == torch.uint8
        assert torch.equal(out, reference(img))


def test_channels_are_converted_and_wide_grayscale_scaled(tmp_path: Path) -> None:
    rgb = _save(tmp_path / "rgb.png", mode="RGB", value=200)
    gray = _save(tmp_path / "gray.png", mode="L", value=50)
    rgba = _save(tmp_path / "rgba.png", mode="RGBA", value=70)
    assert load_image(rgb, 1).mode == "L" and load_image(gray, 3).mode == "RGB" and load_image(rgba, 3).mode == "RGB"
    wide = tmp_path / "wide.png"
    Image.fromarray(np.full((10, 10), 32768, dtype=np.uint16)).save(wide)  # a 16-bit PNG
    assert Image.open(wide).mode.startswith("I")
    assert np.asarray(load_image(wide, 1)).max() == 128  # scaled by 255/65535, not clipped to 255


def test_normalize_uses_mean_and_std() -> None:
    pixels = torch.full((2, 1, 4, 4), 255, dtype=torch.uint8)
    assert torch.allclose(normalize(pixels, GRAY), torch.full((2, 1, 4, 4), (1.0 - 0.5) / 0.25))


@pytest.mark.parametrize("threads", [1, 2])  # in this thread, and in a pool
def test_decode_skips_corrupt_truncated_and_bomb_images(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, threads: int
) -> None:
    good = [_save(tmp_path / f"good{i}.png", size=(40 + i, 33), value=10 * i) for i in range(3)]
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    truncated = tmp_path / "truncated.jpg"
    buf = tmp_path / "full.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (30, 30), dtype=np.uint8)).save(buf, quality=95)
    truncated.write_bytes(buf.read_bytes()[: buf.stat().st_size // 2])
    warn_bomb = _save(tmp_path / "warn_bomb.png", size=(40, 40))  # 1600 px: over the limit, under 2x
    error_bomb = _save(tmp_path / "error_bomb.png", size=(80, 80))  # 6400 px: over 2x the limit
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1500)

    files = [good[0], corrupt, good[1], truncated, warn_bomb, error_bomb, good[2]]
    with pytest.warns(Image.DecompressionBombWarning):  # Pillow's, on open; the refusal is ours
        decoded = decode_images(files, GRAY, num_threads=threads)
    assert decoded.source_index.tolist() == [0, 2, 6]
    assert decoded.pixels.shape == (3, 1, 32, 32)
    assert [s.file for s in decoded.skipped] == [str(f) for f in (corrupt, truncated, warn_bomb, error_bomb)]
    reasons = {Path(s.file).name: s.reason for s in decoded.skipped}
    assert "40 x 40 = 1,600 pixels is over the limit of 1,500" in reasons["warn_bomb.png"]  # our check
    assert "DecompressionBombError" in reasons["error_bomb.png"]  # Pillow's own, at twice the limit
    assert "truncated" in reasons["truncated.jpg"]
    for row, i in enumerate(decoded.source_index):  # pixels line up with their files
        assert torch.equal(decoded.pixels[row], eval_transform(load_image(files[i], 1), GRAY))


def test_the_bomb_rule_does_not_rest_on_warnings_filters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Filters are process-global: a caller that ignores warnings, or a thread that restores the
    filters mid-decode (played here by making `simplefilter` a no-op), must not let a bomb through."""
    bomb = _save(tmp_path / "bomb.png", size=(40, 40))  # 1,600 px: Pillow only warns below 2 x 1,500
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1500)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        monkeypatch.setattr(warnings, "simplefilter", lambda *args, **kwargs: None)
        decoded = decode_images([bomb, _save(tmp_path / "ok.png")], GRAY, num_threads=2)
    assert decoded.source_index.tolist() == [1]
    assert [s.file for s in decoded.skipped] == [str(bomb)]


def test_decode_from_bytes_equals_decode_from_files(tmp_path: Path) -> None:
    """The features task decodes one staged blob per image: same pixels as from the files, skips named by position."""
    files = [_save(tmp_path / f"img{i}.png", size=(30 + 9 * i, 41), value=40 * i) for i in range(3)]
    blobs = [f.read_bytes() for f in files]
    from_files = decode_images(files, GRAY, num_threads=2)
    from_bytes = decode_images(blobs, GRAY, num_threads=2)
    assert torch.equal(from_bytes.pixels, from_files.pixels)

    decoded = decode_images([blobs[0], b"\x89PNG\r\n\x1a\n" + b"garbage", blobs[2]], GRAY, num_threads=1)
    assert decoded.source_index.tolist() == [0, 2]
    assert [s.file for s in decoded.skipped] == ["#1"]
    assert torch.equal(decoded.pixels, from_files.pixels[[0, 2]])


def test_stratified_split_is_per_class_seeded_and_keeps_singletons() -> None:
    labels = np.array([0] * 10 + [1] * 5 + [2])
    kept, held = stratified_split(labels, 0.2, seed=3)
    assert np.bincount(labels[held], minlength=3).tolist() == [2, 1, 0]
    assert sorted(np.concatenate([kept, held]).tolist()) == list(range(16))
    again = stratified_split(labels, 0.2, seed=3)
    assert np.array_equal(again[1], held)
    assert not np.array_equal(stratified_split(labels, 0.2, seed=4)[1], held)
    with pytest.raises(ValueError):
        stratified_split(labels, 1.0, seed=0)


def test_manifest_labels_written_by_json_dumps_round_trip(tmp_path: Path) -> None:
    _save(tmp_path / "a b.png")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"path": "a b.png", "label": "ünïcode"}) + "\n", encoding="utf-8")
    assert read_manifest(manifest).classes == ("ünïcode",)
