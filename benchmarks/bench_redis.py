"""Redis distribution benchmark: encoding, layout, throughput, latency, memory.

Run: ``python benchmarks/bench_redis.py [--quick] [--only SECTION] [--redis URL]``.
Without ``--redis`` it starts its own redis-server (a temporary directory, a
free loopback port, no persistence). Prints one table per section:

1. **encoding**: µs and bytes per event for the entry payload (a batch of
   msgpack tuples) against :mod:`puffin_trio.codec` per event (JSON, msgpack).
2. **layout**: what a consumer of 5 symbols out of 5,000 reads (entries,
   bytes, CPU) next to a consumer of everything, and the cost of batching:
   publisher CPU and Redis memory per event for one batch per stream and
   transaction (ours) against one entry per event.
3. **throughput**: events/s from a blast server (child process, Alpaca
   msgpack, 20 messages per frame) through Supervisor -> publisher ->
   redis-server -> a consumer in another process, next to the same pipeline
   in-process (Supervisor -> consumer) measured in the same run. Targets:
   >= 250,000 events/s through Redis and >= 50 % of in-process.
4. **latency**: the package's Alpaca simulator at 5,000 msg/s (child process)
   -> publisher -> Redis -> consumer process: consumer wall clock - ``ts_recv``
   (the publisher's receive time) per event, p50/p99/max, next to two
   in-process consumers of the same supervisor (one takes what is queued per
   call, as the publisher does; one calls ``receive()`` per event, a scheduler
   round each); and the Redis hop alone (events
   stamped when made, 1,000/s). Two feeds at the same rate: one message per
   frame, and what is due each millisecond per frame (the simulator's CPU
   share is shown for each). Medians of 3 interleaved rounds. Target: p99 <= 5 ms.
5. **memory**: Redis ``used_memory`` per million events kept.
6. **commands**: client CPU and wall time per command, coredis against the
   lean connection of the hot commands, for the write script, a read script
   and ``PING``.

Ratios to baselines measured in the same run are what carries over to other
machines. Children are this script with an internal flag; each exits when
its stdin closes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from statistics import median
from typing import Any

import coredis
import trio
from _blast import Case
from _harness import (
    CASES,
    CONTROL_TYPES,
    child,
    fmt_rate,
    print_table,
    read_line,
    run_script,
    server,
    verdict,
)
from bench_throughput import measure, pipeline_throughput

from puffin_trio import (
    Event,
    FanOut,
    Gap,
    Quote,
    Status,
    Supervisor,
    Trade,
    codec,
    open_redis_feed,
    open_redis_publisher,
)
from puffin_trio.redis._cli import freeze_startup_heap
from puffin_trio.redis._encoding import decode_batch, encode_batch, sample
from puffin_trio.redis._pipe import Pipe, script_sha

SECTIONS = ("encoding", "layout", "throughput", "latency", "memory", "commands")
THROUGHPUT_TARGET = 250_000.0
RATIO_TARGET = 0.5
LATENCY_TARGET_MS = 5.0
#: Seconds a child has to print its first line; a child exits on its own after
#: CHILD_MAX_SECONDS whatever happens to us.
CHILD_STARTUP = 30.0
CHILD_MAX_SECONDS = 900.0
#: The latency run's feed: the Alpaca simulator at 5,000 messages/s, one per frame
#: (a timer per message) and, at the same rate, what is due every millisecond per frame.
LATENCY_RATE = 5000.0
LATENCY_FEEDS = (1, 5)
#: The latency table's consumers of each feed (label, key): two in the publisher's
#: process, of the same supervisor, and the consumer process through Redis.
LATENCY_CONSUMERS = (
    ("in-process, receive_batch", "batch"),
    ("in-process, receive() per event", "each"),
    ("through Redis, what is queued", "redis"),
)
#: The Redis path alone is measured at this rate (events stamped when made).
DIRECT_RATE = 1000.0
#: Latency rounds (each: the simulator run, then the Redis path alone), interleaved
#: so that the machine's load hits both alike; the table shows their medians.
LATENCY_ROUNDS = 3


# --------------------------------------------------------------------------- helpers


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """A private redis-server (no persistence) for the run; yields its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (apt-get install -y redis-server)")
    port = free_port()
    with tempfile.TemporaryDirectory() as directory:
        log = Path(directory) / "redis.log"
        process = subprocess.Popen(
            [binary, "--bind", "127.0.0.1", "--port", str(port), "--dir", directory,
             "--save", "", "--appendonly", "no", "--logfile", str(log)],
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + CHILD_STARTUP
            while not (log.exists() and b"Ready to accept" in log.read_bytes()):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"redis-server did not start: {log.read_text()[-500:]}")
                time.sleep(0.01)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)


