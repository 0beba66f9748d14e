"""Fan-out of events to many consumers, each with a bounded buffer and an overflow policy.

This module owns :class:`FanOut`, the junction between the provider sessions'
readers (which call :meth:`FanOut.publish`, :meth:`FanOut.publish_batch` or
:meth:`FanOut.publish_nowait`) and user code (which iterates an
:class:`EventReceiver`, a :class:`trio.abc.ReceiveChannel` of events). Every
consumer has its own buffer of at most ``capacity`` entries and a declared
overflow policy that says what happens when that buffer is full.

It must not do I/O, decode frames, know about providers, spawn tasks or log
per event. It never drops an event silently: every loss is counted in
:meth:`FanOut.statistics` and announced to the consumer that suffered it.

Overflow policies
-----------------

``"block"`` (the default): the publisher waits until the consumer has room.
    Nothing is lost, and the consumer's pace becomes everyone's pace: a full
    "block" consumer stops the publisher, so every other consumer of the same
    :class:`FanOut` (whatever its policy) stops receiving too. Upstream, the
    wait travels all the way to the exchange, the way trio-websocket's
    ``docs/backpressure.rst`` describes for its own queue:

    1. The session's reader is parked in ``publish`` and stops asking the
       transport for frames.
    2. trio-websocket's message queue (``message_queue_size``: 1 message by
       default, 256 as :mod:`puffin_trio.transports.ws` sets it) fills; its
       background task then stops reading the socket, and so stops answering
       the server's pings. The pong our own heartbeat
       waits for is not read either, so a stall longer than the session's
       ``ping_timeout`` ends in a ``HeartbeatTimeout`` and a reconnect
       (announced by ``Status`` and ``Gap(reason="reconnect")`` events).
    3. The kernel's TCP receive buffer fills (Linux: 128 KiB at first,
       auto-tuned up to 6 MiB, so from a tenth of a second to a few seconds
       of a busy JSON feed at 1-2 MB/s), the advertised window drops to zero,
       and the server's send buffer fills.
    4. The server gives up on the client: Alpaca sends ``407 slow client``
       (which "may not arrive" before it disconnects); Polygon/Massive closes
       the connection (users see ``1011 keepalive ping timeout`` or an abrupt
       close, sometimes after a ``slow_consumer`` status).

    So "block" is right for a consumer that must see everything and is
    reliably faster than the feed on average (a recorder writing to local
    disk); a consumer that stalls for seconds will get the session
    disconnected. That is the user's declared choice.

``"drop_oldest"``: publishing never waits for this consumer. When its buffer
    is full, the oldest queued event is discarded to make room for the new
    one. Use it for consumers that want recent data and can live with holes
    (a live display).

``"conflate"``: publishing never waits for this consumer. ``Quote`` events
    are key-addressed slots: a newer quote for the same ``(provider, symbol)``
    replaces the pending one (counted as *conflated*, which is not a loss). An
    ``OrderBookUpdate`` is merged into the pending update for its ``(provider,
    symbol)``: later levels win per price, a snapshot replaces everything
    before it, and a delta after a snapshot is applied to that snapshot, so
    the merged update applied to a book gives the same book as applying each
    update in turn. (The merged update carries the latest update's
    timestamps and ``seq``; its levels are not re-sorted.) All other events
    (``Trade``, ``Bar``, ``Status``, ``Gap``, ...) are never conflated and
    keep their order. When a new entry needs room in a full buffer, the
    oldest non-conflatable event is dropped (counting the incoming event, so
    a trade arriving at a buffer that holds only quote/book slots is itself
    dropped); only when a *new* quote/book slot arrives at a buffer that
    holds nothing but slots is the oldest slot dropped. Use it for consumers
    that track state (top of book, order books) and must not fall behind.

    Book updates that carry ``seq`` are merged so that a book following
    :class:`~puffin_trio.book.OrderBook`'s rules ends in the same state from
    the merged stream as from every update, whether it is live or still
    buffering deltas for a snapshot. That takes two more rules. A delta whose
    ``seq`` is not above the pending update's is ignored, as a live book
    ignores a stale delta (one in flight when a newer snapshot was taken). A
    snapshot older than an update already published for its book (a REST
    snapshot that lags the stream) is queued on its own and merged with
    nothing before or after it: a book that is waiting for it replays its
    buffered newer deltas onto it, and merging would hide them. This assumes
    deltas reach the fan-out in ``seq`` order (the ``SequenceGuard``'s job)
    and that a snapshot is the book's state at its ``seq``. Barriers (below)
    reset the per-book ``seq`` memory, since a new connection may restart
    the numbering.

Ordering and announcements
--------------------------

Within one consumer, events come out in the order they were published, with
two documented exceptions under ``"conflate"``:

* A pending quote/book slot keeps the queue position of its *first* pending
  (undelivered) occurrence and carries the latest value, so a quote can
  overtake trades published between its first occurrence and its latest one.
* ``Status``, ``Gap`` and ``TradingStatus`` events are barriers: a quote or
  book update published after one of them never merges into a slot queued
  before it (it opens a new slot), so a consumer never sees post-reconnect or
  post-halt state ahead of the event that announced the reconnect or halt.

When a consumer has lost events (``"drop_oldest"``, or a ``"conflate"``
overflow), the next thing it receives, before any further event, is one
``Gap(reason=GapReason.OVERFLOW, stream=<consumer name>, missing=<events
dropped since the last announcement>, provider="puffin", symbol="")`` whose
``ts_event`` and ``ts_recv`` are the time of the first of those drops (from the
:class:`FanOut`'s clock). Dropped events are the oldest queued ones (or, under
"conflate", the incoming event in the case above), so the announcement comes
where the loss was or before it, never after. It is not counted in the
capacity (it is one pending counter, not a queued event).

Memory
------

A consumer's buffer never holds more than ``capacity`` entries: queued events
plus quote/book slots. A typical ``Trade`` is about 350 bytes with its numbers
and strings, so the default 1024 entries is about 0.35 MiB per consumer. A
merged book slot holds one level per distinct price touched since the consumer
last took that symbol's book (deletions included, since the consumer's book may
still hold those levels), so its size is bounded by the book's price range, not
by ``capacity``; "conflate" also remembers one ``seq`` per book since the last
barrier.

Speed
-----

Delivering an event costs O(1) per consumer and allocates nothing for
``"block"`` and ``"drop_oldest"`` (a conflated quote/book costs a small key and
slot). :meth:`FanOut.publish` is one checkpoint per event, like
:meth:`trio.MemorySendChannel.send`; :meth:`FanOut.publish_batch` is one
checkpoint per batch, so a reader that decodes a frame into N events pays one
scheduler round-trip, not N, unless a "block" consumer is full. A publisher
parked on a full "block" consumer is woken once that consumer is down to half
its capacity, so the two hand over batches, not single events.
:meth:`EventReceiver.receive` (and ``async for``) hands out queued events
without a scheduler round-trip or even a cancellation check, checkpointing at
least every 64 events: ~0.1 µs per event for a consumer that keeps up. So a
cancellation reaches a consumer that never has to wait within 64 events (a
few hundred µs of work), not on the very next call; a call that raises
``Cancelled`` has taken nothing.
"""

