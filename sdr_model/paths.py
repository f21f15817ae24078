"""Paths: which individual group each stage uses, written as a digit string, stage 1 first.

A path `"0312"` selects group 0 in stage 1, group 3 in stage 2, and so on; its integer id is that
string read in base G (`"0312"` -> 54). Everything that names a path goes through `parse_path`,
so a bad path fails in one place with one message.
"""

from __future__ import annotations

from collections.abc import Iterator

__all__ = [
    "ANCHOR_PATH",
    "PathError",
    "all_paths",
    "id_to_path",
    "parse_path",
    "path_to_id",
    "phase_paths",
    "prefix_id",
    "prefixes",
]

NUM_GROUPS = 4
NUM_STAGES = 4
ANCHOR_PATH = "0000"  # progressive training grows outwards from this sub-net (algorithm 1)


class PathError(ValueError):
    """A path that does not name a sub-net of the supernet; the message says why."""


def parse_path(path: str | int, num_stages: int = NUM_STAGES, num_groups: int = NUM_GROUPS) -> str:
    """Validate a path given as a digit string or an integer id; return the canonical string.

    Raises:
        PathError: naming the offending value and the accepted forms.
    """
    total = num_groups**num_stages
    if isinstance(path, bool):  # bool is an int subclass; True is not a path
        raise PathError(f"path must be a string of {num_stages} digits or an integer id, got {path!r}")
    if isinstance(path, int):
        if not 0 <= path < total:
            raise PathError(f"path id {path} is out of range: ids run from 0 to {total - 1}")
        return id_to_path(path, num_stages, num_groups)
    if not isinstance(path, str):
        raise PathError(f"path must be a string of {num_stages} digits or an integer id, got {path!r}")
    if len(path) != num_stages or not path.isdigit():
        raise PathError(
            f"path {path!r} must be {num_stages} digits, one group per stage, each 0-{num_groups - 1} "
            f"(e.g. {'0' * num_stages!r})"
        )
    bad = [d for d in path if int(d) >= num_groups]
    if bad:
        raise PathError(f"path {path!r} uses group {bad[0]}, but each stage has groups 0-{num_groups - 1}")
    return path


def path_to_id(path: str, num_groups: int = NUM_GROUPS) -> int:
    """`"0312"` -> 54 (the digit string read in base G)."""
    return int(parse_path(path, len(path), num_groups), num_groups)


def id_to_path(path_id: int, num_stages: int = NUM_STAGES, num_groups: int = NUM_GROUPS) -> str:
    """54 -> `"0312"`."""
    total = num_groups**num_stages
    if not 0 <= path_id < total:
        raise PathError(f"path id {path_id} is out of range: ids run from 0 to {total - 1}")
    digits = []
    for _ in range(num_stages):
        path_id, digit = divmod(path_id, num_groups)
        digits.append(str(digit))
    return "".join(reversed(digits))


def all_paths(num_stages: int = NUM_STAGES, num_groups: int = NUM_GROUPS) -> list[str]:
    """Every path in id order (which is also depth-first prefix-tree order)."""
    return [id_to_path(i, num_stages, num_groups) for i in range(num_groups**num_stages)]


def prefix_id(prefix: str, num_groups: int = NUM_GROUPS) -> int:
    """Row of a prefix in its stage's table: the prefix read in base G (`""` -> 0)."""
    return int(prefix, num_groups) if prefix else 0


def prefixes(length: int, num_groups: int = NUM_GROUPS) -> list[str]:
    """All prefixes of `length` stages, in id order: the nodes of the prefix tree at that depth."""
    if length == 0:
        return [""]
    return all_paths(length, num_groups)


def phase_paths(phase: int, num_stages: int = NUM_STAGES, num_groups: int = NUM_GROUPS) -> list[str]:
    """Sub-nets added by progressive phase `phase` (algorithm 1 of the paper).

    Phase 0 holds only the supernet W0 (no sub-net): returns []. Phase s (1..num_stages) holds the
    G**s paths that agree with the anchor `0000` on the first num_stages - s stages, i.e. that
    differ from it only in the last s stages.
    """
    if not 0 <= phase <= num_stages:
        raise ValueError(f"phase must be in 0..{num_stages}, got {phase}")
    if phase == 0:
        return []
    fixed = ANCHOR_PATH[: num_stages - phase] if num_stages == len(ANCHOR_PATH) else "0" * (num_stages - phase)
    return [fixed + tail for tail in all_paths(phase, num_groups)]


def iter_prefix_tree(num_stages: int = NUM_STAGES, num_groups: int = NUM_GROUPS) -> Iterator[str]:
    """Depth-first walk of the prefix tree, yielding every non-empty prefix (parents before children)."""

    def walk(prefix: str) -> Iterator[str]:
        for g in range(num_groups):
            child = prefix + str(g)
            yield child
            if len(child) < num_stages:
                yield from walk(child)

    yield from walk("")
