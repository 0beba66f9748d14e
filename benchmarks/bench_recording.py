"""Recording and replay benchmark: throughput, bytes on disk, memory of a long replay.

Run: ``python benchmarks/bench_recording.py [--quick] [--repeats N] [--big N]``.
Prints one table with the four measurements of the recording issue, each
next to a floor measured in the same run on the same rows:

1. **record**: events/s from a 200,000-event in-memory source (a ``FanOut``
   fed by ``publish_batch``) through ``recorder.record()`` until the recorder
   has closed (every event in a finished file, fsync included): the event
   loop and the writer threads together. Floor: the same rows grouped and
   converted to Arrow, as the recorder does on the event loop (printed below
   the table: the same plus ``pq.write_table`` in one thread, and the channel
   alone). Target: >= 500k events/s.
2. **replay**: events/s out of ``open_replay(speed=None)`` to a consumer that
   counts them (``async for``: a checkpoint per event), and to one that takes
   them with ``receive_batch`` (a checkpoint per batch). Floor:
   ``ParquetFile.iter_batches`` + building the events (512 at a time, dropped
   at once, as replay builds and publishes them), file by file, no merge, no
   channel. Target: >= 1M events/s.
3. **bytes/event** on disk, against the provider's own JSON for the same
   events (Alpaca and Polygon stock trades and quotes, as their feeds spell
   them, decoded by the provider codecs).
4. **peak RSS** of a child process replaying a recording of ``--big``
   (default 10M) events. Target: < 200 MB.

The events are trades and quotes (1:3) of five symbols from the simulators'
seeded market, encoded as Alpaca and Polygon JSON and decoded by the
provider codecs, half from each provider. ``--quick`` uses 1M events for the
RSS run and one repeat.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import trio
from _harness import print_header, print_table, verdict

from puffin_trio import Event, FanOut, Quote, Trade, open_recorder, open_replay
from puffin_trio.providers import AlpacaProvider, PolygonProvider
from puffin_trio.recording._schema import SCHEMAS
from puffin_trio.recording._writer import ROW_GROUP_ROWS, _options
from puffin_trio.sim import MarketModel
from puffin_trio.sim import alpaca as alpaca_sim
from puffin_trio.sim import polygon as polygon_sim
from puffin_trio.sim.market import SimQuote, SimTrade

SYMBOLS = ("AAPL", "MSFT", "NVDA", "AMZN", "TSLA")
#: Messages per frame, as a busy feed batches them.
FRAME = 20
#: Receive-time step between frames: 20 messages every 40 µs, 500k messages/s.
FRAME_STEP_NS = 40_000


# --------------------------------------------------------------------------- data


def _ticks(count: int, seed: int) -> Iterator[tuple[int, SimTrade | SimQuote]]:
    model = MarketModel(SYMBOLS, seed=seed)
    base = 1_700_000_000_000_000_000
    for i in range(count):
        ts = base + i * 2000
        tick = model.next_tick(ts, trades=SYMBOLS, quotes=SYMBOLS)
        assert isinstance(tick, SimTrade | SimQuote)
        yield ts, tick


def alpaca_json(count: int) -> list[dict[str, Any]]:
    """Alpaca stock messages, built by the Alpaca simulator's own builders (JSON times)."""
    return [
        alpaca_sim.stock_trade(t, alpaca_sim.wire_time(ts, msgpack_encoding=False))
        if isinstance(t, SimTrade)
        else alpaca_sim.stock_quote(t, alpaca_sim.wire_time(ts, msgpack_encoding=False))
        for ts, t in _ticks(count, seed=1)
    ]


