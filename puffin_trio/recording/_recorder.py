"""The recorder: events in, Parquet files out, without stalling the event loop.

This module owns :func:`open_recorder` and :class:`Recorder`: buffering the
events it is given, converting them to Arrow on the event loop in slices of
:data:`_CHUNK` events, sealing one segment per partition every
``flush_interval`` in worker threads, rotating files by time and size, and
finishing rotated files in another worker thread. It must not block the
event loop on the disk, grow memory without bound, or lose an event without
raising.

Durability: a crash (even SIGKILL) loses only what was not yet in a sealed
segment: events that arrived since the last seal began, at most
``flush_interval`` plus the time one seal takes. Sealed segments and finished
files are complete Parquet files; see :mod:`puffin_trio.recording._layout`
for how a finished file replaces its segments. A partition's rows may be
encoded into its segment before the seal (:data:`_ENCODE_ROWS` at a time, by
an encoder thread), but under a hidden temporary name that only the seal
turns into a ``.parquet`` name.

Memory: at most :data:`_CHUNK` events wait as Python objects; converted
batches wait for the encoder or the next seal, and once
:data:`_MAX_UNSEALED_BYTES` of them wait, :meth:`Recorder.write` and
:meth:`Recorder.record` wait for the encoder or the seal to take them (with
``overflow="block"`` upstream, a disk slower than the feed slows the feed).
At most twice that is held: one set being written, one filling.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from os import PathLike
from pathlib import Path
from typing import Final

import attrs
import pyarrow as pa
import pyarrow.compute as pc
import trio

from puffin_trio.errors import CodecError, ConfigurationError, RecordingError
from puffin_trio.events import EVENT_TYPES, Event
from puffin_trio.recording._layout import (
    NS_PER_DAY,
    file_name,
    new_run_id,
    partition_parts,
    segment_name,
    temp_name,
)
from puffin_trio.recording._schema import SCHEMAS, EventSchema
from puffin_trio.recording._writer import (
    Aborted,
    FinishJob,
    OpenSegment,
    SegmentJob,
    finish_file,
    recording_error,
    write_segments,
)

__all__ = [
    "CLOSE_TIMEOUT",
    "DEFAULT_FLUSH_INTERVAL",
    "DEFAULT_ROTATE_BYTES",
    "DEFAULT_ROTATE_INTERVAL",
    "Recorder",
    "RecorderStatistics",
    "open_recorder",
]

#: Seconds between seals: what a crash can lose, and how fresh the files on disk
#: are. One second costs one small file per partition per second until the file
#: is finished, and a few ms of a worker thread.
DEFAULT_FLUSH_INTERVAL: Final = 1.0
#: A file is finished after this many seconds (hourly files: 24 a day per
#: partition, the granularity people query by).
DEFAULT_ROTATE_INTERVAL: Final = 3600.0
#: ... or once its segments hold this many bytes: a file that one reader
#: thread handles in a second or two, and that finishing rewrites in a few
#: seconds. A busy hour of quotes for one provider (tens of millions of events at
#: about 10 bytes each) stays one or two files.
DEFAULT_ROTATE_BYTES: Final = 256 * 2**20
#: Events converted to Arrow at a time on the event loop: ~4 ms of work (about
#: 1 µs an event), so other tasks wait at most that long, while the per-slice
#: costs (grouping, one record batch per partition) stay under 0.1 µs an event.
_CHUNK: Final = 4096
#: Converted bytes waiting for the next seal before producers wait for it: about
#: a million events, two seconds of a very busy feed, a few tenths of a
#: second of the writer thread.
_MAX_UNSEALED_BYTES: Final = 64 * 2**20
#: Rows of a partition encoded into its open segment at once, before the seal:
#: a worker thread encodes them (without the GIL) while the event loop converts
#: the next events, so that a seal has only the last rows left to write. A row
#: group this size compresses as well as a larger one (within 1-2 %), and a
#: reader decompresses one at a time.
_ENCODE_ROWS: Final = 16_384
#: Worker threads writing one seal's segments (one per partition) at once: the
#: machine's second core, if it has one, encodes while the first does.
_WRITERS: Final = 2
#: Rotated files waiting to be finished before the sealer waits (one per
#: partition and rotation, so this is never reached unless finishing stalls).
_FINISH_QUEUE: Final = 64
#: Seconds that finishing files may take when the recorder closes; past it,
#: finishing stops between two segments and the remaining segments stay as
#: they are (complete files, read by replay and any Parquet reader). Measured
#: on the thread's real clock, since the event loop's may be a MockClock.
CLOSE_TIMEOUT: Final = 30.0

_RECORDABLE: Final = frozenset(EVENT_TYPES)
_CONVERSION_ERRORS: Final = (pa.ArrowException, TypeError, ValueError, OverflowError)


@attrs.frozen(kw_only=True)
class RecorderStatistics:
    """A snapshot of a recorder's counters (see :meth:`Recorder.statistics`)."""

    #: Events in files on disk (sealed segments and finished files).
    events: int = attrs.field(metadata={"metric": "counter"})
    #: Bytes of this run's files on disk.
    bytes: int = attrs.field(metadata={"metric": "counter"})
    #: This run's files on disk (sealed segments not yet finished count one each).
    files: int
    #: Events accepted but not yet on disk: what a crash now would lose.
    queued: int
    #: Seconds since the last seal completed (since opening, before the first).
    last_flush_age: float
    #: Write failures and rejected events.
    errors: int = attrs.field(metadata={"metric": "counter"})


