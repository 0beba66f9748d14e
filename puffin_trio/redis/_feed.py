"""The consuming side: Redis Streams back into a channel shaped like ``sup.events()``.

This module owns :func:`open_redis_feed` and :class:`RedisFeed`, the channel it
yields: a :class:`~puffin_trio.channels.EventReceiver` of a private
:class:`~puffin_trio.channels.FanOut`, so it behaves exactly as an in-process
consumer does (``receive()``, ``async for``, capacity, overflow policies,
``statistics()``), plus :meth:`RedisFeed.position`.

A reader task fills the fan-out, one *round* at a time:

1. Read the next publish transactions from the clock stream (blocking there,
   on one key, when there is nothing new). Each names the streams it wrote,
   and the last one read is the *horizon*: every stream is complete up to it.
2. Read the streams this consumer subscribes to that changed, in one
   ``XREAD``, from the end of the previous round.
3. Decode, skip what was already delivered, announce what is missing, and
   merge the events of all streams back into publish order by their global
   index (the publisher numbers every event); publish them to the fan-out.

Each stream entry carries the stream's running event count, so a consumer
knows exactly how many events it did not get when entries were trimmed away
or lost in a Redis restart: it announces ``Gap(reason="overflow")`` (trimmed)
or ``Gap(reason="reconnect")`` (lost while it was reconnecting) with that
count, where the loss is. A position is the index of the oldest transaction
not wholly consumed plus these counts per stream, so resuming from it
re-reads that transaction and skips, stream by stream, what was delivered:
no loss, no duplicate.

With ``group=``, the members of a consumer group share the work instead
(``XREADGROUP``), at least once: entries are acknowledged once the consumer
has taken their last event and asked for the next, and entries a member left
pending for ``claim_idle`` seconds are claimed by the others (``XAUTOCLAIM``)
and counted. Detection of entries trimmed before the group read them is kept
in Redis, per group, by the same Lua script that reads, so it is exact across
members.

It must not write to streams (only to its group's bookkeeping) or know providers.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import random
import socket
import time
from collections import deque
from collections.abc import (
    AsyncIterator,
    Callable,
    Collection,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import asynccontextmanager
from typing import Any, Final, Literal, cast

import attrs
import coredis
import coredis.exceptions as redis_errors
import msgpack
import trio
from coredis.response.types import StreamEntry

from puffin_trio.channels import ConsumerStatistics, EventReceiver, FanOut, Overflow
from puffin_trio.errors import CodecError, ConfigurationError, RedisError
from puffin_trio.events import Event, Gap, GapReason, Status
from puffin_trio.histogram import HistogramSnapshot, LagHistogram
from puffin_trio.redis._connection import (
    CONNECTION_ERRORS,
    open_client,
    redact,
    unwrap_group,
)
from puffin_trio.redis._encoding import FIELD_INDEX, TAGS, decode_batch
from puffin_trio.redis._layout import (
    FAMILIES,
    LAYOUT_VERSION,
    SHARDS,
    Layout,
    Position,
    id_before,
    parse_id,
    shard_of,
    subscribed_suffixes,
)
from puffin_trio.redis._publisher import PUBLISHER_PROVIDER
from puffin_trio.redis._scripts import COUNTS_AT, ENSURE_GROUP, READ_GROUP, READ_ROUND

__all__ = ["RedisFeed", "RedisFeedStatistics", "open_redis_feed"]

logger = logging.getLogger("puffin_trio.redis.feed")

#: Publish transactions read per round, at most; and events per round, at most
#: (whole transactions, at least one). A round costs one command (~0.3 ms of
#: client CPU with coredis), so 16,384 events make it 0.02 µs per event, while
#: a round's events, held at once, stay a few MB: rounds of a million events
#: (a consumer catching up) made Python's garbage collector walk them all,
#: doubling the cost per event.
CLOCK_BATCH: Final = 256
ROUND_EVENTS: Final = 16_384
#: Milliseconds a read waits on the clock stream for new data before asking
#: again. Cancellation interrupts the wait at once (coredis drops the
#: connection), so this only bounds how long a silently dead connection goes
#: unnoticed between the server's answers.
BLOCK_MS: Final = 1000
#: Seconds for connecting, and for a reply beyond the blocking wait: Redis
#: answers in well under a millisecond, so 5 s is a stalled server.
CONNECT_TIMEOUT: Final = 5.0
READ_TIMEOUT: Final = 5.0
#: Reconnect backoff, as the publisher's: 0.1 s doubling to 5 s, jittered.
BACKOFF_INITIAL: Final = 0.1
BACKOFF_MAX: Final = 5.0
#: Default seconds an entry may stay pending with a group member before the
#: others claim it: longer than any ordinary processing pause (a GC, a slow
#: batch), short enough that a dead member's work resumes within a minute.
CLAIM_IDLE: Final = 30.0
#: Seconds between acknowledgements of a group member's finished entries:
#: what a crash may deliver twice, at most.
ACK_INTERVAL: Final = 0.1
#: Entries claimed per XAUTOCLAIM call.
CLAIM_BATCH: Final = 256
#: Undecodable entries are logged individually up to this many, then every
#: 1000th (all are counted).
_LOG_FIRST_BAD = 10
_SAMPLE = 120

Start = Literal["latest", "earliest"] | str


@attrs.frozen(kw_only=True)
class RedisFeedStatistics:
    """A snapshot of a feed's counters (see :meth:`RedisFeed.feed_statistics`)."""

    server: str
    prefix: str
    #: The consumer group and member name (``None`` without ``group=``).
    group: str | None
    consumer: str | None
    #: The last read succeeded.
    connected: bool
    #: Rounds that brought entries; stream entries and their payload bytes read.
    rounds: int = attrs.field(metadata={"metric": "counter"})
    entries: int = attrs.field(metadata={"metric": "counter"})
    bytes: int = attrs.field(metadata={"metric": "counter"})
    #: Events handed to the channel (announcements included) and left out by the filters.
    events: int = attrs.field(metadata={"metric": "counter"})
    filtered: int = attrs.field(metadata={"metric": "counter"})
    #: Events skipped because an earlier read (or the resumed position) delivered them.
    duplicates: int = attrs.field(metadata={"metric": "counter"})
    #: Entries that did not decode (counted, logged truncated, announced).
    undecodable: int = attrs.field(metadata={"metric": "counter"})
    #: Gaps announced, and the events they say are missing.
    gaps: int = attrs.field(metadata={"metric": "counter"})
    missing: int = attrs.field(metadata={"metric": "counter"})
    #: The stream was started over (a new epoch: Redis lost everything and a
    #: new publisher began); what was lost then is unknown.
    resets: int = attrs.field(metadata={"metric": "counter"})
    reconnects: int = attrs.field(metadata={"metric": "counter"})
    #: Group members: entries and events claimed from others, entries acknowledged,
    #: pending entries trimmed before anyone processed them.
    reclaimed: int = attrs.field(metadata={"metric": "counter"})
    reclaimed_events: int = attrs.field(metadata={"metric": "counter"})
    acked: int = attrs.field(metadata={"metric": "counter"})
    lost_pending: int = attrs.field(metadata={"metric": "counter"})
    #: ``now - ts_recv`` of the last event of each round: provider to this consumer.
    lag: HistogramSnapshot
    #: The channel's own counters (queue depth, drops under "drop_oldest", ...).
    channel: ConsumerStatistics


