"""core/'s floors: engine < lab < lessons < serve. Each module imports only from its own floor or the
floors below, none imports Streamlit, and core/ holds nothing but the floors and its entry points."""
from __future__ import annotations

from pathlib import Path

import pytest

from core.engine import paths
from helpers import imports

REPO = Path(__file__).resolve().parents[1]
FLOORS = ["engine", "lab", "lessons", "serve"]


def floor_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "core" and parts[1] in FLOORS else None


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(REPO).with_suffix("").parts)


CORE = sorted(p for p in (REPO / "core").rglob("*.py") if floor_of(module_name(p)))


@pytest.mark.parametrize("path", CORE, ids=lambda p: str(p.relative_to(REPO)))
def test_module_imports_only_from_its_floor_or_below(path):
    own = floor_of(module_name(path))
    for name in imports(path, REPO):
        assert not name.startswith(("streamlit", "app", "pages")), f"{path.name} imports {name}"
        target = floor_of(name)
        if target is not None:
            assert FLOORS.index(target) <= FLOORS.index(own), f"{path.name} ({own}) imports {name} ({target})"


def test_core_holds_only_its_floors_and_entry_points():
    top = {p.name for p in (REPO / "core").iterdir() if not p.name.startswith((".", "__pycache__"))}
    assert top == set(FLOORS) | {"__init__.py", "__main__.py"}


def test_the_engine_knows_no_disk_store_queue_or_optuna():
    for path in (REPO / "core" / "engine").rglob("*.py"):
        for name in imports(path, REPO):
            assert not name.startswith(("optuna", "diskcache", "sqlalchemy")), f"{path.name} imports {name}"


def test_the_floor_check_sees_a_violation():
    assert floor_of("core.serve.jobs") == "serve" and floor_of("core.engine.train") == "engine"
    assert FLOORS.index("serve") > FLOORS.index("engine")


def test_the_default_cache_is_the_repositorys_cache_folder(monkeypatch):
    """paths.py moved a floor down when core/ got floors: its default must still be <repo>/cache."""
    monkeypatch.delenv("GRADIENT_LAB_CACHE_DIR", raising=False)
    assert paths.cache_dir() == (REPO / "cache").resolve()
