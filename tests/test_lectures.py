"""Lecture scripts (core/lessons/lectures.py), the classroom (core/serve/classroom.py), the QR code, and every
built-in step opening its page with exactly its setup (AppTest)."""
from __future__ import annotations

import io
import urllib.parse

import pytest
import zxingcpp
from PIL import Image

from app.views.lecture import qr_png, step_query
from apptest_helpers import open_with_query
from core.engine.config import RunConfig
from core.engine import data as datasets
from core.engine.task import ConfigError
from core.lab.compare import ComparisonConfig
from core.lab.grid import GridConfig
from core.lab.sweep.space import SweepConfig
from core.lessons import lectures
from core.lessons.lectures import BUILTIN, LectureError, parse_lecture, split_link, step_jobs
from core.serve import classroom
from core.serve.classroom import Classroom, clean_nickname
from core.serve import jobs
from core.serve.jobs import get_manager
from core.serve.scheduler import BACKGROUND, FairQueue

GOOD = '''title = "A lecture"
summary = "What it shows."

[[steps]]
title = "First"
link = "playground?dataset=digits&epochs=2"
points = ["One.", "Two."]
look_at = "The loss chart."

[[steps]]
title = "Second"
link = "vanishing?dataset=digits&activations=sigmoid,relu&depths=1-3"
points = ["One.", "Two.", "Three."]
look_at = "The heatmap."
'''


def line_of(text: str, needle: str, nth: int = 1) -> int:
    lines = [i for i, line in enumerate(text.splitlines(), start=1) if needle in line]
    return lines[nth - 1]


# --- the schema ------------------------------------------------------------------------------------
def test_a_valid_lecture_keeps_its_steps_in_order_with_their_setups():
    lecture = parse_lecture(GOOD, "mine", "an upload")
    assert [s.title for s in lecture.steps] == ["First", "Second"]
    first, second = lecture.steps
    assert first.page == "playground" and first.query == {"dataset": "digits", "epochs": "2"}
    assert RunConfig.from_query(first.query) == RunConfig(dataset="digits", epochs=2)
    assert GridConfig.from_query(second.query).depths == (1, 2, 3)
    assert lecture.step(0) is first and lecture.step(99) is second  # clamped


def test_a_step_link_round_trips_through_split_link():
    for lecture in BUILTIN.values():
        for step in lecture.steps:
            assert split_link(step.link) == (step.page, step.setup)
            assert split_link(f"https://lab.example/base/{step.link}") == (step.page, step.setup)


def test_malformed_toml_names_the_file_and_its_line():
    bad = GOOD.replace('points = ["One.", "Two."]', 'points = ["One.", "Two."', 1)
    with pytest.raises(LectureError) as err:
        parse_lecture(bad, "mine")
    assert err.value.field == "file" and "mine.toml" in str(err.value)
    assert err.value.line is not None and abs(err.value.line - line_of(bad, 'points = ["One.", "Two."')) <= 1


def test_a_missing_field_is_named_with_its_steps_line():
    bad = GOOD.replace('look_at = "The heatmap."\n', "")
    with pytest.raises(LectureError) as err:
        parse_lecture(bad, "mine")
    assert err.value.field == "steps[2].look_at"
    assert err.value.line == line_of(bad, "[[steps]]", 2)


def test_settings_the_page_refuses_name_the_link_and_its_line():
    bad = GOOD.replace("epochs=2", "epochs=-3")
    with pytest.raises(LectureError) as err:
        parse_lecture(bad, "mine")
    assert err.value.field == "steps[1].link" and err.value.line == line_of(bad, "epochs=-3")
    with pytest.raises(ConfigError):
        RunConfig.from_query({"dataset": "digits", "epochs": "-3"})  # the same refusal as the page's own parser


@pytest.mark.parametrize("change, field", [
    (("playground?", "nowhere?"), "steps[1].link"),  # a page that does not exist
    (('points = ["One.", "Two."]', 'points = ["One."]'), "steps[1].points"),  # too few talking points
    (('title = "First"', 'title = ""'), "steps[1].title"),
    (('look_at = "The loss chart."', 'look_at = "The loss chart."\ncolour = "red"'), "steps[1].colour"),
    (('summary = "What it shows."', 'summary = "What it shows."\nauthor = "me"'), "author"),
])
def test_each_refusal_names_its_field(change, field):
    with pytest.raises(LectureError) as err:
        parse_lecture(GOOD.replace(*change, 1), "mine")
    assert err.value.field == field and err.value.line is not None


