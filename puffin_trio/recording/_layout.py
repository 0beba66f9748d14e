"""Where a recording's files live, what their names mean, and which of them hold the data.

This module owns the directory layout of a recording, shared by the writer
and the reader::

    <root>/provider=<provider>/kind=<kind>/date=<YYYY-MM-DD>/<run>-<file>.parquet

Hive-style ``key=value`` directories, so DuckDB, polars and
``pyarrow.dataset`` read a recording as it is. The provider name is
percent-encoded (it is any text); ``date`` is the UTC date of ``ts_recv``.
``<run>`` names one recorder's run (``20240314T093000Z-a1b2c3``: its start
time, then random hex), ``<file>`` counts that run's files in the partition.

While a file is open it exists as *segments*, ``<run>-<file>.seg<k>.parquet``,
each a complete Parquet file sealed at every flush. Finishing the file
writes ``<run>-<file>.parquet`` and then removes its segments; a segment
whose finished file exists is superseded (a crash can leave it behind) and
is never read. Files being written are ``.<name>.tmp``: hidden, and not
``*.parquet``, so no reader picks them up.

It must not read or write Parquet, and never creates or removes files.
"""

from __future__ import annotations

import os
import re
import secrets
import time
import urllib.parse
from collections.abc import Collection
from datetime import date, timedelta
from pathlib import Path
from typing import Final

import attrs

from puffin_trio.errors import ReplayError

__all__ = [
    "NS_PER_DAY",
    "DataFile",
    "day_name",
    "file_name",
    "new_run_id",
    "partition_parts",
    "scan",
    "segment_name",
    "temp_name",
]

NS_PER_DAY: Final = 86_400 * 1_000_000_000
_EPOCH: Final = date(1970, 1, 1)
_RUN: Final = r"\d{8}T\d{6}Z-[0-9a-f]{6}"
_NAME: Final = re.compile(
    rf"^(?P<run>{_RUN})-(?P<file>\d{{6}})(?:\.seg(?P<seg>\d{{6}}))?\.parquet$"
)
_DATE: Final = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def new_run_id() -> str:
    """A run name: the UTC start time (so runs sort by start), then 24 random bits."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)


def day_name(day: int) -> str:
    """Days since the epoch -> ``YYYY-MM-DD`` (UTC)."""
    return (_EPOCH + timedelta(days=day)).isoformat()


def _day_number(text: str) -> int | None:
    if not _DATE.match(text):
        return None
    try:
        return (date.fromisoformat(text) - _EPOCH).days
    except ValueError:
        return None


def partition_parts(provider: str, kind: str, day: int) -> tuple[str, str, str]:
    """The three directory names of a partition, below the recording's root."""
    return (
        f"provider={urllib.parse.quote(provider, safe='')}",
        f"kind={kind}",
        f"date={day_name(day)}",
    )


def file_name(run: str, file_no: int) -> str:
    """A finished file's name."""
    return f"{run}-{file_no:06d}.parquet"


def segment_name(run: str, file_no: int, segment: int) -> str:
    """The name of segment ``segment`` of an open file."""
    return f"{run}-{file_no:06d}.seg{segment:06d}.parquet"


def temp_name(name: str) -> str:
    """Where ``name`` is written before it is renamed into place."""
    return f".{name}.tmp"


@attrs.frozen
class DataFile:
    """One readable file of a recording, with what its path says about it."""

    path: Path
    provider: str
    kind: str
    day: int
    #: The run that wrote it (for a file named otherwise, the file name: a run of its own).
    run: str
    file_no: int
    #: The segment number, or None for a finished file.
    segment: int | None

    @property
    def order(self) -> tuple[int, int, int]:
        """Position within its run and partition chain: day, file, segment."""
        return (self.day, self.file_no, -1 if self.segment is None else self.segment)


def _subdirs(path: Path, key: str) -> list[tuple[str, Path]]:
    prefix = key + "="
    try:
        entries = list(os.scandir(path))
    except OSError as exc:
        raise ReplayError(f"cannot list {path}: {exc.strerror or exc}", path=str(path)) from exc
    return sorted(
        (entry.name[len(prefix) :], Path(entry.path))
        for entry in entries
        if entry.name.startswith(prefix) and entry.is_dir()
    )


def scan(
    root: Path,
    *,
    providers: Collection[str] | None = None,
    kinds: Collection[str] | None = None,
    first_day: int | None = None,
    last_day: int | None = None,
) -> list[DataFile]:
    """Every data file of the recording at ``root`` that can match the filters.

    Skips temporary files and superseded segments. Raises :exc:`ReplayError`
    if ``root`` is not a directory or cannot be listed.
    """
    if not root.is_dir():
        raise ReplayError(f"no recording at {root}: not a directory", path=str(root))
    found: list[DataFile] = []
    for encoded, provider_dir in _subdirs(root, "provider"):
        provider = urllib.parse.unquote(encoded)
        if providers is not None and provider not in providers:
            continue
        for kind, kind_dir in _subdirs(provider_dir, "kind"):
            if kinds is not None and kind not in kinds:
                continue
            for text, date_dir in _subdirs(kind_dir, "date"):
                day = _day_number(text)
                if day is None:
                    raise ReplayError(
                        f"{date_dir}: not a date=YYYY-MM-DD directory", path=str(date_dir)
                    )
                if (first_day is not None and day < first_day) or (
                    last_day is not None and day > last_day
                ):
                    continue
                found.extend(_files(date_dir, provider, kind, day))
    return found


def _files(directory: Path, provider: str, kind: str, day: int) -> list[DataFile]:
    try:
        names = sorted(
            e.name for e in os.scandir(directory) if e.is_file() and e.name.endswith(".parquet")
        )
    except OSError as exc:
        raise ReplayError(
            f"cannot list {directory}: {exc.strerror or exc}", path=str(directory)
        ) from exc
    present = set(names)
    files = []
    for name in names:
        if name.startswith((".", "_")):
            continue
        match = _NAME.match(name)
        if match is None:
            files.append(DataFile(directory / name, provider, kind, day, name, 0, None))
            continue
        run, file_no, segment = match["run"], int(match["file"]), match["seg"]
        if segment is not None and file_name(run, file_no) in present:
            continue  # superseded: its finished file exists
        files.append(
            DataFile(
                directory / name,
                provider,
                kind,
                day,
                run,
                file_no,
                None if segment is None else int(segment),
            )
        )
    return files