class _Partition:
    """One ``(provider, kind, day)``: its open file's segments and its unsealed batches."""

    __slots__ = (
        "batches",
        "directory",
        "file_bytes",
        "file_no",
        "opened",
        "opened_at",
        "parts",
        "pending_rows",
        "schema",
        "segment_no",
        "segment_sizes",
        "segments",
    )

    def __init__(self, root: Path, parts: tuple[str, str, str], schema: EventSchema) -> None:
        self.parts = parts
        self.directory = root.joinpath(*parts)
        self.schema = schema
        self.batches: list[pa.RecordBatch] = []
        #: Rows in ``batches``.
        self.pending_rows = 0
        #: The segment being encoded before its seal, if rows have been handed over.
        self.opened: OpenSegment | None = None
        self.file_no = 0
        self.segment_no = 0
        self.segments: list[str] = []
        self.segment_sizes: list[int] = []
        self.file_bytes = 0
        self.opened_at = 0.0


class Recorder:
    """Writes events into a recording directory; made by :func:`open_recorder`.

    Several tasks may call :meth:`write` and :meth:`record` at once; each
    event gets the next position in the run (``rec_index``), which replay
    uses to order events that share a ``ts_recv``.
    """

    def __init__(
        self,
        root: Path,
        run: str,
        *,
        flush_interval: float,
        rotate_interval: float,
        rotate_bytes: int,
        fsync: bool,
    ) -> None:
        self._root = root
        self._run = run
        self._flush_interval = flush_interval
        self._rotate_interval = rotate_interval
        self._rotate_bytes = rotate_bytes
        self._fsync = fsync
        self._events: list[Event] = []
        self._next_index = 0
        self._partitions: dict[tuple[str, str, int], _Partition] = {}
        self._unsealed_rows = 0
        self._unsealed_bytes = 0
        self._sealing_rows = 0
        self._seals_started = 0
        self._seals_done = 0
        self._written = 0
        self._bytes = 0
        self._files = 0
        self._errors = 0
        self._last_flush = trio.current_time()
        self._error: RecordingError | None = None
        self._rejected: list[Exception] = []
        self._closing = False
        self._close_deadline: float | None = None
        self._seal_wanted = trio.Event()
        self._room = trio.lowlevel.ParkingLot()
        self._sealed = trio.lowlevel.ParkingLot()
        self._record_scopes: set[trio.CancelScope] = set()
        self._finish_send, self._finish_receive = trio.open_memory_channel[
            tuple[FinishJob, list[int]]
        ](_FINISH_QUEUE)
        self._sealer_done = trio.Event()
        self._finisher_done = trio.Event()
        self._encode_jobs: deque[tuple[OpenSegment, list[pa.RecordBatch], int]] = deque()
        self._encodes_queued = 0
        self._encodes_done = 0
        self._segments_opened = 0
        self._encode_wanted = trio.lowlevel.ParkingLot()
        self._encoded = trio.lowlevel.ParkingLot()
        self._encoder_done = trio.Event()

    @property
    def path(self) -> Path:
        """The recording's root directory."""
        return self._root

    @property
    def run(self) -> str:
        """This run's name, the prefix of every file it writes."""
        return self._run

    # ------------------------------------------------------------------ producers

    async def write(self, event: Event) -> None:
        """Record one event. A checkpoint; waits while too much is waiting for a seal.

        If cancelled, the event was not recorded. Raises :exc:`TypeError` for
        an object that is not an event (``puffin_trio.events.EVENT_TYPES``),
        the recorder's :exc:`~puffin_trio.errors.RecordingError` once
        writing has failed, and :exc:`trio.ClosedResourceError` after the
        recorder's block has ended. A field whose value does not fit its column is
        found when the slice of events holding it is converted, and raised
        as :exc:`~puffin_trio.errors.CodecError` from that call (the other
        events are kept).
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        self._raise_if_failed()
        if type(event) not in _RECORDABLE:
            raise _not_an_event(event)
        waited = await self._wait_for_room()
        self._events.append(event)
        if len(self._events) >= _CHUNK:
            self._convert()
            self._raise_if_failed()
        if not waited:
            await trio.lowlevel.cancel_shielded_checkpoint()

    async def record(self, events: trio.abc.ReceiveChannel[Event]) -> int:
        """Record every event from ``events`` until it ends; the number recorded.

        Returns when the channel raises :exc:`trio.EndOfChannel` (as
        ``sup.events()`` does when the supervisor closes); cancel it to stop
        earlier. Raises as :meth:`write` does; a failure to write interrupts
        it even while it waits for the channel.
        """
        self._raise_if_failed()
        count = 0
        with trio.CancelScope() as scope:
            self._record_scopes.add(scope)
            try:
                async for event in events:
                    if type(event) not in _RECORDABLE:
                        raise _not_an_event(event)
                    self._events.append(event)
                    count += 1
                    if len(self._events) >= _CHUNK:
                        self._convert()
                        self._raise_if_failed()
                        if self._unsealed_bytes >= _MAX_UNSEALED_BYTES:
                            await self._wait_for_room()
            finally:
                self._record_scopes.discard(scope)
        self._raise_if_failed()
        return count

    async def flush(self) -> None:
        """Seal everything recorded so far into files on disk; returns once it is there.

        A checkpoint. Raises the recorder's RecordingError if writing fails.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        self._raise_if_failed()
        self._convert()
        want = self._seals_started + 1
        self._seal_wanted.set()
        while self._seals_done < want and self._error is None:
            await self._sealed.park()
        self._raise_if_failed()

    def statistics(self) -> RecorderStatistics:
        """The recorder's counters now (see :class:`RecorderStatistics`)."""
        return RecorderStatistics(
            events=self._written,
            bytes=self._bytes,
            files=self._files,
            queued=len(self._events) + self._unsealed_rows + self._sealing_rows,
            last_flush_age=trio.current_time() - self._last_flush,
            errors=self._errors,
        )

    async def _wait_for_room(self) -> bool:
        """Wait while too many converted bytes wait for a seal; True if it waited."""
        waited = False
        while self._unsealed_bytes >= _MAX_UNSEALED_BYTES and self._error is None:
            self._seal_wanted.set()
            waited = True
            await self._room.park()
        self._raise_if_failed()
        return waited

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error
        if self._closing:
            raise trio.ClosedResourceError("the recorder is closed")
        if self._rejected:
            rejected, self._rejected = self._rejected, []
            raise rejected[0]

    # ------------------------------------------------------------------ conversion

    def _convert(self) -> None:
        """Turn the buffered events into record batches, one per partition."""
        events = self._events
        if not events:
            return
        self._events = []
        base = self._next_index
        self._next_index += len(events)
        # One pass: the events of each (provider, class) and their positions in the run.
        groups: dict[tuple[str, type], tuple[list[Event], list[int]]] = {}
        for i, event in enumerate(events, base):
            key = (event.provider, type(event))
            group = groups.get(key)
            if group is None:
                groups[key] = group = ([], [])
            group[0].append(event)
            group[1].append(i)
        for (provider, cls), (chosen, positions) in groups.items():
            schema = SCHEMAS[cls]
            try:
                batch = schema.to_batch(chosen, positions, provider=provider)
            except _CONVERSION_ERRORS:
                checked = self._convert_checked(schema, chosen, positions)
                if checked is None:
                    continue
                batch = checked
            self._place(provider, schema, batch)

    def _convert_checked(
        self, schema: EventSchema, events: Sequence[Event], positions: Sequence[int]
    ) -> pa.RecordBatch | None:
        """The slow path: find the events that do not fit, reject them, keep the rest."""
        good: list[Event] = []
        good_positions: list[int] = []
        for event, position in zip(events, positions, strict=True):
            field = schema.bad_field(event)
            if field is None:
                good.append(event)
                good_positions.append(position)
                continue
            self._errors += 1
            value = repr(getattr(event, field))
            if len(value) > 40:
                value = value[:37] + "..."
            self._rejected.append(
                CodecError(
                    f"cannot record {schema.cls.__name__}.{field} = {value}: not a value of "
                    f"its column's type ({schema.schema.field(field).type}); the event was "
                    f"not recorded"
                )
            )
        return schema.to_batch(good, good_positions) if good else None

    def _place(self, provider: str, schema: EventSchema, batch: pa.RecordBatch) -> None:
        """Add a batch to its partitions (one per UTC day of ``ts_recv``)."""
        ts = batch.column("ts_recv").view(pa.int64())
        bounds = pc.min_max(ts).as_py()
        first, last = bounds["min"] // NS_PER_DAY, bounds["max"] // NS_PER_DAY
        if first == last:
            self._add(provider, schema, first, batch)
            return
        by_day: dict[int, list[int]] = {}
        for row, value in enumerate(ts.to_pylist()):
            by_day.setdefault(value // NS_PER_DAY, []).append(row)
        for day, rows in by_day.items():
            self._add(provider, schema, day, batch.take(pa.array(rows, type=pa.int64())))

    def _add(self, provider: str, schema: EventSchema, day: int, batch: pa.RecordBatch) -> None:
        key = (provider, schema.kind, day)
        partition = self._partitions.get(key)
        if partition is None:
            parts = partition_parts(provider, schema.kind, day)
            partition = self._partitions[key] = _Partition(self._root, parts, schema)
        partition.batches.append(batch)
        partition.pending_rows += batch.num_rows
        self._unsealed_rows += batch.num_rows
        self._unsealed_bytes += batch.nbytes
        if partition.pending_rows >= _ENCODE_ROWS and self._error is None:
            self._encode(partition)

    def _encode(self, partition: _Partition) -> None:
        """Hand a partition's batches to the encoder, for its open segment."""
        if partition.opened is None:
            self._segments_opened += 1
            tmp = temp_name(f"{self._run}.open{self._segments_opened:06d}")
            partition.opened = OpenSegment(self._root, partition.parts, tmp, partition.schema)
        batches = partition.batches
        partition.batches = []
        partition.pending_rows = 0
        nbytes = sum(b.nbytes for b in batches)
        self._encode_jobs.append((partition.opened, batches, nbytes))
        self._encodes_queued += 1
        self._encode_wanted.unpark_all()

    async def _run_encoder(self) -> None:
        """Append the batches handed over by :meth:`_encode` to their open segments,
        in a worker thread, in order, until the sealer has stopped (shielded)."""
        try:
            with trio.CancelScope(shield=True):
                while self._encode_jobs or not self._sealer_done.is_set():
                    if not self._encode_jobs:
                        await self._encode_wanted.park()
                        continue
                    opened, batches, nbytes = self._encode_jobs.popleft()
                    if self._error is None:
                        try:
                            await trio.to_thread.run_sync(opened.append, batches)
                        except RecordingError as error:
                            self._fail(error, lost=len(self._events) + self._unsealed_rows)
                    self._unsealed_bytes -= nbytes
                    self._encodes_done += 1
                    self._encoded.unpark_all()
                    self._room.unpark_all()
                # Left open only after a failure: give them up.
                left = [p.opened for p in self._partitions.values() if p.opened is not None]
                for partition in self._partitions.values():
                    partition.opened = None
                if left:
                    await trio.to_thread.run_sync(_abort, left)
        finally:
            self._encoder_done.set()

    # ------------------------------------------------------------------ sealing

    async def _run_sealer(self) -> None:
        """Seal every ``flush_interval``, on request, and once more when closing.

        Shielded from outside cancellation: the recorder's close ends it
        after the final seal.
        """
        try:
            with trio.CancelScope(shield=True):
                next_tick = trio.current_time() + self._flush_interval
                while self._error is None:
                    with trio.move_on_at(next_tick) as tick:
                        await self._seal_wanted.wait()
                    self._seal_wanted = trio.Event()
                    final = self._closing
                    await self._seal(final=final)
                    if final:
                        break
                    if tick.cancelled_caught:
                        next_tick = max(next_tick + self._flush_interval, trio.current_time())
        finally:
            self._finish_send.close()
            self._sealer_done.set()
            self._encode_wanted.unpark_all()

    async def _seal(self, *, final: bool) -> None:
        """Write one segment per partition with unsealed batches; then rotate what is due."""
        self._convert()
        self._seals_started += 1
        taken: list[tuple[_Partition, SegmentJob]] = []
        for partition in self._partitions.values():
            if partition.batches or partition.opened is not None:
                name = segment_name(self._run, partition.file_no, partition.segment_no)
                partition.segment_no += 1
                job = SegmentJob(
                    partition.directory, name, partition.schema, partition.batches, partition.opened
                )
                self._unsealed_bytes -= sum(b.nbytes for b in partition.batches)
                partition.batches = []
                partition.pending_rows = 0
                partition.opened = None
                taken.append((partition, job))
        rows = self._unsealed_rows
        self._unsealed_rows = 0
        self._sealing_rows = rows
        self._room.unpark_all()
        # The taken segments' rows handed to the encoder must be in them first (and,
        # after a failure, the encoder must be done with them before they are given up).
        encoded = self._encodes_queued
        while self._encodes_done < encoded:
            await self._encoded.park()
        if self._error is not None:
            self._sealing_rows = 0
            opened = [job.opened for _, job in taken if job.opened is not None]
            if opened:
                await trio.to_thread.run_sync(_abort, opened)
            return
        if taken:
            # (Counted before writing: closing an open segment appends the batches to it.)
            counts = [job.rows for _, job in taken]
            sizes, error = await self._write_segments(taken)
            now = trio.current_time()
            lost = 0
            for (partition, job), count, size in zip(taken, counts, sizes, strict=True):
                if size is None:
                    lost += count
                    continue
                if not partition.segments:
                    partition.opened_at = now
                partition.segments.append(job.name)
                partition.segment_sizes.append(size)
                partition.file_bytes += size
                self._written += count
                self._bytes += size
                self._files += 1
            if error is not None:
                lost += len(self._events) + self._unsealed_rows
                self._sealing_rows = 0
                self._fail(error, lost=lost)
                return
        self._sealing_rows = 0
        self._last_flush = trio.current_time()
        self._seals_done += 1
        self._sealed.unpark_all()
        await self._rotate(final=final)

    async def _write_segments(
        self, taken: list[tuple[_Partition, SegmentJob]]
    ) -> tuple[list[int | None], RecordingError | None]:
        """Write the segments in :data:`_WRITERS` worker threads; each one's size (None:
        not written) and the first failure.

        Encoding and compressing a segment runs without the GIL, so a second
        thread writes while the first does, and the event loop keeps converting.
        """
        shares = [taken[i :: _WRITERS] for i in range(min(_WRITERS, len(taken)))]
        results: list[tuple[list[int], RecordingError | None]] = [([], None)] * len(shares)

        async def write(index: int) -> None:
            jobs = [(p.parts, job) for p, job in shares[index]]
            results[index] = await trio.to_thread.run_sync(
                write_segments, self._root, jobs, self._fsync
            )

        async with trio.open_nursery() as nursery:
            for index in range(len(shares)):
                nursery.start_soon(write, index)
        sizes: list[int | None] = [None] * len(taken)
        for index, (written, _) in enumerate(results):
            for n, size in enumerate(written):
                sizes[index + n * _WRITERS] = size
        errors = [error for _, error in results if error is not None]
        return sizes, errors[0] if errors else None

    async def _rotate(self, *, final: bool) -> None:
        """Hand every file that is due (by time or size, or all when closing) to the finisher."""
        now = trio.current_time()
        # A snapshot: producers may add partitions while the send below waits.
        for partition in list(self._partitions.values()):
            if not partition.segments:
                continue
            if (
                final
                or partition.file_bytes >= self._rotate_bytes
                or now - partition.opened_at >= self._rotate_interval
            ):
                job = FinishJob(
                    partition.directory,
                    file_name(self._run, partition.file_no),
                    partition.schema,
                    tuple(partition.segments),
                )
                sizes = partition.segment_sizes
                partition.file_no += 1
                partition.segment_no = 0
                partition.segments = []
                partition.segment_sizes = []
                partition.file_bytes = 0
                await self._finish_send.send((job, sizes))

    async def _run_finisher(self) -> None:
        """Finish rotated files in a worker thread, one at a time, until the sealer stops."""
        try:
            with trio.CancelScope(shield=True):
                async for job, sizes in self._finish_receive:
                    if self._error is not None:
                        continue  # after a failure, leave the (complete) segments as they are
                    try:
                        size = await trio.to_thread.run_sync(
                            finish_file, job, self._fsync, self._finish_expired
                        )
                    except Aborted:
                        continue
                    except RecordingError as error:
                        self._fail(error)
                        continue
                    self._files -= len(sizes) - 1
                    self._bytes += size - sum(sizes)
        finally:
            self._finisher_done.set()

    def _finish_expired(self) -> bool:
        """Called from the finishing thread: has the close run out of time?"""
        deadline = self._close_deadline
        return deadline is not None and time.monotonic() > deadline

    def _fail(self, error: RecordingError, *, lost: int = 0) -> None:
        """Writing failed: remember why, count it, and wake everyone who waits on the recorder.

        ``lost`` counts the events accepted but not written, for the message.
        """
        self._errors += 1
        if self._error is None:
            if lost:
                cause = error.__cause__
                error = RecordingError(
                    f"{error}; {lost} recorded events were not written",
                    path=error.path,
                    errno=error.errno,
                )
                error.__cause__ = cause
            self._error = error
        self._room.unpark_all()
        self._sealed.unpark_all()
        for scope in self._record_scopes:
            scope.cancel()

    async def _close(self) -> None:
        """Seal what is left, finish every file, and wait for both workers (shielded)."""
        self._closing = True
        self._close_deadline = time.monotonic() + CLOSE_TIMEOUT
        self._seal_wanted.set()
        with trio.CancelScope(shield=True):
            await self._sealer_done.wait()
            await self._finisher_done.wait()
            await self._encoder_done.wait()


def _abort(segments: Sequence[OpenSegment]) -> None:
    for segment in segments:
        segment.abort()


def _not_an_event(value: object) -> TypeError:
    return TypeError(
        f"cannot record a {type(value).__name__}: only the classes in "
        f"puffin_trio.events.EVENT_TYPES are recorded"
    )


def _positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigurationError(f"{name} must be a positive number, got {value!r}")
    if not math.isfinite(value):
        raise ConfigurationError(f"{name} must be finite, got {value!r}")
    return float(value)


def _prepare_root(root: Path, run: str) -> None:
    """Create the recording directory if needed and check that it takes files."""
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise recording_error("create", root, exc) from exc
    probe = root / temp_name(f"{run}.probe")
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise recording_error("write in", root, exc) from exc


@asynccontextmanager
async def open_recorder(
    path: str | PathLike[str],
    *,
    flush_interval: float = DEFAULT_FLUSH_INTERVAL,
    rotate_interval: float = DEFAULT_ROTATE_INTERVAL,
    rotate_bytes: int = DEFAULT_ROTATE_BYTES,
    fsync: bool = True,
) -> AsyncIterator[Recorder]:
    """Record events into the directory ``path`` (created if needed) for the duration of the block.

    * ``flush_interval`` (seconds): how often buffered events are sealed
      into files on disk, and so what a crash can lose (see the module
      docstring).
    * ``rotate_interval`` (seconds), ``rotate_bytes``: a file is finished
      when it is this old or this large, whichever comes first.
    * ``fsync``: flush every file to the disk before it is renamed into
      place, so a closed file survives a power loss too (a SIGKILL needs no
      fsync). Costs a few ms per seal on a spinning or network disk.

    Leaving the block (also by an exception or a cancellation) seals what
    is buffered and finishes every file; finishing stops after
    :data:`CLOSE_TIMEOUT` seconds, leaving the remaining segments (complete
    files). Raises :exc:`~puffin_trio.errors.RecordingError` naming the path
    if the directory cannot be created or written (on entry), or if writing
    failed and the block did not raise that error itself (on exit); and
    :exc:`~puffin_trio.errors.ConfigurationError` for bad arguments.
    """
    flush = _positive("flush_interval", flush_interval)
    rotate = _positive("rotate_interval", rotate_interval)
    if isinstance(rotate_bytes, bool) or not isinstance(rotate_bytes, int) or rotate_bytes < 1:
        raise ConfigurationError(f"rotate_bytes must be an integer >= 1, got {rotate_bytes!r}")
    root = Path(path)
    run = new_run_id()
    await trio.to_thread.run_sync(_prepare_root, root, run)
    recorder = Recorder(
        root,
        run,
        flush_interval=flush,
        rotate_interval=rotate,
        rotate_bytes=rotate_bytes,
        fsync=fsync,
    )
    body_error: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(recorder._run_sealer)
            nursery.start_soon(recorder._run_finisher)
            nursery.start_soon(recorder._run_encoder)
            try:
                yield recorder
            except BaseException as exc:
                body_error = exc
                raise
            finally:
                await recorder._close()
    except BaseExceptionGroup as group:
        # The workers never raise, so a group here carries the body's own error.
        if body_error is not None and len(group.exceptions) == 1:
            raise body_error from None
        raise
    if recorder._error is not None:
        raise recorder._error
    if recorder._rejected:
        raise recorder._rejected[0]
