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


@attrs.frozen
class SegmentJob:
    """Write ``batches`` (one partition's rows since the last flush) as ``directory/name``."""

    directory: Path
    name: str
    schema: EventSchema
    batches: Sequence[pa.RecordBatch]

    @property
    def rows(self) -> int:
        return sum(b.num_rows for b in self.batches)


def _write_segment(job: SegmentJob, fsync: bool) -> int:
    path = job.directory / job.name
    tmp = job.directory / temp_name(job.name)
    table = pa.Table.from_batches(job.batches, job.schema.schema)
    try:
        try:
            pq.write_table(table, tmp, row_group_size=ROW_GROUP_ROWS, **_options(job.schema))
            if fsync:
                _fsync(tmp)
        except OSError as exc:
            raise recording_error("write", tmp, exc) from exc
        try:
            os.rename(tmp, path)
            if fsync:
                _fsync(job.directory, directory=True)
        except OSError as exc:
            raise recording_error("close", path, exc) from exc
    except BaseException:
        _remove(tmp)
        raise
    return path.stat().st_size


def write_segments(
    root: Path, jobs: Sequence[tuple[Sequence[str], SegmentJob]], fsync: bool
) -> tuple[list[int], RecordingError | None]:
    """Write each segment (creating its partition directory below ``root``).

    Returns the sizes of the segments written, in order, and the failure
    that stopped it (None if all were written): the segments before a
    failure are complete files. Blocks: run it in a worker thread.
    """
    sizes: list[int] = []
    for parts, job in jobs:
        try:
            if not job.directory.is_dir():
                make_directory(root, parts)
            sizes.append(_write_segment(job, fsync))
        except RecordingError as error:
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
