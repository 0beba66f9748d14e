"""Fan-out of events to many consumers, each with a bounded buffer and an overflow policy.

This module owns :class:`FanOut`, the junction between the provider sessions'
readers (which call :meth:`FanOut.publish`, :meth:`FanOut.publish_batch` or
:meth:`FanOut.publish_nowait`) and user code (which iterates an
:class:`EventReceiver`, a :class:`trio.abc.ReceiveChannel` of events); every
consumer has its own buffer of at most ``capacity`` entries and a declared
overflow policy (``"block"``, ``"drop_oldest"``, ``"conflate"``). It must not
do I/O, decode frames, know about providers, spawn tasks, log per event, or
drop an event silently: every loss is counted in :meth:`FanOut.statistics` and
announced to the consumer that suffered it. What each policy does to the
publisher, the socket and the provider, with numbers, and the ordering,
memory and speed guarantees, are in ``docs/guide/channels.rst``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Final, Literal, get_args

import attrs
import trio

from puffin_trio._buffers import BlockBuffer, Buffer, DropOldestBuffer, FifoBuffer
from puffin_trio._conflation import ConflatingBuffer
from puffin_trio.errors import ConfigurationError
from puffin_trio.events import Event

__all__ = [
    "DEFAULT_CAPACITY",
    "OVERFLOW_POLICIES",
    "ConsumerStatistics",
    "EventReceiver",
    "FanOut",
    "FanOutStatistics",
    "Overflow",
]

#: What a consumer's buffer does when it is full (see ``docs/guide/channels.rst``).
Overflow = Literal["block", "drop_oldest", "conflate"]

#: ``receive`` checks for cancellation and yields to the scheduler at least
#: once per this many queued events. 64 events take ~100-300 µs to hand out,
#: so other tasks (and a cancellation) wait at most that long behind a busy
#: consumer; the batch amortises the ~4 µs scheduler round-trip to well under
#: a decode's cost.
_SCHEDULE_EVERY: Final = 64
#: Every overflow policy name, in the order the docs present them.
OVERFLOW_POLICIES: Final[tuple[Overflow, ...]] = get_args(Overflow)

#: Default per-consumer capacity, in events. At 10,000 events/s (trades and
#: quotes of a few hundred active symbols around the US open) it is about
#: 100 ms of data: enough to ride out a garbage-collection pause or a burst of
#: slow handling without engaging the overflow policy, small enough that a
#: consumer that is really slower than the feed meets its policy within a
#: fraction of a second instead of after minutes of growing lag. It costs about
#: 0.35 MiB per consumer, and matches the queue length alpaca-py gives its
#: WebSocket client (websockets ``max_queue=1024``).
DEFAULT_CAPACITY: Final = 1024


@attrs.frozen(kw_only=True)
class ConsumerStatistics:
    """A snapshot of one consumer's counters (see :meth:`FanOut.statistics`).

    Every event published while the consumer is registered ends up in exactly
    one of ``delivered``, ``dropped``, ``conflated`` or ``queued`` (a queued
    quote/book slot counts once however many updates it absorbed), so
    ``published == delivered + dropped + conflated + queued``.
    """

    name: str
    policy: Overflow
    capacity: int
    #: Events published while this consumer was registered.
    published: int
    #: Entries in the buffer now (events plus quote/book slots); <= capacity.
    queued: int
    #: High-water mark of ``queued``.
    max_queued: int
    #: Events handed to the consumer (overflow ``Gap`` announcements excluded).
    delivered: int
    #: Events lost to the overflow policy (always announced by a ``Gap``).
    dropped: int
    #: Quotes/book updates absorbed into a pending slot (not a loss).
    conflated: int
    #: Overflow ``Gap`` events delivered.
    gaps: int
    #: Dropped events not yet announced (announced before the next event).
    unannounced: int
    #: ``clock() - ts_recv`` of the oldest queued entry in ns; 0 when empty.
    #: For a slot, ``ts_recv`` of the first update it absorbed.
    lag_ns: int
    #: The consumer's channel was closed (it is no longer registered).
    closed: bool


@attrs.frozen(kw_only=True)
class FanOutStatistics:
    """A snapshot of a :class:`FanOut`'s counters."""

    #: Events published (to however many consumers, including none).
    published: int
    #: Events published while no consumer was registered.
    unconsumed: int
    #: Tasks waiting in ``publish``/``publish_batch`` for a full "block" consumer.
    publishers_waiting: int
    #: :meth:`FanOut.close` was called.
    closed: bool
    #: Per registered consumer, by name.
    consumers: Mapping[str, ConsumerStatistics]