class RedisFeed(EventReceiver):
    """The channel :func:`open_redis_feed` yields: an :class:`EventReceiver` with a position.

    Everything about receiving is the in-process channel's (see
    :class:`~puffin_trio.channels.EventReceiver`); the reader behind it is
    described in :mod:`puffin_trio.redis`.
    """

    _reader: _Reader

    def position(self) -> str:
        """Where this consumer stands, as text to pass back as ``start=``. Not a checkpoint.

        It counts what was *received* (taken from this channel), not what was
        read ahead into its buffer, so a consumer that saves it after each
        event and is killed resumes with no loss and no duplicate. Under
        ``overflow="drop_oldest"`` dropped events count as received (their
        ``Gap`` was); under ``"conflate"`` an update merged into a pending
        slot counts as received once a later one is queued, so a resume may
        skip book deltas merged into an undelivered slot: use "block" or
        "drop_oldest" where resuming must be exact.

        Raises :class:`~puffin_trio.errors.ConfigurationError` for a member of
        a consumer group, whose position Redis keeps for the group.
        """
        return self._reader.position()

    def feed_statistics(self) -> RedisFeedStatistics:
        """The Redis side's counters and the channel's; cheap, never blocks."""
        return self._reader.statistics(self.statistics())

    def _consumed(self) -> int:
        """Events that left this channel's buffer (taken, or dropped by the policy)."""
        return self._fanout.statistics().published - len(self._buffer)

    def _waiting(self) -> bool:
        """The consumer is parked in receive() on an empty buffer: it finished the last event."""
        return self._buffer.receivers_waiting > 0 and not len(self._buffer)


# --------------------------------------------------------------------------- reading


class _Entry:
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


def txs_events(clock: Sequence[Any]) -> int:
    """How many events the clock entries of a round cover."""
    first = parse_id(clock[0][0])[1]
    last = dict(_pairs(clock[-1][1]))
    return int(last[b"e"]) - first


def _pairs(flat: Sequence[Any]) -> Iterator[tuple[Any, Any]]:
    """``[a, 1, b, 2]`` -> ``(a, 1), (b, 2)``: a script's flat reply."""
    items = iter(flat)
    return zip(items, items, strict=True)


def _fields(entry: StreamEntry) -> Mapping[bytes, bytes]:
    """An entry's fields (bytes: the client does not decode responses)."""
    return cast(Mapping[bytes, bytes], entry.field_values)


def _ident(entry: StreamEntry) -> bytes:
    return cast(bytes, entry.identifier)


#: An announcement the reader makes: (stream name or "", the stream's count before it).
_Note = tuple[Gap, str, int | None]


class _Round:
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
        self.notes: dict[int, list[_Note]] = {}
        self.entries: list[_Entry] = []
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


