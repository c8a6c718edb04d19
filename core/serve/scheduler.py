"""A fair job queue: round-robin between browsers, first come first served within one.

One student's twenty jobs wait behind the first job of every other student, not in front of
them. The job manager queues by browser (:mod:`core.serve.identity`), so a reload gets no extra
turn. Jobs without one (the CLI, a notebook) form one more "session" of their own.
``get_group`` takes the next item together with queued items that may train with it (co-batching,
see :mod:`core.serve.cobatch`).
"""
from __future__ import annotations

import threading
from collections import OrderedDict, deque
from typing import Any, Callable, Hashable


BACKGROUND = ("background",)  # the lane of low-priority work (a lecture being prepared): served when nobody waits
GATHER_ROUNDS = 10  # a gathering get waits at most this many times its ``gather`` seconds


class FairQueue:
    """Blocking queue whose ``get`` takes the next session's oldest item in turn."""

    def __init__(self) -> None:
        self._by_session: OrderedDict[Hashable, deque] = OrderedDict()  # rotation order = dict order
        self._ready = threading.Condition()
        self._puts = 0  # items ever put: a gathering get sees whether more arrived

    def put(self, item: Any, session: Hashable = None) -> None:
        with self._ready:
            self._by_session.setdefault(session, deque()).append(item)
            self._puts += 1
            self._ready.notify_all()

    def get(self, timeout: float | None = None) -> Any:
        """The next item (blocks); None after ``timeout`` seconds with nothing queued."""
        group = self.get_group(lambda chosen, item: False, 1, timeout)
        return group[0] if group else None

    def get_group(self, compatible: Callable[[list, Any], bool], limit: int,
                  timeout: float | None = None, gather: float = 0.0) -> list[Any]:
        """The next item (blocks) and up to ``limit - 1`` more that may train with it, as one list.

        Candidates are looked at in the order ``get`` would hand them out; ``compatible(chosen, item)``
        says whether ``item`` may join ``chosen`` (the items taken so far, the next item first). Each
        session an item was taken from has been served this round: it goes to the back of the
        rotation, in turn order, so the others keep their places. [] after ``timeout`` seconds.

        ``gather`` > 0 (and ``limit`` > 1): once an item is there, wait while more keep arriving, each within
        ``gather`` seconds of the last (at most :data:`GATHER_ROUNDS` such waits), so a burst of submits
        is taken as one group rather than its first item alone."""
        with self._ready:
            if not self._ready.wait_for(lambda: self._by_session, timeout):
                return []
            for _ in range(GATHER_ROUNDS if gather > 0 and limit > 1 else 0):
                seen = self._puts
                if sum(map(len, self._by_session.values())) >= limit or not self._ready.wait_for(
                        lambda: self._puts != seen, gather):
                    break
            chosen, served = [], []
            for session, item in self._turns():
                if len(chosen) >= limit:
                    break
                if not chosen or compatible(chosen, item):
                    chosen.append(item)
                    served.append(session)
            taken = {id(item) for item in chosen}
            for session in dict.fromkeys(served):
                items = deque(i for i in self._by_session.pop(session) if id(i) not in taken)
                if items:
                    self._by_session[session] = items
            return chosen

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
            return [item for _, item in self._turns()]

    def _turns(self) -> list[tuple[Hashable, Any]]:
        """(session, item) of every queued item in turn order: each session's first, then second, ...;
        the BACKGROUND lane (low priority) after everyone else's."""
        lanes = [[(session, item) for item in items] for session, items in self._by_session.items()
                 if session != BACKGROUND]
        turns = [lane[depth] for depth in range(max(map(len, lanes), default=0)) for lane in lanes if depth < len(lane)]
        return turns + [(BACKGROUND, item) for item in self._by_session.get(BACKGROUND, ())]

    def __len__(self) -> int:
        with self._ready:
            return sum(len(items) for items in self._by_session.values())
