"""Lecture mode on any page: the presenter view (``present=1``), a student following the class (``follow=1``),
"Try it yourself", nicknames, the instructor token, and the lecture index's upload.

The lecture keys (``lecture``, ``step``, ``present``, ``follow``) sit in the address bar beside the page's own
setup (app/forms/url.py keeps them and never reads them as settings). The instructor token is typed into a
password field and kept in this session only; without it, a presenter moves only their own view.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import streamlit as st

from core.engine.task import clipped, shortened
from core.lessons.lectures import Lecture, LectureError, all_lectures, parse_lecture, step_jobs
from core.serve.classroom import CLASSROOM, clean_nickname, is_instructor, token_configured
from core.serve.jobs import Refused, get_manager

from ..text import dataset_available, plain
from ..views.charts import PRESENTING
from ..views.jobs import SUBMITTED
from ..views.lecture import (PAGES_DIR, board_view, follow_poll, go_to_step, job_ready, presenter_style, qr_panel,
                             readiness_line, step_card)
from . import url

TOKEN = "gl_instructor_token"  # session: the token as typed (a password field; never in the URL)
NICKNAME = "gl_nickname"  # session: this browser session's nickname, cleaned
NICKNAME_INPUT = "gl_nickname_input"
TRYING = "gl_trying"  # session: (lecture, step) whose setup this session copied with "Try it yourself"
ON_BOARD = "gl_on_board"  # session: submitted job keys already put on the board (or submitted before trying)
MAX_UPLOADED = 50  # uploaded lectures the server keeps (the oldest go first)
MAX_STEP_DIGITS = 3
_uploaded: dict[str, Lecture] = {}  # process-wide: students following an uploaded lecture need it too
_uploaded_lock = threading.Lock()


@dataclass(frozen=True)
class LectureMode:
    lecture: Lecture
    number: int
    mode: str  # "present", "follow" or "browse"


def lectures_here() -> tuple[dict[str, Lecture], list[str]]:
    """Built-in, the instructor's folder and uploaded lectures, and the folder's refused files."""
    lectures, problems = all_lectures()
    with _uploaded_lock:
        return {**lectures, **_uploaded}, problems


def add_uploaded(text: str, filename: str) -> tuple[Lecture | None, str | None]:
    """An uploaded lecture file checked by the schema: (lecture, None) or (None, the problem, naming field and line)."""
    stem = filename.rsplit("/", 1)[-1].removesuffix(".toml").lower()
    try:
        lecture = parse_lecture(text, stem, "an upload")
    except LectureError as exc:
        return None, str(exc)
    with _uploaded_lock:
        _uploaded.pop(lecture.name, None)
        _uploaded[lecture.name] = lecture
        while len(_uploaded) > MAX_UPLOADED:
            _uploaded.pop(next(iter(_uploaded)))
    return lecture, None


def step_number(raw: str | None, lecture: Lecture) -> int:
    text = str(raw or "1").strip()
    number = int(text) if text.isdigit() and len(text) <= MAX_STEP_DIGITS else 1
    return min(max(number, 1), len(lecture.steps))


def lecture_mode(page_path: str) -> LectureMode | None:
    """Before the page: the lecture chrome its URL asks for (none without a ``lecture`` key)."""
    st.session_state[PRESENTING] = False
    keys = url.lecture_query()
    name = keys.get("lecture")
    if page_path == "lecture":
        return None
    if not name:
        _trying_bar()
        return None
    lecture = lectures_here()[0].get(name)
    if lecture is None:
        st.warning(f"There is no lecture called “{plain(shortened(name, 40))}” on this server, so this page opens on "
                   "its own. The Lectures page lists the ones there are.", icon="🎓")
        return None
    number = step_number(keys.get("step"), lecture)
    replay_ready(lecture.step(number))
    if keys.get("present") == "1":
        _presenter(lecture, number)
        return LectureMode(lecture, number, "present")
    if keys.get("follow") == "1":
        _follower(lecture, number)
        return LectureMode(lecture, number, "follow")
    st.caption(plain(f"Lecture “{lecture.title}”, step {number} of {len(lecture.steps)}: {lecture.step(number).title}"))
    return LectureMode(lecture, number, "browse")


def replay_ready(step) -> None:
    """A prepared step's stored results are handed to the job manager before its page draws, so the page
    shows them at once (a store read, never training: only jobs already in the store)."""
    manager = get_manager()
    for job in step_jobs(step, dataset_available):
        key = job.key()
        if manager.snapshot(key) is None and job_ready(key):
            try:
                manager.submit(job)
            except Refused:  # a cap reached meanwhile: the page's own Train button says why
                pass


# --- the presenter view --------------------------------------------------------------------------
def token_field() -> bool:
    """The instructor token field; True when this session holds the right token."""
    if not token_configured():
        st.caption("This server has no instructor token (GRADIENT_LAB_INSTRUCTOR_TOKEN), so nobody can move the "
                   "class: you present to yourself.")
        return False
    st.text_input("Instructor token", type="password", key=TOKEN,
                  help="Moving the class, preparing a lecture and clearing the board need the token the server was "
                       "started with. It stays in this browser session, never in the address bar.")
    typed = st.session_state.get(TOKEN) or ""
    right = is_instructor(typed)
    if typed and not right:
        st.error("That is not the instructor token, so the class does not move with you.")
    return right


def _presenter(lecture: Lecture, number: int) -> None:
    st.session_state[PRESENTING] = True
    presenter_style()
    total = len(lecture.steps)
    card, qr = st.columns([3, 1])
    with card:
        step = step_card(lecture, number, large=True)
    with qr:
        qr_panel(lecture, number)
    back, count, forward, controls = st.columns([1.3, 1, 1.3, 2], vertical_alignment="center")
    previous = back.button("◀ Back", key="lec_prev", shortcut="Left", disabled=number <= 1, width="stretch")
    count.markdown(f"**step {number} of {total}**")
    following = forward.button("Next ▶", key="lec_next", type="primary", shortcut="Right", disabled=number >= total,
                               width="stretch")
    with controls.popover("Class and token"):
        instructor = token_field()
        class_step = CLASSROOM.position(lecture.name).step
        if instructor:
            st.caption(plain(f"The class is on step {class_step}; Previous and Next move it with you."))
            if class_step != number and st.button("Bring the class to this step", key="lec_bring"):
                CLASSROOM.move(lecture.name, number, st.session_state.get(TOKEN))
        readiness_line(lecture)
        prepare_button(lecture, instructor)
        if st.button("Leave the presenter view", key="lec_leave"):
            st.switch_page(PAGES_DIR / f"{step.page}.py", query_params=step.query)
    if previous or following:
        target = number - 1 if previous else number + 1
        if instructor:
            CLASSROOM.move(lecture.name, target, st.session_state.get(TOKEN))
        go_to_step(lecture, target, "present")
    entries, hidden = CLASSROOM.board(lecture.name, number)
    if step.page == "playground" or entries:
        with st.expander("Class board: the students' runs of this step", expanded=True):
            if instructor:
                left, right = st.columns(2)
                if left.toggle("Hide names", value=hidden, key="lec_hide"):
                    CLASSROOM.hide_names(lecture.name, True, st.session_state.get(TOKEN))
                else:
                    CLASSROOM.hide_names(lecture.name, False, st.session_state.get(TOKEN))
                if right.button("Clear the board", key="lec_clear"):
                    CLASSROOM.clear_board(lecture.name, st.session_state.get(TOKEN))
            board_view(lecture, number)
    st.divider()


def prepare_lecture(lecture: Lecture) -> tuple[int, list[str]]:
    """Submit every step's training jobs at low priority (students' jobs go first): (jobs submitted, refusals)."""
    submitted, refused = 0, []
    for step in lecture.steps:
        for job in step_jobs(step, dataset_available):
            try:
                get_manager().submit(job, background=True)
                submitted += 1
            except Refused as exc:
                refused.append(str(exc))
    return submitted, refused


def prepare_button(lecture: Lecture, instructor: bool) -> None:
    """"Prepare this lecture" (the instructor token needed): every step's jobs queued behind the students'."""
    if st.button("Prepare this lecture", key=f"lec_prepare_{lecture.name}", disabled=not instructor,
                 help="Trains every step's networks ahead, at low priority, so each step replays from the store the "
                      "moment it is shown." + ("" if instructor else " Needs the instructor token.")):
        submitted, refused = prepare_lecture(lecture)
        st.success(f"{plural_jobs(submitted)} queued at low priority; students' jobs go first.")
        for problem in refused[:3]:
            st.warning(plain(clipped(problem, 300)))


def plural_jobs(n: int) -> str:
    return f"{n} job" if n == 1 else f"{n:,} jobs"


# --- students ------------------------------------------------------------------------------------
def nickname_field() -> str:
    """This session's nickname (escaped where shown, bounded, never part of a run's config)."""
    st.session_state.setdefault(NICKNAME_INPUT, st.session_state.get(NICKNAME, ""))
    typed = st.text_input("Your nickname (shown on the class board)", key=NICKNAME_INPUT)
    if typed:
        name, problem = clean_nickname(typed)
        if problem:
            st.error(plain(problem) + " Your runs show as “anonymous” until then.")
        else:
            st.session_state[NICKNAME] = name
    return st.session_state.get(NICKNAME, "")


def _follower(lecture: Lecture, number: int) -> None:
    with st.container(border=True):
        step = step_card(lecture, number, large=False)
        name_col, try_col = st.columns([2, 1], vertical_alignment="bottom")
        with name_col:
            nickname_field()
        if try_col.button("Try it yourself", key="lec_try", icon="🧪",
                          help="Your own copy of this step's setup, to change and train. You stop following the "
                               "class; the bar at the top takes you back."):
            st.session_state[TRYING] = (lecture.name, number)
            st.session_state[ON_BOARD] = list(st.session_state.get(SUBMITTED, []))
            st.switch_page(PAGES_DIR / f"{step.page}.py", query_params=step.query)
        st.caption("You follow the class: this page moves when the instructor does.")
    follow_poll(lecture, number)


def _trying_bar() -> None:
    trying = st.session_state.get(TRYING)
    if not trying:
        return
    name, number = trying
    lecture = lectures_here()[0].get(name)
    if lecture is None:
        return
    text, back = st.columns([4, 1], vertical_alignment="center")
    text.info(plain(f"Your own copy of step {number} of “{lecture.title}”. Runs you train here appear on the "
                    f"class board as {st.session_state.get(NICKNAME) or 'anonymous'}."), icon="🧪")
    if back.button("Back to the class", key="lec_back"):
        st.session_state.pop(TRYING, None)
        go_to_step(lecture, CLASSROOM.position(name).step, "follow")


def record_tries() -> None:
    """After the page: runs this session submitted since "Try it yourself" go on the class board."""
    trying = st.session_state.get(TRYING)
    if not trying:
        return
    on_board = st.session_state.setdefault(ON_BOARD, [])
    for key in st.session_state.get(SUBMITTED, []):
        if isinstance(key, str) and key not in on_board:
            CLASSROOM.add_run(trying[0], trying[1], st.session_state.get(NICKNAME) or "anonymous", key)
            on_board.append(key)


# --- the lecture index ---------------------------------------------------------------------------
def upload_form() -> None:
    """A lecture file uploaded: checked by the schema; a bad one is named by field and line."""
    uploaded = st.file_uploader("Upload a lecture file (.toml)", type=["toml"], key="lec_upload",
                                help="A lecture you wrote: the same fields as the built-in ones (see README).")
    if uploaded is None:
        return
    data = uploaded.getvalue()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        st.error("That file is not UTF-8 text, so it was not loaded. Nothing else changed.")
        return
    lecture, problem = add_uploaded(text, uploaded.name)
    if problem:
        st.error(plain(clipped(problem, 500)) + " It was not loaded; nothing else changed.")
    else:
        st.success(plain(f"Loaded “{lecture.title}” ({len(lecture.steps)} steps) as the lecture {lecture.name}."))


def follow_lecture_link() -> str | None:
    """The lecture's link (``lecture?lecture=NAME``) opens the step the class is on, following it; returns a
    notice for a lecture this server does not have (None when the link names none)."""
    name = url.lecture_query().get("lecture")
    if not name:
        return None
    lecture = lectures_here()[0].get(name)
    if lecture is None:
        return (f"There is no lecture called “{shortened(name, 40)}” on this server, so there is nothing to follow. "
                "Pick one of those listed below.")
    go_to_step(lecture, CLASSROOM.position(lecture.name).step, "follow")
    return None


def lecture_buttons(lecture: Lecture) -> None:
    """Present the lecture (from the class's step), or follow it; with the token, prepare it."""
    present, follow, prepare = st.columns(3)
    if present.button("Present", key=f"lec_present_{lecture.name}", type="primary", icon="🎤",
                      help="The presenter view: large text, the step's talking points, a QR code for the class."):
        go_to_step(lecture, CLASSROOM.position(lecture.name).step, "present")
    if follow.button("Follow the class", key=f"lec_follow_{lecture.name}", icon="👀"):
        go_to_step(lecture, CLASSROOM.position(lecture.name).step, "follow")
    with prepare:
        prepare_button(lecture, is_instructor(st.session_state.get(TOKEN)))
