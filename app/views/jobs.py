"""The shared job parts every lesson uses: job state, the train button, the status line, polling.

- :func:`job_state`: a job's :class:`~app.records.jobs.JobState`. Events are read from the job
  manager into one process-wide LRU keyed by job key; a session keeps only which keys it has
  seen (and whether each was already done then), never event lists.
- :func:`train_button`: the one Train / Training… / Train again button for any config with
  ``key()`` (RunConfig, GridConfig, or a task config another page registers with the job
  manager), with its error message; what the submit returns (job keys) goes to a session slot.
- :func:`status_line`: queue position, starting, paused at step N, cancelled / diverged / failed, from cache,
  and a Cancel button while the job runs; for a run that trains alone, its starter's Pause / Step k / Resume.
- :func:`polling_fragment`: draws ``draw(polling)`` inside a fragment that reruns every
  ``every`` seconds while any of its jobs is queued or running, and stops itself after. A session
  that only watches (its browser did not press Train) polls every :func:`watch_seconds`, slower
  the more sessions look at the job; within one :data:`TICK_SECONDS` every poller of a job shares
  one manager snapshot (:func:`job_state`).
- :func:`browser_id`: the browser behind this session (a signed cookie, :mod:`core.serve.identity`),
  which a reload keeps: the job manager's quota, who may cancel a run, whose uploads are shown
  (:func:`app.text.use_viewer_uploads`). :func:`keep_browser_cookie` sets that cookie.
"""
from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections import OrderedDict
from typing import Any, Callable, Iterable

import streamlit as st

from core.engine.events import LATEST_ONLY, keep_latest
from core.serve import budget, identity, owners
from core.serve.budget import Refused, Unreachable
from core.serve.jobs import get_manager
from core.serve.pause import DEFAULT_STEP_BATCHES, MAX_STEP_BATCHES

from ..records.jobs import JobState, progress_text, status_message
from ..records.run import RunView, reduce_events
from ..text import cache_label, plain, plural, use_viewer_uploads

POLL_SECONDS = 1.0  # every watching session reruns its fragments this often: the server's main per-viewer cost
TICK_SECONDS = 0.25  # one manager snapshot per job per tick, shared by every session polling it
WATCH_SECONDS = 2.0  # the shortest poll interval of a session that only watches a job (did not press Train)
SECONDS_PER_VIEWER = 0.1  # a watch-only interval grows by this per session looking: their polls of one job stay under 10 per second
VIEWER_TTL = 10.0  # seconds a session counts as looking at a job after its last poll
SEEN = "gl_seen_jobs"  # session: {job key: replayed?} of the jobs this session has looked at
SESSION = "gl_session_id"  # session: this browser session's id, for the job manager's quotas and watchers
SUBMITTED = "gl_submitted_jobs"  # session: keys this session's Train buttons submitted, oldest first
LEFT = "gl_left_jobs"  # session: keys of shared jobs this session cancelled (stopped watching); others go on
BROWSER = "gl_browser_id"  # session: the browser's id, from its signed cookie or minted for it
COOKIE = "gl_browser"  # the cookie holding the signed browser id
COOKIE_SENT = "gl_browser_cookie_sent"  # session: the cookie was handed to this page
COOKIE_DAYS = 180
MAX_SEEN = 64
MAX_JOBS = 64  # process-wide event lists kept
ICONS = {"info": "ℹ️", "warning": "⚠️", "error": "🚨"}

_lock = threading.Lock()
_jobs: OrderedDict[str, JobState] = OrderedDict()  # job key -> newest state, events shared by every session
_cache: OrderedDict = OrderedDict()  # (version, name) -> a reduced view or figure
_fetch_lock = threading.Lock()  # one snapshot at a time: the pollers of one tick wait for it, then share it
_fetched: dict[str, float] = {}  # job key -> clock time of its last manager snapshot
_viewers: dict[str, dict[str, float]] = {}  # job key -> {session: clock time of its last look}
_clock: Callable[[], float] = time.monotonic  # ticks and viewers (tests inject one)


