"""The file operations of a recording, run in a worker thread: write a segment, finish a file.

This module owns what touches the disk when recording: writing a sealed
segment (a partition's batches since the last flush) and finishing a file
(merging its segments into one Parquet file, or renaming a lone segment). A
file is written under a temporary name, flushed to the disk (``fsync``) and
renamed into place, so a name ending in ``.parquet`` always holds a complete
file; a finished file replaces its segments only once it is complete. Every
:exc:`OSError` becomes a :exc:`~puffin_trio.errors.RecordingError` naming
the path and what happened; nothing already closed is touched on failure.

It must not use trio (everything here blocks: callers run it in a worker
thread) or decide when to flush or rotate.
"""

from __future__ import annotations

import contextlib
import errno as errno_codes
import io
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import attrs
import pyarrow as pa
import pyarrow.parquet as pq

from puffin_trio.errors import RecordingError
from puffin_trio.recording._layout import temp_name
from puffin_trio.recording._schema import REC_INDEX, EventSchema

__all__ = [
    "ROW_GROUP_ROWS",
    "FinishJob",
    "OpenSegment",
    "SegmentJob",
    "finish_file",
    "make_directory",
    "write_segments",
]

#: Rows per Parquet row group: DuckDB's own row group size (122,880 = 60 vectors
#: of 2,048). About 1-2 MB compressed for our events: large enough for zstd and
#: for readers that skip row groups by their statistics, small enough that a
#: reader decompresses one per file at a time without noticeable memory.
ROW_GROUP_ROWS: Final = 122_880

#: Integer columns written as deltas (they grow steadily, so deltas take a few bits);
#: every other column is dictionary-encoded (Parquet falls back to plain encoding
#: by itself when a column has too many distinct values).
_DELTA_COLUMNS: Final = frozenset(
    {"ts_event", "ts_recv", "window_start", "window_end", "seq", REC_INDEX}
)

_REASONS: Final[Mapping[int, str]] = {
    errno_codes.ENOSPC: "no space left on the device (disk full)",
    errno_codes.EDQUOT: "disk quota exceeded",
    errno_codes.EFBIG: "file too large (the file size limit was reached)",
    errno_codes.EROFS: "the file system is read-only",
    errno_codes.EACCES: "permission denied (read-only directory?)",
    errno_codes.EPERM: "operation not permitted",
    errno_codes.ENOENT: "the directory vanished",
}


def recording_error(action: str, path: Path, exc: OSError) -> RecordingError:
    """A RecordingError for ``exc``, naming ``path`` and saying what happened in words."""
    code = exc.errno
    reason = _REASONS.get(code, exc.strerror or str(exc)) if code is not None else str(exc)
    error = RecordingError(f"cannot {action} {path}: {reason}", path=str(path), errno=code)
    error.__cause__ = exc
    return error


def _parquet_options(schema: pa.Schema) -> dict[str, Any]:
    """``pq.ParquetWriter`` options for one event schema (see ``_DELTA_COLUMNS``)."""
    sink = io.BytesIO()
    pq.write_table(schema.empty_table(), sink)
    parquet_schema = pq.read_metadata(io.BytesIO(sink.getvalue())).schema
    leaves = [parquet_schema.column(i).path for i in range(len(parquet_schema))]
    return {
        "compression": "zstd",
        "use_dictionary": [p for p in leaves if p not in _DELTA_COLUMNS],
        "column_encoding": {p: "DELTA_BINARY_PACKED" for p in leaves if p in _DELTA_COLUMNS},
        "write_statistics": True,
    }


_OPTIONS: dict[str, dict[str, Any]] = {}
_OPTIONS_LOCK = threading.Lock()


def _options(schema: EventSchema) -> dict[str, Any]:
    with _OPTIONS_LOCK:
        options = _OPTIONS.get(schema.kind)
        if options is None:
            options = _OPTIONS[schema.kind] = _parquet_options(schema.schema)
        return options


