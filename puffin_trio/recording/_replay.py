"""Replay: a recording read back as a channel of events, in ``ts_recv`` order, streaming.

This module owns :func:`open_replay`: choosing the files that can match the
filters, reading each run's files of one provider and kind (a *chain*, in
recorded order) as a stream of record batches in a worker thread, merging the
chains by ``(merge time, run, rec_index)`` (the merge time is the chain's
running maximum of ``ts_recv``, :data:`_MERGE_TS`, so that a backfill's
reordering replays as recorded), pacing by the recorded ``ts_recv`` at
``speed``, and publishing into a :class:`~puffin_trio.channels.FanOut`, whose
consumer is the channel the user iterates. It must not load more than one
batch per chain into memory, or write anything.

Merging: each chain holds a batch of up to :data:`_BATCH_ROWS` events. Every
event up to the smallest *last* key among the buffered batches is in order
relative to everything not yet read (a chain's merge time never decreases),
so those events are sorted together (one vectorised sort by merge time, run
and ``rec_index``) and published, and the chains that ran dry read their next
batch. A round takes at most :data:`_ROUND` events of each chain, built into
event objects only then. A chain is opened only once the merge reaches the
first ``ts_recv`` of its files (from the Parquet statistics), so memory
depends on how many chains overlap in time, not on how long the recording is.
"""

from __future__ import annotations

import math
import operator
from bisect import bisect_left, bisect_right
from collections.abc import AsyncIterator, Collection, Iterable, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from itertools import islice
from os import PathLike
from pathlib import Path
from typing import Any, Final

import attrs
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import trio

from puffin_trio.channels import DEFAULT_CAPACITY, EventReceiver, FanOut
from puffin_trio.errors import ConfigurationError, ReplayError
from puffin_trio.events import Event
from puffin_trio.recording._layout import NS_PER_DAY, DataFile, scan
from puffin_trio.recording._schema import (
    KINDS,
    REC_INDEX,
    EventSchema,
    check_version,
    schema_for_kind,
)

__all__ = ["open_replay"]

#: Rows read, filtered and turned into events at a time per chain: ~1.5 MB of
#: events and a few ms of work on the event loop (so other tasks wait at most
#: that long), while the thread hand-off per batch (~50 µs) costs about 1 %.
_BATCH_ROWS: Final = 4096
#: Batches each chain reads ahead of the merge (Arrow data, a few hundred kB each).
_READ_AHEAD: Final = 1
#: Events built and published at once, at most, per chain taking part in a merge
#: round. Events that are consumed before the next ones are built die young: the
#: garbage collector's generation 0 (700 allocations) rarely fills, and few
#: events outlive a collection into the older generations, whose full
#: collections scan the whole heap (with 4,096 events at once, they cost
#: replay a third of its time). Small enough for that, large enough that a
#: round's fixed costs (a sort, a publish) stay under 0.1 µs an event.
_ROUND: Final = 512
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1

#: The column replay adds to each batch it reads: the chain's *merge time*, the
#: largest ``ts_recv`` up to and including the row. A live recording is in
#: ``ts_recv`` order except where the session delivered out of it on purpose: a
#: backfill hands out the recovered trades (received when their page came)
#: before the live trades it held (received earlier). Merging by the running
#: maximum keeps every chain in recorded order and the merge well defined;
#: where ``ts_recv`` never decreases it is ``ts_recv`` itself.
_MERGE_TS: Final = "__merge_ts"

_Key = tuple[int, int, int]  # (merge time, run rank, rec_index)


@attrs.frozen
class _File:
    """A data file to read: its row groups that can match, and their smallest ``ts_recv``."""

    path: Path
    order: tuple[int, int, int]
    row_groups: tuple[int, ...]
    first_ts: int
    #: String columns present in the file, read back dictionary-encoded.
    dictionary: tuple[str, ...]


