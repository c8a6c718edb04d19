"""Lecture mode, drawn: the step's card (title, talking points, what to look at), its link as a QR code,
the presenter view's styling, the students' follow of the class's step (a stream, app/stream.py), and the class
board."""
from __future__ import annotations

import io
import urllib.parse
from pathlib import Path
import pandas as pd
import segno
import streamlit as st

from core.engine.config import RunConfig
from core.engine.events import SERVED_FROM_STORE
from core.lessons.lectures import Lecture, Step, step_jobs
from core.serve.classroom import CLASSROOM
from core.serve.jobs import get_manager

from ..figures.compare import overlay_figure
from ..records.run import RunView
from ..stream import follow_root
from ..text import dataset_available, describe_run, plain, plural
from .charts import plotly_chart
from .jobs import job_state, run_view

PAGES_DIR = Path(__file__).resolve().parents[2] / "pages"
FOLLOW_POLL_SECONDS = 10.0  # a following page's slow poll, for when its stream (app/stream.py) is not there
BOARD_POLL_SECONDS = 2.0  # the presenter's class board refreshes this often (one session per lecture)
QR_SCALE = 8  # pixels per QR module
# Streamlit's chrome hidden, every text scaled from a larger root size, none below 20 px (the room's minimum).
PRESENTER_CSS = """
<style>
html { font-size: 24px; }
[data-testid="stHeader"], [data-testid="stToolbar"], [data-testid="stDecoration"], [data-testid="stSidebar"],
[data-testid="stSidebarCollapsedControl"], [data-testid="stStatusWidget"] { display: none !important; }
[data-testid="stMainBlockContainer"] { padding: 1rem 2rem 3rem 2rem !important; max-width: 100% !important; }
[data-testid="stMain"] * { font-size: max(20px, 1em); }
[data-testid="stMain"] button p { font-size: 1.1rem; }
</style>
"""


def step_query(lecture: Lecture, number: int, mode: str) -> dict[str, str]:
    """The address bar of step ``number``: its page's setup, then the lecture keys (``mode``: present or follow)."""
    return {**lecture.step(number).query, "lecture": lecture.name, "step": str(number), mode: "1"}


def go_to_step(lecture: Lecture, number: int, mode: str) -> None:
    """Open step ``number``'s page with exactly its setup (a stored result replays there at once)."""
    st.switch_page(PAGES_DIR / f"{lecture.step(number).page}.py", query_params=step_query(lecture, number, mode))


def server_address() -> str:
    """This server's address as the browser reached it (scheme, host, base path), without a page."""
    parts = urllib.parse.urlsplit(str(st.context.url or ""))
    base = str(st.get_option("server.baseUrlPath") or "").strip("/")
    root = f"{parts.scheme or 'http'}://{parts.netloc or 'localhost'}"
    return f"{root}/{base}" if base else root


def follow_link(lecture: Lecture, number: int) -> str:
    """The link a student opens for step ``number``: its page and setup, following the class."""
    step = lecture.step(number)
    path = "" if step.page == "playground" else step.page
    return f"{server_address()}/{path}?{urllib.parse.urlencode(step_query(lecture, number, 'follow'), safe=',-')}"


def lecture_link(lecture: Lecture) -> str:
    """The lecture's short address: it opens the step the class is on and follows it."""
    return f"{server_address()}/lecture?lecture={urllib.parse.quote(lecture.name)}"


def qr_png(text: str, scale: int = QR_SCALE) -> bytes:
    """A QR code (never a Micro QR: phones read these) of ``text`` as a PNG."""
    out = io.BytesIO()
    segno.make_qr(text, error="m").save(out, kind="png", scale=scale, border=2)
    return out.getvalue()


def presenter_style() -> None:
    st.html(PRESENTER_CSS)


def step_card(lecture: Lecture, number: int, large: bool) -> Step:
    """The step's title, talking points and "look at", under "<lecture> · step k of n"."""
    step = lecture.step(number)
    st.caption(plain(f"{lecture.title} · step {number} of {len(lecture.steps)}"))
    (st.header if large else st.subheader)(plain(step.title), anchor=False)
    st.markdown("\n".join(f"- {plain(point)}" for point in step.points))
    st.markdown(f"**Look at:** {plain(step.look_at)}")
    return step


def qr_panel(lecture: Lecture, number: int) -> None:
    """The step's link as a large QR code, and the lecture's short address to type."""
    st.image(qr_png(follow_link(lecture, number)), width=260, caption="Scan to follow on your device")
    st.markdown(f"**{plain(lecture_link(lecture).split('://', 1)[-1])}**")