class _Reader:
    """The reader task's state: cursors, counts, and what the channel holds."""

    def __init__(
        self,
        client: coredis.Redis[bytes],
        *,
        url: str,
        layout: Layout,
        names: list[str],
        families: Sequence[str],
        shards: str,
        providers: frozenset[str] | None,
        symbols: frozenset[str] | None,
        fanout: FanOut,
        receiver: RedisFeed,
        group: str | None,
        consumer: str | None,
        claim_idle: float,
        wall_clock: Callable[[], int],
    ) -> None:
        self.client = client
        self.server = redact(url)
        self.layout = layout
        self.names = names
        self.keys = {name: layout.key(name) for name in names}
        self.name_of = {key.encode(): name for name, key in self.keys.items()}
        self.fanout = fanout
        self.receiver = receiver
        self.group = group
        self.consumer = consumer
        self.claim_idle = claim_idle
        self.wall = wall_clock
        self.wanted = _filter(providers, symbols)
        self.rng = random.Random()
        self.read_round = client.register_script(READ_ROUND)
        self.read_group = client.register_script(READ_GROUP)
        self.ensure_group = client.register_script(ENSURE_GROUP)
        self.counts_at = client.register_script(COUNTS_AT)
        #: What the scripts read: prefix, families, shards ("*" or "3,17"), shard count.
        self.spec = [layout.prefix.encode(), ",".join(families).encode(), shards.encode(),
                     b"%d" % SHARDS]  # fmt: skip
        self.round_args = [*self.spec, b"%d" % ROUND_EVENTS]
        # where we stand (what was pushed to the channel)
        self.epoch = 0
        self.clock_cursor = b"0-0"
        self.g_end: int | None = None
        self.check_counts = False
        #: The last round read everything there was: the next one starts by waiting.
        self.caught_up = False
        self.counts: dict[str, int] = {}
        self.pushed = 0
        # what the consumer has consumed: the state after the last wholly consumed round
        self.rounds: deque[_Round] = deque()
        self.consumed_state = Position(0, 0, {})
        # group members: (items pushed when the entry is done, stream key, entry id)
        self.unacked: deque[tuple[int, str, bytes]] = deque()
        self.inflight: set[bytes] = set()
        #: Streams whose next detected loss happened while we were reconnecting.
        self.reconnected: set[str] = set()
        self.lag = LagHistogram()
        self.connected = True
        self.n = dict.fromkeys(_COUNTERS, 0)

    # ------------------------------------------------------------------ positions

    def start_at(self, position: Position) -> None:
        self.epoch = position.epoch
        self.clock_cursor = id_before(position.epoch, position.tx)
        self.g_end = position.tx
        #: The first round checks every stream's count (as after a hole): whatever was
        #: trimmed since the position was taken is announced right at the start.
        self.check_counts = True
        self.counts = dict(position.counts)
        self.consumed_state = position

    def position(self) -> str:
        if self.group is not None:
            raise ConfigurationError(
                "a consumer group keeps its members' place in Redis; position() is for "
                "consumers without group="
            )
        consumed = self.receiver._consumed()
        self._prune(consumed)
        if not self.rounds:
            return self.consumed_state.encode()
        first = self.rounds[0]
        return first.position_after(consumed - first.cum_start).encode()

    def _prune(self, consumed: int) -> None:
        rounds = self.rounds
        while rounds and rounds[0].cum_start + rounds[0].pushed <= consumed:
            self.consumed_state = rounds.popleft().after

    # ------------------------------------------------------------------ statistics

    def statistics(self, channel: ConsumerStatistics) -> RedisFeedStatistics:
        return RedisFeedStatistics(
            server=self.server,
            prefix=self.layout.prefix,
            group=self.group,
            consumer=self.consumer,
            connected=self.connected,
            lag=self.lag.snapshot(),
            channel=channel,
            **self.n,
        )

    # ------------------------------------------------------------------ running

    async def run(self) -> None:
        """Read until cancelled, riding out Redis outages with backoff."""
        while True:
            try:
                if self.group is None:
                    await self._read_round()
                else:
                    await self._read_group()
            except CONNECTION_ERRORS as exc:
                await self._reconnect(exc)
            except redis_errors.ResponseError as exc:
                text = str(exc)
                if not any(word in text for word in _TRANSIENT):
                    raise RedisError(f"Redis at {self.server} refused a read: {exc}") from None
                await self._reconnect(exc)

    async def _reconnect(self, cause: BaseException) -> None:
        self.connected = False
        logger.warning("Redis at %s unreachable (%s); reconnecting", self.server, cause)
        attempt = 0
        while True:
            attempt += 1
            delay = min(BACKOFF_MAX, BACKOFF_INITIAL * 2 ** (attempt - 1))
            await trio.sleep(delay * (1.0 - 0.2 * self.rng.random()))
            try:
                with trio.fail_after(READ_TIMEOUT):
                    await self.client.ping()
                    if self.group is not None:
                        # A restarted Redis may have lost the group: recreate it over
                        # everything the new streams hold.
                        await self._ensure_group("0")
            except (trio.TooSlowError, *CONNECTION_ERRORS, redis_errors.ResponseError) as exc:
                logger.debug("Redis still unreachable (attempt %d): %s", attempt, exc)
                continue
            break
        self.connected = True
        self.n["reconnects"] += 1
        self.reconnected = set(self.names)
        logger.warning("Redis at %s reachable again", self.server)

    async def _read_round(self) -> None:
        """One round: clock, changed streams, merge, publish (see the module docstring)."""
        if self.caught_up:
            # The last round took everything there was: wait on the clock alone (one
            # key) before asking for the next one, rather than asking to hear "nothing".
            self.caught_up = False
            await self.client.xread(
                {self.layout.clock: self.clock_cursor}, count=1, block=BLOCK_MS
            )
        expected = b"" if self.g_end is None else b"%d" % self.g_end
        check = b"1" if self.check_counts else b"0"
        reply: Any = await self.read_round(
            keys=[self.layout.clock],
            args=[self.clock_cursor, CLOCK_BATCH, expected, check, *self.round_args],
        )
        if not reply:
            self.caught_up = True
            return
        clock, counts, data = reply
        self.caught_up = len(clock) < CLOCK_BATCH and txs_events(clock) < ROUND_EVENTS
        self.check_counts = False
        notes: list[tuple[int, _Note]] = []
        epoch, first = parse_id(clock[0][0])
        if self.epoch and epoch != self.epoch:
            notes.append((first, (self._reset_gap(epoch), "", None)))
            self.counts.clear()
            self.g_end = None
        self.epoch = epoch
        before = dict(self.counts)
        if counts:
            # Transactions were trimmed (or lost) before we read them, or we are just
            # starting: every stream's count where the clock resumes; a stream that
            # is behind it lost events, announced here.
            for name, count in _pairs(counts):
                name, count = name.decode(), int(count)
                known = self.counts.get(name)
                if known is not None and count > known:
                    notes.append((first, (self._loss_gap(name, known, count), name, known)))
                if known is None or count > known:
                    self.counts[name] = count
        txs = [(parse_id(ident)[1], int(dict(_pairs(fields))[b"e"])) for ident, fields in clock]
        end = txs[-1][1]
        entries: list[_Entry] = []
        for name, items in _pairs(data):
            name = name.decode()
            for ident, flat in items:
                entry = self._decode(name, ident, parse_id(ident)[1], dict(_pairs(flat)))
                if entry is not None:
                    entries.append(entry)
        round_ = self._assemble(entries, first, end, notes)
        round_.before = before
        round_.txs = txs
        round_.after = Position(epoch, end, dict(self.counts))
        await self._push(round_)
        self.clock_cursor = clock[-1][0]
        self.g_end = end
        self.n["rounds"] += 1

    def _reset_gap(self, epoch: int) -> Gap:
        self.n["resets"] += 1
        logger.warning(
            "the stream under prefix %r started over (epoch %d -> %d): Redis lost its data "
            "and a new publisher began; what was lost is unknown",
            self.layout.prefix,
            self.epoch,
            epoch,
        )
        now = self.wall()
        return Gap(
            provider=PUBLISHER_PROVIDER,
            symbol="",
            ts_event=now,
            ts_recv=now,
            stream=f"redis:{self.layout.prefix}",
            reason=GapReason.RECONNECT,
        )

    def _decode(
        self, name: str, ident: bytes, g0: int, fields: Mapping[bytes, bytes]
    ) -> _Entry | None:
        """Decode one entry. Undecodable: counted, logged truncated, and returned ``bad``
        (its count is announced) if its header is usable, else None."""
        self.n["entries"] += 1
        try:
            n = int(fields[b"n"])
            count = int(fields[b"c"])
            if count < 1 or n < 0:
                raise ValueError(f"bad entry header n={n} c={count}")
        except (KeyError, ValueError, TypeError) as exc:
            self._undecodable(name, ident, fields, exc)
            return None
        try:
            payload = fields[b"d"]
            self.n["bytes"] += len(payload)
            raw = fields.get(b"x", b"")
            deltas: tuple[int, ...] | None = None
            if raw:
                deltas = msgpack.unpackb(raw, use_list=False)
                if (
                    type(deltas) is not tuple
                    or len(deltas) != count - 1
                    or not all(type(d) is int and d > 0 for d in deltas)
                ):
                    raise CodecError("the entry's index steps do not match its count")
            events = decode_batch(payload, self.wanted)
            if len(events) != count:
                raise CodecError(f"the entry holds {len(events)} events, its header says {count}")
        except (CodecError, KeyError, ValueError, TypeError, msgpack.UnpackException) as exc:
            self._undecodable(name, ident, fields, exc)
            return _Entry(name, ident, g0, n, count, None, None)
        return _Entry(name, ident, g0, n, count, deltas, events)

    def _undecodable(
        self, name: str, ident: bytes, fields: Mapping[bytes, bytes], exc: BaseException
    ) -> None:
        self.n["undecodable"] += 1
        count = self.n["undecodable"]
        if count <= _LOG_FIRST_BAD or count % 1000 == 0:
            sample = repr(dict(fields))
            if len(sample) > _SAMPLE:
                sample = sample[:_SAMPLE] + f"... ({len(sample)} chars)"
            logger.warning(
                "undecodable entry #%d in %s at %s (%s): %s",
                count,
                self.keys[name],
                ident.decode("ascii", "replace"),
                str(exc)[:_SAMPLE],
                sample,
            )

    def _assemble(
        self, entries: list[_Entry], base: int, end: int, notes: list[tuple[int, _Note]]
    ) -> _Round:
        """Skip what was delivered, announce what is missing, and merge by global index."""
        round_ = _Round(base, dict(self.counts))
        round_.entries = entries
        counts = self.counts
        slots: list[Event | None] = [None] * (end - base)
        kept = filtered = skipped = 0
        for entry in entries:
            name = entry.name
            known = counts.get(name)
            skip = 0
            if known is not None:
                if entry.n > known:
                    notes.append((entry.g0, (self._loss_gap(name, known, entry.n), name, known)))
                elif entry.n < known:
                    skip = min(known - entry.n, entry.count)
                    skipped += skip
            self.reconnected.discard(name)
            counts[name] = max(entry.n + entry.count, known or 0)
            if entry.bad:
                if skip < entry.count:
                    notes.append((entry.g0, (self._bad_gap(entry, skip), name, None)))
                continue
            events = entry.events
            if entry.deltas is None:
                offset = entry.g0 - base
                for i in range(skip, entry.count):
                    event = events[i]
                    if event is None:
                        filtered += 1
                    else:
                        slots[offset + i] = event
                        kept += 1
            else:
                for i, g in enumerate(entry.indices()):
                    if i >= skip:
                        event = events[i]
                        if event is None:
                            filtered += 1
                        else:
                            slots[g - base] = event
                            kept += 1
        for g, note in notes:
            round_.notes.setdefault(g, []).append(note)
            self.n["gaps"] += 1
            self.n["missing"] += note[0].missing
        round_.slots = slots
        self.n["filtered"] += filtered
        self.n["duplicates"] += skipped
        return round_

    def _loss_gap(self, name: str, expected: int, received: int) -> Gap:
        """The Gap for events of stream ``name`` trimmed or lost before we read them."""
        now = self.wall()
        return Gap(
            provider=PUBLISHER_PROVIDER,
            symbol="",
            ts_event=now,
            ts_recv=now,
            stream=self.keys[name],
            reason=GapReason.RECONNECT if name in self.reconnected else GapReason.OVERFLOW,
            expected=expected,
            received=received,
            missing=received - expected,
        )

    def _bad_gap(self, entry: _Entry, skip: int) -> Gap:
        """The Gap for the events of an entry that did not decode."""
        now = self.wall()
        return Gap(
            provider=PUBLISHER_PROVIDER,
            symbol="",
            ts_event=now,
            ts_recv=now,
            stream=self.keys[entry.name],
            reason=GapReason.SEQUENCE,
            expected=entry.n + skip,
            received=entry.n + entry.count,
            missing=entry.count - skip,
        )

    async def _push(self, round_: _Round) -> None:
        """Publish the round's items to the channel, keeping the round for positions."""
        self._prune(self.receiver._consumed())
        items = round_.items()
        round_.cum_start = self.pushed
        rounds = self.rounds
        if not items:
            if not rounds:
                self.consumed_state = round_.after
            elif rounds[-1].pushed == 0:
                rounds[-1].after = round_.after
            else:
                rounds.append(round_)
            return
        round_.pushed = len(items)
        rounds.append(round_)
        try:
            await self.fanout.publish_batch(items)
        finally:
            self.pushed = self.fanout.statistics().published
            round_.pushed = self.pushed - round_.cum_start
        self.n["events"] += len(items)
        for event in reversed(round_.slots):
            if event is not None:
                self.lag.observe(self.wall() - event.ts_recv)
                break

    # ------------------------------------------------------------------ groups

    async def _ensure_group(self, start: str) -> None:
        keys = [*self.keys.values(), self.layout.group(self.group or "")]
        await self.ensure_group(keys=keys, args=[self.group or "", start])

    async def _read_group(self) -> None:
        """One read as a group member: new entries (with group-wide loss detection), or wait."""
        keys = [*self.keys.values(), self.layout.group(self.group or ""), self.layout.clock]
        reply: Any = await self.read_group(
            keys=keys, args=[self.group or "", self.consumer or "", CLOCK_BATCH]
        )
        streams, gaps, clock_last = reply
        if not streams:
            await self.client.xread(
                {self.layout.clock: clock_last or b"0-0"}, count=1, block=BLOCK_MS
            )
            return
        losses: dict[bytes, tuple[int, int]] = {}
        for _key, ident, expected, received in gaps or ():
            losses[ident] = (int(expected), int(received))
        entries: list[_Entry] = []
        for key, items in streams:
            name = self.name_of[key]
            for ident, flat in items:
                fields = dict(zip(flat[::2], flat[1::2], strict=True))
                entry = self._decode(name, ident, parse_id(ident)[1], fields)
                if entry is None:
                    self.unacked.append((self.pushed, self.keys[name], ident))
                else:
                    entries.append(entry)
        await self._push_entries(entries, losses, reclaimed=False)
        self.n["rounds"] += 1

    async def _push_entries(
        self, entries: list[_Entry], losses: Mapping[bytes, tuple[int, int]], *, reclaimed: bool
    ) -> None:
        """Group members: publish entry by entry (by global index), tracking acknowledgements."""
        entries.sort(key=lambda entry: (entry.g0, entry.name))
        items: list[Event] = []
        done: list[tuple[int, str, bytes]] = []
        for entry in entries:
            loss = losses.get(entry.ident)
            if loss is not None:
                gap = self._loss_gap(entry.name, *loss)
                items.append(gap)
                self.n["gaps"] += 1
                self.n["missing"] += gap.missing
            if entry.bad:
                items.append(self._bad_gap(entry, 0))
                self.n["gaps"] += 1
                self.n["missing"] += entry.count
            kept = [event for event in entry.events if event is not None]
            self.n["filtered"] += 0 if entry.bad else entry.count - len(kept)
            items.extend(kept)
            if reclaimed:
                self.n["reclaimed"] += 1
                self.n["reclaimed_events"] += len(kept)
            done.append((self.pushed + len(items), self.keys[entry.name], entry.ident))
            self.inflight.add(entry.ident)
        if items:
            try:
                await self.fanout.publish_batch(items)
            finally:
                self.pushed = self.fanout.statistics().published
            self.n["events"] += len(items)
            self.lag.observe(self.wall() - items[-1].ts_recv)
        self.unacked.extend(done)

    async def acknowledge(self) -> None:
        """Group members: XACK the entries whose events the consumer has finished.

        An entry is finished once the consumer took its last event and then
        asked for another (took the next one, or waits on an empty channel).
        """
        receiver = self.receiver
        while True:
            await trio.sleep(ACK_INTERVAL)
            consumed = receiver._consumed()
            waiting = receiver._waiting()
            ready: dict[str, list[bytes]] = {}
            unacked = self.unacked
            while unacked:
                done_at, key, ident = unacked[0]
                if not (done_at < consumed or (done_at == consumed and waiting)):
                    break
                unacked.popleft()
                ready.setdefault(key, []).append(ident)
            if not ready:
                continue
            try:
                async with self.client.pipeline(transaction=False) as pipe:
                    for key, idents in ready.items():
                        pipe.xack(key, self.group or "", idents)
            except (*CONNECTION_ERRORS, redis_errors.ResponseError) as exc:
                # Still pending in Redis: claimed again after claim_idle (at least once).
                logger.info("could not acknowledge %d entries: %s", len(ready), exc)
                continue
            for idents in ready.values():
                self.inflight.difference_update(idents)
                self.n["acked"] += len(idents)

    async def reclaim(self) -> None:
        """Group members: claim entries other members left pending for ``claim_idle`` s."""
        interval = max(self.claim_idle / 2, 0.05)
        idle_ms = max(1, round(self.claim_idle * 1000))
        while True:
            await trio.sleep(interval)
            for name, key in self.keys.items():
                try:
                    await self._reclaim_stream(name, key, idle_ms)
                except (*CONNECTION_ERRORS, redis_errors.ResponseError) as exc:
                    logger.info("could not claim pending entries of %s: %s", key, exc)

    async def _reclaim_stream(self, name: str, key: str, idle_ms: int) -> None:
        cursor: Any = b"0-0"
        for _ in range(_CLAIM_CALLS):
            reply = await self.client.xautoclaim(
                key, self.group or "", self.consumer or "", idle_ms, cursor, count=CLAIM_BATCH
            )
            cursor, claimed = reply[0], reply[1]
            deleted: Any = reply[2] if len(reply) > 2 else ()
            if deleted:
                await self._lost_while_pending(name, len(deleted))
            entries = []
            for item in claimed:
                ident = _ident(item)
                if ident in self.inflight:
                    continue  # ours and still in our channel: not a second delivery
                entry = self._decode(name, ident, parse_id(ident)[1], _fields(item))
                if entry is None:
                    self.unacked.append((self.pushed, key, ident))
                else:
                    entries.append(entry)
            if entries:
                await self._push_entries(entries, {}, reclaimed=True)
            if cursor in (b"0-0", "0-0"):
                return

    async def _lost_while_pending(self, name: str, entries: int) -> None:
        """Pending entries were trimmed before any member processed them: announce it."""
        self.n["lost_pending"] += entries
        logger.warning(
            "%d pending entries of %s were trimmed before they were processed",
            entries,
            self.keys[name],
        )
        now = self.wall()
        gap = Gap(
            provider=PUBLISHER_PROVIDER,
            symbol="",
            ts_event=now,
            ts_recv=now,
            stream=self.keys[name],
            reason=GapReason.OVERFLOW,
        )
        self.n["gaps"] += 1
        try:
            await self.fanout.publish(gap)
        finally:
            self.pushed = self.fanout.statistics().published