# --- job state -----------------------------------------------------------------------------------
def _fetch(key: str) -> JobState | None:
    """The job's state, shared by every session: the one fetched within this tick while the job's status
    is unchanged, else the last one plus a snapshot of only the events after it."""
    with _fetch_lock:
        with _lock:
            known, fetched = _jobs.get(key), _fetched.get(key)
        if (known is not None and fetched is not None and 0 <= _clock() - fetched < TICK_SECONDS
                and get_manager().status(key) == known.status):
            return known
        state = _snapshot_state(key, known)
        with _lock:
            if state is not None and key in _jobs:
                _fetched[key] = _clock()
            else:  # unknown here: nothing kept for it
                _fetched.pop(key, None)
        return state


def _snapshot_state(key: str, known: JobState | None) -> JobState | None:
    manager = get_manager()
    snap = manager.snapshot(key, since=len(known.events) if known else 0)
    if snap is None:
        with _lock:
            _jobs.pop(key, None)
        return None
    restarted = known is not None and (snap.n_events < len(known.events) or (
        known.done and (snap.status != known.status or snap.saved_at != known.saved_at)))
    if known is None or restarted:
        if restarted:
            snap = manager.snapshot(key, since=0)
        events = list(snap.events)
    else:
        events = known.events + list(snap.events)  # a new list: states handed out earlier stay consistent
        for kind in {e.kind for e in snap.events} & LATEST_ONLY.keys():
            keep_latest(events, kind)  # as the manager does: the earlier boundaries and filters lose their arrays
    state = JobState(key, snap.status, events, snap.from_cache, snap.saved_at, snap.error, snap.queue_position,
                     watchers=snap.watchers, started_by=snap.started_by, watched_by=snap.watched_by,
                     pausable=snap.pausable, paused=snap.paused, paused_at=snap.paused_at)
    with _lock:
        _jobs[key] = state
        _jobs.move_to_end(key)
        while len(_jobs) > MAX_JOBS:
            gone, _ = _jobs.popitem(last=False)
            _fetched.pop(gone, None)
    return state


def _refetch(key: str) -> None:
    """This session changed job ``key`` (submitted, cancelled): its next look fetches a new snapshot."""
    with _lock:
        _fetched.pop(key, None)


def job_state(key: str) -> JobState | None:
    """The job's current state (None when the key is unknown here); marks it seen by this session (a
    watcher that stops looking expires)."""
    get_manager().touch(key, session_id())
    _look(key)
    state = _fetch(key)
    seen: OrderedDict = st.session_state.setdefault(SEEN, OrderedDict())
    if state is None:
        seen.pop(key, None)
        return None
    if key not in seen:
        seen[key] = state.done
    seen.move_to_end(key)
    while len(seen) > MAX_SEEN:
        seen.popitem(last=False)
    return dataclasses.replace(state, replayed=bool(seen[key]) and state.done)  # this session's own view of it


def _look(key: str) -> None:
    """This session looks at job ``key`` now (it counts among its viewers for VIEWER_TTL seconds)."""
    now = _clock()
    with _lock:
        looks = _viewers.setdefault(key, {})
        looks[session_id()] = now
        if len(looks) > 1 and now - min(looks.values()) > VIEWER_TTL:
            for gone in [s for s, seen in looks.items() if now - seen > VIEWER_TTL]:
                del looks[gone]
        while len(_viewers) > MAX_JOBS:
            del _viewers[next(iter(_viewers))]


def viewers(key: str) -> int:
    """How many sessions looked at job ``key`` within the last VIEWER_TTL seconds."""
    now = _clock()
    with _lock:
        return sum(now - seen <= VIEWER_TTL for seen in _viewers.get(key, {}).values())


def asked(key: str) -> None:
    """This session has just asked for ``key``: it shows as a replay from the store only when the job was
    already done at that moment (served from the store), not when it trained too fast to be seen running."""
    snap = get_manager().snapshot(key)
    st.session_state.setdefault(SEEN, OrderedDict())[key] = snap is not None and snap.done


def cached(version: Any, name: Any, build: Callable[[], Any], limit: int = 512) -> Any:
    """A view or figure built once per process for one data version (30 viewers, one build)."""
    with _lock:
        if (version, name) in _cache:
            _cache.move_to_end((version, name))
            return _cache[(version, name)]
    value = build()
    with _lock:
        _cache[(version, name)] = value
        while len(_cache) > limit:
            _cache.popitem(last=False)
    return value


