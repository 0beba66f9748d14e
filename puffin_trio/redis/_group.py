"""A consumer group member's reader: shared work, at least once, with reclaiming.

This module owns :class:`GroupReader`, the :class:`~._reader.Reader` of a feed
opened with ``group=``. It reads with ``XREADGROUP`` (through
:data:`._scripts.READ_GROUP`, which also checks each stream's running count
against the group's, kept in Redis, so an entry trimmed before any member
read it is announced, once, by whichever member notices), delivers each
read entry by entry in publish order, acknowledges an entry once the
consumer has taken its last event and asked for the next, and claims
(``XAUTOCLAIM``) entries another member left pending for ``claim_idle``
seconds, counting them.

It must not keep positions: Redis keeps the group's place.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Mapping
from typing import Any, Final

import coredis.exceptions as redis_errors
import trio

from puffin_trio.errors import ConfigurationError
from puffin_trio.events import Event, Gap, GapReason
from puffin_trio.redis._connection import CONNECTION_ERRORS
from puffin_trio.redis._layout import parse_id
from puffin_trio.redis._pipe import script_sha
from puffin_trio.redis._publisher import PUBLISHER_PROVIDER
from puffin_trio.redis._reader import BLOCK_MS, BLOCK_S, Reader, fields_of, ident_of
from puffin_trio.redis._rounds import Entry
from puffin_trio.redis._scripts import ENSURE_GROUP, READ_GROUP

__all__ = ["CLAIM_IDLE", "GroupReader"]

logger = logging.getLogger("puffin_trio.redis.feed")

#: Default seconds an entry may stay pending with a group member before the
#: others claim it: longer than any ordinary processing pause (a GC, a slow
#: batch), short enough that a dead member's work resumes within a minute.
CLAIM_IDLE: Final = 30.0
#: Seconds between acknowledgements of a group member's finished entries:
#: what a crash may deliver twice, at most.
ACK_INTERVAL: Final = 0.1
#: Entries read per stream per call, and claimed per XAUTOCLAIM call.
READ_BATCH: Final = 256
CLAIM_BATCH: Final = 256
#: XAUTOCLAIM calls per stream per sweep: at most 16 x 256 entries claimed at once.
_CLAIM_CALLS: Final = 16


class GroupReader(Reader):
    """A member of consumer group ``group`` named ``consumer`` (see the module docstring)."""

    def __init__(self, *args: Any, group: str, consumer: str, claim_idle: float, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.group = self.group_name = group
        self.consumer = self.member = consumer
        self.claim_idle = claim_idle
        self.read_group_sha = script_sha(READ_GROUP)
        self.ensure_group = self.client.register_script(ENSURE_GROUP)
        #: (items pushed when the entry is done, stream key, entry id), in push order.
        self.unacked: deque[tuple[int, str, bytes]] = deque()
        #: Entries in our channel and not acknowledged: not ours to claim again.
        self.inflight: set[bytes] = set()

    def position(self) -> str:
        raise ConfigurationError(
            "a consumer group keeps its members' place in Redis; position() is for "
            "consumers without group="
        )

    async def after_reconnect(self) -> None:
        # A restarted Redis may have lost the group: recreate it over everything
        # the new streams hold.
        await self.ensure("0")

    async def tasks(self, nursery: trio.Nursery) -> None:
        nursery.start_soon(self.acknowledge, name=f"redis-feed:{self.group}:ack")
        nursery.start_soon(self.reclaim, name=f"redis-feed:{self.group}:claim")
        await trio.lowlevel.checkpoint()

    async def ensure(self, start: str) -> None:
        keys = [*self.keys.values(), self.layout.group(self.group_name)]
        await self.ensure_group(keys=keys, args=[self.group_name, start])

    async def read(self) -> None:
        """One read as a group member: new entries (with group-wide loss detection), or wait."""
        keys = [*self.keys.values(), self.layout.group(self.group_name), self.layout.clock]
        reply: Any = await self.pipe.script(
            self.read_group_sha,
            READ_GROUP,
            keys,
            [self.group_name, self.member, READ_BATCH],
        )
        streams, gaps, clock_last = reply
        if not streams:
            await self.pipe.call(
                b"XREAD", b"COUNT", b"1", b"BLOCK", b"%d" % BLOCK_MS, b"STREAMS",
                self.clock_key, clock_last or b"0-0", blocking=BLOCK_S,
            )  # fmt: skip
            return
        losses: dict[bytes, tuple[int, int]] = {}
        for _key, ident, expected, received in gaps or ():
            losses[ident] = (int(expected), int(received))
        entries: list[Entry] = []
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
        self, entries: list[Entry], losses: Mapping[bytes, tuple[int, int]], *, reclaimed: bool
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
                        pipe.xack(key, self.group_name, idents)
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
                key, self.group_name, self.member, idle_ms, cursor, count=CLAIM_BATCH
            )
            cursor, claimed = reply[0], reply[1]
            deleted: Any = reply[2] if len(reply) > 2 else ()
            if deleted:
                await self._lost_while_pending(name, len(deleted))
            entries = []
            for item in claimed:
                ident = ident_of(item)
                if ident in self.inflight:
                    continue  # ours and still in our channel: not a second delivery
                entry = self._decode(name, ident, parse_id(ident)[1], fields_of(item))
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


