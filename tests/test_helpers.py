"""The suite's own helpers and layout: plotly's typed arrays decoded as plotly encoded them; no test file
or benchmark imports a test file (what they share lives in tests/helpers.py, tests/apptest_helpers.py,
tests/browser_helpers.py and bench/benchlib.py); conftest.py's slow marks, on a probe suite."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import pytest
from streamlit.testing.v1 import AppTest  # loaded once here: the probe suite below runs in this process

from helpers import imports, plotly_values

pytest_plugins = ["pytester"]

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


@pytest.mark.parametrize("values", [np.linspace(0.0, 3.0, 7), np.arange(-3, 300), np.arange(12, dtype=np.float32) / 7,
                                    [0.5, 1.5, 2.0]], ids=["float64", "int64-narrowed", "float32", "list"])
def test_plotly_values_reads_back_what_a_figure_holds(values):
    spec = json.loads(go.Figure(go.Scatter(x=values, y=values)).to_json())
    assert isinstance(spec["data"][0]["x"], dict) == isinstance(values, np.ndarray)  # numpy goes typed
    np.testing.assert_array_equal(plotly_values(spec["data"][0]["x"]), values)


def test_plotly_values_keeps_the_shape_of_a_matrix():
    matrix = np.arange(6, dtype=np.float64).reshape(2, 3) / 4
    spec = json.loads(go.Figure(go.Heatmap(z=matrix)).to_json())
    np.testing.assert_array_equal(plotly_values(spec["data"][0]["z"]), matrix)


PROBE = '''
import subprocess

import pytest
from streamlit.testing.v1 import AppTest


def start_python():
    return subprocess.run(["true"])


@pytest.fixture
def page():
    return AppTest.from_string("")


def test_plain():
    assert sum([1, 2]) == 3


def test_through_a_helper():
    start_python()


def test_through_a_fixture(page):
    pass


def test_through_a_lambda():
    (lambda: AppTest.from_string(""))()


def test_on_real_data(shared_mnist):
    pass


@pytest.mark.slow
def test_marked_by_hand():
    pass
'''


def collected(pytester, markers: str) -> list[str]:
    result = pytester.runpytest("-m", markers, "--collect-only", "-q", "-p", "no:cacheprovider")
    return sorted(line.split("::")[1] for line in result.outlines if "::" in line)


def test_apptest_is_where_conftest_looks_for_it():
    """conftest.py names AppTest instead of importing Streamlit; if Streamlit moved it, page tests would turn fast."""
    assert AppTest.__name__ == "AppTest" and AppTest.__module__.startswith("streamlit.testing")


def test_conftest_marks_slow_what_starts_a_page_or_a_python_or_reads_real_data(pytester):
    """The probe's tests run under this suite's conftest.py: only the plain one stays in the fast tier."""
    tests = Path(__file__).resolve().parent
    pytester.makeconftest((tests / "conftest.py").read_text())
    pytester.makepyfile(browser_helpers=(tests / "browser_helpers.py").read_text(), test_probe=PROBE)
    assert collected(pytester, "not slow") == ["test_plain"]
    assert collected(pytester, "slow") == ["test_marked_by_hand", "test_on_real_data", "test_through_a_fixture",
                                           "test_through_a_helper", "test_through_a_lambda"]