# The browser's side of the follow stream: it reruns the page's follow fragment when the class's step is no longer
# the one shown. Without the stream (no such route, a refusal, no EventSource) the fragment's slow poll remains.
FOLLOW_JS = """
export default function(component) {
  const { data, setTriggerValue } = component;
  if (!data || !data.url || typeof EventSource === "undefined") return;
  const source = new EventSource(data.url);
  source.onmessage = (event) => {
    const step = parseInt(event.data, 10);
    if (Number.isFinite(step) && step !== data.shown) {
      source.close();
      setTriggerValue("moved", step);
    }
  };
  return () => source.close();
}
"""
_follow_stream = st.components.v2.component("gradient_lab_follow", js=FOLLOW_JS)


def follow_url(lecture: Lecture) -> str:
    """The path of ``lecture``'s follow stream on this server."""
    return f"{follow_root(str(st.get_option('server.baseUrlPath') or ''))}/{urllib.parse.quote(lecture.name, safe='')}"


def follow_poll(lecture: Lecture, shown: int) -> None:
    """A student's page moves when the class does: a fragment that listens to the class's stream and reruns when
    the instructor moves (and, as a fallback, reads the class's step every FOLLOW_POLL_SECONDS)."""

    @st.fragment(run_every=FOLLOW_POLL_SECONDS)
    def poll() -> None:
        _follow_stream(key="lecture_follow", data={"url": follow_url(lecture), "shown": shown},
                       on_moved_change=lambda: None, height=0)
        current = CLASSROOM.position(lecture.name).step
        if current != shown and 1 <= current <= len(lecture.steps):
            go_to_step(lecture, current, "follow")

    poll()


@st.fragment(run_every=BOARD_POLL_SECONDS)
def board_view(lecture: Lecture, number: int) -> None:
    """The class board of step ``number``: how many trained what, runs ranked by validation accuracy, curves."""
    entries, hidden = CLASSROOM.board(lecture.name, number)
    if not entries:
        st.caption("No student has trained this step yet. Runs from “Try it yourself” appear here.")
        return
    rows, curves = [], []
    for i, entry in enumerate(entries):
        state = job_state(entry.job_key)
        view: RunView | None = run_view(state) if state is not None else None
        best = float(view.evals["val_acc"].max()) if view is not None and len(view.evals) else None
        name = f"student {i + 1}" if hidden else entry.nickname
        started = view.started if view is not None else None
        what = describe_run(RunConfig.from_dict(started.config)) if started is not None else "(not started yet)"
        rows.append({"student": name, "what": what, "status": state.status if state else "gone",
                     "best validation accuracy": best})
        if view is not None:
            curves.append((name, view))
    table = pd.DataFrame(rows).sort_values("best validation accuracy", ascending=False, na_position="last")
    counts = table.groupby("what").size().sort_values(ascending=False)
    st.markdown(plain(f"{plural(len(table), 'run')} by the class: "
                      + "; ".join(f"{n} trained {what}" for what, n in counts.items())))
    table["best validation accuracy"] = table["best validation accuracy"].map(
        lambda acc: "n/a" if acc is None or pd.isna(acc) else f"{acc:.3f}")
    st.table(table.set_index("student"))  # text, not a canvas: it scales with the presenter view
    if curves:
        plotly_chart(overlay_figure(curves[:12], "acc"), f"board_curves_{lecture.name}_{number}")


def lecture_summary(lecture: Lecture) -> None:
    """A lecture's title, summary and every step as a link (the step's page with exactly its setup)."""
    st.markdown(f"**{plain(lecture.title)}** ({plural(len(lecture.steps), 'step')}, {plain(lecture.source)}). "
                f"{plain(lecture.summary)}")
    st.markdown(f"Lecture link for the class: `{lecture_link(lecture)}`")
    st.markdown("\n".join(f"{i}. [{plain(step.title)}]({follow_link(lecture, i).replace('&follow=1', '')})"
                          f" — {plain(step.page)}" for i, step in enumerate(lecture.steps, start=1)))


def job_ready(key: str) -> bool:
    """Whether a job's result replays at once: finished here, or in the run store."""
    manager = get_manager()
    snap = manager.snapshot(key)
    if snap is not None:
        return snap.status in SERVED_FROM_STORE
    return manager.store.meta(key) is not None


def readiness_line(lecture: Lecture) -> None:
    """"k of n steps ready": the steps whose training jobs all replay from the store."""
    prepared = [step_jobs(step, dataset_available) for step in lecture.steps]
    with_jobs = [jobs for jobs in prepared if jobs]
    ready = sum(all(job_ready(job.key()) for job in jobs) for jobs in with_jobs)
    others = len(lecture.steps) - len(with_jobs)
    st.markdown(plain(f"{ready} of {len(with_jobs)} steps ready"
                      + (f" ({plural(others, 'step')} compute their demo when shown or train on request)" if others
                         else "")))
