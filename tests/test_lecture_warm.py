"""Preparing a lecture warms exactly what each step's page trains. Oracle: the page itself. Every step of every
built-in lecture is opened with exactly its link, each Train button the page shows is pressed (the job manager
records the config instead of training it), and the submitted job keys must equal those of step_jobs(step),
with the real datasets and offline (the Digits fallback)."""
from __future__ import annotations

import pytest

from apptest_helpers import open_with_query
from conftest import SHARED_DATASETS
from core.engine import data as datasets
from core.lessons.lectures import BUILTIN, PAGES, step_jobs
from core.lessons.setups import PAGE_JOBS
from core.serve.jobs import JobManager

STEPS = [(name, number) for name, lecture in BUILTIN.items() for number in range(1, len(lecture.steps) + 1)]


def test_every_page_a_step_can_name_has_its_reading_of_a_link():
    assert set(PAGE_JOBS) == set(PAGES)


@pytest.fixture
def submitted(isolated_cache, monkeypatch) -> list[str]:
    """The keys of the configs the pages submit; nothing trains."""
    keys: list[str] = []

    def record(self, config, force=False, **_):
        keys.append(config.key())
        return config.key()

    monkeypatch.setattr(JobManager, "submit", record)
    return keys


@pytest.fixture(params=["datasets", "offline"])
def server_data(request, tmp_path, monkeypatch) -> str:
    if request.param == "datasets":
        if not (SHARED_DATASETS / "MNIST" / "raw").is_dir():
            pytest.skip(f"real MNIST files not found under {SHARED_DATASETS}")
        monkeypatch.setenv("GRADIENT_LAB_DATA_DIR", str(SHARED_DATASETS))
    else:
        empty = tmp_path / "no-data"
        empty.mkdir()
        monkeypatch.setenv("GRADIENT_LAB_DATA_DIR", str(empty))
        monkeypatch.setenv("GRADIENT_LAB_OFFLINE", "1")
    return request.param


def _train_buttons(at) -> list[str]:
    return [b.key for b in at.button if b.proto.type == "primary" and b.proto.icon == "▶️"]


@pytest.mark.slow
@pytest.mark.parametrize("name, number", STEPS, ids=[f"{n}-{i}" for n, i in STEPS])
def test_a_prepared_step_warms_exactly_what_its_pages_train_buttons_submit(name, number, server_data, submitted):
    step = BUILTIN[name].step(number)
    assert datasets.available("mnist") == (server_data == "datasets")
    link = {**step.query, "lecture": name, "step": str(number)}
    buttons = _train_buttons(open_with_query(step.page, link))
    for key in buttons:
        at = open_with_query(step.page, link)  # each button pressed on the page's first load
        at.button(key=key).click().run()
    warmed = {job.key() for job in step_jobs(step, datasets.available)}
    assert set(submitted) == warmed, (buttons, len(submitted), len(warmed))
    assert warmed or step.page == "data"
