"""What one round of a feed read and pushed, and the position after any prefix of it.

This module owns the bookkeeping that makes positions exact: an :class:`Entry`
(one stream entry, decoded), and a :class:`Round` (the entries of one read,
merged into publish order, with the announcements made in between), which
can say, for any number of its items the consumer has taken, where a resume
must start and how many events of each stream come before that point.

It must not do I/O.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from puffin_trio.events import Event, Gap
from puffin_trio.redis._layout import Position

__all__ = ["Entry", "Note", "Round", "pairs"]


class Entry:
    """One stream entry, decoded (``events``) or not (``bad``: only its header was usable)."""

    __slots__ = ("bad", "count", "deltas", "events", "g0", "ident", "n", "name")

    def __init__(
        self,
        name: str,
        ident: bytes,
        g0: int,
        n: int,
        count: int,
        deltas: tuple[int, ...] | None,
        events: list[Event | None] | None,
    ) -> None:
        self.name = name
        self.ident = ident
        self.g0 = g0
        self.n = n
        self.count = count
        #: Global index steps between consecutive events (None: contiguous).
        self.deltas = deltas
        self.bad = events is None
        self.events: list[Event | None] = [None] * count if events is None else events

    def indices(self) -> Iterable[int]:
        if self.deltas is None:
            return range(self.g0, self.g0 + self.count)
        return itertools.accumulate(self.deltas, initial=self.g0)

    def before(self, x: int) -> int:
        """How many of this entry's events have a global index below ``x``."""
        if self.deltas is None:
            return min(max(x - self.g0, 0), self.count)
        return sum(1 for g in self.indices() if g < x)


#: An announcement a reader makes: (the Gap, its stream's short name or "", the
#: stream's count before it).
Note = tuple[Gap, str, int | None]


class Round:
    """What one round pushed to the channel, kept until it is consumed (for positions).

    :meth:`position_after` walks the round in push order from where its last
    call stopped (consumption only moves forward), so a consumer that asks
    for its position after every event pays O(1) per event, not O(round).
    """

    __slots__ = (
        "_at",
        "_g",
        "_note",
        "_owner",
        "_running",
        "after",
        "base",
        "before",
        "cum_start",
        "entries",
        "notes",
        "pushed",
        "slots",
        "txs",
    )

    def __init__(self, base: int, before: dict[str, int]) -> None:
        self.cum_start = 0
        self.pushed = 0
        self.base = base
        #: Wanted events by global index - base (None: not wanted, skipped, or not ours).
        self.slots: list[Event | None] = []
        #: Global index -> announcements pushed just before the event there.
        self.notes: dict[int, list[Note]] = {}
        self.entries: list[Entry] = []
        #: (first global index, end) of each transaction in the round.
        self.txs: list[tuple[int, int]] = []
        self.before = before
        self.after = Position(0, 0, {})
        # the walk: items taken so far, global index reached, notes taken there, counts
        self._at = 0
        self._g = base
        self._note = 0
        self._running: dict[str, int] | None = None
        #: Per global index - base: (stream, its count after that event), for every
        #: event of the round's entries, wanted or not (built on the first walk).
        self._owner: list[tuple[str, int] | None] = []

    def items(self) -> list[Event]:
        """Everything the round pushes, in order: announcements first at their index."""
        slots = self.slots
        if not self.notes:
            return [event for event in slots if event is not None]
        out: list[Event] = []
        notes = self.notes
        base = self.base
        for offset, event in enumerate(slots):
            pending = notes.get(base + offset)
            if pending:
                out.extend(note[0] for note in pending)
            if event is not None:
                out.append(event)
        return out

    def position_after(self, taken: int) -> Position:
        """The position once the first ``taken`` items of this round have been consumed."""
        running = self._running
        if running is None:
            running = self._running = dict(self.before)
            owner: list[tuple[str, int] | None] = [None] * len(self.slots)
            base = self.base
            for entry in self.entries:
                if not entry.bad:
                    for i, g in enumerate(entry.indices()):
                        owner[g - base] = (entry.name, entry.n + i + 1)
            self._owner = owner
        slots, notes, owner, base = self.slots, self.notes, self._owner, self.base
        end = base + len(slots)
        while self._g < end:
            g = self._g
            pending = notes.get(g, ())
            if self._note < len(pending):
                if self._at == taken:
                    break
                gap, name, _ = pending[self._note]
                if name:
                    running[name] = gap.received if gap.received is not None else 0
                self._note += 1
                self._at += 1
                continue
            if slots[g - base] is not None:
                if self._at == taken:
                    break
                self._at += 1
            mark = owner[g - base]
            if mark is not None and mark[1] > running.get(mark[0], -1):
                running[mark[0]] = mark[1]
            self._g += 1
            self._note = 0
        x = self._g
        tx = self.after.tx
        for start, stop in self.txs:
            if start <= x < stop:
                tx = start
                break
        return Position(self.after.epoch, tx, dict(running))


def pairs(flat: Sequence[Any]) -> Iterator[tuple[Any, Any]]:
    """``[a, 1, b, 2]`` -> ``(a, 1), (b, 2)``: a script's flat reply."""
    items = iter(flat)
    return zip(items, items, strict=True)
