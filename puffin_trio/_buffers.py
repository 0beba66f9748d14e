"""Consumer buffers: the bounded storage behind each consumer, and the two FIFO policies.

This module owns :class:`Buffer`, the per-consumer storage with its counters
and wake-ups that :mod:`puffin_trio.channels` drives, and the FIFO policies
``"block"`` (:class:`BlockBuffer`) and ``"drop_oldest"``
(:class:`DropOldestBuffer`); ``"conflate"`` lives in
:mod:`puffin_trio._conflation`. It must not block, spawn tasks or log: ``put``
and ``take`` are synchronous, so each runs atomically in its caller's task.
"""

from __future__ import annotations

import abc
from collections import deque
from collections.abc import Callable, Sequence

import trio

from puffin_trio.events import Event, Gap, GapReason

__all__ = ["BlockBuffer", "Buffer", "DropOldestBuffer", "FifoBuffer"]


class Buffer(abc.ABC):
    """One consumer's bounded storage, counters and wake-ups (policy in the subclasses).

    ``put`` runs in the publisher's task and never blocks; ``take`` runs in a
    consumer's task. Both are synchronous, so each runs atomically. The
    ``*_waiting`` counts mirror the parking lots' sizes so that the hot path
    tests a plain int instead of calling into the lot.
    """

    __slots__ = (
        "capacity",
        "clock",
        "conflated",
        "delivered",
        "dropped",
        "gap_ts",
        "gaps",
        "max_queued",
        "missing",
        "publishers_waiting",
        "readable",
        "receivers_waiting",
        "space",
    )

    def __init__(self, capacity: int, clock: Callable[[], int]) -> None:
        self.capacity = capacity
        self.clock = clock
        #: Consumer tasks parked in ``receive`` until an entry is queued.
        self.readable = trio.lowlevel.ParkingLot()
        self.receivers_waiting = 0
        #: Publisher tasks parked until this ("block") buffer has room.
        self.space = trio.lowlevel.ParkingLot()
        self.publishers_waiting = 0
        self.delivered = 0
        self.dropped = 0
        self.conflated = 0
        self.gaps = 0
        self.missing = 0
        self.gap_ts = 0
        self.max_queued = 0

    @abc.abstractmethod
    def put(self, event: Event) -> None:
        """Add a published event, applying the overflow policy."""

    @abc.abstractmethod
    def put_many(self, events: Sequence[Event]) -> None:
        """:meth:`put` each of ``events`` in order (one call per batch on the hot path)."""

    @abc.abstractmethod
    def take(self) -> Event | None:
        """Remove and return the next event, or ``None`` when empty."""

    @abc.abstractmethod
    def __len__(self) -> int:
        """Entries queued now."""

    @abc.abstractmethod
    def oldest_ts_recv(self) -> int | None:
        """``ts_recv`` of the oldest entry, or ``None`` when empty."""

    @abc.abstractmethod
    def clear(self) -> None:
        """Discard everything queued (the consumer is gone)."""

    def lose(self, count: int = 1) -> None:
        """Count ``count`` dropped events and schedule their announcement."""
        if not self.missing:
            self.gap_ts = self.clock()
        self.missing += count
        self.dropped += count

    def announce(self, name: str) -> Gap:
        """The overflow ``Gap`` for the drops since the last announcement."""
        missing, self.missing = self.missing, 0
        self.gaps += 1
        ts = self.gap_ts
        return Gap(
            provider="puffin",
            symbol="",
            ts_event=ts,
            ts_recv=ts,
            stream=name,
            reason=GapReason.OVERFLOW,
            missing=missing,
        )


class FifoBuffer(Buffer):
    """A plain FIFO of events ("block" and "drop_oldest")."""

    __slots__ = ("queue", "wake_at")

    def __init__(self, capacity: int, clock: Callable[[], int]) -> None:
        super().__init__(capacity, clock)
        self.queue: deque[Event] = deque()
        #: A parked publisher is woken once no more than this many are queued.
        self.wake_at = capacity >> 1

    def _queued(self, count: int) -> None:
        """Bookkeeping after ``count`` events were appended."""
        queued = len(self.queue)
        if queued > self.max_queued:
            self.max_queued = queued
        if self.receivers_waiting:
            self.readable.unpark(count=count)

    def take(self) -> Event | None:
        if not self.queue:
            return None
        self.delivered += 1
        event = self.queue.popleft()
        # Hysteresis: a parked publisher is woken once the consumer has made
        # room for a real batch (half the capacity), not after every event. Waking
        # it on every take made the two tasks ping-pong one event at a time: 1.3
        # park/unpark pairs per message and 40 % of the CPU in a full pipeline.
        if self.publishers_waiting and len(self.queue) <= self.wake_at:
            self.space.unpark_all()
        return event

    def __len__(self) -> int:
        return len(self.queue)

    def oldest_ts_recv(self) -> int | None:
        return self.queue[0].ts_recv if self.queue else None

    def clear(self) -> None:
        self.queue.clear()


class BlockBuffer(FifoBuffer):
    """The "block" policy: the publisher waits for room before calling ``put`` (see ``FanOut``)."""

    __slots__ = ()

    def put(self, event: Event) -> None:
        self.queue.append(event)
        self._queued(1)

    def put_many(self, events: Sequence[Event]) -> None:
        self.queue.extend(events)
        self._queued(len(events))


class DropOldestBuffer(FifoBuffer):
    """The "drop_oldest" policy: a full buffer discards its oldest event for the new one.

    The deque's ``maxlen`` does the discarding; we only count.
    """

    __slots__ = ()

    def __init__(self, capacity: int, clock: Callable[[], int]) -> None:
        super().__init__(capacity, clock)
        self.queue = deque(maxlen=capacity)

    def put(self, event: Event) -> None:
        if len(self.queue) == self.capacity:
            self.lose()
        self.queue.append(event)
        self._queued(1)

    def put_many(self, events: Sequence[Event]) -> None:
        excess = len(self.queue) + len(events) - self.capacity
        if excess > 0:
            self.lose(excess)
        self.queue.extend(events)
        self._queued(len(events))