@attrs.frozen
class _Chain:
    """The files of one run, provider and kind, in recorded order."""

    schema: EventSchema
    rank: int
    files: tuple[_File, ...]

    @property
    def first_ts(self) -> int:
        return min(f.first_ts for f in self.files)


@attrs.frozen
class _Filters:
    start: int | None
    end: int | None
    #: Symbols to keep, plus "" (session-level Status/Gap events concern every symbol).
    symbols: pa.Array | None


# --------------------------------------------------------------------------- planning


def _row_groups(
    metadata: pq.FileMetaData, path: Path, day: int, filters: _Filters
) -> tuple[tuple[int, ...], int]:
    """The row groups whose ``ts_recv`` range meets ``[start, end)``, and their smallest ts."""
    names = [metadata.schema.column(i).path for i in range(metadata.num_columns)]
    try:
        column = names.index("ts_recv")
    except ValueError:
        raise ReplayError(f"{path}: no ts_recv column", path=str(path)) from None
    chosen = []
    first = _INT64_MAX
    for index in range(metadata.num_row_groups):
        group = metadata.row_group(index)
        if group.num_rows == 0:
            continue
        stats = group.column(column).statistics
        if stats is not None and stats.has_min_max:
            low, high = int(stats.min_raw), int(stats.max_raw)
        else:  # no statistics (not written by us): the file's day bounds it
            low, high = day * NS_PER_DAY, (day + 1) * NS_PER_DAY - 1
        if filters.start is not None and high < filters.start:
            continue
        if filters.end is not None and low >= filters.end:
            continue
        chosen.append(index)
        first = min(first, low)
    return tuple(chosen), first


def _plan_file(data: DataFile, filters: _Filters) -> tuple[EventSchema, _File] | None:
    path = str(data.path)
    try:
        metadata = pq.read_metadata(data.path)
        arrow_schema = metadata.schema.to_arrow_schema()
    except (OSError, pa.ArrowException) as exc:
        raise ReplayError(f"{path}: not a readable Parquet file ({exc})", path=path) from exc
    kind = check_version(metadata.metadata, path)
    if kind != data.kind:
        raise ReplayError(f"{path}: a {kind!r} file in a kind={data.kind} directory", path=path)
    schema = schema_for_kind(kind)
    schema.check_file_schema(arrow_schema, path)
    groups, first = _row_groups(metadata, data.path, data.day, filters)
    if not groups:
        return None
    present = set(arrow_schema.names)
    dictionary = tuple(c for c in schema.string_columns if c in present)
    return schema, _File(data.path, data.order, groups, first, dictionary)


def _plan(
    root: Path,
    providers: Collection[str] | None,
    kinds: Collection[str] | None,
    filters: _Filters,
) -> list[_Chain]:
    """The chains to merge, sorted by their first ``ts_recv`` (blocking: a worker thread)."""
    first_day = None if filters.start is None else filters.start // NS_PER_DAY
    last_day = None if filters.end is None else (filters.end - 1) // NS_PER_DAY
    found = scan(root, providers=providers, kinds=kinds, first_day=first_day, last_day=last_day)
    groups: dict[tuple[str, str, str], tuple[EventSchema, list[_File]]] = {}
    for data in found:
        planned = _plan_file(data, filters)
        if planned is None:
            continue
        schema, file = planned
        groups.setdefault((data.run, data.provider, data.kind), (schema, []))[1].append(file)
    ranks = {run: rank for rank, run in enumerate(sorted({key[0] for key in groups}))}
    chains = [
        _Chain(schema, ranks[run], tuple(sorted(files, key=operator.attrgetter("order"))))
        for (run, _, _), (schema, files) in groups.items()
    ]
    chains.sort(key=lambda c: (c.first_ts, c.rank, c.schema.kind))
    return chains


# --------------------------------------------------------------------------- reading


