"""The consuming side's public surface: :func:`open_redis_feed` and its channel.

This module owns :func:`open_redis_feed` (arguments, the starting position,
the reader task's lifetime) and :class:`RedisFeed`, the channel it yields: an
:class:`~puffin_trio.channels.EventReceiver` of a private
:class:`~puffin_trio.channels.FanOut`, so it behaves exactly as an in-process
consumer does, plus :meth:`RedisFeed.position`. The reading itself is
:mod:`._reader` (and :mod:`._group` for consumer groups); the guarantees and
their mechanics are described in the documentation's distribution guide.

It must not write to streams or know providers.
"""

from __future__ import annotations

import math
import os
import socket
import time
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from contextlib import asynccontextmanager
from typing import Any, Final, Literal

import coredis.exceptions as redis_errors
import trio

from puffin_trio.channels import EventReceiver, FanOut, Overflow
from puffin_trio.errors import ConfigurationError, RedisError
from puffin_trio.redis._connection import (
    CONNECTION_ERRORS,
    open_client,
    tls_context,
    unwrap_group,
)
from puffin_trio.redis._group import CLAIM_IDLE, GroupReader
from puffin_trio.redis._layout import (
    FAMILIES,
    Layout,
    Position,
    check_layout,
    parse_id,
    shard_of,
    subscribed_suffixes,
)
from puffin_trio.redis._pipe import Pipe
from puffin_trio.redis._reader import BLOCK_MS, READ_TIMEOUT, Reader, RedisFeedStatistics
from puffin_trio.redis._rounds import pairs

__all__ = ["RedisFeed", "RedisFeedStatistics", "open_redis_feed"]

#: Seconds to connect: Redis answers in well under a millisecond, so 5 s is a
#: stalled server (or a firewall dropping packets).
CONNECT_TIMEOUT: Final = 5.0

Start = Literal["latest", "earliest"] | str


class RedisFeed(EventReceiver):
    """The channel :func:`open_redis_feed` yields: an :class:`EventReceiver` with a position.

    Everything about receiving is the in-process channel's (see
    :class:`~puffin_trio.channels.EventReceiver`); the reader behind it is
    described in :mod:`puffin_trio.redis`.
    """

    _reader: Reader

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


async def _snapshot_latest(reader: Reader, meta: Mapping[bytes, bytes]) -> Position:
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


async def _snapshot_earliest(reader: Reader, meta: Mapping[bytes, bytes]) -> Position:
    """The position at the oldest transaction the clock still names, with every count."""
    reply: Any = await reader.counts_at(keys=[reader.layout.clock], args=reader.spec)
    if not reply or not reply[0]:
        epoch = int(meta[b"epoch"]) if meta else 0
        return Position(epoch, 0, dict.fromkeys(reader.names, 0))
    epoch, tx = parse_id(reply[0])
    counts = {name.decode(): int(count) for name, count in pairs(reply[1:])}
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
    client_name = f"puffin-feed-{socket.gethostname()}-{os.getpid()}"
    with unwrap_group():
        async with open_client(
            url,
            connect_timeout=connect_timeout,
            stream_timeout=BLOCK_MS / 1000 + READ_TIMEOUT,
            client_name=client_name,
        ) as client:
            pipe = Pipe(
                url,
                connect_timeout=connect_timeout,
                reply_timeout=READ_TIMEOUT,
                client_name=client_name,
                ssl_context=tls_context(client),
            )
            options: dict[str, Any] = {
                "pipe": pipe,
                "url": url,
                "layout": layout,
                "names": names,
                "families": families,
                "shards": shards,
                "providers": provider_set,
                "symbols": symbol_set,
                "fanout": fanout,
                "receiver": receiver,
                "wall_clock": wall_clock,
            }
            reader = (
                Reader(client, **options)
                if group is None or consumer is None
                else GroupReader(
                    client, group=group, consumer=consumer, claim_idle=float(claim_idle),
                    **options,
                )
            )  # fmt: skip
            receiver._reader = reader
            try:
                meta = await client.hgetall(layout.meta)
                check_layout(meta, layout, reader.server)
                if isinstance(reader, GroupReader):
                    await reader.ensure("$" if start == "latest" else "0")
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
                await reader.tasks(nursery)
                try:
                    async with receiver:
                        yield receiver
                finally:
                    nursery.cancel_scope.cancel()
            pipe.close()
            fanout.close()
