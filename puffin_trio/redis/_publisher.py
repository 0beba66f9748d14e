"""The publishing side: events from a channel into Redis Streams, through Redis outages.

This module owns :class:`RedisPublisher` and :func:`open_redis_publisher`: a
pump (``publish``, in the caller's task) drains a channel into a bounded
buffer, and a writer task writes what is buffered, up to :data:`MAX_BATCH`
events at a time, as one atomic transaction (:data:`._scripts.WRITE`: an entry
per stream it touches, then a clock entry). While Redis is unreachable the
feed keeps running: what does not fit the buffer is dropped, counted, and
announced in the stream, in place, once Redis answers again (the
distribution guide in the documentation has the details). It must not decode
frames or know providers; one publisher writes one prefix. The write goes
through the lean connection of :mod:`._pipe`, everything else through coredis.
"""

from __future__ import annotations

import itertools
import logging
import math
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Final

import attrs
import coredis
import coredis.exceptions as redis_errors
import trio

from puffin_trio.errors import ConfigurationError, RedisError
from puffin_trio.events import Event, Gap, GapReason, SessionState, Status
from puffin_trio.redis._connection import (
    CONNECTION_ERRORS,
    default_client_name,
    open_client,
    redact,
    tls_context,
    unwrap_group,
)
from puffin_trio.redis._encoding import encode_batch, getter_for
from puffin_trio.redis._layout import (
    CONTROL,
    CONTROL_TYPES,
    FAMILY_OF,
    LAYOUT_VERSION,
    SHARDS,
    Layout,
    check_layout,
    entry_id,
    parse_id,
    shard_of,
    subscribed_suffixes,
    suffix,
)
from puffin_trio.redis._pipe import Pipe, script_sha
from puffin_trio.redis._scripts import WRITE

__all__ = [
    "DEFAULT_BUFFER",
    "DEFAULT_MAXLEN",
    "PUBLISHER_PROVIDER",
    "RedisPublisher",
    "RedisPublisherStatistics",
    "open_redis_publisher",
]

logger = logging.getLogger("puffin_trio.redis.publisher")

#: Events kept in Redis (across all streams of a prefix): the last million.
#: At ~70 bytes of payload per event that is about 100 MB of Redis memory
#: (measured in the docs), minutes of a busy feed or hours of a quiet one.
DEFAULT_MAXLEN: Final = 1_000_000
#: Events the publisher holds while Redis is unreachable: 20 s of a
#: 5,000 events/s feed (a Redis restart takes 1-2 s), about 35 MB.
DEFAULT_BUFFER: Final = 100_000
#: Most events in one transaction. 4096 events are ~300 KB of payload: a
#: write of a few ms, small enough that Redis (single-threaded) never stalls
#: its readers for long, large enough that the fixed cost of a transaction
#: (~0.1 ms of client CPU, redis-server's own work on top) is negligible per event.
MAX_BATCH: Final = 4096
#: Under sustained load (a transaction of at least LINGER_AFTER events), the
#: writer waits LINGER seconds before building the next one, so that it carries
#: more events: a transaction costs ~0.1 ms of client CPU through the lean
#: connection (:mod:`._pipe`) whatever its size, so at 30 events per transaction
#: that is 3 µs per event, at 300 it is 0.3 µs. Below 256 events the command
#: costs under 0.4 µs per event, and such a transaction is typically the backlog
#: of a moment the process was descheduled: waiting then only lengthened the
#: latency tail (p99 at 5,000 events/s, measured against a threshold of 16).
#: A slow feed (a few events per transaction) is never held back: its latency
#: stays one round trip.
LINGER_AFTER: Final = 256
LINGER: Final = 0.001
#: A transaction of at most this many events also carries its entries in its
#: clock entry, so that a consumer that keeps up (waiting on the clock) reads it
#: with that one blocking command instead of two. It doubles Redis memory for a
#: slow stream (every transaction small), not for a fast one.
INLINE_EVENTS: Final = 64
#: Seconds to connect, and to wait for a transaction's reply. Redis answers
#: in well under a millisecond; 5 s is a stalled server, not a slow one.
CONNECT_TIMEOUT: Final = 5.0
WRITE_TIMEOUT: Final = 5.0
#: Reconnect backoff: 0.1 s doubling to 5 s, each delay scaled by [0.8, 1.0].
#: A Redis restart takes a second or two, and everything that arrives after
#: the buffer is full is lost until we are back, so retries stay frequent.
BACKOFF_INITIAL: Final = 0.1
BACKOFF_MAX: Final = 5.0
#: Seconds the block's exit waits to write what is still buffered.
CLOSE_TIMEOUT: Final = 5.0
#: ``provider`` of the publisher's own ``Status``/``Gap`` events.
PUBLISHER_PROVIDER: Final = "puffin"