def test_hostile_files_get_bounded_messages():
    with pytest.raises(LectureError) as err:
        parse_lecture("title = 'x'\n" + "#" * (lectures.MAX_FILE_BYTES + 1), "mine")
    assert "KB" in str(err.value)
    with pytest.raises(LectureError) as err:
        parse_lecture(GOOD.replace("epochs=2", "epochs=" + "9" * 5000), "mine")
    assert len(str(err.value)) < 700
    with pytest.raises(LectureError):
        parse_lecture(GOOD, "../../etc/passwd")


def test_a_bad_file_in_the_folder_breaks_nothing_else(tmp_path, monkeypatch):
    (tmp_path / "good.toml").write_text(GOOD)
    (tmp_path / "bad.toml").write_text(GOOD.replace("epochs=2", "epochs=-3"))
    monkeypatch.setenv(lectures.LECTURES_DIR_ENV, str(tmp_path))
    found, problems = lectures.all_lectures()
    assert "good" in found and "bad" not in found and set(BUILTIN) <= set(found)
    assert len(problems) == 1 and "bad.toml" in problems[0] and "steps[1].link" in problems[0]
    monkeypatch.setenv(lectures.LECTURES_DIR_ENV, str(tmp_path / "missing"))
    found, problems = lectures.all_lectures()
    assert set(found) == set(BUILTIN) and "not a folder" in problems[0]


def test_built_in_lectures_cover_the_course_and_each_step_parses_with_its_pages_schema():
    assert list(BUILTIN)[0] == "vanishing" and {"regularization", "optimizers", "gradcheck", "sweeps"} <= set(BUILTIN)
    parsers = {"playground": lambda q: RunConfig.from_query({k: v for k, v in q.items() if k not in ("preset", "run")}),
               "vanishing": lambda q: GridConfig.from_query({k: v for k, v in q.items() if k not in ("fix_depth", "lesson")}),
               "regularization": lambda q: ComparisonConfig.from_query({k: v for k, v in q.items() if k != "lesson"}),
               "sweeps": SweepConfig.from_query}
    for lecture in BUILTIN.values():
        for step in lecture.steps:
            assert 2 <= len(step.points) <= 3 and step.look_at
            if step.page in parsers:
                parsers[step.page](step.query)


# --- the classroom ---------------------------------------------------------------------------------
def test_nobody_moves_the_class_without_the_token(monkeypatch):
    room = Classroom()
    monkeypatch.delenv(classroom.TOKEN_ENV, raising=False)
    assert not room.move("v", 3, "") and not room.move("v", 3, "anything")  # no token on the server: nobody
    monkeypatch.setenv(classroom.TOKEN_ENV, "right-token")
    for wrong in (None, "", "right-toke", "right-token ", "x" * 10_000):
        assert not room.move("v", 3, wrong)
        assert not room.clear_board("v", wrong) and not room.hide_names("v", True, wrong)
    assert room.position("v").step == 1 and room.position("v").version == 0
    assert room.move("v", 3, "right-token")
    assert room.position("v").step == 3 and room.position("v").version == 1
    assert room.position("other").step == 1  # each lecture has its own place


def test_the_board_keeps_runs_per_step_and_the_instructor_clears_it(monkeypatch):
    monkeypatch.setenv(classroom.TOKEN_ENV, "t")
    room = Classroom()
    room.add_run("v", 4, "ada", "k1")
    room.add_run("v", 4, "ada", "k1")  # once per nickname and job
    room.add_run("v", 4, "bob", "k1")  # the same deduplicated run, trained by two students
    room.add_run("v", 2, "cy", "k2")
    entries, hidden = room.board("v", 4)
    assert [(e.nickname, e.job_key) for e in entries] == [("ada", "k1"), ("bob", "k1")] and not hidden
    assert room.hide_names("v", True, "t") and room.board("v", 4)[1]
    assert room.clear_board("v", "t") and room.board("v", 4)[0] == [] and room.board("v", 2)[0] == []


@pytest.mark.parametrize("typed, kept", [("  Ada   L. ", "Ada L."), ("<script>x()</script>", "<script>x()</script>"),
                                         ("a\x00b\u202ec\n", "abc"), ("Zoë 🙂", "Zoë 🙂")])
def test_nicknames_are_cleaned_not_interpreted(typed, kept):
    name, problem = clean_nickname(typed)
    assert problem is None and name == kept


@pytest.mark.parametrize("typed", ["", "   ", "\x00\x01", "x" * 25, "y" * 10_000])
def test_empty_or_long_nicknames_are_refused_with_a_bounded_message(typed):
    name, problem = clean_nickname(typed)
    assert name == "" and problem and len(problem) < 120