#: The counters of RedisFeedStatistics kept in _Reader.n.
_COUNTERS: Final = (
    "rounds",
    "entries",
    "bytes",
    "events",
    "filtered",
    "duplicates",
    "undecodable",
    "gaps",
    "missing",
    "resets",
    "reconnects",
    "reclaimed",
    "reclaimed_events",
    "acked",
    "lost_pending",
)
#: Refusals that mean "not now" rather than "never": loading after a restart,
#: a group lost in a restart (recreated on reconnect), out of memory.
_TRANSIENT: Final = ("LOADING", "NOGROUP", "OOM", "BUSY", "TRYAGAIN", "MASTERDOWN")
#: XAUTOCLAIM calls per stream per sweep: at most 16 x 256 entries claimed at once.
_CLAIM_CALLS: Final = 16


# --------------------------------------------------------------------------- filters


def _filter(
    providers: frozenset[str] | None, symbols: frozenset[str] | None
) -> Callable[[int, tuple[Any, ...]], bool] | None:
    """``wanted(tag, values)`` on raw values, or None when everything is wanted.

    Market data passes if its provider and symbol are selected. ``Status`` and
    ``Gap`` pass for the selected providers, and always for our own
    (``"puffin"``: the publisher and the channels); a ``Gap`` about one
    symbol passes only if that symbol is selected.
    """
    if providers is None and symbols is None:
        return None
    symbol_at = {tag: FIELD_INDEX[(tag, "symbol")] for tag in TAGS.values()}
    control = {TAGS[Status], TAGS[Gap]}

    def wanted(tag: int, values: tuple[Any, ...]) -> bool:
        provider = values[0]
        if tag in control:
            if (
                providers is not None
                and provider != PUBLISHER_PROVIDER
                and provider not in providers
            ):
                return False
            symbol = values[symbol_at[tag]]
            return symbols is None or symbol == "" or symbol in symbols
        if providers is not None and provider not in providers:
            return False
        return symbols is None or values[1] in symbols

    return wanted