def run_view(state: JobState) -> RunView:
    n = len(state.events)
    return cached(state.version, "run_view", lambda: reduce_events(state.events[:n]), 64)


def wait_for_first_point(key: str, timeout: float = 0.4) -> None:
    """Right after submitting: wait (briefly) for the first log point, so the first draw has it."""
    deadline = time.monotonic() + timeout
    manager = get_manager()
    while time.monotonic() < deadline:
        snap = manager.snapshot(key)
        if snap is None or snap.done or any(e.kind == "eval" for e in snap.events[-8:]):
            return
        time.sleep(0.02)


# --- who is asking -------------------------------------------------------------------------------
def session_id() -> str:
    """This Streamlit session's id (a job's watchers); a reload is a new session of the same browser."""
    return st.session_state.setdefault(SESSION, uuid.uuid4().hex)


def request_cookie() -> str | None:
    """The browser cookie this session's request carried (read once, when the page connected)."""
    return st.context.cookies.get(COOKIE)


def browser_id() -> str:
    """The browser behind this session: the id its signed cookie carries, else a new one (then given to it
    as a cookie by :func:`keep_browser_cookie`, so its next reload is the same browser)."""
    known = st.session_state.get(BROWSER)
    if known is None:
        known = identity.verify(request_cookie()) or identity.new_id()
        st.session_state[BROWSER] = known
    return known


def keep_browser_cookie(container: Any) -> None:
    """Set the signed browser id as a cookie, once per session, when the request did not carry it."""
    if st.session_state.get(COOKIE_SENT) or identity.verify(request_cookie()) == browser_id():
        return
    st.session_state[COOKIE_SENT] = True
    value = identity.sign(browser_id())  # hex digits and a dot: nothing to escape
    container.html(f"<script>document.cookie = '{COOKIE}={value}; path=/; max-age={COOKIE_DAYS * 86400}; "
                   f"SameSite=Lax' + (location.protocol === 'https:' ? '; Secure' : '');</script>",
                   unsafe_allow_javascript=True)


def my_uploads() -> dict[str, str]:
    """The uploads this browser owns, {dataset name: title}."""
    return owners.owned(browser_id())


use_viewer_uploads(my_uploads)


# --- the train button ------------------------------------------------------------------------------
def submit(config: Any, force: bool = False) -> str:
    """Queue ``config`` (or join its job) for this session and browser; returns its job key."""
    key = get_manager().submit(config, force=force, session=session_id(), browser=browser_id())
    st.session_state.setdefault(LEFT, set()).discard(key)
    _refetch(key)
    return key


def cancel(key: str, everyone: bool = False) -> bool:
    """This browser stops watching ``key`` (this session and its others, e.g. before a reload); the job stops
    when nobody else watches it, or at once with ``everyone`` (its starter's choice). True when the job
    itself was asked to stop."""
    st.session_state.setdefault(LEFT, set()).add(key)
    stopped = get_manager().cancel(key, session=session_id(), everyone=everyone, browser=browser_id())
    _refetch(key)
    return stopped


def submit_job(config: Any, force: bool) -> str:
    """The default submit: queue ``config`` with the job manager; returns its job key."""
    key = submit(config, force)
    asked(key)
    wait_for_first_point(key)
    return key


def config_status(config: Any) -> str | None:
    """The job status of ``config.key()`` on this server (None when never trained here)."""
    state = _fetch(config.key())
    return state.status if state is not None else None


def shown_job(config: Any | None, slot: str) -> str | None:
    """The job a page shows: ``config``'s own when this server knows it, else the one this session last
    started from ``slot`` (None before any)."""
    return config.key() if config is not None and config_status(config) is not None else st.session_state.get(slot)


def found_job(config: Any | None, slot: str) -> str | None:
    """The job of ``config`` that this server holds though this session did not start it from ``slot`` (a stored
    result, or another visitor's run): its key, else None."""
    if config is None or config_status(config) is None:
        return None
    key = config.key()
    return key if st.session_state.get(slot) != key else None


def job_done(key: str) -> bool:
    """Whether job ``key`` has ended on this server (a stored result, not a run under way)."""
    state = job_state(key)
    return state is not None and state.done


