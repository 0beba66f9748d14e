"""A recording process for the durability tests (run as a script, never imported by pytest).

``python recording_child.py MODE DIR [...]``:

* ``stream DIR FLUSH ROTATE RATE``: record Trades with ``seq`` 0, 1, 2, ...
  at RATE events/s (``ts_recv`` = the wall clock at generation) until killed.
  Prints ``gen <seq> <ts_recv>`` lines (line-buffered) as it goes, and
  ``files <n>`` whenever the recorder's file count changes.
* ``fill DIR PER_FLUSH [FSIZE]``: record 1,000 events and close (the
  "closed" files), then record incompressible events, flushing every
  PER_FLUSH, until writing fails. With FSIZE, first limit the size of any
  file this process writes (RLIMIT_FSIZE, SIGXFSZ ignored: writes past it
  fail with EFBIG).
* ``readonly-entry DIR``: open a recorder in DIR (which the parent made read-only).
* ``readonly-midway DIR``: record and flush, make every directory of the
  recording read-only (``chmod``), then record and flush again.

Every mode but ``stream`` prints one JSON object: the error raised (type,
path, errno, message), the rows on disk by the recorder's statistics, the rows found on disk
afterwards in the ``*.parquet`` files (each read whole), and leftover
temporary files.
"""

from __future__ import annotations

import json
import resource
import secrets
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import trio

from puffin_trio import RecordingError, Trade, open_recorder


def trade(seq: int, ts: int, *, noisy: bool = False) -> Trade:
    return Trade(
        provider="sim",
        symbol="AAPL" if seq % 2 else "MSFT",
        ts_event=ts,
        ts_recv=ts,
        price=100.0 + (seq % 1000) / 100,
        size=float(seq % 7 + 1),
        trade_id=secrets.token_hex(16) if noisy else str(seq),
        conditions=("@",),
        seq=seq,
    )


async def stream(directory: Path, flush: float, rotate: float, rate: float) -> None:
    period = 0.01
    per_tick = max(1, int(rate * period))
    seq = 0
    files = -1
    async with open_recorder(directory, flush_interval=flush, rotate_interval=rotate) as recorder:
        while True:
            for _ in range(per_tick):
                await recorder.write(trade(seq, time.time_ns()))
                seq += 1
            print(f"gen {seq - 1} {time.time_ns()}", flush=True)
            count = recorder.statistics().files
            if count != files:
                files = count
                print(f"files {files}", flush=True)
            await trio.sleep(period)


def _on_disk(directory: Path) -> tuple[int, list[str]]:
    rows = 0
    temporary = []
    for path in sorted(directory.rglob("*")):
        if path.name.endswith(".parquet"):
            rows += pq.read_table(path).num_rows
        elif path.is_file():
            temporary.append(str(path))
    return rows, temporary


def _report(error: BaseException | None, flushed: int, directory: Path) -> None:
    rows, temporary = _on_disk(directory)
    result: dict[str, Any] = {
        "error": None,
        "flushed": flushed,
        "rows": rows,
        "temporary": temporary,
    }
    if error is not None:
        result["error"] = type(error).__name__
        result["message"] = str(error)
        result["path"] = getattr(error, "path", None)
        result["errno"] = getattr(error, "errno", None)
    print(json.dumps(result), flush=True)


async def fill(directory: Path, per_flush: int) -> None:
    async with open_recorder(directory) as recorder:
        for seq in range(1000):
            await recorder.write(trade(seq, time.time_ns()))
    error: BaseException | None = None
    seq = 1000
    try:
        async with open_recorder(directory, rotate_bytes=2**40) as recorder:
            while True:
                for _ in range(per_flush):
                    await recorder.write(trade(seq, time.time_ns(), noisy=True))
                    seq += 1
                await recorder.flush()
    except RecordingError as exc:
        error = exc
    _report(error, 1000 + recorder.statistics().events, directory)


async def readonly_entry(directory: Path) -> None:
    error: BaseException | None = None
    try:
        async with open_recorder(directory) as recorder:
            await recorder.write(trade(0, time.time_ns()))
    except RecordingError as exc:
        error = exc
    _report(error, 0, directory)


def _make_read_only(directory: Path) -> None:
    for path in [directory, *directory.rglob("*")]:
        if path.is_dir():
            path.chmod(0o555)


async def readonly_midway(directory: Path) -> None:
    error: BaseException | None = None
    flushed = 0
    try:
        async with open_recorder(directory) as recorder:
            for seq in range(500):
                await recorder.write(trade(seq, time.time_ns()))
            await recorder.flush()
            flushed = recorder.statistics().events
            _make_read_only(directory)
            for seq in range(500, 1000):
                await recorder.write(trade(seq, time.time_ns()))
            await recorder.flush()
    except RecordingError as exc:
        error = exc
    _report(error, flushed, directory)


def main() -> None:
    mode, directory = sys.argv[1], Path(sys.argv[2])
    if mode == "stream":
        flush, rotate, rate = map(float, sys.argv[3:6])
        trio.run(stream, directory, flush, rotate, rate)
    elif mode == "fill":
        if len(sys.argv) > 4:
            limit = int(sys.argv[4])
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        trio.run(fill, directory, int(sys.argv[3]))
    elif mode == "readonly-entry":
        trio.run(readonly_entry, directory)
    elif mode == "readonly-midway":
        trio.run(readonly_midway, directory)
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