_BUFFERS: Final[Mapping[Overflow, type[BlockBuffer | DropOldestBuffer | ConflatingBuffer]]] = {
    "block": BlockBuffer,
    "drop_oldest": DropOldestBuffer,
    "conflate": ConflatingBuffer,
}


class EventReceiver(trio.abc.ReceiveChannel[Event]):
    """One consumer of a :class:`FanOut`: a receive channel of events with its own buffer.

    Made by :meth:`FanOut.open_consumer` or :meth:`FanOut.consumer`, not
    directly. Iterate it (``async for event in receiver``), or call
    :meth:`receive`. Closing it (:meth:`aclose`, :meth:`close`, or leaving its
    ``async with`` block) unregisters it from the fan-out and discards what is
    still queued. After :meth:`FanOut.close`, it yields what is queued and then
    raises :exc:`trio.EndOfChannel` (ending an ``async for``). Several tasks
    may receive from one receiver; each event goes to one of them.
    """

    def __init__(self, fanout: FanOut, name: str, policy: Overflow, buffer: Buffer) -> None:
        self._fanout = fanout
        self._name = name
        self._policy: Overflow = policy
        self._buffer = buffer
        self._ended = False
        self._closed = False
        self._published_base = fanout._published
        self._published_end: int | None = None
        self._unyielded = 0
        #: The FIFO policies' buffer, for the fast path of ``receive``/``__anext__``
        #: (``None`` for "conflate", whose buffer always takes the general path).
        self._fifo = buffer if isinstance(buffer, FifoBuffer) else None

    @property
    def name(self) -> str:
        """The consumer's name: its key in statistics and the ``stream`` of its overflow gaps."""
        return self._name

    @property
    def policy(self) -> Overflow:
        """The declared overflow policy."""
        return self._policy

    @property
    def capacity(self) -> int:
        """The most entries this consumer's buffer holds."""
        return self._buffer.capacity

    def receive_nowait(self) -> Event:
        """Take the next event without waiting (an overflow ``Gap`` first if events were lost).

        Not a checkpoint. Raises :exc:`trio.WouldBlock` if nothing is queued,
        :exc:`trio.EndOfChannel` if nothing is queued and the fan-out is
        closed, :exc:`trio.ClosedResourceError` if this receiver was closed.
        """
        if self._closed:
            raise trio.ClosedResourceError("this event receiver was closed")
        buffer = self._buffer
        if buffer.missing:
            return buffer.announce(self._name)
        event = buffer.take()
        if event is not None:
            return event
        if self._ended:
            raise trio.EndOfChannel
        raise trio.WouldBlock

    def _take_queued(self) -> Event | None:
        """The fast path: the next queued event with no trio call at all, when allowed.

        Allowed for a FIFO policy with an event queued, nothing lost since
        the last announcement, no publisher waiting for room unless the
        buffer stays above half full after this take (else ``take`` wakes
        it), and fewer than ``_SCHEDULE_EVERY - 1`` events handed out
        since the last checkpoint. A closed receiver's queue is empty, so it
        never gets here. Everything else returns ``None`` and takes the
        general path, which does the checkpointing.
        """
        fifo = self._fifo
        if fifo is not None and fifo.queue and self._unyielded < _SCHEDULE_EVERY - 1:
            queue = fifo.queue
            # With a publisher parked, take only while this take leaves the queue
            # above the point where ``take`` would wake it.
            if not fifo.missing and (not fifo.publishers_waiting or len(queue) > fifo.wake_at + 1):
                self._unyielded += 1
                fifo.delivered += 1
                return queue.popleft()
        return None

    async def receive(self) -> Event:
        """Wait for the next event (an overflow ``Gap`` first if events were lost).

        A cancellation point and a schedule point when it waits, and at least
        every 64th event otherwise: queued events are handed out without a
        trip through trio's run loop, which costs about 4 µs (more than
        decoding an event), and without even a check for cancellation
        (0.2 µs, with the coroutine it needs), so a consumer that keeps up
        spends ~0.1 µs per event here. The price: a cancellation reaches a
        consumer that never waits within 64 events, not at once.
        Cancellation-safe: if it is cancelled, no event was taken. Raises
        :exc:`trio.EndOfChannel` once the fan-out is closed and everything
        queued has been received, and :exc:`trio.ClosedResourceError` if this
        receiver is closed (also when closed by another task while this one
        waits).
        """
        ready = self._take_queued()
        if ready is not None:
            return ready
        return await self._receive_checked()

    async def __anext__(self) -> Event:
        """``async for``: :meth:`receive`, ending at :exc:`trio.EndOfChannel`.

        Its own fast path rather than ``await self.receive()``: one coroutine
        per event instead of two.
        """
        ready = self._take_queued()
        if ready is not None:
            return ready
        try:
            return await self._receive_checked()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    async def _receive_checked(self) -> Event:
        """:meth:`receive`'s general path: checkpoints, waits, announcements."""
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            ready: Event | None = self.receive_nowait()
        except trio.WouldBlock:
            ready = None
        if ready is not None:
            # Queued events are handed out without a trip through the scheduler,
            # but at least every _SCHEDULE_EVERY events we yield, so a consumer
            # that never waits still lets the publisher and everyone else run.
            self._unyielded += 1
            if self._unyielded >= _SCHEDULE_EVERY:
                self._unyielded = 0
                await trio.lowlevel.cancel_shielded_checkpoint()
            return ready
        buffer = self._buffer
        while True:
            buffer.receivers_waiting += 1
            try:
                await buffer.readable.park()
            finally:
                buffer.receivers_waiting -= 1
            self._unyielded = 0  # it just went through the scheduler
            try:
                return self.receive_nowait()
            except trio.WouldBlock:
                continue

    def close(self) -> None:
        """Unregister from the fan-out and discard what is queued. Idempotent; not a checkpoint.

        Tasks waiting in :meth:`receive` get :exc:`trio.ClosedResourceError`;
        publishers waiting for this consumer's room stop waiting for it.
        """
        if self._closed:
            return
        self._closed = True
        self._published_end = self._fanout._published
        self._fanout._unregister(self)
        buffer = self._buffer
        buffer.clear()
        buffer.missing = 0
        buffer.readable.unpark_all()
        buffer.space.unpark_all()

    async def aclose(self) -> None:
        """:meth:`close`, then a checkpoint."""
        self.close()
        await trio.lowlevel.checkpoint()

    def statistics(self) -> ConsumerStatistics:
        """This consumer's counters now (see :class:`ConsumerStatistics`)."""
        buffer = self._buffer
        end = self._fanout._published if self._published_end is None else self._published_end
        oldest = buffer.oldest_ts_recv()
        return ConsumerStatistics(
            name=self._name,
            policy=self._policy,
            capacity=buffer.capacity,
            published=end - self._published_base,
            queued=len(buffer),
            max_queued=buffer.max_queued,
            delivered=buffer.delivered,
            dropped=buffer.dropped,
            conflated=buffer.conflated,
            gaps=buffer.gaps,
            unannounced=buffer.missing,
            lag_ns=0 if oldest is None else max(0, buffer.clock() - oldest),
            closed=self._closed,
        )

    def _end(self) -> None:
        """The fan-out closed: drain, then :exc:`trio.EndOfChannel`."""
        self._ended = True
        self._buffer.readable.unpark_all()
        self._buffer.space.unpark_all()