async def flushall(url: str) -> None:
    async with coredis.Redis.from_url(url) as client:
        await client.flushall()


async def used_memory(url: str) -> int:
    async with coredis.Redis.from_url(url) as client:
        info = await client.info("memory")
        return int(info["used_memory"])


async def server_cpu(url: str) -> float:
    """CPU seconds redis-server has used (its own ``INFO cpu``: user + system)."""
    async with coredis.Redis.from_url(url) as client:
        info = await client.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def market_events(count: int, symbols: Sequence[str], *, start: int = 0) -> list[Event]:
    """Realistic trades and quotes (two quotes per trade), round-robin over ``symbols``."""
    out: list[Event] = []
    t0 = time.time_ns()
    for i in range(start, start + count):
        symbol = symbols[i % len(symbols)]
        ts = t0 + i * 1000
        if i % 3 == 0:
            out.append(
                Trade(provider="alpaca", symbol=symbol, ts_event=ts, ts_recv=ts + 250_000,
                      price=187.25 + (i % 100) / 100, size=float(i % 300 + 1), exchange="V",
                      trade_id=str(52_983_525_029_461 + i), conditions=("@",), tape="C")
            )  # fmt: skip
        else:
            out.append(
                Quote(provider="alpaca", symbol=symbol, ts_event=ts, ts_recv=ts + 250_000,
                      bid=187.24 + (i % 100) / 100, ask=187.26 + (i % 100) / 100,
                      bid_size=3.0, ask_size=4.0, bid_exchange="V", ask_exchange="V",
                      conditions=("R",), tape="C")
            )  # fmt: skip
    return out