def found_job_notice(key: str) -> None:
    """Say that the result below is not one this visitor trained: stored before, or someone else's run under way."""
    state = job_state(key)
    if state is None:
        return
    if state.done:
        st.info("A stored result of exactly these settings is on this server (trained before, by you or someone "
                "else), so it is shown below, after the data. **Train again** trains them from scratch.", icon="📦")
    else:
        st.info("Someone on this server is already training exactly these settings: the run below is theirs, "
                "shared with you as it trains.", icon="👥")


def _on_train(config: Any, slot: str, force: bool, submit: Callable[[Any, bool], Any]) -> None:
    try:
        st.session_state[slot] = submit(config, force)
        submitted = st.session_state.setdefault(SUBMITTED, [])
        submitted[:] = [*submitted[-(MAX_SEEN - 1):], st.session_state[slot]]
    except Exception as exc:  # e.g. the requested device vanished: say so, no traceback
        st.session_state[f"{slot}_error"] = f"Could not start training: {exc}"


def train_button(config: Any | None, slot: str, *, key: str, label: str = "Train", help: str | None = None,
                 submit: Callable[[Any, bool], Any] = submit_job,
                 status: Callable[[Any], str | None] = config_status) -> None:
    """Train / Training… / "<label> again" for ``config`` (disabled while None or busy).

    A click calls ``submit(config, force)`` (force: train again although stored) and keeps its
    result, job keys only, in ``st.session_state[slot]``; a failure shows as a plain error.
    """
    current = status(config) if config is not None else None
    busy = current in ("queued", "running")
    again = current in ("finished", "diverged")
    st.button("Training…" if busy else f"{label} again" if again else label, type="primary", key=key,
              icon="▶️", disabled=config is None or busy, on_click=_on_train,
              args=(config, slot, again, submit),
              help=("Trains these settings from scratch, even though a result is stored." if again else help))
    error = st.session_state.pop(f"{slot}_error", None)
    if error:
        st.error(plain(error))


# --- the status line -------------------------------------------------------------------------------
def status_line(state: JobState, view: RunView | None = None, *, what: str = "run", cancel_help: str | None = None,
                progress: bool = True, started: bool | None = None) -> None:
    """The one status line of a job: queued / starting / outcome, cache note, progress bar, Cancel.

    ``view`` (a run's reduced events) gives the progress and the outcome's reason; a job that is
    not one run (a grid) passes ``started`` and draws its own progress."""
    prog = view.progress() if view is not None else None
    if started is None:
        started = view is not None and view.started is not None
    message = status_message(state, prog, view.reason if view is not None else state.error, started=started)
    if message is not None:
        level, text = message
        getattr(st, level)(text, icon=ICONS[level])
    if state.replayed and state.saved_at:
        st.info(f"{cache_label(state.saved_at)}: this exact {what} was trained before on this server, so its "
                "stored result is shown without training again.", icon="📦")
    if progress and prog is not None:
        device = view.started.device_name if view.started is not None else ""
        st.progress(prog.fraction, text=progress_text(prog, state.done, device))
    if state.done:
        return
    others = len(state.watched_by - {browser_id()})  # other browsers that looked at it lately
    if state.key in st.session_state.get(LEFT, ()):
        st.info(f"You stopped watching this {what}; {plural(others, 'other browser')} still "
                f"watch{'es' if others == 1 else ''} it, so it goes on for them. Press Train to watch again.",
                icon="👋")
        return
    if state.status == "running" and what == "run":
        _hold_controls(state)
    if st.button("Cancel", key=f"cancel_{state.key}", icon="⏹️",
                 help=(f"Stop watching: {plural(others, 'other browser')} also watch this {what}, "
                       "so it goes on for them (it stops when nobody watches)." if others
                       else cancel_help or f"Stop this {what}; its history is kept.")):
        cancel(state.key)
    if others and state.started_by == browser_id() and st.button(
            "Cancel for everyone", key=f"cancel_all_{state.key}", icon="🛑",
            help=f"You started this {what}: stop it for all {others + 1} browsers watching it."):
        cancel(state.key, everyone=True)


def _hold(key: str, action: str) -> None:
    """Pause, step or resume job ``key`` for this browser; a refusal is kept to be shown under the buttons."""
    manager = get_manager()
    try:
        if action == "step":
            manager.step(key, int(st.session_state[f"step_batches_{key}"]), browser=browser_id())
        else:
            getattr(manager, action)(key, browser=browser_id())
    except Refused as exc:
        st.session_state[f"hold_error_{key}"] = str(exc)
    _refetch(key)