class _ChainReader:
    """Reads one chain's files as filtered Arrow batches (blocking: a worker thread)."""

    def __init__(self, chain: _Chain, filters: _Filters) -> None:
        self._files: Iterator[_File] = iter(chain.files)
        self._filters = filters
        self._batches: Iterator[pa.RecordBatch] | None = None
        self._file: pq.ParquetFile | None = None
        self.path = ""
        #: The largest ``ts_recv`` read so far: where the chain's merge time stands.
        self._merge_ts = pa.scalar(-(2**63), pa.int64())

    def read(self) -> pa.RecordBatch | None:
        """The next non-empty filtered batch, or None when the chain is exhausted."""
        while True:
            if self._batches is None:
                file = next(self._files, None)
                if file is None:
                    return None
                self._open(file)
            assert self._batches is not None
            try:
                batch = next(self._batches, None)
            except (OSError, pa.ArrowException) as exc:
                raise ReplayError(f"{self.path}: damaged file ({exc})", path=self.path) from exc
            if batch is None:
                self.close()
                continue
            batch = self._with_merge_time(batch)
            batch = self._filter(batch)
            if batch.num_rows:
                return batch

    def _open(self, file: _File) -> None:
        self.path = str(file.path)
        try:
            # pre_buffer would read every selected row group of the file up front
            # (the whole file: tens of MB per chain); local reads need no coalescing.
            parquet = pq.ParquetFile(
                file.path,
                read_dictionary=list(file.dictionary),
                memory_map=False,
                pre_buffer=False,
            )
            self._batches = parquet.iter_batches(
                batch_size=_BATCH_ROWS, row_groups=list(file.row_groups), use_threads=False
            )
        except (OSError, pa.ArrowException) as exc:
            raise ReplayError(f"{self.path}: cannot read ({exc})", path=self.path) from exc
        self._file = parquet

    def _with_merge_time(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """``batch`` with its :data:`_MERGE_TS` column: the running maximum of ``ts_recv``.

        Taken before filtering, so that a filtered replay orders what it keeps
        exactly as the whole replay does.
        """
        if not batch.num_rows:
            return batch
        ts = batch.column("ts_recv").view(pa.int64())
        merge_ts = pc.max_element_wise(pc.cumulative_max(ts), self._merge_ts)
        self._merge_ts = merge_ts[-1]
        return batch.append_column(_MERGE_TS, merge_ts)

    def _filter(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        filters = self._filters
        mask: pa.Array | None = None
        if filters.start is not None or filters.end is not None:
            ts = batch.column("ts_recv").view(pa.int64())
            if filters.start is not None:
                mask = pc.greater_equal(ts, filters.start)
            if filters.end is not None:
                below = pc.less(ts, filters.end)
                mask = below if mask is None else pc.and_(mask, below)
        if filters.symbols is not None:
            symbol = batch.column("symbol")
            if pa.types.is_dictionary(symbol.type):
                wanted = pc.take(pc.is_in(symbol.dictionary, filters.symbols), symbol.indices)
            else:
                wanted = pc.is_in(symbol, filters.symbols)
            mask = wanted if mask is None else pc.and_(mask, wanted)
        return batch if mask is None else batch.filter(mask)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        self._file = None
        self._batches = None


#: What a chain's read-ahead task hands over: a batch and its file, or the failure.
_Read = tuple[str, pa.RecordBatch] | ReplayError


class _Source:
    """One chain being merged: a task reading ahead, and the unpublished rest of a batch.

    The task reads Arrow batches in a worker thread, where Parquet decoding
    runs without the GIL, one batch ahead of the merge. Turning a batch into
    events is Python work and happens on the event loop: in a worker thread it
    would only contend for the GIL with the consumer, and every pyarrow call's
    release and re-acquisition of the GIL would wait out the interpreter's
    5 ms switch interval (this made replay several times slower).
    """

    def __init__(
        self,
        chain: _Chain,
        filters: _Filters,
        nursery: trio.Nursery,
        limiter: trio.CapacityLimiter,
    ) -> None:
        self.rank = chain.rank
        self.schema = chain.schema
        send, self._receive = trio.open_memory_channel[_Read](_READ_AHEAD)
        nursery.start_soon(self._read_ahead, _ChainReader(chain, filters), send, limiter)
        #: The current batch's events, built a slice at a time by :meth:`take`.
        self._rows: Iterator[Event] = iter(())
        self.ts: list[int] = []
        self.rec: list[int] = []
        self.ts_array: pa.Array | None = None
        self.rec_array: pa.Array | None = None
        self.pos = 0

    @staticmethod
    async def _read_ahead(
        reader: _ChainReader,
        send: trio.MemorySendChannel[_Read],
        limiter: trio.CapacityLimiter,
    ) -> None:
        async with send:
            try:
                while (
                    batch := await trio.to_thread.run_sync(reader.read, limiter=limiter)
                ) is not None:
                    await send.send((reader.path, batch))
            except ReplayError as exc:
                await send.send(exc)
            finally:
                reader.close()

    async def next_batch(self) -> bool:
        """Take the next batch (waiting for it) and turn it into events; False at the end."""
        try:
            read = await self._receive.receive()
        except trio.EndOfChannel:
            return False
        if isinstance(read, ReplayError):
            raise read
        path, batch = read
        values = self.schema.read_columns(batch, path)
        self._rows = map(self.schema.build, *values)
        self.ts_array = batch.column(_MERGE_TS)
        self.ts = self.ts_array.to_pylist()
        self.rec_array = batch.column(REC_INDEX)
        self.rec = self.rec_array.to_pylist()
        self.pos = 0
        return True

    @property
    def remaining(self) -> int:
        return len(self.ts) - self.pos

    def take(self, count: int) -> list[Event]:
        """The next ``count`` events of the batch, built now."""
        self.pos += count
        return list(islice(self._rows, count))

    def key_at(self, index: int) -> _Key:
        return (self.ts[index], self.rank, self.rec[index])

    def last_key(self) -> _Key:
        return self.key_at(-1)

    def count_upto(self, bound: _Key) -> int:
        """How many of the remaining events have a key <= ``bound``."""
        ts, pos = self.ts, self.pos
        bound_ts, bound_rank, bound_rec = bound
        high = bisect_right(ts, bound_ts, pos)
        low = bisect_left(ts, bound_ts, pos, high)
        if low == high or self.rank < bound_rank:
            return high - pos
        if self.rank > bound_rank:
            return low - pos
        return bisect_right(self.rec, bound_rec, low, high) - pos


# --------------------------------------------------------------------------- merging


class _Replay:
    """The producer task: merges the chains and publishes into the fan-out."""

    def __init__(self, chains: list[_Chain], filters: _Filters, speed: float | None) -> None:
        self._pending = chains
        self._filters = filters
        self._speed = speed
        self._active: list[_Source] = []
        self._origin: tuple[float, int] | None = None
        #: ``ts_recv`` of the newest published event: the fan-out's clock ("replay
        #: time"), so a consumer's ``lag_ns`` says how far behind the replay it is.
        self.now_ns = 0
        self.fanout = FanOut(clock=lambda: self.now_ns)
        #: One read at a time: reading is a fraction of the work (the events are
        #: built on the loop), and each extra reading thread keeps its own
        #: allocator heap (tens of MB of RSS with pyarrow's mimalloc).
        self._limiter = trio.CapacityLimiter(1)
        self.error: ReplayError | None = None

    async def run(self, on_error: trio.CancelScope) -> None:
        """Publish every matching event, then close the fan-out.

        A ReplayError is kept in :attr:`error` and cancels ``on_error`` (the
        caller's block), so that it is raised from ``open_replay``.
        """
        try:
            async with trio.open_nursery() as readers:
                try:
                    await self._merge(readers)
                except ReplayError as exc:
                    self.error = exc
                    on_error.cancel()
                readers.cancel_scope.cancel()
        finally:
            self.fanout.close()

    async def _merge(self, readers: trio.Nursery) -> None:
        while True:
            bound = await self._fill(readers)
            if bound is None:
                return
            # Every chain's event _ROUND further on also bounds what is in order, and
            # keeps a round (the events built and published at once) small.
            bound = min(
                bound, *(s.key_at(min(s.pos + _ROUND, len(s.ts)) - 1) for s in self._active)
            )
            taken = []
            for source in self._active:
                count = source.count_upto(bound)
                if count:
                    taken.append((source, count))
            await self._publish(self._merged(taken))

    async def _fill(self, readers: trio.Nursery) -> _Key | None:
        """Give every active chain a batch and open the chains that are due; the merge bound.

        The bound is the smallest last key among the buffered batches (None
        when everything has been published).
        """
        while True:
            for source in [s for s in self._active if s.remaining == 0]:
                if not await source.next_batch():
                    self._active.remove(source)
            keys = [s.last_key() for s in self._active]
            bound = min(keys) if keys else None
            if self._pending and (bound is None or self._pending[0].first_ts <= bound[0]):
                chain = self._pending.pop(0)
                self._active.append(_Source(chain, self._filters, readers, self._limiter))
                continue
            return bound

    @staticmethod
    def _merged(taken: list[tuple[_Source, int]]) -> list[Event]:
        """The taken events of every chain in one list, sorted by their keys."""
        if len(taken) == 1:
            source, count = taken[0]
            return source.take(count)
        flat: list[Event] = []
        ts_parts, rank_parts, rec_parts = [], [], []
        for source, count in taken:
            assert source.ts_array is not None and source.rec_array is not None
            ts_parts.append(source.ts_array.slice(source.pos, count))
            rec_parts.append(source.rec_array.slice(source.pos, count))
            rank_parts.append(pa.repeat(pa.scalar(source.rank, pa.int32()), count))
            flat.extend(source.take(count))
        columns = {"ts": pa.concat_arrays(ts_parts), "rec": pa.concat_arrays(rec_parts)}
        keys = [("ts", "ascending"), ("rec", "ascending")]
        if len({source.rank for source, _ in taken}) > 1:
            columns["rank"] = pa.concat_arrays(rank_parts)
            keys.insert(1, ("rank", "ascending"))
        order = pc.sort_indices(pa.table(columns), sort_keys=keys)
        return list(map(flat.__getitem__, order.to_pylist()))

    async def _publish(self, events: list[Event]) -> None:
        if not events:
            return
        if self._speed is None:
            self.now_ns = events[-1].ts_recv
            await self.fanout.publish_batch(events)
            return
        ready: list[Event] = []
        for event in events:
            due = self._due(event.ts_recv)
            if due > trio.current_time():
                if ready:
                    await self.fanout.publish_batch(ready)
                    ready = []
                await trio.sleep_until(due)
            self.now_ns = event.ts_recv
            ready.append(event)
        if ready:
            await self.fanout.publish_batch(ready)

    def _due(self, ts_recv: int) -> float:
        """When (trio time) an event is due at ``speed``, relative to the first one."""
        assert self._speed is not None
        if self._origin is None:
            self._origin = (trio.current_time(), ts_recv)
        start, first_ts = self._origin
        return start + (ts_recv - first_ts) / (1e9 * self._speed)


# --------------------------------------------------------------------------- arguments


def _time(name: str, value: int | datetime | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ConfigurationError(
                f"{name} must be an aware datetime (e.g. tzinfo=datetime.UTC), got {value!r}"
            )
        delta = value - _EPOCH
        return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(
            f"{name} must be ns since the epoch (int) or an aware datetime, got {value!r}"
        )
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise ConfigurationError(f"{name} {value} is outside the int64 range of timestamps")
    return value


def _names(name: str, values: str | Iterable[str] | None) -> frozenset[str] | None:
    if values is None:
        return None
    if isinstance(values, str):
        return frozenset({values})
    names = frozenset(values)
    if not all(isinstance(v, str) for v in names):
        raise ConfigurationError(f"{name} must be strings, got {sorted(map(repr, names))}")
    return names


def _kinds(values: str | type | Iterable[str | type] | None) -> frozenset[str] | None:
    if values is None:
        return None
    items: list[Any] = [values] if isinstance(values, str | type) else list(values)
    known = set(KINDS.values())
    names = set()
    for item in items:
        kind = KINDS.get(item) if isinstance(item, type) else item
        if kind not in known:
            raise ConfigurationError(
                f"unknown kind {item!r}; kinds are event classes or {', '.join(sorted(known))}"
            )
        names.add(kind)
    return frozenset(names)


def _speed(value: float | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigurationError(
            f"speed must be None (as fast as possible) or a positive number, got {value!r}"
        )
    return None if math.isinf(value) else float(value)


@asynccontextmanager
async def open_replay(
    path: str | PathLike[str],
    *,
    speed: float | None = None,
    start: int | datetime | None = None,
    end: int | datetime | None = None,
    providers: str | Iterable[str] | None = None,
    symbols: str | Iterable[str] | None = None,
    kinds: str | type | Iterable[str | type] | None = None,
    capacity: int = DEFAULT_CAPACITY,
) -> AsyncIterator[EventReceiver]:
    """Replay the recording in ``path`` as a channel of events, like ``sup.events()``.

    Events come out in ``ts_recv`` order (ties: the order they were
    recorded), ``Status`` and ``Gap`` included, equal to the events that
    were recorded. The channel is an :class:`~puffin_trio.channels.EventReceiver`
    (``async for``, ``receive()``, ``statistics()``) with ``capacity``
    entries and the "block" policy: the replay waits for the consumer.
    It ends (:exc:`trio.EndOfChannel`) after the last event.

    * ``speed``: None replays as fast as possible; ``1.0`` paces events by
      their recorded ``ts_recv`` differences on trio's clock (so a
      ``MockClock`` makes it instant), ``10.0`` ten times faster. A
      consumer that falls behind gets the late events at once.
    * ``start``/``end``: keep events with ``start <= ts_recv < end`` (ns
      since the epoch, or aware datetimes).
    * ``providers``, ``symbols``: keep these providers, these symbols.
      Events with ``symbol == ""`` (a session's ``Status``, a reconnect's
      ``Gap``) concern every symbol and pass the ``symbols`` filter.
    * ``kinds``: kind names (``"trade"``, ``"quote"``, ``"book"``, ``"bar"``,
      ``"status"``, ``"gap"``, ...) or event classes.

    Raises :exc:`~puffin_trio.errors.ReplayError` on entry if ``path`` is not
    a recording or a file cannot be read (a newer major schema version:
    :exc:`~puffin_trio.errors.SchemaVersionError`), and on exit if a file
    turned out damaged while reading (the block is cancelled then);
    :exc:`~puffin_trio.errors.ConfigurationError` for bad arguments.
    """
    filters_symbols = _names("symbols", symbols)
    filters = _Filters(
        _time("start", start),
        _time("end", end),
        None if filters_symbols is None else pa.array(sorted(filters_symbols | {""})),
    )
    pace = _speed(speed)
    chosen_providers = _names("providers", providers)
    chosen_kinds = _kinds(kinds)
    chains = await trio.to_thread.run_sync(
        _plan, Path(path), chosen_providers, chosen_kinds, filters
    )
    replay = _Replay(chains, filters, pace)
    body_error: BaseException | None = None
    try:
        consumer = replay.fanout.consumer(capacity=capacity, overflow="block", name="replay")
        async with consumer as events:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(replay.run, nursery.cancel_scope)
                try:
                    yield events
                except BaseException as exc:
                    body_error = exc
                    raise
                finally:
                    nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # The producer never raises, so a group here carries the body's own error.
        if body_error is not None and len(group.exceptions) == 1 and replay.error is None:
            raise body_error from None
        if replay.error is None:
            raise
    if replay.error is not None:
        raise replay.error
