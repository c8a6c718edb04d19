"""A fair job queue: round-robin between browser sessions, first come first served within one.

One student's twenty jobs wait behind the first job of every other student, not in front of
them. Jobs without a session (the CLI, a notebook) form one more "session" of their own.
"""
from __future__ import annotations

import threading
from collections import OrderedDict, deque
from typing import Any, Callable, Hashable


class FairQueue:
    """Blocking queue whose ``get`` takes the next session's oldest item in turn."""

    def __init__(self) -> None:
        self._by_session: OrderedDict[Hashable, deque] = OrderedDict()  # rotation order = dict order
        self._ready = threading.Condition()

    def put(self, item: Any, session: Hashable = None) -> None:
        with self._ready:
            self._by_session.setdefault(session, deque()).append(item)
            self._ready.notify()

    def get(self, timeout: float | None = None) -> Any:
        """The next item (blocks); None after ``timeout`` seconds with nothing queued."""
        with self._ready:
            if not self._ready.wait_for(lambda: self._by_session, timeout):
                return None
            session, items = next(iter(self._by_session.items()))
            item = items.popleft()
            del self._by_session[session]
            if items:  # this session goes to the back of the rotation
                self._by_session[session] = items
            return item

    def remove(self, match: Callable[[Any], bool]) -> list[Any]:
        """Take out every queued item for which ``match`` is true (e.g. a cancelled job)."""
        with self._ready:
            taken = []
            for session in list(self._by_session):
                items = self._by_session[session]
                keep = deque(i for i in items if not match(i))
                taken.extend(i for i in items if match(i))
                if keep:
                    self._by_session[session] = keep
                else:
                    del self._by_session[session]
            return taken

    def order(self) -> list[Any]:
        """Every queued item in the order ``get`` would hand them out."""
        with self._ready:
            lanes = [list(items) for items in self._by_session.values()]
        out = []
        for depth in range(max((len(lane) for lane in lanes), default=0)):
            out.extend(lane[depth] for lane in lanes if depth < len(lane))
        return out

    def __len__(self) -> int:
        with self._ready:
            return sum(len(items) for items in self._by_session.values())