class FanOut:
    """Deliver every published event to every registered consumer, each at its own pace.

    ``clock`` gives the time in integer ns since the epoch for overflow
    ``Gap`` timestamps and ``lag_ns`` (default :func:`time.time_ns`; inject
    one in tests).

    Several tasks may publish concurrently; each event is delivered to all
    consumers or (if its publish is cancelled while waiting) to none.
    """

    def __init__(self, *, clock: Callable[[], int] = time.time_ns) -> None:
        self._clock = clock
        self._receivers: dict[str, EventReceiver] = {}
        # Derived from _receivers on (un)registration, for the hot path.
        self._puts: list[Callable[[Event], None]] = []
        self._put_manys: list[Callable[[Sequence[Event]], None]] = []
        self._blocking: list[BlockBuffer] = []
        self._published = 0
        self._unconsumed = 0
        self._waiting = 0
        self._closed = False
        self._auto_names = 0

    def open_consumer(
        self,
        *,
        capacity: int = DEFAULT_CAPACITY,
        overflow: Overflow = "block",
        name: str | None = None,
        receiver_type: type[EventReceiver] | None = None,
    ) -> EventReceiver:
        """Register a consumer now and return its receive channel.

        It sees every event published from this call on (subject to its
        policy). ``name`` defaults to ``"consumer-<n>"`` and must be unique
        among registered consumers. Close the receiver when done (or use
        :meth:`consumer`): a forgotten "block" consumer stops the publisher
        once it is full. Not a checkpoint. ``receiver_type`` (a subclass of
        :class:`EventReceiver` that adds methods, not state the fan-out must
        know) is what to make instead of an :class:`EventReceiver`.

        Raises :exc:`~puffin_trio.errors.ConfigurationError` for a capacity
        that is not an integer >= 1, an unknown ``overflow`` or a bad or
        duplicate ``name``; :exc:`trio.ClosedResourceError` if the fan-out is
        closed.
        """
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ConfigurationError(
                f"capacity must be an integer >= 1 (the most events a consumer may have "
                f"queued; buffers are always bounded), got {capacity!r}"
            )
        buffer_type = _BUFFERS.get(overflow) if isinstance(overflow, str) else None
        if buffer_type is None:
            raise ConfigurationError(
                f"overflow must be one of {', '.join(map(repr, OVERFLOW_POLICIES))}, "
                f"got {overflow!r}"
            )
        if name is None:
            name = self._next_name()
        elif not isinstance(name, str) or not name:
            raise ConfigurationError(f"a consumer name must be a non-empty string, got {name!r}")
        elif name in self._receivers:
            raise ConfigurationError(
                f"a consumer named {name!r} is already registered; pick another name"
            )
        if self._closed:
            raise trio.ClosedResourceError("the fan-out is closed")
        buffer = buffer_type(capacity, self._clock)
        receiver = (receiver_type or EventReceiver)(self, name, overflow, buffer)
        self._receivers[name] = receiver
        self._rebuild()
        return receiver

    @asynccontextmanager
    async def consumer(
        self,
        *,
        capacity: int = DEFAULT_CAPACITY,
        overflow: Overflow = "block",
        name: str | None = None,
    ) -> AsyncIterator[EventReceiver]:
        """``async with fanout.consumer(...) as events:`` -- :meth:`open_consumer` on entry.

        Registration happens on entry, before any checkpoint, so nothing
        published after entering is missed; leaving the block closes the
        receiver (unregistering it). Arguments and errors as for
        :meth:`open_consumer`.
        """
        receiver = self.open_consumer(capacity=capacity, overflow=overflow, name=name)
        async with receiver:
            yield receiver

    def publish_nowait(self, event: Event) -> None:
        """Deliver ``event`` to every consumer now, or to none.

        Not a checkpoint. Raises :exc:`trio.WouldBlock` (delivering to no one)
        if a "block" consumer is full, :exc:`trio.ClosedResourceError` if the
        fan-out is closed.
        """
        if self._closed:
            raise trio.ClosedResourceError("the fan-out is closed")
        for buffer in self._blocking:
            if len(buffer.queue) >= buffer.capacity:
                raise trio.WouldBlock
        self._deliver(event)

    async def publish(self, event: Event) -> None:
        """Deliver ``event`` to every consumer, waiting while a "block" consumer is full.

        This is a checkpoint. If cancelled, the event was delivered to no
        one. Raises :exc:`trio.ClosedResourceError` if the fan-out is (or
        becomes, while waiting) closed.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        immediate = await self._wait_for_room()
        self._deliver(event)
        if immediate:
            await trio.lowlevel.cancel_shielded_checkpoint()

    async def publish_batch(self, events: Sequence[Event]) -> None:
        """Deliver ``events`` in order, with one checkpoint for the whole batch.

        Waits only while a "block" consumer is full; until then, each consumer
        receives the batch (or the part that fits) in one call. Each event is
        delivered to every consumer or to none: if cancelled while waiting,
        the events before the first undelivered one were delivered, the rest
        were not. Raises :exc:`trio.ClosedResourceError` as :meth:`publish`
        does.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._closed:
            raise trio.ClosedResourceError("the fan-out is closed")
        immediate = True
        start, total = 0, len(events)
        while start < total:
            stop = total
            for buffer in self._blocking:
                stop = min(stop, start + buffer.capacity - len(buffer.queue))
            if stop == start:
                await self._wait_for_room()
                immediate = False
                continue
            chunk = events if stop - start == total else events[start:stop]
            self._published += len(chunk)
            if not self._put_manys:
                self._unconsumed += len(chunk)
            for put_many in self._put_manys:
                put_many(chunk)
            start = stop
        if immediate:
            await trio.lowlevel.cancel_shielded_checkpoint()

    async def _wait_for_room(self) -> bool:
        """Wait until no "block" consumer is full; True if it did not have to wait.

        Not a checkpoint when there is room.
        """
        immediate = True
        while True:
            if self._closed:
                raise trio.ClosedResourceError("the fan-out is closed")
            for buffer in self._blocking:
                if len(buffer.queue) >= buffer.capacity:
                    break
            else:
                return immediate
            immediate = False
            self._waiting += 1
            buffer.publishers_waiting += 1
            try:
                await buffer.space.park()
            finally:
                buffer.publishers_waiting -= 1
                self._waiting -= 1

    def _deliver(self, event: Event) -> None:
        self._published += 1
        puts = self._puts
        if not puts:
            self._unconsumed += 1
            return
        for put in puts:
            put(event)

    def close(self) -> None:
        """End every consumer's channel; they drain what is queued, then get EndOfChannel.

        Idempotent; not a checkpoint. Publishing afterwards, and publishers
        waiting now, raise :exc:`trio.ClosedResourceError`.
        """
        if self._closed:
            return
        self._closed = True
        for receiver in self._receivers.values():
            receiver._end()

    def statistics(self) -> FanOutStatistics:
        """The fan-out's counters now, with each registered consumer's."""
        return FanOutStatistics(
            published=self._published,
            unconsumed=self._unconsumed,
            publishers_waiting=self._waiting,
            closed=self._closed,
            consumers={name: r.statistics() for name, r in self._receivers.items()},
        )

    def _unregister(self, receiver: EventReceiver) -> None:
        if self._receivers.get(receiver.name) is receiver:
            del self._receivers[receiver.name]
            self._rebuild()

    def _rebuild(self) -> None:
        buffers = [r._buffer for r in self._receivers.values()]
        self._puts = [b.put for b in buffers]
        self._put_manys = [b.put_many for b in buffers]
        self._blocking = [b for b in buffers if isinstance(b, BlockBuffer)]

    def _next_name(self) -> str:
        while True:
            self._auto_names += 1
            name = f"consumer-{self._auto_names}"
            if name not in self._receivers:
                return name
