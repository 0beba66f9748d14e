"""A feed's reader task: Redis Streams into a fan-out, one round at a time, through outages.

This module owns :class:`Reader`, the task behind a :class:`~._feed.RedisFeed`:
each round reads the next publish transactions and exactly the entries of
the subscribed streams they wrote (one :data:`._scripts.READ_ROUND` call),
skips what was already delivered, announces what is missing (``Gap`` with
the exact count, where the loss is), merges the streams back into publish
order and publishes the result to the feed's fan-out; it waits on the clock
stream alone when there is nothing new, and rides out Redis outages with
reconnects. It keeps the :class:`~._rounds.Round` records positions are
computed from. Consumer groups read differently (:mod:`._group`). The wait
and the round go through the lean connection of :mod:`._pipe`; reconnecting
and everything else through coredis.

It must not write to Redis streams or know providers.
"""

from __future__ import annotations

import logging
import random
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, Protocol, cast

import attrs
import coredis
import coredis.exceptions as redis_errors
import msgpack
import trio
from coredis.response.types import StreamEntry

from puffin_trio.channels import ConsumerStatistics, FanOut
from puffin_trio.errors import CodecError, RedisError
from puffin_trio.events import Event, Gap, GapReason, Status
from puffin_trio.histogram import HistogramSnapshot, LagHistogram
from puffin_trio.redis._connection import CONNECTION_ERRORS, redact
from puffin_trio.redis._encoding import FIELD_INDEX, TAGS, decode_batch
from puffin_trio.redis._layout import SHARDS, Layout, Position, id_before, parse_id
from puffin_trio.redis._pipe import Pipe, script_sha
from puffin_trio.redis._publisher import PUBLISHER_PROVIDER
from puffin_trio.redis._rounds import Entry, Note, Round, pairs
from puffin_trio.redis._scripts import COUNTS_AT, READ_ROUND

__all__ = [
    "BLOCK_MS",
    "BLOCK_S",
    "READ_TIMEOUT",
    "Reader",
    "RedisFeedStatistics",
    "fields_of",
    "ident_of",
    "make_filter",
]

logger = logging.getLogger("puffin_trio.redis.feed")

#: Publish transactions read per round, at most; and events per round, at most
#: (whole transactions, at least one). A round costs one command (~0.1 ms of
#: client CPU), so 16,384 events make it 0.01 µs per event, while
#: a round's events, held at once, stay a few MB: rounds of a million events
#: (a consumer catching up) made Python's garbage collector walk them all,
#: doubling the cost per event.
CLOCK_BATCH: Final = 256
ROUND_EVENTS: Final = 16_384
#: Milliseconds a read waits on the clock stream for new data before asking
#: again. Cancellation interrupts the wait at once (the lean connection is
#: dropped), so this only bounds how long a silently dead connection goes
#: unnoticed between the server's answers.
BLOCK_MS: Final = 1000
BLOCK_S: Final = BLOCK_MS / 1000
#: Seconds for a reply beyond the blocking wait: Redis answers in well under a
#: millisecond, so 5 s is a stalled server.
READ_TIMEOUT: Final = 5.0
#: Reconnect backoff, as the publisher's: 0.1 s doubling to 5 s, jittered.
BACKOFF_INITIAL: Final = 0.1
BACKOFF_MAX: Final = 5.0
#: Undecodable entries are logged individually up to this many, then every
#: 1000th (all are counted).
_LOG_FIRST_BAD = 10
_SAMPLE = 120
#: What msgpack may give for an index step (a bool is 0 or 1: 1 is a valid step).
_STEP_TYPES: Final = frozenset({int, bool})


#: A round's entries: per stream short name, (entry id, fields) in id order.
_Data = list[tuple[str, list[tuple[bytes, Mapping[bytes, Any]]]]]


class Consumed(Protocol):
    """What the reader needs to know about its channel (a :class:`~._feed.RedisFeed`)."""

    def _consumed(self) -> int: ...

    def _waiting(self) -> bool: ...


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
    #: Rounds that brought entries; of them, rounds read from the clock alone (small
    #: transactions carry their entries inline); stream entries and payload bytes read.
    rounds: int = attrs.field(metadata={"metric": "counter"})
    inline_rounds: int = attrs.field(metadata={"metric": "counter"})
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