def make_directory(root: Path, parts: Sequence[str]) -> Path:
    """Create ``root/parts...`` below an existing ``root`` (never ``root`` itself); the path.

    Raises RecordingError if ``root`` has vanished or a level cannot be created.
    """
    path = root
    for part in parts:
        path = path / part
        try:
            os.mkdir(path)
        except FileExistsError:
            continue
        except OSError as exc:
            if exc.errno == errno_codes.ENOENT and not root.exists():
                raise recording_error("create a directory in", root, exc) from exc
            raise recording_error("create", path, exc) from exc
    return path


def _fsync(path: Path, *, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    # Best effort: a leftover temporary file is hidden and never read.
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)


class OpenSegment:
    """A segment being written before its seal: row groups appended as they fill up.

    Encoding a partition's rows as they arrive, rather than all at the seal,
    lets a worker thread encode (without the GIL) while the event loop
    converts the next events. The file has a temporary name until
    :func:`write_segments` closes it and renames it to the name the seal
    gives it; a crash before that leaves only the hidden temporary file. Used
    by one thread at a time (the recorder's encoder, then its sealer).
    """

    def __init__(self, root: Path, parts: Sequence[str], tmp_name: str, schema: EventSchema):
        self.root = root
        self.parts = tuple(parts)
        self.directory = root.joinpath(*parts)
        self.tmp = self.directory / tmp_name
        self.schema = schema
        #: Rows appended so far.
        self.rows = 0
        self._writer: pq.ParquetWriter | None = None

    def append(self, batches: Sequence[pa.RecordBatch]) -> None:
        """Write ``batches`` as one row group (creating the file first). Blocks.

        Raises RecordingError (the temporary file is removed then).
        """
        try:
            if self._writer is None:
                if not self.directory.is_dir():
                    make_directory(self.root, self.parts)
                try:
                    self._writer = pq.ParquetWriter(
                        self.tmp, self.schema.schema, **_options(self.schema)
                    )
                except OSError as exc:
                    raise recording_error("write", self.tmp, exc) from exc
            table = pa.Table.from_batches(batches, self.schema.schema)
            _write_rows(self._writer, table, self.tmp)
        except BaseException:
            self.abort()
            raise
        self.rows += table.num_rows

    def close(self) -> None:
        """Write the footer; the file is complete (not yet renamed). Raises RecordingError."""
        writer, self._writer = self._writer, None
        if writer is not None:
            try:
                writer.close()
            except OSError as exc:
                raise recording_error("write", self.tmp, exc) from exc

    def abort(self) -> None:
        """Give the segment up: close what is open and remove the temporary file."""
        writer, self._writer = self._writer, None
        if writer is not None:
            with contextlib.suppress(OSError, pa.ArrowException):
                writer.close()
        _remove(self.tmp)


@attrs.frozen
class SegmentJob:
    """Write ``batches`` (one partition's rows since the last flush) as ``directory/name``.

    ``opened``: the segment's rows encoded before the seal, if any; ``batches``
    are appended to it, and it is closed and renamed to ``name``.
    """

    directory: Path
    name: str
    schema: EventSchema
    batches: Sequence[pa.RecordBatch]
    opened: OpenSegment | None = None

    @property
    def rows(self) -> int:
        rows: int = sum(b.num_rows for b in self.batches)
        return rows + (self.opened.rows if self.opened else 0)


def _write_segment(job: SegmentJob, fsync: bool) -> int:
    path = job.directory / job.name
    if job.opened is not None:
        return _close_segment(job.opened, job.batches, path, fsync)
    tmp = job.directory / temp_name(job.name)
    table = pa.Table.from_batches(job.batches, job.schema.schema)
    try:
        try:
            pq.write_table(table, tmp, row_group_size=ROW_GROUP_ROWS, **_options(job.schema))
            if fsync:
                _fsync(tmp)
        except OSError as exc:
            raise recording_error("write", tmp, exc) from exc
        _rename(tmp, path, fsync)
    except BaseException:
        _remove(tmp)
        raise
    return path.stat().st_size


def _close_segment(
    opened: OpenSegment, batches: Sequence[pa.RecordBatch], path: Path, fsync: bool
) -> int:
    try:
        if batches:
            opened.append(batches)
        opened.close()
        if fsync:
            try:
                _fsync(opened.tmp)
            except OSError as exc:
                raise recording_error("write", opened.tmp, exc) from exc
        _rename(opened.tmp, path, fsync)
    except BaseException:
        opened.abort()
        raise
    return path.stat().st_size