# --------------------------------------------------------------------------- opening


def _check_names(what: str, value: Collection[str] | None) -> frozenset[str] | None:
    if value is None:
        return None
    if isinstance(value, str) or not all(isinstance(v, str) and v for v in value):
        raise ConfigurationError(
            f"{what}= must be a collection of non-empty strings (or None for all), got {value!r}"
        )
    if not value:
        raise ConfigurationError(f"{what}= is empty: nothing would be received (None means all)")
    return frozenset(value)


def _check_kinds(kinds: Collection[str] | None) -> list[str]:
    if kinds is None:
        return list(FAMILIES)
    chosen = _check_names("kinds", kinds) or frozenset()
    unknown = sorted(chosen - set(FAMILIES))
    if unknown:
        raise ConfigurationError(
            f"unknown kinds {unknown}; kinds are {', '.join(FAMILIES)} "
            f"(Status and Gap events always come)"
        )
    return [family for family in FAMILIES if family in chosen]


async def _snapshot_latest(reader: _Reader, meta: Mapping[bytes, bytes]) -> Position:
    """The position at the end of everything published so far (one atomic read)."""
    client = reader.client
    async with client.pipeline(transaction=True) as pipe:
        clock_request = pipe.xrevrange(reader.layout.clock, count=1)
        lasts = [pipe.xrevrange(reader.keys[name], count=1) for name in reader.names]
    epoch = int(meta[b"epoch"]) if meta else 0
    clock = await clock_request
    tx = 0
    if clock:
        epoch, _ = parse_id(clock[0].identifier)
        tx = int(clock[0].field_values[b"e"])
    counts: dict[str, int] = {}
    for name, request in zip(reader.names, lasts, strict=True):
        last = await request
        counts[name] = 0
        if last and parse_id(last[0].identifier)[0] == epoch:
            fields = last[0].field_values
            counts[name] = int(fields[b"n"]) + int(fields[b"c"])
    return Position(epoch, tx, counts)


