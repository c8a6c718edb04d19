"""The class in each lecture, kept by the server: the step everyone is on, and the board of students' runs.

Following a lecture costs a student's page nothing while the class stays: its stream (app/stream.py) wakes on
:meth:`Classroom.on_move`, and :meth:`Classroom.position` is a dict lookup under a lock. Moving the
class, clearing the board and hiding names need the instructor token (``GRADIENT_LAB_INSTRUCTOR_TOKEN``),
compared in constant time and never logged or echoed; without a token set on the server nobody can move a
class. Nicknames are cleaned and bounded here, kept beside a run's job key (never in its config, so runs
still deduplicate), and escaped where they are shown.
"""
from __future__ import annotations

import hmac
import os
import threading
import time
import unicodedata
from dataclasses import dataclass, field
from typing import Callable

TOKEN_ENV = "GRADIENT_LAB_INSTRUCTOR_TOKEN"
MAX_TOKEN_CHARS = 256
MAX_NICKNAME_CHARS = 24
MAX_BOARD_ENTRIES = 300  # per lecture: the oldest entries go first
MAX_LECTURES = 200  # lectures the server keeps a place for


@dataclass(frozen=True)
class Position:
    step: int  # 1-based
    version: int  # bumped on every move: a page that saw another version moves
    moved_at: float


@dataclass(frozen=True)
class BoardEntry:
    nickname: str
    step: int
    job_key: str
    added_at: float


@dataclass
class _Room:
    position: Position = field(default_factory=lambda: Position(1, 0, time.time()))
    board: list[BoardEntry] = field(default_factory=list)
    names_hidden: bool = False


def token_configured() -> bool:
    return bool(os.environ.get(TOKEN_ENV, ""))


def is_instructor(given: str | None) -> bool:
    """Whether ``given`` is the instructor token (constant-time; False when the server has none)."""
    real = os.environ.get(TOKEN_ENV, "")
    if not real or not given or len(given) > MAX_TOKEN_CHARS:
        return False
    return hmac.compare_digest(given.encode("utf-8", "replace"), real.encode("utf-8", "replace"))


def clean_nickname(text: str) -> tuple[str, str | None]:
    """(nickname, None), or ("", why it was refused): printable characters only, spaces collapsed,
    at most MAX_NICKNAME_CHARS (longer is refused, not cut, so nobody is shown a name they did not type)."""
    raw = str(text or "")
    if len(raw) > 4 * MAX_NICKNAME_CHARS:
        return "", f"A nickname has at most {MAX_NICKNAME_CHARS} characters."
    kept = "".join(ch for ch in unicodedata.normalize("NFKC", raw)
                   if unicodedata.category(ch)[0] not in "C" and unicodedata.category(ch) not in ("Zl", "Zp"))
    name = " ".join(kept.split())
    if not name:
        return "", "Type a nickname of letters, digits or signs."
    if len(name) > MAX_NICKNAME_CHARS:
        return "", f"A nickname has at most {MAX_NICKNAME_CHARS} characters; this one has {len(name):,}."
    return name, None


class Classroom:
    """Every lecture's place and board, for one server process (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rooms: dict[str, _Room] = {}
        self._listeners: list[Callable[[str], None]] = []

    def on_move(self, listener: Callable[[str], None]) -> Callable[[], None]:
        """Call ``listener(lecture)`` after every move of a class, in the mover's thread (the students' stream
        wakes on it: app/stream.py). Returns the call that removes it."""
        with self._lock:
            self._listeners.append(listener)

        def remove() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)
        return remove

    def _room(self, lecture: str) -> _Room:
        room = self._rooms.get(lecture)
        if room is None:
            if len(self._rooms) >= MAX_LECTURES:
                oldest = min(self._rooms, key=lambda name: self._rooms[name].position.moved_at)
                del self._rooms[oldest]
            room = self._rooms[lecture] = _Room()
        return room

    def position(self, lecture: str) -> Position:
        """The step the class is on (step 1 before the instructor moves it): the students' poll."""
        with self._lock:
            room = self._rooms.get(lecture)
            return room.position if room is not None else Position(1, 0, 0.0)

    def move(self, lecture: str, step: int, token: str | None) -> bool:
        """Move the class to ``step``; False (and nothing moves) without the instructor token."""
        if not is_instructor(token):
            return False
        with self._lock:
            room = self._room(lecture)
            room.position = Position(int(step), room.position.version + 1, time.time())
            listeners = list(self._listeners)
        for listener in listeners:
            listener(lecture)
        return True

    def add_run(self, lecture: str, step: int, nickname: str, job_key: str) -> None:
        """A student's run of ``step`` on the board (once per nickname and job)."""
        with self._lock:
            board = self._room(lecture).board
            if any(e.nickname == nickname and e.job_key == job_key for e in board):
                return
            board.append(BoardEntry(nickname, int(step), job_key, time.time()))
            del board[:-MAX_BOARD_ENTRIES]

    def board(self, lecture: str, step: int) -> tuple[list[BoardEntry], bool]:
        """(the step's entries, oldest first; whether names are hidden)."""
        with self._lock:
            room = self._rooms.get(lecture)
            if room is None:
                return [], False
            return [e for e in room.board if e.step == step], room.names_hidden

    def clear_board(self, lecture: str, token: str | None) -> bool:
        if not is_instructor(token):
            return False
        with self._lock:
            self._room(lecture).board.clear()
        return True

    def hide_names(self, lecture: str, hidden: bool, token: str | None) -> bool:
        if not is_instructor(token):
            return False
        with self._lock:
            self._room(lecture).names_hidden = bool(hidden)
        return True


CLASSROOM = Classroom()  # the server's one classroom