from __future__ import annotations

import abc
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Final, Literal, get_args

import attrs
import trio

from puffin_trio.errors import ConfigurationError
from puffin_trio.events import (
    Event,
    Gap,
    GapReason,
    OrderBookUpdate,
    Quote,
    Status,
    TradingStatus,
)

__all__ = [
    "DEFAULT_CAPACITY",
    "OVERFLOW_POLICIES",
    "ConsumerStatistics",
    "EventReceiver",
    "FanOut",
    "FanOutStatistics",
    "Overflow",
]

#: What a consumer's buffer does when it is full (see the module docstring).
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

#: Events that a later quote/book update must never overtake under "conflate".
_BARRIERS: Final = (Status, Gap, TradingStatus)

_Key = tuple[str, str]  # (provider, symbol)


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


class _Buffer(abc.ABC):
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


class _FifoBuffer(_Buffer):
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


class _BlockBuffer(_FifoBuffer):
    """The "block" policy: the publisher waits for room before calling ``put`` (see ``FanOut``)."""

    __slots__ = ()

    def put(self, event: Event) -> None:
        self.queue.append(event)
        self._queued(1)

    def put_many(self, events: Sequence[Event]) -> None:
        self.queue.extend(events)
        self._queued(len(events))


class _DropOldestBuffer(_FifoBuffer):
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