def _hold_controls(state: JobState) -> None:
    """Pause / Step k / Resume for the browser that started a run training alone; why not, for a batched one."""
    if state.started_by != browser_id():
        if state.paused:
            st.caption("Paused by the browser that started this run: only it can step or resume it.")
        return
    if not state.pausable:
        st.caption("Pause and step work on a run that trains alone; this one trains in one batch with other runs "
                   "(pausing it would hold theirs).")
        return
    try:
        bound = f"A pause longer than {budget.cap('GRADIENT_LAB_MAX_PAUSE_MINUTES'):g} minutes ends the run"
    except Refused as exc:  # a bad setting: Pause itself says so
        bound = plain(str(exc))
    toggle, size, step, _ = st.columns([1, 1.2, 1, 2.5], vertical_alignment="bottom")
    if state.paused:
        toggle.button("Resume", key=f"resume_{state.key}", icon="▶️", on_click=_hold, args=(state.key, "resume"),
                      help="Train on from here.")
    else:
        toggle.button("Pause", key=f"pause_{state.key}", icon="⏸️", on_click=_hold, args=(state.key, "pause"),
                      help=f"Wait before the next batch. {bound} (GRADIENT_LAB_MAX_PAUSE_MINUTES); its history is kept.")
    size.number_input("Batches per step", min_value=1, max_value=MAX_STEP_BATCHES, value=DEFAULT_STEP_BATCHES,
                      step=1, key=f"step_batches_{state.key}")
    step.button("Step", key=f"step_{state.key}", icon="⏭️", on_click=_hold, args=(state.key, "step"),
                help="Train this many batches, then pause again.")
    error = st.session_state.pop(f"hold_error_{state.key}", None)
    if error:
        st.error(plain(error))


# --- polling -------------------------------------------------------------------------------------
def _running(keys: Iterable[str]) -> bool:
    """Whether any of ``keys`` is queued or running for this session (not counting jobs it left)."""
    left = st.session_state.get(LEFT, ())
    for key in keys:
        if key in left:
            continue
        state = _fetch(key)
        if state is not None and not state.done:
            return True
    return False


def watch_seconds(every: float, looking: int) -> float:
    """The poll interval of a session that only watches a job ``looking`` sessions look at: never faster
    than ``every`` or WATCH_SECONDS, and slower with more of them (the server's polls per second stay bounded)."""
    return max(every, WATCH_SECONDS, SECONDS_PER_VIEWER * looking)


def poll_seconds(keys: Iterable[str], every: float) -> float:
    """This session's poll interval for ``keys``: ``every`` when its browser started or joined one of the
    jobs (pressed Train), else the slower :func:`watch_seconds`."""
    me = browser_id()
    states = [state for state in map(_fetch, keys) if state is not None]
    if any(state.started_by == me or me in state.watched_by for state in states):
        return every
    return watch_seconds(every, max((viewers(state.key) for state in states), default=0))


def _poll_body(keys: tuple[str, ...], draw: Callable[[bool], None], polling: bool) -> None:
    try:
        if polling and not _running(keys):
            st.rerun()  # a full rerun declares the fragment again without run_every: polling stops
        draw(polling)
        if polling and not _running(keys):  # it ended while drawing: redraw the page (buttons, results) once
            st.rerun()
    except Unreachable as exc:
        unreachable_notice(exc)


def unreachable_notice(exc: Unreachable) -> None:
    """The job manager (a cluster) cannot be reached: said in plain words where the page needed it."""
    st.error(plain(str(exc)), icon=ICONS["error"])


def polling_fragment(keys: str | Iterable[str], draw: Callable[[bool], None], *, every: float = POLL_SECONDS,
                     name: str = "") -> None:
    """Draw ``draw(polling)`` in a fragment that polls while any job of ``keys`` runs: every ``every`` s for
    the session that pressed Train, every :func:`watch_seconds` for one that only watches."""
    keys = (keys,) if isinstance(keys, str) else tuple(keys)
    running = _running(keys)
    run_every = poll_seconds(keys, every) if running else None
    st.fragment(run_every=run_every, key=f"poll_{name or keys[0]}")(_poll_body)(keys, draw, running)