# --- the QR code -----------------------------------------------------------------------------------
def test_the_qr_code_decodes_to_the_steps_follow_link():
    lecture = BUILTIN["regularization"]  # its first link is the longest (a variants table)
    for number, step in enumerate(lecture.steps, start=1):
        link = f"http://127.0.0.1:8501/{step.page}?" + urllib.parse.urlencode(step_query(lecture, number, "follow"))
        decoded = zxingcpp.read_barcodes(Image.open(io.BytesIO(qr_png(link))))
        assert [d.text for d in decoded] == [link]
        assert split_link(link)[1][:len(step.setup)] == step.setup


# --- every built-in step opens its page with exactly its setup (AppTest) -----------------------------
STEPS = [(name, number) for name, lecture in BUILTIN.items() for number in range(1, len(lecture.steps) + 1)]


def _query(at) -> dict:
    return {k: (v[0] if isinstance(v, list) else v) for k, v in at.query_params.items()}


@pytest.mark.parametrize("name, number", STEPS, ids=[f"{n}-{i}" for n, i in STEPS])
def test_every_built_in_step_opens_its_page_with_exactly_its_setup(name, number):
    lecture = BUILTIN[name]
    step = lecture.step(number)
    at = open_with_query(step.page, {**step.query, "lecture": name, "step": str(number), "present": "1"})
    assert not [w for w in at.warning if "🔗" in str(w.icon)], [w.value for w in at.warning]
    query = _query(at)
    assert {k: v for k, v in query.items() if k not in ("lecture", "step", "present")} == step.query
    assert (query["lecture"], query["step"], query["present"]) == (name, str(number), "1")
    shown = " ".join(str(h.value) for h in at.header)
    assert step.title.split(":")[0] in shown.replace("\\", "")
    assert any(f"step {number} of {len(lecture.steps)}" in str(m.value) for m in at.markdown)


def test_a_student_without_the_token_cannot_move_the_class(monkeypatch):
    monkeypatch.setenv(classroom.TOKEN_ENV, "the-real-token")
    lecture = BUILTIN["vanishing"]
    before = classroom.CLASSROOM.position(lecture.name)
    step = lecture.step(1)
    at = open_with_query(step.page, {**step.query, "lecture": lecture.name, "step": "1", "present": "1"})
    at.text_input(key="gl_instructor_token").input("a-guess").run()
    assert any("not the instructor token" in str(e.value) for e in at.error)
    assert not any("the-real-token" in str(e.value) for e in at.error)
    at.button(key="lec_next").click().run()
    assert classroom.CLASSROOM.position(lecture.name) == before
    assert "the-real-token" not in str(_query(at)) and "a-guess" not in str(_query(at))


def test_a_lecture_that_does_not_exist_gets_a_notice_and_the_page_still_opens():
    at = open_with_query("vanishing", {"lecture": "no-such-lecture", "step": "2", "present": "1"})
    assert any("no lecture called" in str(w.value) for w in at.warning)
    at = open_with_query("lecture", {"lecture": "<img src=x>" * 20})
    notice = [str(w.value) for w in at.warning if "no lecture called" in str(w.value)]
    assert notice and len(notice[0]) < 400


# --- preparing a lecture ---------------------------------------------------------------------------
def test_prepared_work_waits_behind_every_students_job():
    queue = FairQueue()
    queue.put("prepare-1", BACKGROUND)
    queue.put("prepare-2", BACKGROUND)
    queue.put("ada-1", "ada")
    queue.put("bob-1", "bob")
    queue.put("ada-2", "ada")
    assert [queue.get(0.1) for _ in range(5)] == ["ada-1", "bob-1", "ada-2", "prepare-1", "prepare-2"]
    queue.put("prepare-3", BACKGROUND)
    queue.put("cy-1", "cy")  # a student arriving later still goes first
    assert [queue.get(0.1) for _ in range(2)] == ["cy-1", "prepare-3"]


def test_a_prepared_lecture_replays_on_every_step_it_prepared(isolated_cache, no_mnist, monkeypatch):
    """The jobs prepare_lecture submits are the ones the step's page trains: after preparing (and a server
    restart: a fresh job manager that only has the store), each page's Train buttons read "again" (their
    config is stored and shown) on the Digits fallback."""
    lecture = BUILTIN["vanishing"]
    manager = get_manager()
    keys = [manager.submit(job, background=True) for step in lecture.steps
            for job in step_jobs(step, datasets.available)]
    assert keys and all(manager.wait(key, timeout=900).status == "finished" for key in keys)
    monkeypatch.setattr(jobs, "_manager", None)  # a restarted server: only the run store remembers
    labels = {"vanishing": ("Train the grid again", "Train the fixes again", "Train the seeds again"),
              "playground": ("Train again",)}
    for number, step in enumerate(lecture.steps, start=1):
        at = open_with_query(step.page, {**step.query, "lecture": lecture.name, "step": str(number), "present": "1"})
        shown = {b.label for b in at.button}
        assert set(labels[step.page]) <= shown, (number, shown)
