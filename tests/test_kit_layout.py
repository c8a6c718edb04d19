"""The lesson kit's floors: each module of app/ imports only from its own floor or the floors below,
the pure floors never import Streamlit, and pages/ build on the kit (no page imports another page)."""
from __future__ import annotations

from pathlib import Path

import pytest

from helpers import imports

REPO = Path(__file__).resolve().parents[1]
FLOORS = ["text", "records", "figures", "views", "forms"]
PURE = ("text", "records", "figures")


def floor_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "app" and parts[1] in FLOORS else None


KIT = sorted(p for p in (REPO / "app").rglob("*.py") if floor_of(".".join(p.relative_to(REPO).with_suffix("").parts)))


@pytest.mark.parametrize("path", KIT, ids=lambda p: str(p.relative_to(REPO)))
def test_module_imports_only_from_its_floor_or_below(path):
    own = floor_of(".".join(path.relative_to(REPO).with_suffix("").parts))
    for name in imports(path, REPO):
        target = floor_of(name)
        if target is not None:
            assert FLOORS.index(target) <= FLOORS.index(own), f"{path.name} ({own}) imports {name} ({target})"
        if own in PURE:
            assert not name.startswith("streamlit"), f"{path.name} is pure but imports {name}"


def test_text_is_the_bottom_floor():
    assert not [n for n in imports(REPO / "app" / "text.py", REPO) if n.startswith("app")]


def test_layout_has_every_floor_and_the_floor_check_sees_them():
    assert {floor_of(".".join(p.relative_to(REPO).with_suffix("").parts)) for p in KIT} == set(FLOORS)
    # the check itself: a view importing a form would be caught
    assert FLOORS.index("forms") > FLOORS.index("views")


@pytest.mark.parametrize("path", sorted((REPO / "pages").glob("*.py")), ids=lambda p: p.name)
def test_pages_import_the_kit_not_each_other(path):
    names = imports(path, REPO)
    assert not [n for n in names if n.startswith("pages")]
    assert any(n.startswith("app.") for n in names)