class _QuoteSlot:
    """The latest pending ``Quote`` for one ``(provider, symbol)``.

    ``after`` is how many non-conflatable events were queued before the slot
    was opened: the slot's place in the queue.
    """

    __slots__ = ("after", "key", "latest", "since")

    def __init__(self, key: _Key, after: int, quote: Quote) -> None:
        self.key = key
        self.after = after
        self.since = quote.ts_recv
        self.latest = quote

    def event(self) -> Quote:
        return self.latest


class _BookSlot:
    """The merge of the pending ``OrderBookUpdate`` events for one ``(provider, symbol)``.

    While only one update is pending it is kept as is (``bids is None``); the
    first merge turns it into per-price dicts, so each further merge costs
    O(levels in the new update), not O(levels pending). ``after`` as for
    :class:`_QuoteSlot`.
    """

    __slots__ = ("after", "asks", "bids", "key", "latest", "since", "snapshot")

    def __init__(self, key: _Key, after: int, update: OrderBookUpdate) -> None:
        self.key = key
        self.after = after
        self.since = update.ts_recv
        self.latest = update
        self.snapshot = update.snapshot
        self.bids: dict[float, float] | None = None
        self.asks: dict[float, float] | None = None

    def merge(self, update: OrderBookUpdate) -> None:
        """Merge ``update`` so that applying :meth:`event` equals applying both in turn.

        A delta whose ``seq`` is not above the pending one's is ignored, as a
        book ignores a stale delta. (Lagging snapshots never get here.)
        """
        latest_seq = self.latest.seq
        if (
            not update.snapshot
            and update.seq is not None
            and latest_seq is not None
            and update.seq <= latest_seq
        ):
            return
        if update.snapshot:
            self.latest = update
            self.snapshot = True
            self.bids = self.asks = None
            return
        bids, asks = self.bids, self.asks
        if bids is None or asks is None:
            base = self.latest
            if base.snapshot:
                bids, asks = {}, {}
                _apply_levels(bids, base.bids)
                _apply_levels(asks, base.asks)
            else:
                bids, asks = dict(base.bids), dict(base.asks)
            self.bids, self.asks = bids, asks
        if self.snapshot:
            _apply_levels(bids, update.bids)
            _apply_levels(asks, update.asks)
        else:
            bids.update(update.bids)
            asks.update(update.asks)
        self.latest = update

    def event(self) -> OrderBookUpdate:
        latest = self.latest
        if self.bids is None or self.asks is None:
            return latest
        return OrderBookUpdate(
            provider=latest.provider,
            symbol=latest.symbol,
            ts_event=latest.ts_event,
            ts_recv=latest.ts_recv,
            bids=tuple(self.bids.items()),
            asks=tuple(self.asks.items()),
            snapshot=self.snapshot,
            seq=latest.seq,
        )


def _apply_levels(book: dict[float, float], levels: tuple[tuple[float, float], ...]) -> None:
    """Apply ``(price, size)`` levels to a one-sided book: size 0 deletes the level."""
    for price, size in levels:
        if size == 0:
            book.pop(price, None)
        else:
            book[price] = size


