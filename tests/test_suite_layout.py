"""The suite's own layout: no test file or benchmark imports a test file; what they share lives in
tests/helpers.py, tests/apptest_helpers.py, tests/browser_helpers.py and bench/benchlib.py."""
from __future__ import annotations

from pathlib import Path

import pytest

from helpers import imports

REPO = Path(__file__).resolve().parents[1]
TEST_FILES = {p.stem for p in (REPO / "tests").glob("test_*.py")}
IMPORTERS = sorted([*(REPO / "tests").glob("*.py"), *(REPO / "bench").glob("*.py")])


def reached_test_files(name: str) -> set[str]:
    """The test files a module name reaches: ``test_grid``, ``tests.test_grid`` or ``test_grid._x``."""
    parts = name.split(".")
    if parts[0] == "tests":
        parts = parts[1:]
    return {parts[0]} & TEST_FILES if parts else set()


@pytest.mark.parametrize("path", IMPORTERS, ids=lambda p: str(p.relative_to(REPO)))
def test_no_test_file_or_benchmark_imports_a_test_file(path):
    reached = set().union(*(reached_test_files(n) for n in imports(path, REPO)))
    assert not reached, f"{path.relative_to(REPO)} imports {sorted(reached)}: move what they share to a helpers module"


def test_the_check_sees_both_spellings_of_a_test_import():
    assert reached_test_files("tests.test_grid") == reached_test_files("test_grid._assert_same_run") == {"test_grid"}
    assert reached_test_files("helpers") == reached_test_files("tests.browser_helpers") == set()