async def publish_all(url: str, events: Sequence[Event], **options: Any) -> tuple[float, float]:
    """Publish ``events`` (as sup.events() would hand them); (wall s, CPU s) of this process."""
    fanout = FanOut()
    started, cpu = time.perf_counter(), time.process_time()
    async with (
        fanout.consumer(capacity=8192) as channel,
        open_redis_publisher(url, **options) as publisher,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(publisher.publish, channel)
        for offset in range(0, len(events), 4096):
            await fanout.publish_batch(events[offset : offset + 4096])
        fanout.close()
    return time.perf_counter() - started, time.process_time() - cpu


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# --------------------------------------------------------------------------- 1. encoding


def best_us(fn: Any, count: int, repeats: int = 5) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best / count * 1e6


def section_encoding(quick: bool) -> None:
    events = market_events(5_000 if quick else 20_000, ("AAPL", "MSFT", "NVDA", "AMZN", "TSLA"))
    n = len(events)
    rows = []
    for label, fmt in (("codec JSON, one per event", "json"),
                       ("codec msgpack, one per event", "msgpack")):  # fmt: skip
        blobs = [codec.dumps(e, format=fmt) for e in events]  # type: ignore[arg-type]
        encode = best_us(lambda f=fmt: [codec.dumps(e, format=f) for e in events], n)
        decode = best_us(lambda b=blobs, f=fmt: [codec.loads(x, format=f) for x in b], n)
        rows.append([label, f"{encode:.2f}", f"{decode:.2f}", f"{sum(map(len, blobs)) / n:.0f}"])
    blob = encode_batch(sample(events))
    assert decode_batch(blob) == events
    encode = best_us(lambda: encode_batch(sample(events)), n)
    decode = best_us(lambda: decode_batch(blob), n)
    rows.append(["msgpack tuples, one batch (ours)", f"{encode:.2f}", f"{decode:.2f}",
                 f"{len(blob) / n:.0f}"])  # fmt: skip
    print_table(
        f"1. Encoding: {n:,} trades and quotes (µs and bytes per event)",
        ["encoding", "encode µs", "decode µs", "bytes"],
        rows,
    )
    print(
        "decode includes validation in every row (codec.loads: cattrs' strict structuring;\n"
        "ours: generated type and range checks, then event_builder). Round trips are ==."
    )


# --------------------------------------------------------------------------- 2. layout


async def read_everything(url: str, symbols: Sequence[str] | None, total: int) -> dict[str, Any]:
    cpu = time.process_time()
    async with open_redis_feed(url, prefix="layout", start="earliest", symbols=symbols) as feed:
        got = 0
        with trio.fail_after(300):
            while got < total:
                event = await feed.receive()
                if isinstance(event, Status) and event.detail == "publisher stopped":
                    break
                got += 1
        statistics = feed.feed_statistics()
    return {
        "events": got,
        "entries": statistics.entries,
        "bytes": statistics.bytes,
        "cpu": time.process_time() - cpu,
    }


async def per_event_entries(url: str, events: Sequence[Event]) -> float:
    """Publisher CPU (s) for one XADD per event (codec msgpack), pipelined by 1,000."""
    async with coredis.Redis.from_url(url) as client:
        cpu = time.process_time()
        for offset in range(0, len(events), 1000):
            async with client.pipeline(transaction=False) as pipe:
                for event in events[offset : offset + 1000]:
                    pipe.xadd("naive:events", {b"d": codec.dumps(event, format="msgpack")})
        return time.process_time() - cpu


async def layout_run(url: str, quick: bool) -> None:
    symbols = [f"S{i:04d}" for i in range(5000)]
    events = market_events(100_000 if quick else 300_000, symbols)
    await flushall(url)
    before = await used_memory(url)
    wall, cpu = await publish_all(url, events, prefix="layout", maxlen=None)
    ours_memory = await used_memory(url) - before
    wanted = symbols[:: 1000][:5]
    few = await read_everything(url, wanted, sum(e.symbol in wanted for e in events))
    everything = await read_everything(url, None, len(events))
    naive_events = events[: len(events) // 3]
    before = await used_memory(url)
    naive_cpu = await per_event_entries(url, naive_events)
    naive_memory = await used_memory(url) - before
    print_table(
        f"2a. Layout: {len(events):,} events over 5,000 symbols; a consumer of "
        f"5 symbols against one of everything",
        ["consumer", "events", "entries read", "bytes read", "share of bytes", "CPU µs/event"],
        [
            ["5 symbols", f"{few['events']:,}", f"{few['entries']:,}", f"{few['bytes']:,}",
             f"{few['bytes'] / everything['bytes']:.1%}",
             f"{few['cpu'] * 1e6 / max(few['events'], 1):.1f}"],
            ["everything", f"{everything['events']:,}", f"{everything['entries']:,}",
             f"{everything['bytes']:,}", "100%",
             f"{everything['cpu'] * 1e6 / everything['events']:.2f}"],
        ],
    )  # fmt: skip
    print(
        "A stream per family and symbol shard (64 shards): the 5-symbol consumer reads its\n"
        "shards only (5 of 64 per family); one stream per family would make it read 100 %.\n"
        "Its CPU per event it keeps is high because it still unpacks its shards' other symbols."
    )
    print_table(
        "2b. Batching: one entry per stream and transaction (ours) against one per event",
        ["entries", "publisher CPU µs/event", "Redis bytes/event", "events/s (ours, wall)"],
        [
            ["batch per stream (ours)", f"{cpu * 1e6 / len(events):.2f}",
             f"{ours_memory / len(events):.0f}", fmt_rate(len(events) / wall)],
            ["one per event (codec msgpack)", f"{naive_cpu * 1e6 / len(naive_events):.2f}",
             f"{naive_memory / len(naive_events):.0f}", "-"],
        ],
    )  # fmt: skip
    print(
        "ours: the whole publisher (pump, routing, encoding, MULTI/EXEC); one per event: only\n"
        "the codec and coredis's XADD, pipelined by 1,000 (no routing, ordering or counts)."
    )


def section_layout(url: str, quick: bool) -> None:
    trio.run(layout_run, url, quick)


# --------------------------------------------------------------------------- 3. throughput


async def consume_child(url: str, n: int) -> None:
    """Child: count n market events from the first one; print the timing as JSON."""
    with trio.fail_after(CHILD_MAX_SECONDS):
        await _consume(url, n)


async def _consume(url: str, n: int) -> None:
    async with open_redis_feed(url, prefix="bench", start="latest", capacity=8192) as feed:
        print(json.dumps({"ready": True}), flush=True)
        async for event in feed:
            if event.provider != "puffin" and not isinstance(event, Status | Gap):
                break
        started, cpu, got = time.perf_counter(), time.process_time(), 0
        rounds = feed.feed_statistics().rounds
        control = CONTROL_TYPES
        while got < n:
            # What is queued, without a scheduler trip per event, as the in-process
            # consumer it is compared with does.
            event = await feed.receive()
            while True:
                if type(event) not in control:
                    got += 1
                    if got == n:
                        break
                try:
                    event = feed.receive_nowait()
                except trio.WouldBlock:
                    break
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        statistics = feed.feed_statistics()
    result = {"events": got, "wall": wall, "cpu": cpu, "missing": statistics.missing,
              "rounds": statistics.rounds - rounds}  # fmt: skip
    print(json.dumps(result), flush=True)


async def publish_until_child_reports(
    url: str, port: int, variant: str, proc: subprocess.Popen[str]
) -> dict[str, Any]:
    """Supervisor -> publisher, until the consumer child prints its result."""
    case = CASES["alpaca"]
    assert proc.stdout is not None
    result: dict[str, Any] = {}
    async with (
        open_redis_publisher(url, prefix="bench", maxlen=2_000_000) as publisher,
        Supervisor.open() as sup,
    ):
        async with (
            sup.events(capacity=8192, overflow="block", name="to-redis") as events,
            trio.open_nursery() as nursery,
        ):
            sup.add(case.provider(port, variant), **case.topics)  # type: ignore[arg-type]
            nursery.start_soon(publisher.publish, events)
            cpu = time.process_time()
            line = await trio.to_thread.run_sync(proc.stdout.readline)
            result = json.loads(line)
            result["publisher_cpu"] = time.process_time() - cpu
            statistics = publisher.statistics()
            result["published"] = statistics.published
            result["per_tx"] = statistics.published / max(statistics.transactions, 1)
            nursery.cancel_scope.cancel()
    return result


def section_throughput(url: str, quick: bool) -> None:
    case, variant, n = CASES["alpaca"], "msgpack", 100_000 if quick else 300_000
    repeats = 1 if quick else 3
    rows: list[tuple[float, float, dict[str, Any], float]] = []
    with server(["--serve", "alpaca", "--batch", "20", "--pool", "20000"]) as port:
        for _ in range(repeats):
            local = measure(pipeline_throughput, case, port, variant, n)
            trio.run(flushall, url)
            with child(["--consume", url, "--n", str(n)]) as proc:
                read_line(proc, CHILD_STARTUP)
                redis_cpu = trio.run(server_cpu, url)
                remote = trio.run(publish_until_child_reports, url, port, variant, proc)
                remote["redis_cpu"] = trio.run(server_cpu, url) - redis_cpu
            rows.append((local.rate, remote["events"] / remote["wall"], remote, local.cpu_us))
    best_local = max(r[0] for r in rows)
    local_cpu = min(r[3] for r in rows)
    best_remote = max(r[1] for r in rows)
    remote = max(rows, key=lambda r: r[1])[2]
    met = best_remote >= THROUGHPUT_TARGET and best_remote >= RATIO_TARGET * best_local
    print_table(
        f"3. Throughput: Alpaca msgpack, 20 per frame, {n:,} events, best of {repeats}",
        ["pipeline", "events/s", "ratio", "consumer CPU µs/ev", "publisher CPU µs/ev",
         "redis CPU µs/ev", "ev/tx", "ev/round", "target"],
        [
            ["in-process: Supervisor -> consumer", fmt_rate(best_local), "100%", "-",
             f"{local_cpu:.2f} (all)", "-", "-", "-", "-"],
            ["through Redis (3 processes + redis)", fmt_rate(best_remote),
             f"{best_remote / best_local:.0%}",
             f"{remote['cpu'] * 1e6 / remote['events']:.2f}",
             f"{remote['publisher_cpu'] * 1e6 / max(remote['published'], 1):.2f}",
             f"{remote['redis_cpu'] * 1e6 / max(remote['published'], 1):.2f}",
             f"{remote['per_tx']:.0f}", f"{remote['events'] / max(remote['rounds'], 1):.0f}",
             f">= {THROUGHPUT_TARGET:,.0f}/s and >= {RATIO_TARGET:.0%}: "
             f"{verdict(met).strip()}"],
        ],
    )  # fmt: skip
    print(
        "through Redis: blast server (child) -> Supervisor -> publisher (this process) ->\n"
        "redis-server -> open_redis_feed -> count (child). Both rows on the same server and\n"
        "data in the same run. The in-process row's CPU is its one process (Supervisor and\n"
        "consumer): the publisher's process does that work and the publisher's on top, so the\n"
        "in-process rate bounds the rate through Redis. Consumer events missing (Gaps): "
        f"{remote['missing']}; {os.cpu_count()} CPUs shared by all four processes."
    )


# --------------------------------------------------------------------------- 4. latency


async def latency_child(url: str, seconds: float, warmup: float, receive: str) -> None:
    """Child: per market event, wall clock - ts_recv (ms), after ``warmup``; print percentiles.

    ``receive``: "batch" takes what is queued without a scheduler round per event
    (``receive``, then ``receive_nowait`` until nothing is queued), stamping each
    event when it is taken; "each" iterates (``async for``: a round per event).
    """
    lags: list[float] = []
    freeze_startup_heap()  # as ``puffin-trio stream`` does
    async with open_redis_feed(url, prefix="latency", start="latest") as feed:
        print(json.dumps({"ready": True}), flush=True)
        start: float | None = None

        def record(event: Event, now: int) -> None:
            nonlocal start
            if event.provider == "puffin" or isinstance(event, Status | Gap):
                return
            if start is None:
                start = trio.current_time()
            if trio.current_time() - start >= warmup:
                lags.append((now - event.ts_recv) / 1e6)

        with trio.move_on_after(seconds + warmup):
            if receive == "each":
                async for event in feed:
                    record(event, time.time_ns())
            else:
                while True:
                    record(await feed.receive(), time.time_ns())
                    with contextlib.suppress(trio.WouldBlock):
                        while True:
                            event = feed.receive_nowait()
                            record(event, time.time_ns())
    print(json.dumps({"lags": summarize(lags)}), flush=True)


def summarize(lags: list[float]) -> dict[str, float]:
    if not lags:
        return {"n": 0, "p50": float("nan"), "p99": float("nan"), "max": float("nan")}
    return {"n": len(lags), "p50": pct(lags, 0.5), "p99": pct(lags, 0.99), "max": max(lags)}


async def latency_run(
    url: str, sim_port: int, proc: subprocess.Popen[str], seconds: float, warmup: float
) -> dict[str, Any]:
    """One simulator feed -> Supervisor -> publisher, and two in-process consumers of
    the same supervisor: one takes what is queued per call (``receive_batch``, as the
    publisher and ``bench_latency.py`` do), one calls ``receive`` per event."""
    case = CASES["alpaca"]
    assert proc.stdout is not None
    local: dict[str, list[float]] = {"batch": [], "each": []}
    freeze_startup_heap()  # as ``puffin-trio publish`` does
    async with (
        open_redis_publisher(url, prefix="latency") as publisher,
        Supervisor.open() as sup,
    ):
        async with (
            sup.events(capacity=4096, name="to-redis") as to_redis,
            sup.events(capacity=4096, name="batch") as batched,
            sup.events(capacity=4096, name="each") as each,
            trio.open_nursery() as nursery,
        ):
            sup.add(case.provider(sim_port, "json"), **case.topics)  # type: ignore[arg-type]
            nursery.start_soon(publisher.publish, to_redis)
            clock = trio.current_time
            start: float | None = None  # the first market event: warm-up, then measure

            def admit(event: Event) -> bool:
                nonlocal start
                if isinstance(event, Status | Gap):
                    return False
                now = clock()
                if start is None:
                    start = now
                return now - start >= warmup

            async def take_batches() -> None:
                lags = local["batch"]
                while True:
                    batch = await batched.receive_batch(4096)
                    now = time.time_ns()
                    lags.extend((now - e.ts_recv) / 1e6 for e in batch if admit(e))

            async def take_each() -> None:
                lags = local["each"]
                async for event in each:
                    now = time.time_ns()
                    if admit(event):
                        lags.append((now - event.ts_recv) / 1e6)

            nursery.start_soon(take_batches)
            nursery.start_soon(take_each)
            line = await trio.to_thread.run_sync(proc.stdout.readline)
            queued = {n: c.max_queued for n, c in sup.statistics().consumers.items()}
            nursery.cancel_scope.cancel()
    return {
        "redis": json.loads(line)["lags"] | {"queued": queued["to-redis"]},
        "batch": summarize(local["batch"]) | {"queued": queued["batch"]},
        "each": summarize(local["each"]) | {"queued": queued["each"]},
    }


async def latency_direct(url: str, proc: subprocess.Popen[str], rate: float) -> dict[str, Any]:
    """The Redis path alone: events stamped now, published at ``rate`` through a fan-out."""
    assert proc.stdout is not None
    freeze_startup_heap()
    fanout = FanOut()
    async with (
        fanout.consumer(capacity=4096) as channel,
        open_redis_publisher(url, prefix="latency") as publisher,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(publisher.publish, channel)

        async def feed() -> None:
            period = 1 / rate
            while True:
                now = time.time_ns()
                await fanout.publish(
                    Trade(provider="alpaca", symbol="AAPL", ts_event=now, ts_recv=now,
                          price=187.25, size=100.0)
                )  # fmt: skip
                await trio.sleep(period)

        nursery.start_soon(feed)
        line = await trio.to_thread.run_sync(proc.stdout.readline)
        nursery.cancel_scope.cancel()
    return dict(json.loads(line)["lags"])


def child_cpu(proc: subprocess.Popen[str]) -> float:
    """CPU seconds (user + system) a running child has used so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def section_latency(url: str, quick: bool, receive: str) -> None:
    seconds, warmup = (4.0, 1.0) if quick else (10.0, 2.0)
    rounds = 1 if quick else LATENCY_ROUNDS
    results: list[dict[str, Any]] = []
    for _ in range(rounds):
        result: dict[str, Any] = {}
        for batch in LATENCY_FEEDS:
            trio.run(flushall, url)
            with (
                child(["--serve-sim", "alpaca", "--rate", str(LATENCY_RATE),
                       "--batch", str(batch)]) as sim_proc,
                child(["--latency", url, "--seconds", str(seconds),
                       "--warmup", str(warmup), "--receive", receive]) as proc,
            ):  # fmt: skip
                sim = int(read_line(sim_proc, CHILD_STARTUP))
                read_line(proc, CHILD_STARTUP)
                cpu, wall = child_cpu(sim_proc), time.monotonic()
                result[batch] = trio.run(latency_run, url, sim, proc, seconds, warmup)
                result[batch]["sim_cpu"] = (child_cpu(sim_proc) - cpu) / (time.monotonic() - wall)
        trio.run(flushall, url)
        with child(["--latency", url, "--seconds", str(seconds), "--warmup", str(warmup),
                    "--receive", receive]) as proc:
            read_line(proc, CHILD_STARTUP)
            result["direct"] = trio.run(latency_direct, url, proc, DIRECT_RATE)
        result["load"] = os.getloadavg()[0]
        results.append(result)
    rows = []
    for batch in LATENCY_FEEDS:
        feed = "1 message per frame" if batch == 1 else f"{batch} messages per frame (1 ms due)"
        share = median(r[batch]["sim_cpu"] for r in results)
        for label, key in LATENCY_CONSUMERS:
            if key == "redis" and receive == "each":
                label = "through Redis, receive() per event"
            runs = [r[batch][key] for r in results]
            rows.append([f"{feed}, {share:.0%} CPU", label, f"{median(r['n'] for r in runs):,.0f}",
                         f"{median(r['p50'] for r in runs):.2f}",
                         f"{median(r['p99'] for r in runs):.2f}",
                         " ".join(f"{r['p99']:.1f}" for r in runs),
                         f"{max(r['max'] for r in runs):.1f}",
                         f"{max(r['queued'] for r in runs):,}"])  # fmt: skip
    runs = [r["direct"] for r in results]
    rows.append([f"events stamped when made, {DIRECT_RATE:,.0f}/s", "the Redis hop alone",
                 f"{median(r['n'] for r in runs):,.0f}", f"{median(r['p50'] for r in runs):.2f}",
                 f"{median(r['p99'] for r in runs):.2f}", " ".join(f"{r['p99']:.1f}" for r in runs),
                 f"{max(r['max'] for r in runs):.1f}", "-"])  # fmt: skip
    verdicts = ", ".join(
        f"{batch} per frame {verdict(p99 <= LATENCY_TARGET_MS).strip()}"
        for batch in LATENCY_FEEDS
        for p99 in [median(r[batch]["redis"]["p99"] for r in results)]
    )
    print_table(
        f"4. Latency at {LATENCY_RATE:,.0f} msg/s (Alpaca simulator, JSON): consumer wall "
        f"clock - ts_recv, ms; median of {rounds} rounds",
        ["feed (simulator's CPU share)", "consumer", "events", "p50", "p99", "p99 per round",
         "max", "max queued"],
        rows,
    )  # fmt: skip
    loads = " ".join(f"{r['load']:.1f}" for r in results)
    print(
        f"target p99 <= {LATENCY_TARGET_MS} ms through Redis: {verdicts}. ts_recv is stamped\n"
        "by the publisher's session when the frame arrives, so the simulator rows include\n"
        "decoding and the fan-out. Feeds: the simulator sending each message in a frame of\n"
        "its own (a timer per frame: that process's CPU share is shown), and sending what\n"
        "is due every millisecond in one frame, as a real feed batches; same rate. The\n"
        "last row publishes events stamped when made, without a supervisor: what the Redis\n"
        "hop alone adds (publisher -> redis-server -> consumer process).\n"
        f"load average (1 min) after each round: {loads}.\n"
        "In-process: receive_batch takes what is queued per call (stamped when the call\n"
        "returns), as the publisher and bench_latency.py do; receive() per event gets one\n"
        "event per scheduler round, and in the publisher's process a round can take longer\n"
        "than the gap between two events, so that consumer falls behind (max queued).\n"
        "max queued: the consumer's most events waiting (the Redis row: the publisher's)."
    )


# --------------------------------------------------------------------------- 5. memory


async def memory_run(url: str, count: int) -> tuple[int, float, float]:
    await flushall(url)
    before = await used_memory(url)
    events = market_events(count, ("AAPL", "MSFT", "NVDA", "AMZN", "TSLA", "META", "GOOG"))
    wall, cpu = await publish_all(url, events, prefix="memory", maxlen=None)
    return await used_memory(url) - before, wall, cpu


def section_memory(url: str, quick: bool) -> None:
    count = 200_000 if quick else 1_000_000
    used, wall, _ = trio.run(memory_run, url, count)
    print_table(
        f"5. Redis memory: {count:,} trades and quotes kept (maxlen=None), 7 symbols",
        ["events", "used_memory delta", "per event", "per million events", "publish events/s"],
        [[f"{count:,}", f"{used / 1e6:.1f} MB", f"{used / count:.0f} B",
          f"{used / count:.0f} MB", fmt_rate(count / wall)]],
    )  # fmt: skip


# --------------------------------------------------------------------------- 6. commands


async def command_costs(url: str, count: int) -> list[list[str]]:
    """Client CPU and wall time per command: coredis against the lean connection (_pipe).

    Three shapes: the publisher's write script for a transaction of 5 events
    (the latency run's size), a feed's round reading it back, and a tiny
    command (``PING``), each repeated ``count`` times, one at a time.
    """
    await flushall(url)
    source = "return redis.call('XADD', KEYS[1], 'MAXLEN', '~', 1000, '*', 'd', ARGV[1])"
    sha = script_sha(source)
    payload = encode_batch(sample(market_events(5, ("AAPL",))))
    reading = "return redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)"
    rows: list[list[str]] = []
    async with coredis.Redis.from_url(url) as client:
        write = client.register_script(source)
        read = client.register_script(reading)
        pipe = Pipe(url, connect_timeout=5.0, reply_timeout=5.0, client_name="bench-commands")
        try:
            shapes: list[tuple[str, Any, Any]] = [
                ("write script, 5 events",
                 lambda: write(keys=["cmd"], args=[payload]),
                 lambda: pipe.script(sha, source, ["cmd"], [payload])),
                ("read script, 5 events",
                 lambda: read(keys=["cmd"]),
                 lambda: pipe.script(script_sha(reading), reading, ["cmd"], [])),
                ("PING", client.ping, lambda: pipe.call(b"PING")),
            ]  # fmt: skip
            for label, through_coredis, through_pipe in shapes:
                costs = []
                for call in (through_coredis, through_pipe):
                    await call()  # warm: connected, script cached
                    cpu, wall = time.process_time(), time.perf_counter()
                    for _ in range(count):
                        await call()
                    costs.append(((time.process_time() - cpu) / count * 1e6,
                                  (time.perf_counter() - wall) / count * 1e6))  # fmt: skip
                (cpu_c, wall_c), (cpu_p, wall_p) = costs
                rows.append([label, f"{cpu_c:.0f}", f"{wall_c:.0f}", f"{cpu_p:.0f}",
                             f"{wall_p:.0f}", f"{cpu_c / cpu_p:.1f}x"])  # fmt: skip
        finally:
            pipe.close()
    return rows


def section_commands(url: str, quick: bool) -> None:
    count = 500 if quick else 3000
    rows = trio.run(command_costs, url, count)
    print_table(
        f"6. One command, client side: µs per command, {count:,} in a row",
        ["command", "coredis CPU", "coredis wall", "lean CPU", "lean wall", "CPU ratio"],
        rows,
    )
    print(
        "coredis: a Redis client on trio through anyio (every command but the hot ones);\n"
        "lean: the hot commands' connection (hiredis packer and reader on a trio socket).\n"
        "Wall time includes redis-server's own work and the loopback round trip."
    )


# --------------------------------------------------------------------------- main


def roles(args: argparse.Namespace) -> bool:
    """This script's own child roles: the consumer processes."""
    if args.consume:
        trio.run(consume_child, args.consume, args.n)
        return True
    if args.latency:
        trio.run(latency_child, args.latency, args.seconds, args.warmup, args.receive)
        return True
    return False


def benchmark(args: argparse.Namespace, cases: list[Case]) -> None:
    wanted = args.only or list(SECTIONS)
    with contextlib.ExitStack() as stack:
        url = args.redis or stack.enter_context(redis_server())
        if "encoding" in wanted:
            section_encoding(args.quick)
        if "layout" in wanted:
            section_layout(url, args.quick)
        if "throughput" in wanted:
            section_throughput(url, args.quick)
        if "latency" in wanted:
            section_latency(url, args.quick, args.receive)
        if "memory" in wanted:
            section_memory(url, args.quick)
        if "commands" in wanted:
            section_commands(url, args.quick)
    load = os.getloadavg()
    print(f"\nload average at end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; coredis "
          f"{coredis.__version__}")  # fmt: skip


def main(argv: Sequence[str] | None = None) -> None:
    hidden = argparse.SUPPRESS
    run_script(
        __doc__,
        "Redis distribution",
        benchmark,
        argv,
        options={
            "--only": {"choices": SECTIONS, "action": "append", "help": "run these sections"},
            "--redis": {"help": "use this Redis instead of starting one (it is FLUSHED)"},
            "--consume": {"help": hidden},
            "--latency": {"help": hidden},
            "--n": {"type": int, "help": hidden},
            "--seconds": {"type": float, "help": hidden},
            "--warmup": {"type": float, "help": hidden},
            "--receive": {
                "choices": ("batch", "each"),
                "default": "batch",
                "help": "how the latency section's consumer process takes events: what is "
                "queued per scheduler round (batch, as the in-process receive_batch row) or "
                "one receive() per event (each: async for)",
            },
        },
        roles=roles,
    )


if __name__ == "__main__":
    main()