_COUNTER: Final = {"metric": "counter"}
#: Transaction starts remembered per ``maxlen`` events (see ``_remember_start``).
_TRIM_SAMPLES: Final = 64


@attrs.frozen(kw_only=True)
class RedisPublisherStatistics:
    """A snapshot of a publisher's counters (see :meth:`RedisPublisher.statistics`).

    Every event received is published, lost or buffered; ``published`` and
    ``buffered`` also count the publisher's own announcements (its ``Status``
    and ``Gap`` events).
    """

    #: The server, without its password.
    server: str
    prefix: str
    #: Redis answered the last write (or nothing failed yet).
    connected: bool
    #: Events taken from the channel(s) into the buffer, or dropped (not one still
    #: waiting for room).
    received: int = attrs.field(metadata=_COUNTER)
    #: Events (including the publisher's own announcements) Redis acknowledged.
    published: int = attrs.field(metadata=_COUNTER)
    #: Events dropped because Redis was unreachable and the buffer full.
    lost: int = attrs.field(metadata=_COUNTER)
    #: Events waiting to be written (in flight included).
    buffered: int
    #: High-water mark of ``buffered``.
    max_buffered: int
    #: The most events the buffer holds before dropping (Redis down) or waiting (up).
    buffer_capacity: int
    #: Transactions, stream entries and payload bytes written.
    transactions: int = attrs.field(metadata=_COUNTER)
    entries: int = attrs.field(metadata=_COUNTER)
    bytes: int = attrs.field(metadata=_COUNTER)
    #: Times Redis became reachable again after an outage.
    reconnects: int = attrs.field(metadata=_COUNTER)
    #: Writes that failed (each starts or prolongs an outage).
    errors: int = attrs.field(metadata=_COUNTER)
    #: Seconds the last transaction took, from send to reply.
    write_seconds: float | None


class _Slot:
    """One stream's part of the transaction being built, and its event count so far."""

    __slots__ = ("flat", "index", "key", "n", "name")

    def __init__(self, name: str, key: str, n: int) -> None:
        self.name = name
        self.key = key
        #: How many events this stream holds before the entry being built.
        self.n = n
        self.flat: list[Any] = []
        self.index: list[int] = []


class _Tx:
    """A built transaction: retried unchanged (same ids) until Redis acknowledges it.

    ``keys`` and ``entries`` are the :data:`._scripts.WRITE` script's keys (the
    clock, then one stream per entry) and its per-entry arguments.
    """

    __slots__ = ("attempts", "clock", "counts", "entries", "events", "g_end", "keys", "size")

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.keys: list[str] = []
        self.entries: list[bytes] = []
        self.clock: list[bytes] = []
        self.counts: list[tuple[_Slot, int]] = []
        self.g_end = 0
        self.size = 0
        self.attempts = 0


class _Unreachable(Exception):
    """A write failed in a way that waiting may cure (carries the cause)."""