def fields_of(entry: StreamEntry) -> Mapping[bytes, bytes]:
    """An entry's fields (bytes: the client does not decode responses)."""
    return cast(Mapping[bytes, bytes], entry.field_values)


def ident_of(entry: StreamEntry) -> bytes:
    return cast(bytes, entry.identifier)


class Reader:
    """The reader task's state: cursors, counts, and what the channel holds.

    Subclasses (:class:`~._group.GroupReader`) replace :meth:`read` and
    :meth:`after_reconnect`, and add tasks of their own (:meth:`tasks`).
    """

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
        receiver: Consumed,
        wall_clock: Callable[[], int],
        pipe: Pipe,
    ) -> None:
        self.client = client
        #: The hot reads (the clock wait, a round) go through a lean connection (see _pipe).
        self.pipe = pipe
        self.server = redact(url)
        self.layout = layout
        self.names = names
        self.keys = {name: layout.key(name) for name in names}
        self.name_of = {key.encode(): name for name, key in self.keys.items()}
        self.fanout = fanout
        self.receiver = receiver
        self.group: str | None = None
        self.consumer: str | None = None
        self.wall = wall_clock
        self.wanted = make_filter(providers, symbols)
        self.rng = random.Random()
        self.read_round_sha = script_sha(READ_ROUND)
        self.counts_at = client.register_script(COUNTS_AT)
        #: What the scripts read: prefix, families, shards ("*" or "3,17"), shard count.
        self.spec = [layout.prefix.encode(), ",".join(families).encode(), shards.encode(),
                     b"%d" % SHARDS]  # fmt: skip
        self.round_args = [*self.spec, b"%d" % ROUND_EVENTS]
        self.clock_key = layout.clock.encode()
        self.clock_wait = [b"XREAD", b"COUNT", b"%d" % CLOCK_BATCH, b"BLOCK", b"%d" % BLOCK_MS,
                           b"STREAMS", self.clock_key]  # fmt: skip
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
        self.rounds: deque[Round] = deque()
        self.consumed_state = Position(0, 0, {})
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
                await self.read()
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
                    await self.after_reconnect()
            except (trio.TooSlowError, *CONNECTION_ERRORS, redis_errors.ResponseError) as exc:
                logger.debug("Redis still unreachable (attempt %d): %s", attempt, exc)
                continue
            break
        self.connected = True
        self.n["reconnects"] += 1
        self.reconnected = set(self.names)
        logger.warning("Redis at %s reachable again", self.server)

    async def after_reconnect(self) -> None:
        """What a reconnect must redo before reading again (nothing, for a plain feed)."""
        await trio.lowlevel.checkpoint()

    async def tasks(self, nursery: trio.Nursery) -> None:
        """Start the tasks that run beside :meth:`run` (none, for a plain feed)."""
        await trio.lowlevel.checkpoint()

    async def read(self) -> None:
        """One round: clock, changed streams, merge, publish (see the module docstring)."""
        if self.caught_up:
            # The last round took everything there was: wait on the clock alone (one
            # key). Small transactions carry their entries inline, so when everything
            # that arrives is such, the wait itself brought the round. No linger
            # before it: the publisher's linger already paces transactions (so
            # rounds) under load, and one here only added latency (0.5 ms at
            # p50 at 5,000 events/s) for no throughput.
            self.caught_up = False
            reply = await self.pipe.call(*self.clock_wait, self.clock_cursor, blocking=BLOCK_S)
            # XREAD's reply: nil, or [[key, [[id, [field, value, ...]], ...]]].
            waited: list[tuple[bytes, Mapping[bytes, bytes]]] = (
                [(ident, dict(pairs(flat))) for ident, flat in reply[0][1]] if reply else []
            )
            if not waited:
                self.caught_up = True
                return
            inline = self._inline(waited)
            if inline is not None:
                self.n["inline_rounds"] += 1
                await self._round(waited, None, inline)
                return
        expected = b"" if self.g_end is None else b"%d" % self.g_end
        check = b"1" if self.check_counts else b"0"
        result: Any = await self.pipe.script(
            self.read_round_sha,
            READ_ROUND,
            [self.clock_key],
            [self.clock_cursor, CLOCK_BATCH, expected, check, *self.round_args],
        )
        if not result:
            self.caught_up = True
            return
        clock, counts, data = result
        await self._round(
            [(ident, dict(pairs(fields))) for ident, fields in clock],
            counts,
            [
                (name.decode(), [(ident, dict(pairs(flat))) for ident, flat in items])
                for name, items in pairs(data)
            ],
        )

    def _inline(self, clock: list[tuple[bytes, Mapping[bytes, bytes]]]) -> _Data | None:
        """The round's data from the clock entries alone, if they all carry it inline and
        follow on from the last round (no hole, no count check due); else None."""
        epoch, first = parse_id(clock[0][0])
        if self.check_counts or epoch != self.epoch or first != self.g_end:
            return None
        if not all(b"i" in fields for _, fields in clock):
            return None
        by_name: dict[str, list[tuple[bytes, Mapping[bytes, Any]]]] = {}
        try:
            for _, fields in clock:
                for name, ident, n, c, x, d in msgpack.unpackb(fields[b"i"], use_list=False):
                    if name in self.keys:
                        by_name.setdefault(name, []).append(
                            (ident, {b"n": n, b"c": c, b"x": x, b"d": d})
                        )
        except (ValueError, TypeError, msgpack.UnpackException):
            return None  # not ours to judge here: the streams hold the same entries
        return list(by_name.items())

    async def _round(
        self,
        clock: list[tuple[bytes, Mapping[bytes, bytes]]],
        counts: Sequence[bytes] | None,
        data: _Data,
    ) -> None:
        """Process one round: announcements, decoding, merging, publishing."""
        events = int(clock[-1][1][b"e"]) - parse_id(clock[0][0])[1]
        self.caught_up = len(clock) < CLOCK_BATCH and events < ROUND_EVENTS
        self.check_counts = False
        notes: list[tuple[int, Note]] = []
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
            for raw, value in pairs(counts):
                name, count = raw.decode(), int(value)
                known = self.counts.get(name)
                if known is not None and count > known:
                    notes.append((first, (self._loss_gap(name, known, count), name, known)))
                if known is None or count > known:
                    self.counts[name] = count
        txs = [(parse_id(ident)[1], int(fields[b"e"])) for ident, fields in clock]
        end = txs[-1][1]
        entries: list[Entry] = []
        for name, items in data:
            for ident, fields in items:
                entry = self._decode(name, ident, parse_id(ident)[1], fields)
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
    ) -> Entry | None:
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
                    or not set(map(type, deltas)) <= _STEP_TYPES
                    or min(deltas) < 1
                ):
                    raise CodecError("the entry's index steps do not match its count")
            events = decode_batch(payload, self.wanted)
            if len(events) != count:
                raise CodecError(f"the entry holds {len(events)} events, its header says {count}")
        except (CodecError, KeyError, ValueError, TypeError, msgpack.UnpackException) as exc:
            self._undecodable(name, ident, fields, exc)
            return Entry(name, ident, g0, n, count, None, None)
        return Entry(name, ident, g0, n, count, deltas, events)

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
        self, entries: list[Entry], base: int, end: int, notes: list[tuple[int, Note]]
    ) -> Round:
        """Skip what was delivered, announce what is missing, and merge by global index."""
        round_ = Round(base, dict(self.counts))
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

    def _bad_gap(self, entry: Entry, skip: int) -> Gap:
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

    async def _push(self, round_: Round) -> None:
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


#: The counters of RedisFeedStatistics kept in Reader.n.
_COUNTERS: Final = (
    "rounds",
    "inline_rounds",
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


# --------------------------------------------------------------------------- filters


def make_filter(
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