def _check_layout(meta: Mapping[bytes, bytes], prefix: str, server: str) -> None:
    if not meta:
        return
    try:
        version, shards = int(meta[b"version"]), int(meta[b"shards"])
    except (KeyError, ValueError):
        raise RedisError(f"{prefix}:layout on {server} is not a puffin_trio layout") from None
    if version != LAYOUT_VERSION or shards != SHARDS:
        raise RedisError(
            f"prefix {prefix!r} on {server} holds layout version {version} ({shards} shards); "
            f"this puffin_trio reads version {LAYOUT_VERSION} ({SHARDS} shards)"
        )


async def _snapshot_earliest(reader: _Reader, meta: Mapping[bytes, bytes]) -> Position:
    """The position at the oldest transaction the clock still names, with every count."""
    reply: Any = await reader.counts_at(keys=[reader.layout.clock], args=reader.spec)
    if not reply or not reply[0]:
        epoch = int(meta[b"epoch"]) if meta else 0
        return Position(epoch, 0, dict.fromkeys(reader.names, 0))
    epoch, tx = parse_id(reply[0])
    counts = {name.decode(): int(count) for name, count in _pairs(reply[1:])}
    return Position(epoch, tx, counts)


@asynccontextmanager
async def open_redis_feed(
    url: str,
    *,
    prefix: str = "puffin",
    providers: Collection[str] | None = None,
    symbols: Collection[str] | None = None,
    kinds: Collection[str] | None = None,
    start: Start = "latest",
    group: str | None = None,
    consumer: str | None = None,
    capacity: int = 1024,
    overflow: Overflow = "block",
    claim_idle: float = CLAIM_IDLE,
    connect_timeout: float = CONNECT_TIMEOUT,
    wall_clock: Callable[[], int] = time.time_ns,
) -> AsyncIterator[RedisFeed]:
    """Consume what a publisher writes under ``prefix``: the same events, in the same order.

    ``async with open_redis_feed(url, symbols=["AAPL"]) as events: async for ev in events: ...``

    * ``providers``, ``symbols``, ``kinds`` (``trades``, ``quotes``, ``books``,
      ``bars``, ``statuses``): what to receive; ``None`` is everything.
      ``Status`` and ``Gap`` events of the selected providers always come,
      and so do the publisher's own (provider ``"puffin"``).
    * ``start``: ``"latest"`` (what is published from now on), ``"earliest"``
      (everything Redis still holds), or a value of :meth:`RedisFeed.position`.
    * ``group`` / ``consumer``: join consumer group ``group`` as ``consumer``
      (default ``{host}-{pid}``): members share the entries, at least once;
      entries a member leaves pending for ``claim_idle`` seconds go to the
      others. ``start`` then says where a new group begins ("latest" or
      "earliest").
    * ``capacity`` / ``overflow``: the channel's, as for ``sup.events()``.

    Raises, before anything is received: :class:`ConfigurationError` for a
    bad argument, :class:`~puffin_trio.errors.RedisConnectionError` /
    :class:`~puffin_trio.errors.RedisAuthenticationError` if Redis cannot be
    reached or refuses the password, :class:`~puffin_trio.errors.RedisError`
    if the prefix was written by an incompatible version. Later outages are
    ridden out with reconnects; what went missing meanwhile is announced.
    """
    layout = Layout(prefix)
    provider_set = _check_names("providers", providers)
    symbol_set = _check_names("symbols", symbols)
    families = _check_kinds(kinds)
    position: Position | None = None
    if not isinstance(start, str):
        raise ConfigurationError(
            f"start= must be 'latest', 'earliest' or a position, got {start!r}"
        )
    if start not in ("latest", "earliest"):
        if group is not None:
            raise ConfigurationError(
                "a consumer group starts at 'latest' or 'earliest'; its members' place is "
                "kept in Redis, not in positions"
            )
        position = Position.decode(start)
    if group is not None and (not isinstance(group, str) or not group or ":" in group):
        raise ConfigurationError(f"group must be a non-empty name without ':', got {group!r}")
    if consumer is not None and group is None:
        raise ConfigurationError("consumer= names a member of a group: pass group= too")
    if group is not None and consumer is None:
        consumer = f"{socket.gethostname()}-{os.getpid()}"
    if not (isinstance(claim_idle, int | float) and 0 < claim_idle < math.inf):
        raise ConfigurationError(
            f"claim_idle must be a positive number of seconds, got {claim_idle!r}"
        )
    fanout = FanOut(clock=wall_clock)
    receiver = fanout.open_consumer(
        capacity=capacity, overflow=overflow, name=f"redis:{prefix}", receiver_type=RedisFeed
    )
    assert isinstance(receiver, RedisFeed)
    names = subscribed_suffixes(symbol_set, families)
    shards = "*" if symbol_set is None else ",".join(
        str(shard) for shard in sorted({shard_of(symbol) for symbol in symbol_set})
    )
    with unwrap_group():
        async with open_client(
            url,
            connect_timeout=connect_timeout,
            stream_timeout=BLOCK_MS / 1000 + READ_TIMEOUT,
            client_name=f"puffin-feed-{socket.gethostname()}-{os.getpid()}",
        ) as client:
            reader = _Reader(
                client,
                url=url,
                layout=layout,
                names=names,
                families=families,
                shards=shards,
                providers=provider_set,
                symbols=symbol_set,
                fanout=fanout,
                receiver=receiver,
                group=group,
                consumer=consumer,
                claim_idle=float(claim_idle),
                wall_clock=wall_clock,
            )
            receiver._reader = reader
            try:
                meta = await client.hgetall(layout.meta)
                _check_layout(meta, prefix, reader.server)
                if group is not None:
                    await reader._ensure_group("$" if start == "latest" else "0")
                elif position is not None:
                    reader.start_at(position)
                elif start == "latest":
                    reader.start_at(await _snapshot_latest(reader, meta))
                else:
                    reader.start_at(await _snapshot_earliest(reader, meta))
            except (*CONNECTION_ERRORS, redis_errors.ResponseError) as exc:
                raise RedisError(f"cannot start reading from {reader.server}: {exc}") from None
            async with trio.open_nursery() as nursery:
                nursery.start_soon(reader.run, name=f"redis-feed:{prefix}")
                if group is not None:
                    nursery.start_soon(reader.acknowledge, name=f"redis-feed:{prefix}:ack")
                    nursery.start_soon(reader.reclaim, name=f"redis-feed:{prefix}:claim")
                try:
                    async with receiver:
                        yield receiver
                finally:
                    nursery.cancel_scope.cancel()
            fanout.close()