class RedisPublisher:
    """Writes events to Redis Streams under one prefix. Made by :func:`open_redis_publisher`."""

    def __init__(
        self,
        client: coredis.Redis[bytes],
        *,
        url: str,
        connect_timeout: float,
        layout: Layout,
        maxlen: int | None,
        capacity: int,
        write_timeout: float,
        wall_clock: Callable[[], int],
    ) -> None:
        self._client = client
        #: The write script goes through a lean connection of its own (see _pipe).
        self._pipe = Pipe(
            url,
            connect_timeout=connect_timeout,
            reply_timeout=write_timeout,
            client_name=default_client_name("publisher"),
            ssl_context=tls_context(client),
        )
        self._write_sha = script_sha(WRITE)
        self._server = redact(url)
        self._layout = layout
        self._maxlen = maxlen
        self._capacity = capacity
        self._write_timeout = write_timeout
        self._wall = wall_clock
        self._session = f"redis-publisher:{layout.prefix}"
        self._rng = random.Random()
        self._buffer: deque[Event] = deque()
        self._tx: _Tx | None = None
        self._epoch = 0
        self._g = 0
        self._slots: dict[str, _Slot] = {}
        #: Sampled transaction starts (global indices): where trimming may cut.
        self._starts: deque[int] = deque()
        #: (event class, symbol) -> (slot, tag, values_of): the routing cache.
        self._routes: dict[type, dict[str, tuple[_Slot, int, Callable[[Any], Any]]]] = {}
        self._connected = True
        self._writer_idle: trio.Event | None = None
        self._space = trio.lowlevel.ParkingLot()
        self._progress = trio.lowlevel.ParkingLot()
        self._lost_pending = 0
        self._lost_window = (0, 0)
        # counters
        self._received = 0
        self._published = 0
        self._lost = 0
        self._max_buffered = 0
        self._transactions = 0
        self._entries = 0
        self._bytes = 0
        self._reconnects = 0
        self._errors = 0
        self._write_seconds: float | None = None
        #: The writer task ended (a fatal error): nothing more will be written.
        self._stopped = False

    # ------------------------------------------------------------------ public

    @property
    def prefix(self) -> str:
        return self._layout.prefix

    async def publish(self, events: trio.abc.ReceiveChannel[Event]) -> None:
        """Publish every event from ``events`` until it ends, then wait until all are written.

        A checkpoint. While Redis is reachable and the buffer is full, this
        waits (backpressure); while it is unreachable, events that do not fit
        are dropped, counted, and announced in the stream once it is back.
        Returns when the channel has ended and everything taken from it has
        been written (it keeps waiting through an outage: cancel it to give
        up). Several channels may be published concurrently.
        """
        buffer = self._buffer
        capacity = self._capacity
        # What a channel has queued is taken without a scheduler trip per event
        # (~1-5 µs each, more than routing and encoding the event), when it can
        # say so: sup.events() and trio's memory channels can.
        receive_nowait: Callable[[], Event] | None = getattr(events, "receive_nowait", None)
        while True:
            try:
                event = await events.receive()
            except trio.EndOfChannel:
                break
            while True:
                tx = self._tx
                if len(buffer) + (len(tx.events) if tx is not None else 0) >= capacity:
                    taken = await self._make_room(event)
                else:
                    taken = True
                    if self._lost_pending:
                        self._announce_loss()
                if taken:
                    # Counted once it is ours (buffered here), not while it waits for room.
                    self._received += 1
                    buffer.append(event)
                    idle = self._writer_idle
                    if idle is not None:
                        self._writer_idle = None
                        idle.set()
                if receive_nowait is None:
                    break
                try:
                    event = receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
        if self._lost_pending:
            self._announce_loss()
        await self.flush()

    async def flush(self) -> None:
        """Wait until everything buffered so far has been written. A checkpoint."""
        await trio.lowlevel.checkpoint()
        while (self._buffer or self._tx is not None) and not self._stopped:
            await self._progress.park()

    def statistics(self) -> RedisPublisherStatistics:
        """Counters now; cheap, never blocks."""
        return RedisPublisherStatistics(
            server=self._server,
            prefix=self._layout.prefix,
            connected=self._connected,
            received=self._received,
            published=self._published,
            lost=self._lost,
            buffered=self._buffered(),
            max_buffered=self._max_buffered,
            buffer_capacity=self._capacity,
            transactions=self._transactions,
            entries=self._entries,
            bytes=self._bytes,
            reconnects=self._reconnects,
            errors=self._errors,
            write_seconds=self._write_seconds,
        )

    # ------------------------------------------------------------------ the pump's side

    def _buffered(self) -> int:
        tx = self._tx
        return len(self._buffer) + (len(tx.events) if tx is not None else 0)

    async def _make_room(self, event: Event) -> bool:
        """The buffer is full: wait while Redis is reachable; drop and count while it is not."""
        self._max_buffered = max(self._max_buffered, self._buffered())
        while self._buffered() >= self._capacity:
            if not self._connected:
                if not self._lost_pending:
                    self._lost_window = (event.ts_recv, event.ts_recv)
                else:
                    self._lost_window = (self._lost_window[0], event.ts_recv)
                self._lost_pending += 1
                self._lost += 1
                self._received += 1
                return False
            await self._space.park()
        if self._lost_pending:
            self._announce_loss()
        return True

    def _announce_loss(self) -> None:
        """Put the Gap for the events dropped so far right where they were dropped."""
        missing, self._lost_pending = self._lost_pending, 0
        first, last = self._lost_window
        now = self._wall()
        self._force(
            Gap(
                provider=PUBLISHER_PROVIDER,
                symbol="",
                ts_event=now,
                ts_recv=now,
                stream=self._session,
                reason=GapReason.OVERFLOW,
                missing=missing,
                window_start=first,
                window_end=last,
            )
        )

    def _status(self, state: SessionState, detail: str, attempt: int = 0) -> None:
        now = self._wall()
        self._force(
            Status(
                provider=PUBLISHER_PROVIDER,
                session=self._session,
                state=state,
                detail=detail,
                attempt=attempt,
                ts_event=now,
                ts_recv=now,
            )
        )

    def _force(self, event: Event) -> None:
        """Append an announcement even to a full buffer (one per outage: bounded)."""
        self._buffer.append(event)
        idle = self._writer_idle
        if idle is not None:
            self._writer_idle = None
            idle.set()

    # ------------------------------------------------------------------ the writer

    async def _writer(self) -> None:
        try:
            await self._write_forever()
        finally:
            self._pipe.close()
            self._stopped = True
            self._progress.unpark_all()

    async def _write_forever(self) -> None:
        while True:
            if self._tx is None:
                if not self._buffer:
                    self._progress.unpark_all()
                    idle = self._writer_idle = trio.Event()
                    await idle.wait()
                    continue
                self._tx = self._build()
            buffered = self._buffered()
            if buffered > self._max_buffered:
                self._max_buffered = buffered
            try:
                await self._execute(self._tx)
            except _Unreachable as exc:
                await self._outage(exc.__cause__ or exc)
                continue
            sent = len(self._tx.events)
            self._commit(self._tx)
            self._tx = None
            self._space.unpark_all()
            self._progress.unpark_all()
            if sent >= LINGER_AFTER and len(self._buffer) < MAX_BATCH:
                # Sustained load: let the next batch grow for a moment (see LINGER).
                await trio.sleep(LINGER)

    def _route(self, cls: type, symbol: str) -> tuple[_Slot, int, Callable[[Any], Any]]:
        """Where events of ``cls`` for ``symbol`` go (cached by the caller)."""
        name = CONTROL if cls in CONTROL_TYPES else suffix(FAMILY_OF[cls], shard_of(symbol))
        tag, values_of = getter_for(cls)
        return self._slots[name], tag, values_of

    def _build(self) -> _Tx:
        """Take up to MAX_BATCH buffered events and build their transaction."""
        buffer = self._buffer
        tx = _Tx()
        events = tx.events
        take = min(len(buffer), MAX_BATCH)
        popleft = buffer.popleft
        for _ in range(take):
            events.append(popleft())
        g = self._g
        routes = self._routes
        used: list[_Slot] = []
        for event in events:
            cls = type(event)
            by_symbol = routes.get(cls)
            if by_symbol is None:
                by_symbol = routes[cls] = {}
            route = by_symbol.get(event.symbol)
            if route is None:
                route = by_symbol[event.symbol] = self._route(cls, event.symbol)
            slot, tag, values_of = route
            index = slot.index
            if not index:
                used.append(slot)
            slot.flat.append(tag)
            slot.flat.append(values_of(event))
            index.append(g)
            g += 1
        epoch = self._epoch
        names: list[str] = []
        size = 0
        tx.keys.append(self._layout.clock)
        arguments = tx.entries
        for slot in used:
            index = slot.index
            count = len(index)
            first = index[0]
            if index[-1] - first == count - 1:
                deltas = b""
            else:
                deltas = encode_batch([b - a for a, b in itertools.pairwise(index)])
            payload = encode_batch(slot.flat)
            size += len(payload)
            tx.keys.append(slot.key)
            arguments += (entry_id(epoch, first), b"%d" % slot.n, b"%d" % count, deltas, payload)
            tx.counts.append((slot, slot.n + count))
            names.append(slot.name)
            slot.flat = []
            slot.index = []
        inline = b""
        if len(events) <= INLINE_EVENTS:
            records = arguments  # per entry: id, n, c, x, d
            inline = encode_batch(
                [[name, *records[i * 5 : i * 5 + 5]] for i, name in enumerate(names)]
            )
        tx.clock = [entry_id(epoch, self._g), b"%d" % g, " ".join(names).encode(), inline]
        tx.g_end = g
        tx.size = size
        self._remember_start(self._g)
        return tx

    def _threshold(self, g_end: int) -> bytes:
        """Where to trim (an entry id), keeping (at least) the last ``maxlen`` events; b"": not yet.

        The threshold is the start of a transaction, at or before
        ``g_end - maxlen``: whole transactions are kept. Streams are trimmed
        approximately (``MINID ~``: whole radix-tree nodes, cheap), so they keep
        at least everything from the threshold on; the clock is trimmed exactly
        (``MINID =``). So every transaction the clock names still has all its
        entries, and a consumer that finds the clock starting later than it
        expected knows exactly what it missed.
        """
        if self._maxlen is None:
            return b""
        starts = self._starts
        limit = g_end - self._maxlen
        while len(starts) > 1 and starts[1] <= limit:
            starts.popleft()
        if not starts or starts[0] > limit:
            return b""
        return entry_id(self._epoch, starts[0])

    def _remember_start(self, g: int) -> None:
        """Keep a transaction start as a possible trimming threshold, every ~maxlen/64 events.

        64 samples bound what is kept beyond ``maxlen`` to 1/64 of it (plus one
        transaction), in constant memory whatever the transaction sizes.
        """
        starts = self._starts
        if self._maxlen is not None and (
            not starts or g - starts[-1] >= max(1, self._maxlen // _TRIM_SAMPLES)
        ):
            starts.append(g)

    async def _execute(self, tx: _Tx) -> None:
        """Write ``tx`` (one atomic script); _Unreachable if waiting may help, RedisError if not."""
        tx.attempts += 1
        threshold = self._threshold(tx.g_end)
        retry = b"1" if tx.attempts > 1 else b"0"
        started = trio.current_time()
        try:
            await self._pipe.script(
                self._write_sha,
                WRITE,
                tx.keys,
                [*tx.clock, threshold, threshold, retry, *tx.entries],
            )
        except CONNECTION_ERRORS as exc:
            raise _Unreachable from exc
        except redis_errors.ResponseError as exc:
            text = str(exc)
            if "DUPLICATE" in text:
                raise RedisError(
                    f"another writer is using prefix {self._layout.prefix!r} on {self._server} "
                    f"(its stream ids are ahead of ours); one publisher per prefix"
                ) from None
            if "WRONGTYPE" in text:
                raise RedisError(
                    f"a key under prefix {self._layout.prefix!r} on {self._server} is not a "
                    f"stream; pick another prefix or delete the key"
                ) from None
            raise _Unreachable from exc
        self._write_seconds = trio.current_time() - started

    def _commit(self, tx: _Tx) -> None:
        for slot, n in tx.counts:
            slot.n = n
        self._g = tx.g_end
        self._published += len(tx.events)
        self._transactions += 1
        self._entries += len(tx.keys) - 1
        self._bytes += tx.size

    async def _outage(self, cause: BaseException) -> None:
        """Redis did not take a write: announce, back off and retry until it answers."""
        self._errors += 1
        self._connected = False
        down_at = trio.current_time()
        logger.warning(
            "Redis at %s unreachable (%s); buffering up to %d events",
            self._server,
            _short(cause),
            self._capacity,
        )
        self._status(
            SessionState.RECONNECTING,
            f"Redis unreachable ({_short(cause)}); buffering up to {self._capacity} events",
            attempt=self._reconnects + 1,
        )
        self._space.unpark_all()  # a pump waiting for room now drops instead
        attempt = 0
        while True:
            attempt += 1
            delay = min(BACKOFF_MAX, BACKOFF_INITIAL * 2 ** (attempt - 1))
            await trio.sleep(delay * (1.0 - 0.2 * self._rng.random()))
            try:
                with trio.fail_after(self._write_timeout):
                    await self._client.ping()
                    await self._write_layout()
            except (trio.TooSlowError, *CONNECTION_ERRORS, redis_errors.ResponseError) as exc:
                self._errors += 1
                logger.debug("Redis still unreachable (attempt %d): %s", attempt, _short(exc))
                continue
            break
        self._connected = True
        self._reconnects += 1
        lost = self._lost_pending
        if lost:
            self._announce_loss()
        outage = trio.current_time() - down_at
        logger.warning(
            "Redis at %s reachable again after %.1f s; %d events lost", self._server, outage, lost
        )
        self._status(
            SessionState.STREAMING,
            f"Redis reachable again after {outage:.1f} s; {lost} events lost",
            attempt=self._reconnects,
        )

    # ------------------------------------------------------------------ state in Redis

    async def _load(self) -> None:
        """Pick up where the last publisher of this prefix stopped (epoch, counts)."""
        layout = self._layout
        meta = await self._client.hgetall(layout.meta)
        if meta:
            self._epoch = check_layout(meta, layout, self._server)
        clock = await self._client.xrevrange(layout.clock, count=1)
        if clock:
            epoch, _ = parse_id(clock[0].identifier)
            if not meta:
                self._epoch = epoch
            if epoch == self._epoch:
                self._g = int(clock[0].field_values[b"e"])
                oldest = await self._client.xrange(layout.clock, count=1)
                if oldest and parse_id(oldest[0].identifier)[0] == epoch:
                    self._starts.append(parse_id(oldest[0].identifier)[1])
        if not self._epoch:
            self._epoch = max(1, self._wall() // 1_000_000)
        names = subscribed_suffixes(None, ("trades", "quotes", "books", "bars", "statuses"))
        async with self._client.pipeline(transaction=False) as pipe:
            lasts = [pipe.xrevrange(layout.key(name), count=1) for name in names]
        for name, request in zip(names, lasts, strict=True):
            last = await request
            n = 0
            if last:
                entry = last[0]
                epoch, _ = parse_id(entry.identifier)
                if epoch == self._epoch:
                    n = int(entry.field_values[b"n"]) + int(entry.field_values[b"c"])
            self._slots[name] = _Slot(name, layout.key(name), n)
        await self._write_layout()

    async def _write_layout(self) -> None:
        await self._client.hset(
            self._layout.meta,
            {
                b"version": b"%d" % LAYOUT_VERSION,
                b"shards": b"%d" % SHARDS,
                b"epoch": b"%d" % self._epoch,
            },
        )

    async def _close(self) -> None:
        """Announce the end and write what is left (the caller bounds the wait)."""
        if self._lost_pending:
            self._announce_loss()
        self._status(SessionState.CLOSED, "publisher stopped")
        await self.flush()


def _short(exc: BaseException) -> str:
    """A one-line, bounded description of an error (never a payload)."""
    text = f"{type(exc).__name__}: {exc}".splitlines()[0] if str(exc) else type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def _check_arguments(maxlen: int | None, buffer: int, write_timeout: float) -> None:
    if maxlen is not None and (isinstance(maxlen, bool) or not isinstance(maxlen, int)):
        raise ConfigurationError(f"maxlen must be an integer or None, got {maxlen!r}")
    if maxlen is not None and maxlen < 1:
        raise ConfigurationError(f"maxlen must be >= 1 (events kept), got {maxlen}")
    if isinstance(buffer, bool) or not isinstance(buffer, int) or buffer < 1:
        raise ConfigurationError(f"buffer must be an integer >= 1 (events), got {buffer!r}")
    if not (isinstance(write_timeout, int | float) and 0 < write_timeout < math.inf):
        raise ConfigurationError(f"write_timeout must be a positive number, got {write_timeout!r}")


@asynccontextmanager
async def open_redis_publisher(
    url: str,
    *,
    prefix: str = "puffin",
    maxlen: int | None = DEFAULT_MAXLEN,
    buffer: int = DEFAULT_BUFFER,
    connect_timeout: float = CONNECT_TIMEOUT,
    write_timeout: float = WRITE_TIMEOUT,
    wall_clock: Callable[[], int] = time.time_ns,
) -> AsyncIterator[RedisPublisher]:
    """Connect to Redis and yield a :class:`RedisPublisher` writing under ``prefix``.

    ``async with open_redis_publisher(url) as pub: await pub.publish(events)``.

    * ``maxlen``: about how many events the prefix keeps (the last ones,
      across all its streams; ``None``: never trim). Older entries are
      trimmed with ``XADD ... MINID ~``; a consumer that falls behind them
      gets a ``Gap(reason="overflow")`` with the exact count.
    * ``buffer``: events held while Redis is unreachable.

    Raises, before anything is published: :class:`ConfigurationError` for a
    malformed URL or argument, :class:`~puffin_trio.errors.RedisConnectionError`
    if Redis cannot be reached, :class:`~puffin_trio.errors.RedisAuthenticationError`
    if it refuses the password, :class:`~puffin_trio.errors.RedisError` if the
    prefix holds data this version cannot continue. Later outages are ridden
    out (see the module docstring); leaving the block writes a
    ``Status(closed)`` and what is still buffered (for at most
    :data:`CLOSE_TIMEOUT` s).
    """
    layout = Layout(prefix)
    _check_arguments(maxlen, buffer, write_timeout)
    with unwrap_group():
        async with open_client(
            url,
            connect_timeout=connect_timeout,
            stream_timeout=write_timeout,
            client_name=default_client_name("publisher"),
        ) as client:
            publisher = RedisPublisher(
                client,
                url=url,
                connect_timeout=connect_timeout,
                layout=layout,
                maxlen=maxlen,
                capacity=buffer,
                write_timeout=write_timeout,
                wall_clock=wall_clock,
            )
            try:
                await publisher._load()
            except redis_errors.WrongTypeError:
                raise RedisError(
                    f"a key under prefix {prefix!r} on {redact(url)} is not a stream; "
                    f"use another prefix or delete the key"
                ) from None
            except (*CONNECTION_ERRORS, redis_errors.RedisError) as exc:
                raise RedisError(f"cannot read the stream state on {redact(url)}: {exc}") from None
            publisher._status(SessionState.STREAMING, "publisher started")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(publisher._writer, name=f"redis-publisher:{prefix}")
                try:
                    yield publisher
                finally:
                    with trio.move_on_after(CLOSE_TIMEOUT) as scope:
                        scope.shield = True
                        await publisher._close()
                    if scope.cancelled_caught:
                        logger.warning(
                            "closing: %d events could not be written to Redis at %s",
                            publisher._buffered(),
                            publisher._server,
                        )
                    nursery.cancel_scope.cancel()