class _ConflatingBuffer(_Buffer):
    """The "conflate" policy: quote/book slots plus a FIFO of everything else.

    Entries leave each of the two FIFOs in order (a receive takes the older
    head, an eviction takes the head of one of them). Numbering the
    non-conflatable events (``plain_in`` counts those ever queued,
    ``plain_out`` those that left) and stamping each slot with ``plain_in`` at
    its opening is enough to interleave them, without a per-event allocation.
    """

    __slots__ = ("book_seq", "books", "plain", "plain_in", "plain_out", "quotes", "slots")

    def __init__(self, capacity: int, clock: Callable[[], int]) -> None:
        super().__init__(capacity, clock)
        self.plain: deque[Event] = deque()
        self.plain_in = 0
        self.plain_out = 0
        self.slots: deque[_QuoteSlot | _BookSlot] = deque()
        #: The open (mergeable) slots; a barrier event closes them all.
        self.quotes: dict[_Key, _QuoteSlot] = {}
        self.books: dict[_Key, _BookSlot] = {}
        #: The highest ``seq`` published per book since the last barrier.
        self.book_seq: dict[_Key, int] = {}

    def put(self, event: Event) -> None:
        if isinstance(event, Quote):
            key = (event.provider, event.symbol)
            quote_slot = self.quotes.get(key)
            if quote_slot is not None:
                quote_slot.latest = event
                self.conflated += 1
                return
            self._make_room_for_slot()
            quote_slot = _QuoteSlot(key, self.plain_in, event)
            self.quotes[key] = quote_slot
            self.slots.append(quote_slot)
        elif isinstance(event, OrderBookUpdate):
            key = (event.provider, event.symbol)
            if self._lagging(key, event):
                # Merged with nothing, before or after it (see the module docstring).
                self.books.pop(key, None)
                self._make_room_for_slot()
                self.slots.append(_BookSlot(key, self.plain_in, event))
            else:
                book_slot = self.books.get(key)
                if book_slot is not None:
                    book_slot.merge(event)
                    self.conflated += 1
                    return
                self._make_room_for_slot()
                book_slot = _BookSlot(key, self.plain_in, event)
                self.books[key] = book_slot
                self.slots.append(book_slot)
        else:
            if isinstance(event, _BARRIERS) and (self.quotes or self.books or self.book_seq):
                self.quotes.clear()
                self.books.clear()
                self.book_seq.clear()
            if len(self.plain) + len(self.slots) >= self.capacity:
                self.lose()
                if not self.plain:
                    return  # only slots queued: the incoming event is the oldest plain one
                self.plain.popleft()
                self.plain_out += 1
            self.plain.append(event)
            self.plain_in += 1
        queued = len(self.plain) + len(self.slots)
        if queued > self.max_queued:
            self.max_queued = queued
        if self.receivers_waiting:
            self.readable.unpark()

    def put_many(self, events: Sequence[Event]) -> None:
        put = self.put
        for event in events:
            put(event)

    def _lagging(self, key: _Key, update: OrderBookUpdate) -> bool:
        """Track each book's highest ``seq``; True for a snapshot older than that."""
        seq = update.seq
        if seq is None:
            return False
        highest = self.book_seq.get(key)
        if highest is None or seq > highest:
            self.book_seq[key] = seq
            return False
        return update.snapshot and seq < highest

    def _make_room_for_slot(self) -> None:
        if len(self.plain) + len(self.slots) < self.capacity:
            return
        self.lose()
        if self.plain:
            self.plain.popleft()
            self.plain_out += 1
        else:
            self._forget(self.slots.popleft())

    def _forget(self, slot: _QuoteSlot | _BookSlot) -> None:
        """Close ``slot`` if it is still open (a barrier may have closed it already)."""
        if isinstance(slot, _QuoteSlot):
            if self.quotes.get(slot.key) is slot:
                del self.quotes[slot.key]
        elif self.books.get(slot.key) is slot:
            del self.books[slot.key]

    def _plain_first(self) -> bool:
        """Is the oldest entry a non-conflatable event? (False when there are none.)"""
        return bool(self.plain) and (not self.slots or self.plain_out < self.slots[0].after)

    def take(self) -> Event | None:
        event: Event
        if self._plain_first():
            event = self.plain.popleft()
            self.plain_out += 1
        elif self.slots:
            slot = self.slots.popleft()
            self._forget(slot)
            event = slot.event()
        else:
            return None
        self.delivered += 1
        return event

    def __len__(self) -> int:
        return len(self.plain) + len(self.slots)

    def oldest_ts_recv(self) -> int | None:
        if self._plain_first():
            return self.plain[0].ts_recv
        return self.slots[0].since if self.slots else None

    def clear(self) -> None:
        self.plain.clear()
        self.slots.clear()
        self.quotes.clear()
        self.books.clear()
        self.book_seq.clear()


_BUFFERS: Final[Mapping[Overflow, type[_BlockBuffer | _DropOldestBuffer | _ConflatingBuffer]]] = {
    "block": _BlockBuffer,
    "drop_oldest": _DropOldestBuffer,
    "conflate": _ConflatingBuffer,
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

    def __init__(self, fanout: FanOut, name: str, policy: Overflow, buffer: _Buffer) -> None:
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
        self._fifo = buffer if isinstance(buffer, _FifoBuffer) else None

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
        self._blocking: list[_BlockBuffer] = []
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
        self._blocking = [b for b in buffers if isinstance(b, _BlockBuffer)]

    def _next_name(self) -> str:
        while True:
            self._auto_names += 1
            name = f"consumer-{self._auto_names}"
            if name not in self._receivers:
                return name