def polygon_json(count: int) -> list[dict[str, Any]]:
    """Polygon stock ``T``/``Q`` messages, built by the Polygon simulator's own builders
    (ms times, ``q`` counting up per event type and symbol)."""
    seqs: dict[tuple[type, str], int] = {}
    out: list[dict[str, Any]] = []
    for ts, t in _ticks(count, seed=2):
        q = seqs[(type(t), t.symbol)] = seqs.get((type(t), t.symbol), 0) + 1
        if isinstance(t, SimTrade):
            out.append(polygon_sim.stock_trade(t, ts // 1_000_000, q))
        else:
            out.append(polygon_sim.stock_quote(t, ts // 1_000_000, q))
    return out


def decode(count: int) -> tuple[list[Event], dict[str, tuple[int, int]]]:
    """``count`` events, half Alpaca, half Polygon, frames interleaved by receive time;
    and per provider, (messages, JSON bytes of their frames)."""
    alpaca = AlpacaProvider(
        feed="iex", key="k", secret="s", url="ws://127.0.0.1:1/v2/iex", encoding="json"
    ).protocol()
    polygon = PolygonProvider(key="k", url="ws://127.0.0.1:1/stocks").protocol()
    sources = {
        "alpaca": (alpaca, alpaca_json(count // 2)),
        "polygon": (polygon, polygon_json(count - count // 2)),
    }
    frames: list[tuple[str, Any, str]] = []
    json_bytes = {}
    for name, (protocol, messages) in sources.items():
        texts = [
            orjson.dumps(messages[i : i + FRAME]).decode() for i in range(0, len(messages), FRAME)
        ]
        json_bytes[name] = (len(messages), sum(len(t.encode()) for t in texts))
        frames.extend((name, protocol, text) for text in texts)
    order = sorted(range(len(frames)), key=lambda i: (i % (len(frames) // 2 or 1), i))
    events: list[Event] = []
    ts = 1_700_000_000_000_000_000
    for i in order:
        _, protocol, text = frames[i]
        ts += FRAME_STEP_NS
        events.extend(e for e in protocol.receive(text, ts) if isinstance(e, Trade | Quote))
    return events, json_bytes


def shifted(events: Sequence[Event], total: int) -> Iterator[list[Event]]:
    """``total`` events: ``events`` again and again, later each time, in chunks of 4,096."""
    span = events[-1].ts_recv - events[0].ts_recv + FRAME_STEP_NS
    rows = [(type(e), list(attrs.astuple(e, recurse=False))) for e in events]
    builders = {cls: SCHEMAS[cls].build for cls in {type(e) for e in events}}
    names = {cls: [f.name for f in attrs.fields(cls)] for cls in builders}
    stamps = {cls: (names[cls].index("ts_event"), names[cls].index("ts_recv")) for cls in builders}
    produced = 0
    for lap in itertools.count():
        shift = lap * span
        chunk: list[Event] = []
        for cls, values in rows:
            if produced == total:
                break
            event_at, recv_at = stamps[cls]
            moved = values.copy()
            moved[event_at] += shift
            moved[recv_at] += shift
            chunk.append(builders[cls](*moved))
            produced += 1
            if len(chunk) == 4096:
                yield chunk
                chunk = []
        if chunk:
            yield chunk
        if produced == total:
            return


# --------------------------------------------------------------------------- measurements


async def record(directory: Path, chunks: Iterator[list[Event]] | Sequence[Event]) -> float:
    """Seconds from the first event published to the recorder closed."""
    fanout = FanOut()
    batches = (
        [list(chunks[i : i + 4096]) for i in range(0, len(chunks), 4096)]
        if isinstance(chunks, Sequence)
        else chunks
    )

    async def publish() -> None:
        for batch in batches:
            await fanout.publish_batch(batch)
        fanout.close()

    async with fanout.consumer(capacity=4096, name="recorder") as channel:
        started = time.perf_counter()
        async with open_recorder(directory) as recorder, trio.open_nursery() as nursery:
            nursery.start_soon(publish)
            await recorder.record(channel)
        return time.perf_counter() - started


def convert_floor(events: Sequence[Event]) -> float:
    """The floor of any recorder of Python events: grouping them and building the
    Arrow columns (what the recorder does on the event loop), in slices of 4,096."""
    started = time.perf_counter()
    for start in range(0, len(events), 4096):
        groups: dict[tuple[str, type], tuple[list[Event], list[int]]] = {}
        for i, event in enumerate(events[start : start + 4096], start):
            key = (event.provider, type(event))
            group = groups.get(key)
            if group is None:
                groups[key] = group = ([], [])
            group[0].append(event)
            group[1].append(i)
        for (provider, cls), (chosen, positions) in groups.items():
            SCHEMAS[cls].to_batch(chosen, positions, provider=provider)
    return time.perf_counter() - started


def write_one_thread(directory: Path, events: Sequence[Event]) -> float:
    """The same rows converted and written by ``pq.write_table``, all in one thread."""
    started = time.perf_counter()
    groups: dict[tuple[str, type], list[int]] = {}
    for i, event in enumerate(events):
        groups.setdefault((event.provider, type(event)), []).append(i)
    for n, ((_, cls), indices) in enumerate(groups.items()):
        schema = SCHEMAS[cls]
        batch = schema.to_batch([events[i] for i in indices], indices)
        pq.write_table(
            pa.Table.from_batches([batch]),
            directory / f"floor-{n}.parquet",
            row_group_size=ROW_GROUP_ROWS,
            **_options(schema),
        )
    return time.perf_counter() - started


async def channel_only(events: Sequence[Event]) -> float:
    """The source and the consumer loop alone: ``publish_batch`` into a FanOut, ``async for``."""
    fanout = FanOut()

    async def publish() -> None:
        for start in range(0, len(events), 4096):
            await fanout.publish_batch(events[start : start + 4096])
        fanout.close()

    async with fanout.consumer(capacity=4096) as channel:
        started = time.perf_counter()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(publish)
            async for _ in channel:
                pass
        return time.perf_counter() - started


async def replay(directory: Path) -> tuple[int, float]:
    started = time.perf_counter()
    count = 0
    async with open_replay(directory) as events:
        async for _ in events:
            count += 1
    return count, time.perf_counter() - started


async def replay_batches(directory: Path) -> tuple[int, float]:
    """Replay consumed with ``receive_batch``: one checkpoint per batch, not per event."""
    started = time.perf_counter()
    count = 0
    async with open_replay(directory) as events:
        while True:
            try:
                count += len(await events.receive_batch(4096))
            except trio.EndOfChannel:
                break
    return count, time.perf_counter() - started


def replay_floor(directory: Path) -> tuple[int, float]:
    """Every file read batch by batch and turned into events; no merge, no channel."""
    started = time.perf_counter()
    count = 0
    for path in sorted(directory.rglob("*.parquet")):
        parquet = pq.ParquetFile(path)
        kind = parquet.schema_arrow.metadata[b"puffin_trio.kind"].decode()
        schema = next(s for s in SCHEMAS.values() if s.kind == kind)
        for batch in parquet.iter_batches(batch_size=4096):
            rows = map(schema.build, *schema.read_columns(batch, str(path)))
            # Built and dropped 512 at a time, as replay publishes them.
            while chunk := list(itertools.islice(rows, 512)):
                count += len(chunk)
    return count, time.perf_counter() - started


def disk_bytes(directory: Path, provider: str | None = None) -> int:
    pattern = f"provider={provider}/**/*.parquet" if provider else "**/*.parquet"
    return sum(p.stat().st_size for p in directory.glob(pattern))


def _memory_kb(field: str) -> int:
    """``VmHWM`` (peak) or ``VmRSS`` of this process, in kB. (Not ``ru_maxrss``: Linux
    carries the parent's high-water mark over a vfork + exec into the child's.)"""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def rss_child(directory: str, warm_up: str) -> None:
    """(In the child) replay ``directory``, print events, seconds and RSS as JSON.

    The baseline is taken after replaying ``warm_up`` (a small recording), so
    that it includes the code pyarrow maps on first use (compute kernels,
    Parquet reader: ~45 MB of shared library pages), not only the imports.
    """
    imports = _memory_kb("VmRSS")
    trio.run(replay, Path(warm_up))
    before = _memory_kb("VmRSS")
    count, seconds = trio.run(replay, Path(directory))
    peak = _memory_kb("VmHWM")
    print(
        json.dumps(
            {
                "events": count,
                "seconds": seconds,
                "imports_kb": imports,
                "before_kb": before,
                "peak_kb": peak,
            }
        )
    )


# --------------------------------------------------------------------------- report


def best_interleaved(fns: dict[str, Any], repeats: int) -> dict[str, float]:
    """The best time of each function over ``repeats`` rounds, one call of each per
    round, so that a noisy neighbour slows all of them alike."""
    times: dict[str, float] = {}
    for _ in range(repeats):
        for name, fn in fns.items():
            elapsed = fn()
            times[name] = min(times.get(name, elapsed), elapsed)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1M events for RSS, one round")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--big", type=int, default=10_000_000)
    parser.add_argument("--rss-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        rss_child(*args.rss_child.split(os.pathsep))
        return
    repeats = 1 if args.quick else args.repeats
    big = 1_000_000 if args.quick else args.big

    print_header("recording and replay", args)
    print(f"pyarrow {pa.__version__}")
    events, json_bytes = decode(args.events)
    n = len(events)
    print(f"{n:,} events ({sum(isinstance(e, Trade) for e in events):,} trades)", flush=True)
    work = Path(tempfile.mkdtemp(prefix="bench_recording_"))
    try:
        rows: list[tuple[str, str, str, str]] = []

        def fresh(name: str) -> Path:
            path = work / name
            shutil.rmtree(path, ignore_errors=True)
            path.mkdir()
            return path

        recording = work / "rec"
        took = best_interleaved(
            {
                "convert": lambda: convert_floor(events),
                "one thread": lambda: write_one_thread(fresh("floor"), events),
                "channel": lambda: trio.run(channel_only, events),
                "record": lambda: trio.run(record, fresh("rec"), events),
            },
            repeats,
        )
        rows.append(
            (
                "record, events/s",
                f"{n / took['record']:,.0f}",
                f"{n / took['convert']:,.0f} (Arrow conversion alone)",
                f"{took['convert'] / took['record']:.0%}",
            )
        )
        assert trio.run(replay, recording)[0] == n
        took |= best_interleaved(
            {
                "read floor": lambda: replay_floor(recording)[1],
                "replay": lambda: trio.run(replay, recording)[1],
                "replay batches": lambda: trio.run(replay_batches, recording)[1],
            },
            repeats,
        )
        rows.append(
            (
                "replay (speed=None), events/s",
                f"{n / took['replay']:,.0f}",
                f"{n / took['read floor']:,.0f} (read + build alone)",
                f"{took['read floor'] / took['replay']:.0%}",
            )
        )
        rows.append(
            (
                "replay, receive_batch(4096), events/s",
                f"{n / took['replay batches']:,.0f}",
                f"{n / took['read floor']:,.0f} (read + build alone)",
                f"{took['read floor'] / took['replay batches']:.0%}",
            )
        )

        for provider, (messages, size) in json_bytes.items():
            ours = disk_bytes(recording, provider) / messages
            rows.append(
                (
                    f"bytes/event, {provider}",
                    f"{ours:.1f}",
                    f"{size / messages:.1f} (JSON)",
                    f"{ours / (size / messages):.1%}",
                )
            )

        big_dir = fresh("big")
        started = time.perf_counter()
        trio.run(record, big_dir, shifted(events, big))
        big_write = time.perf_counter() - started
        child = subprocess.run(
            [sys.executable, __file__, "--rss-child", f"{big_dir}{os.pathsep}{recording}"],
            capture_output=True,
            text=True,
            check=True,
        )
        report = json.loads(child.stdout)
        assert report["events"] == big, report
        rows.append(
            (
                f"peak RSS replaying {big:,} events",
                f"{report['peak_kb'] / 1024:.0f} MB",
                f"{report['before_kb'] / 1024:.0f} MB (warmed up; imports "
                f"{report['imports_kb'] / 1024:.0f} MB)",
                f"+{(report['peak_kb'] - report['before_kb']) / 1024:.0f} MB",
            )
        )

        print_table(
            f"recording and replay (best of {repeats}, interleaved)",
            ("measurement", "ours", "floor / baseline", "ratio"),
            rows,
        )
        print()
        print(
            f"* record, other baselines: convert + pq.write_table in one thread "
            f"{n / took['one thread']:,.0f} events/s; the source and consumer loop alone (FanOut "
            f"publish_batch -> async for) {n / took['channel']:,.0f} events/s"
        )
        print(
            f"* the {big:,}-event recording: written at {big / big_write:,.0f} events/s "
            f"(including building the events), {disk_bytes(big_dir) / 2**20:.0f} MiB on "
            f"disk, replayed at {big / report['seconds']:,.0f} events/s in the child"
        )
        peak_mb = report["peak_kb"] / 1024
        print()
        print(f"{verdict(n / took['record'] >= 500_000)}  record >= 500,000 events/s")
        best_replay = min(took["replay"], took["replay batches"])
        print(f"{verdict(n / best_replay >= 1_000_000)}  replay >= 1,000,000 events/s")
        print(f"{verdict(peak_mb < 200)}  peak RSS < 200 MB replaying {big:,} events")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
