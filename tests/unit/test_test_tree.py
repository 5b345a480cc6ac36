"""The test tree itself: pytest imports test modules by basename (no packages under tests/),
so two modules of one name in different folders stop collection of the whole run."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_no_two_test_modules_share_a_basename():
    where = defaultdict(list)
    for path in TESTS.rglob("test_*.py"):
        if "__pycache__" not in path.parts:
            where[path.name].append(str(path.relative_to(TESTS)))
    assert {n: p for n, p in where.items() if len(p) > 1} == {}
