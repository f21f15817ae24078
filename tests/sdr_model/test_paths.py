import pytest

from sdr_model.paths import (
    PathError,
    all_paths,
    id_to_path,
    iter_prefix_tree,
    parse_path,
    path_to_id,
    phase_paths,
    prefix_id,
)


def test_path_id_round_trip_and_design_example():
    assert path_to_id("0312") == 54  # DESIGN §2
    assert [path_to_id(id_to_path(i)) for i in range(256)] == list(range(256))
    assert all_paths()[0] == "0000" and all_paths()[-1] == "3333" and len(set(all_paths())) == 256


@pytest.mark.parametrize(
    ("bad", "fragment"),
    [
        ("0412", "group 4"),
        ("abc", "must be 4 digits"),
        (256, "out of range"),
        (-1, "out of range"),
        ("012", "must be 4 digits"),
        ("01234", "must be 4 digits"),
        (True, "integer id"),
        (3.0, "integer id"),
    ],
)
def test_bad_paths_say_what_is_wrong(bad, fragment):
    with pytest.raises(PathError, match=fragment):
        parse_path(bad)


def test_parse_accepts_ids_and_strings():
    assert parse_path(54) == "0312" and parse_path("3333") == "3333"


def test_phase_sets_differ_from_anchor_only_in_last_stages():
    assert phase_paths(0) == []
    for s in range(1, 5):
        paths = phase_paths(s)
        assert len(paths) == 4**s == len(set(paths))
        assert all(p[: 4 - s] == "0000"[: 4 - s] for p in paths)
        # exactly the set of paths whose first 4-s digits are 0
        assert set(paths) == {p for p in all_paths() if p[: 4 - s] == "0" * (4 - s)}
    assert set(phase_paths(1)) < set(phase_paths(2)) < set(phase_paths(3)) < set(phase_paths(4))


def test_prefix_tree_walk_is_depth_first_and_complete():
    nodes = list(iter_prefix_tree())
    assert len(nodes) == 4 + 16 + 64 + 256
    assert nodes[:6] == ["0", "00", "000", "0000", "0001", "0002"]
    for i, node in enumerate(nodes):  # every parent comes before its children
        if len(node) > 1:
            assert node[:-1] in nodes[:i]
    assert prefix_id("") == 0 and prefix_id("31") == 13