def _rename(tmp: Path, path: Path, fsync: bool) -> None:
    try:
        os.rename(tmp, path)
        if fsync:
            _fsync(path.parent, directory=True)
    except OSError as exc:
        raise recording_error("close", path, exc) from exc


def write_segments(
    root: Path, jobs: Sequence[tuple[Sequence[str], SegmentJob]], fsync: bool
) -> tuple[list[int], RecordingError | None]:
    """Write each segment (creating its partition directory below ``root``).

    Returns the sizes of the segments written, in order, and the failure
    that stopped it (None if all were written): the segments before a
    failure are complete files. Blocks: run it in a worker thread.
    """
    sizes: list[int] = []
    for index, (parts, job) in enumerate(jobs):
        try:
            if not job.directory.is_dir():
                make_directory(root, parts)
            sizes.append(_write_segment(job, fsync))
        except RecordingError as error:
            for _, rest in jobs[index + 1 :]:
                if rest.opened is not None:
                    rest.opened.abort()
            return sizes, error
    return sizes, None


@attrs.frozen
class FinishJob:
    """Turn the segments of one file into the finished file ``directory/name``."""

    directory: Path
    name: str
    schema: EventSchema
    segments: Sequence[str]


class Aborted(Exception):
    """Finishing stopped because the recorder's close ran out of time (segments kept)."""


def finish_file(job: FinishJob, fsync: bool, expired: Callable[[], bool]) -> int:
    """Write the finished file, then remove its segments; its size in bytes.

    A lone segment is renamed. Otherwise the segments are copied in order
    into one file with full row groups, one segment in memory at a time.
    Blocks: run it in a worker thread. Calls ``expired()`` between segments
    and raises :exc:`Aborted` (removing the partial temporary file) once it
    returns True. Raises RecordingError on failure; the segments are intact then.
    """
    path = job.directory / job.name
    segments = [job.directory / s for s in job.segments]
    if len(segments) == 1:
        try:
            os.rename(segments[0], path)
            if fsync:
                _fsync(job.directory, directory=True)
        except OSError as exc:
            raise recording_error("finish", path, exc) from exc
        return path.stat().st_size
    tmp = job.directory / temp_name(job.name)
    try:
        _merge(segments, tmp, job.schema, expired)
        try:
            if fsync:
                _fsync(tmp)
            os.rename(tmp, path)
            if fsync:
                _fsync(job.directory, directory=True)
        except OSError as exc:
            raise recording_error("finish", path, exc) from exc
    except BaseException:
        _remove(tmp)
        raise
    for segment in segments:
        _remove(segment)
    return path.stat().st_size


def _merge(
    segments: Sequence[Path], tmp: Path, schema: EventSchema, expired: Callable[[], bool]
) -> None:
    pending: list[pa.Table] = []
    rows = 0
    try:
        writer = pq.ParquetWriter(tmp, schema.schema, **_options(schema))
    except OSError as exc:
        raise recording_error("write", tmp, exc) from exc
    try:
        for segment in segments:
            if expired():
                raise Aborted
            try:
                table = pq.read_table(segment)
            except OSError as exc:
                raise recording_error("read", segment, exc) from exc
            pending.append(table)
            rows += table.num_rows
            while rows >= ROW_GROUP_ROWS:
                whole = pa.concat_tables(pending)
                _write_rows(writer, whole.slice(0, ROW_GROUP_ROWS), tmp)
                rest = whole.slice(ROW_GROUP_ROWS)
                pending, rows = [rest], rest.num_rows
        if rows:
            _write_rows(writer, pa.concat_tables(pending), tmp)
    finally:
        try:
            writer.close()
        except OSError as exc:
            raise recording_error("write", tmp, exc) from exc


def _write_rows(writer: pq.ParquetWriter, table: pa.Table, tmp: Path) -> None:
    try:
        writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
    except OSError as exc:
        raise recording_error("write", tmp, exc) from exc
