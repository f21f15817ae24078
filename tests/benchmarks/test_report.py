"""The benchmark page machinery, and the quick scoring section end to end (faiss agrees with torch)."""

from __future__ import annotations

import pytest

from benchmarks import scoring
from benchmarks.report import Goal, Section, Table, render


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


@pytest.mark.usefixtures("one_thread")
def test_quick_scoring_section_finds_the_same_neighbours_with_faiss_and_torch() -> None:
    section = scoring.bench(quick=True)
    speed, share = section.tables
    assert [row[0] for row in speed.rows] == ["256", "2048"]
    assert all(row[-1] == "100.0%" for row in speed.rows), speed.rows
    shares = {row[0]: float(row[-1].rstrip("%")) for row in share.rows}
    assert shares["sdr_resnet50"] < shares["sdr_tiny"]  # a heavier walk makes scoring's share smaller
