"""Every page's setup in the address bar: when to read the URL, how to write it, what a bad link says.

A page reads the query string when it holds something other than what the page last wrote (a
shared link, a reload, "Open in Playground", a bookmark); after a plain page switch the URL is
empty and the page restores this session's values instead. After drawing its form, the page
writes its setup back (:func:`write_query`), so the address bar is always a shareable link.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Mapping, TypeVar

import streamlit as st

from core.engine.config import ConfigError
from core.engine.task import clipped, shortened

from ..text import plain

T = TypeVar("T")
log = logging.getLogger(__name__)
MAX_PROBLEM_CHARS = 300  # each problem a link's notice names
MAX_NOTICE_CHARS = 1200  # a whole notice
WRITTEN = "gl_url_written_{}"  # session: the query a page last wrote
# The lecture mode's keys (app/forms/lecture.py): kept beside whatever setup a page holds, never read as one.
LECTURE_KEYS = ("lecture", "step", "present", "follow")


def lecture_query() -> dict[str, str]:
    """The lecture mode's part of the address bar."""
    return {k: v for k, v in st.query_params.to_dict().items() if k in LECTURE_KEYS}


def page_query() -> dict[str, str]:
    """The address bar without the lecture mode's keys: the page's own setup."""
    return {k: v for k, v in st.query_params.to_dict().items() if k not in LECTURE_KEYS}


def incoming_query(page: str) -> dict[str, str] | None:
    """The URL's query when ``page`` should load it now, else None (keep this session's values).

    ``{}`` on the page's first visit of the session with an empty URL: load the defaults."""
    query = page_query()
    written = st.session_state.get(WRITTEN.format(page))
    if query and query != written:
        return query
    if written is None:
        return query
    return None


def write_query(page: str, query: Mapping[str, str]) -> None:
    query = {k: str(v) for k, v in query.items() if k not in LECTURE_KEYS}
    st.session_state[WRITTEN.format(page)] = query
    full = {**query, **lecture_query()}
    if st.query_params.to_dict() != full:
        st.query_params.from_dict(full)


def parse_link(query: Mapping[str, str], known: set[str], parse: Callable[[dict], T],
               default: Callable[[], T]) -> tuple[T, list[str]]:
    """(config, notices) from a query: unknown keys are ignored, and so is each setting the parser names as bad
    (the valid ones are kept); one bounded notice per thing ignored, whatever the link holds. A link with nothing
    valid left, whose settings fail together, or that a parser cannot read at all gives the defaults."""
    notices = []
    unknown = sorted(k for k in query if k not in known)
    if unknown:
        notices.append(f"The link had settings this version does not know, which were ignored: "
                       f"{', '.join(clipped(k, 40) for k in unknown[:5])}"
                       f"{f' and {len(unknown) - 5:,} more' if len(unknown) > 5 else ''}.")
    kept = {k: v for k, v in query.items() if k in known}
    while True:
        try:
            return parse(kept), notices
        except ConfigError as exc:
            bad = [name for name in exc.problems if name in kept]
            if not bad:  # a problem of the settings together, not of one value
                notices.append(invalid_link_notice(exc))
                return default(), notices
            for name in bad:
                notices.append(ignored_notice(name, kept.pop(name), exc.problems[name]))
            if not kept:  # nothing valid is left: the page's own defaults
                return default(), notices
        except Exception as exc:  # a hostile link may raise anything a parser meets: never a traceback
            notices.append(invalid_link_notice(exc))
            return default(), notices


def ignored_notice(name: str, value: object, problem: str) -> str:
    """One bad value of a link, named and quoted (bounded), and that the rest of the link was kept."""
    return (f"The link's {clipped(name, 40)} = {shortened(value)} was ignored, the rest of the link is kept: "
            f"{clipped(problem, MAX_PROBLEM_CHARS)}")


def invalid_link_notice(exc: Exception, instead: str = "the defaults are loaded") -> str:
    """What a page says when its link's setup cannot be used: a ConfigError's problems, else the kind of error."""
    if isinstance(exc, ConfigError):
        details = " ".join(clipped(problem, MAX_PROBLEM_CHARS) for problem in exc.problems.values())
    else:
        log.warning("A link could not be read", exc_info=exc)
        details = f"It could not be read ({type(exc).__name__})."
    return f"The link's settings are not valid, so {instead} instead. {clipped(details, MAX_NOTICE_CHARS)}"


def link_notices(notices: list[str]) -> None:
    for notice in notices:
        st.warning(plain(clipped(notice, MAX_NOTICE_CHARS)), icon="🔗")


def remember(slot: str, values: Mapping[str, Any]) -> None:
    """Keep a form's widget values (they survive page switches, which drop widget state)."""
    st.session_state[slot] = dict(values)


def restore(slot: str, defaults: Mapping[str, Any], key: Callable[[str], str]) -> None:
    """Widget keys a page switch dropped get this session's last values back (else ``defaults``)."""
    saved = st.session_state.get(slot) or {}
    for name, value in defaults.items():
        st.session_state.setdefault(key(name), saved.get(name, value))
