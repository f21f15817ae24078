"""The benchmark page machinery, the quick scoring section end to end (faiss agrees with torch), the GPU record."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks import gpu_route, route_scaling, route_throughput, scoring, serving
from benchmarks.report import Goal, Plot, Section, Table, new_figure, render
from sdr_model.routing.knn import l2_normalize, nearest


def test_table_refuses_a_row_of_the_wrong_width() -> None:
    table = Table(["a", "b"])
    table.add(1, "x")
    with pytest.raises(ValueError, match="1 cells for 2 columns"):
        table.add(1)
    assert table.markdown().splitlines() == ["| a | b |", "|---|---|", "| 1 | x |"]


def test_page_names_command_machine_and_each_goal_outcome() -> None:
    section = Section("Demo", "benchmarks.demo", "what is compared", goals=[Goal("fast", True), Goal("gpu", None)])
    section.tables.append(Table(["x"], [["1"]]))
    page = render([section], "2 CPU cores", "make bench", 90.0, "1.0")
    assert "Command: `make bench`" in page and "Machine: 2 CPU cores" in page
    assert "- Goal: fast: **met**" in page and "- Goal: gpu: not measured here" in page
    assert "`make bench ONLY=demo`" in page


def test_a_plot_is_linked_from_its_section_and_saved_beside_the_page(tmp_path: Path) -> None:
    figure = new_figure()
    figure.subplots().plot([0, 1], [1, 0])
    plot = Plot("demo", "A demo plot", figure)
    section = Section("Demo", "benchmarks.demo", "what is compared", plots=[plot])
    assert "![A demo plot](figures/bench_demo.png)" in render([section], "m", "make bench", 1.0, "0")
    file = plot.save(tmp_path)
    assert file == tmp_path / "figures" / "bench_demo.png"
    assert file.read_bytes().startswith(b"\x89PNG") and sorted(p.name for p in file.parent.iterdir()) == [file.name]


def test_each_sections_plot_draws_from_the_figures_it_reports(tmp_path: Path) -> None:
    """The plots run only in a full `make bench`: drawn here from figures shaped like a run's."""

    def route(wall: float, shards: int) -> dict[str, object]:
        timings = {"decode_seconds": 0.1 * wall, "features_seconds": 0.6 * wall, "scoring_seconds": 0.3 * wall}
        return {"wall": wall, "timings": {**timings, "shards": shards}, "rss_base_mib": 500.0, "rss_peak_mib": 700.0}

    scaling = {(500, None, False): route(8, 1), (1000, None, False): route(14, 1), (1000, 16, False): route(20, 16)}
    walk = {
        "naive_s": 50.0,
        "shared_s": 5.0,
        "naive_cpu": 80.0,
        "shared_cpu": 6.0,
        "flop_bound": 5.8,
        "time_bound": 14.0,
    }
    rates = dict.fromkeys([*serving.LOCAL, serving.CONCURRENT, serving.SINGLES_BATCHED], 100.0)
    plots = [
        route_scaling._plot(scaling),
        route_throughput._plot({"sdr_tiny": walk, "sdr_resnet50": walk}),
        serving._plot(rates, dict.fromkeys(rates, 1.0)),
    ]
    for plot in plots:
        assert plot.save(tmp_path).stat().st_size > 20_000  # drawn: an empty set of axes is about 10 kB
    assert len({plot.file for plot in plots}) == len(plots)


@pytest.mark.usefixtures("one_thread")
def test_quick_scoring_section_finds_the_same_neighbours_with_faiss_and_torch() -> None:
    section = scoring.bench(quick=True)
    speed, share = section.tables
    assert [row[0] for row in speed.rows] == ["256", "2048"]
    assert all(row[-1] == "100.0%" for row in speed.rows), speed.rows
    shares = {row[0]: float(row[-1].rstrip("%")) for row in share.rows}
    assert shares["sdr_resnet50"] < shares["sdr_tiny"]  # a heavier walk makes scoring's share smaller


def test_torch_stand_in_for_faiss_gpu_finds_faiss_neighbours() -> None:
    """`scoring.torch_nearest` (gpu_route times it on a GPU without faiss-gpu) is faiss's exact search; on CPU."""
    rng = np.random.default_rng(0)
    features = l2_normalize(rng.standard_normal((300, 32)).astype(np.float32))
    bank, queries = features[:240], features[240:]
    for q, exclude_self in ((bank, True), (queries, False)):
        _, expected = nearest(bank, q, 20, exclude_self=exclude_self)
        found = scoring.torch_nearest(torch.from_numpy(bank), torch.from_numpy(q), 20, exclude_self).numpy()
        assert [set(row) for row in found] == [set(row) for row in expected]


def test_gpu_section_shows_the_recorded_figures_on_a_machine_without_a_gpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The record is what a GPU run writes (the GPU itself cannot run here); without one, nothing is claimed."""
    monkeypatch.setattr(gpu_route.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(gpu_route, "RECORD", tmp_path / "records" / "gpu_route.json")
    assert [goal.met for goal in gpu_route.bench(quick=True).goals] == [None, None]

    record = {
        "card": "NVIDIA H200",
        "date": "2026-12-01",
        "commit": "abc1234",
        "torch": "2.11.0",
        "images": 1024,
        "rate_one_by_one": 52_000.0,
        "rate_grouped": 61_000.0,
        "food_walk_s": 420.0,
        "knn_per_path_s": 700.0,
        "knn_on_gpu": False,
        "gpu_knn_per_path_s": 0.6,
        "food_route_s": 420.0 + 257 * 0.6,
    }
    gpu_route.RECORD.parent.mkdir()
    gpu_route.RECORD.write_text(json.dumps(record))
    section = gpu_route.bench(quick=True)
    route_goal, scoring_goal = section.goals
    assert route_goal.met is True and "(recorded)" in route_goal.text
    assert scoring_goal.met is False  # 154 s of kNN in a 574-s route: 27%
    (row,) = section.tables[0].rows
    assert row[0] == "NVIDIA H200" and row[-2:] == ["9.6 min", "27%"] and "stand-in" in row[4]
    assert "abc1234" in section.markdown() and "2026-12-01" in section.markdown()
