"""A server whose job manager cannot be reached (a cluster's head gone): every page says so in plain words
instead of a traceback, and the page's own words and form still show where they need no manager."""
from __future__ import annotations

import pytest

from streamlit.testing.v1 import AppTest

import app.launch
import core.serve.jobs
from apptest_helpers import MAIN, texts
from app.text import plain
from core.serve.budget import Unreachable

MESSAGE = "The training cluster cannot be reached; nothing stored is lost."


class GoneStore:
    """The run store read through the cluster: every attribute fails as RemoteStore's does while it is down."""

    def __getattr__(self, name):
        raise Unreachable(MESSAGE)


class GoneManager:
    """Every call of the manager's API fails as a front-end's does while its cluster is down."""

    store = GoneStore()

    def __getattr__(self, name):
        def call(*args, **kwargs):
            raise Unreachable(MESSAGE)
        return call


@pytest.mark.parametrize("page", ["playground", "vanishing", "cnn", "library"])
def test_a_page_says_the_cluster_cannot_be_reached(page, isolated_cache, monkeypatch):
    monkeypatch.setattr(core.serve.jobs, "_manager", GoneManager())
    at = AppTest.from_file(str(MAIN), default_timeout=60)
    if page != "playground":
        at.switch_page(f"../pages/{page}.py")
    at.run()
    assert not at.exception, at.exception
    assert plain(MESSAGE) in texts(at.error)
    assert at.title and at.title[0].value  # the lesson's own words still show


def test_the_launcher_starts_the_server_when_the_cluster_is_not_up_yet(monkeypatch, capsys):
    """``python -m app.launch`` with a cluster down: it says so and serves anyway (the pages connect later)."""
    started = []
    monkeypatch.setattr(app.launch, "get_manager", GoneManager)
    monkeypatch.setattr(app.launch.cli, "main", lambda: started.append(list(app.launch.sys.argv)))
    monkeypatch.setattr(app.launch.sys, "argv", ["app.launch"])
    app.launch.main(["--server.port", "8599"])
    assert started and started[0][-2:] == ["--server.port", "8599"]
    assert MESSAGE in capsys.readouterr().err
