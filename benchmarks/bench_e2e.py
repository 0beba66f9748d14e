"""End-to-end benchmark: simulator -> supervisor -> consumer, against a bare client.

Run: ``python benchmarks/bench_e2e.py [--quick] [--only SECTION] [--case NAME] [--profile]``.
Providers (``--case``): Alpaca (JSON and msgpack), Polygon (stocks ``T``/``Q``,
JSON) and IB (TWS API over TCP); the cases live in ``_blast.py``. Prints one
table per section and a summary of the targets:

1. **throughput**: events/s through ``Supervisor`` -> ``sup.events()`` from a
   blast server in another process (handshake, then pre-encoded messages as
   fast as the socket takes them), next to the *ceiling* measured in the same
   run on the same server and data: the transport tuned as the package tunes
   it plus a bare parse (WebSocket: trio-websocket + ``orjson.loads``; IB:
   de-framing + a NUL split), nothing built. Each row is the best of several
   interleaved runs. Target: pipeline >= 75 % of the ceiling at 20 messages
   per frame (IB: per TCP write).
2. **decode**: µs per message of the provider codec (``protocol().receive``)
   on 20-message frames (IB: 20 messages), against the bare parse of the same
   bytes. Target: <= 1.5 µs per Alpaca trade.
3. **latency**: the package's own simulator (5 000 msg/s, one message per
   frame, timestamps = wall clock at generation) -> consumer; p50/p99/max of
   consumer time - ``ts_event``, split into network + decode (``ts_recv -
   ts_event``) and fan-out (consumer - ``ts_recv``). Target: p99 <= 1 ms
   (Polygon: plus its 1 ms timestamp resolution). Not for IB (no event times).
4. **rss**: peak memory growth of a client whose consumer is 10x slower than
   the feed, per overflow policy, each in a fresh process. Target: <= 20 MB.
   Not for IB (its simulator cannot feed 5 000 msg/s).

Speed is judged by ratios to baselines measured in the same run: on a noisy
2-core machine, only those travel. Servers run in child processes (this same
script with an internal ``--serve*`` flag) so they use the other core; a child
exits when its stdin closes, and on its own after ``--max-seconds``.

``--profile`` profiles the throughput path instead (B=20, the first ``--case``
and its first encoding: Alpaca JSON by default) and prints the costs by
pipeline stage.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import gc
import io
import json
import logging
import math
import os
import platform
import pstats
import select
import subprocess
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import attrs
import trio
from _blast import CASES, Case, FloorClient, StampingClient, data_events

from puffin_trio import Gap, SequenceGuard, Status, Supervisor, Trade
from puffin_trio.channels import DEFAULT_CAPACITY, OVERFLOW_POLICIES, Overflow
from puffin_trio.providers._base import ProviderProtocol

SCRIPT = os.path.abspath(__file__)
#: Events that are not market data: counted apart from the data everywhere.
CONTROL_TYPES: frozenset[type] = frozenset({Status, Gap})

#: Targets from the issue.
THROUGHPUT_TARGET = 0.75  # pipeline / ceiling at 20 messages per frame
DECODE_TARGET_US = 1.5  # per Alpaca trade in a 20-message frame
LATENCY_TARGET_US = 1000.0  # p99, consumer - ts_event
RSS_TARGET_MB = 20.0  # peak growth with a 10x slower consumer

#: Seconds a child server has to print its port: imports and the pre-encoded
#: frame pool take ~2 s here; 30 s covers a heavily loaded machine.
CHILD_STARTUP_TIMEOUT = 30.0
#: Seconds a child gets to exit after its stdin closes, before it is killed:
#: a clean exit takes well under a second.
CHILD_EXIT_TIMEOUT = 5.0
#: A child server stops by itself after this long, whatever happens to us:
#: several times the full run (~4 min), so it never cuts a run short, yet an
#: orphan cannot outlive a session.
CHILD_MAX_SECONDS = 1800.0
#: One measurement (connect, stream, close) must end within this: each takes
#: seconds, so two minutes means something hangs.
RUN_TIMEOUT = 120.0


@dataclass(frozen=True)
class Settings:
    """Sizes of every section, full or ``--quick``."""

    repeats: int
    #: Messages per throughput run, by messages per frame: a few seconds each.
    throughput_n: dict[int, int]
    #: Messages in the blast server's pre-encoded pool, sent round and round
    #: (a case whose pool must not repeat gets a whole run's worth, see pool_for).
    pool: int
    decode_seconds: float
    decode_repeats: int
    latency_seconds: float
    latency_warmup: float
    rss_seconds: float
    rss_warmup: float


FULL = Settings(
    repeats=3,
    throughput_n={1: 100_000, 20: 300_000},
    pool=20_000,
    decode_seconds=0.3,
    decode_repeats=5,
    latency_seconds=10.0,
    latency_warmup=1.0,
    rss_seconds=60.0,
    rss_warmup=1.0,
)
QUICK = Settings(
    repeats=1,
    throughput_n={1: 20_000, 20: 60_000},
    pool=4_000,
    decode_seconds=0.1,
    decode_repeats=3,
    latency_seconds=2.0,
    latency_warmup=0.5,
    rss_seconds=10.0,
    rss_warmup=1.0,
)

#: Section 3/4 feed: the package simulator's rate (messages/s).
SIM_RATE = 5000.0
#: Section 4: the consumer handles this many events/s (exactly 10x slower).
RSS_CONSUMER_RATE = SIM_RATE / 10
#: Section 4 frames carry 10 messages: the simulator paces frames with trio
#: timers, whose epoll wake-ups have millisecond resolution, so 500 frames/s
#: (2 ms apart) keep 5 000 msg/s exactly; one message per frame would not.
RSS_SIM_BATCH = 10


# --------------------------------------------------------------------------- output

#: Notes under the tables are wrapped to this many columns.
NOTE_WIDTH = 90


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A plain fixed-width table: first column left-aligned, the rest right-aligned."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        parts = [f"{cells[0]:<{widths[0]}}"]
        parts += [f"{c:>{w}}" for c, w in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join(parts)

    print(f"\n## {title}\n")
    print(line(header))
    print("-" * (sum(widths) + 2 * (len(widths) - 1)))
    for row in rows:
        print(line(row))
    sys.stdout.flush()


def versions() -> str:
    from importlib.metadata import version

    names = ("trio", "trio-websocket", "wsproto", "orjson", "msgpack", "attrs")
    return ", ".join(f"{n} {version(n)}" for n in names)


def print_header(args: argparse.Namespace) -> None:
    load = os.getloadavg()
    print("# puffin_trio end-to-end benchmark" + (" (--quick)" if args.quick else ""))
    print(f"date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}")
    print(f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"python {platform.python_version()} ({platform.python_implementation()}); {versions()}")
    sys.stdout.flush()


def fmt_rate(rate: float) -> str:
    return f"{rate:,.0f}"


def print_skipped(cases: Sequence[Case], what: str) -> None:
    """Say which cases have no rows in a simulator section, and why."""
    for case in cases:
        if case.sim is None:
            print(textwrap.fill(f"no {what} rows for {case.name}: {case.no_sim}.", NOTE_WIDTH))


# --------------------------------------------------------------------------- child processes


@contextlib.contextmanager
def child(arguments: Sequence[str]) -> Iterator[subprocess.Popen[str]]:
    """Run this script with ``arguments`` for the block; stop it (bounded) on leaving."""
    proc = subprocess.Popen(
        [sys.executable, SCRIPT, *arguments],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        yield proc
    finally:
        stop_child(proc)


def stop_child(proc: subprocess.Popen[str]) -> None:
    """Close the child's stdin (it exits on EOF); kill it if it does not within a few seconds."""
    if proc.stdin is not None:
        with contextlib.suppress(OSError):
            proc.stdin.close()
    try:
        proc.wait(timeout=CHILD_EXIT_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=CHILD_EXIT_TIMEOUT)
    if proc.stdout is not None:
        proc.stdout.close()


def read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    """The child's next stdout line, waiting at most ``timeout`` seconds."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline() if ready else ""
    if not line:
        raise RuntimeError(f"child {proc.args!r} printed nothing within {timeout} s")
    return line.strip()


@contextlib.contextmanager
def server(arguments: Sequence[str]) -> Iterator[int]:
    """A child server; yields the loopback port it printed."""
    with child(arguments) as proc:
        yield int(read_line(proc, CHILD_STARTUP_TIMEOUT))


async def run_until_stdin_closes(
    serve: Callable[[trio.TaskStatus[int]], Any], max_seconds: float, precise: bool = False
) -> None:
    """Child side: start ``serve``, print its port, run until stdin closes or time is up.

    ``precise``: keep the event loop spinning so trio's timers fire on time
    (epoll rounds every timeout up to a whole millisecond, so a server pacing
    frames 0.2 ms apart otherwise falls behind). It costs this process a core.
    """
    with trio.move_on_after(max_seconds):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve)
            print(port, flush=True)
            if precise:
                nursery.start_soon(spin)
            stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
            while await stdin.receive_some():
                pass
            nursery.cancel_scope.cancel()


async def spin() -> None:
    while True:
        await trio.lowlevel.checkpoint()


async def serve_blast(
    case: Case,
    batch: int,
    pool: int,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Child side: the case's blast server on a free loopback port."""
    pools = {v: case.wire(v, batch, pool) for v in case.variants}

    async def handle(stream: trio.SocketStream) -> None:
        try:
            await case.serve(stream, pools)
        except Exception as exc:  # one bad connection must not end the server
            print(f"blast server: connection failed: {exc!r}", file=sys.stderr)
        finally:
            await trio.aclose_forcefully(stream)

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port: int = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, handle, listeners)
        task_status.started(port)


# --------------------------------------------------------------------------- 1. throughput


def pool_for(case: Case, n: int, s: Settings) -> int:
    """The blast pool for runs of ``n`` messages: ``s.pool`` cycled, or, for a case whose
    data must not repeat (sequence numbers), ``n`` plus 10 % (the messages before the
    timed window)."""
    return s.pool if case.cycles else max(s.pool, n + n // 10)


def add_session(sup: Supervisor, case: Case, port: int, variant: str) -> None:
    """``sup.add`` the case's provider with its subscription, as a user would."""
    sup.add(case.provider(port, variant), **case.topics)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Timing:
    """One measured window: messages counted, wall-clock and CPU seconds (this process)."""

    messages: int
    wall: float
    cpu: float

    @property
    def rate(self) -> float:
        """Messages per wall-clock second."""
        return self.messages / self.wall

    @property
    def cpu_us(self) -> float:
        """CPU µs (user + system) per message: less inflated by the machine's noise."""
        return self.cpu * 1e6 / self.messages


async def ceiling_throughput(case: Case, port: int, variant: str, n: int) -> Timing:
    """The bare client, timed from the first data frame to ``n`` messages after it."""
    with trio.fail_after(RUN_TIMEOUT):
        async with case.bare(port, variant) as client:
            receive, count = client.receive, client.count
            await receive()
            start, cpu = time.perf_counter(), time.process_time()
            got = 0
            while got < n:
                got += count(await receive())
            return Timing(got, time.perf_counter() - start, time.process_time() - cpu)
    raise AssertionError("unreachable")  # pragma: no cover


async def pipeline_throughput(case: Case, port: int, variant: str, n: int) -> Timing:
    """Supervisor + one "block" consumer, timed from the first market event to ``n`` more.

    The consumer does the least a consumer can: it counts market events (the
    ceiling counts messages per frame with ``len``).
    """
    control = CONTROL_TYPES
    with trio.fail_after(RUN_TIMEOUT):
        async with Supervisor.open() as sup:
            add_session(sup, case, port, variant)
            async with sup.events(capacity=DEFAULT_CAPACITY, overflow="block") as events:
                async for ev in events:
                    if type(ev) not in control:
                        break
                start, cpu = time.perf_counter(), time.process_time()
                got = 0
                async for ev in events:
                    if type(ev) not in control:
                        got += 1
                        if got == n:
                            break
                return Timing(got, time.perf_counter() - start, time.process_time() - cpu)
    raise AssertionError("unreachable")  # pragma: no cover


async def floor_throughput(case: Case, port: int, variant: str, n: int) -> Timing:
    """The bare client building one event per message: the least a pipeline can cost."""
    with trio.fail_after(RUN_TIMEOUT):
        async with case.bare(port, variant) as client:
            if not isinstance(client, FloorClient):
                raise TypeError(f"{case.name}: the bare client cannot build events")
            receive, build = client.receive, client.build
            await receive()
            start, cpu = time.perf_counter(), time.process_time()
            got = 0
            while got < n:
                got += build(await receive())
            return Timing(got, time.perf_counter() - start, time.process_time() - cpu)
    raise AssertionError("unreachable")  # pragma: no cover


def measure(fn: Callable[..., Awaitable[Timing]], *args: Any) -> Timing:
    """Run one throughput measurement in a fresh trio run."""
    gc.collect()
    return trio.run(fn, *args)


@dataclass
class ThroughputRow:
    case: str
    variant: str
    batch: int
    n: int
    ceiling: list[Timing]
    pipeline: list[Timing]
    floor: list[Timing]

    @property
    def ratio(self) -> float:
        """Best pipeline rate / best ceiling rate (wall clock)."""
        return best_rate(self.pipeline) / best_rate(self.ceiling)

    @property
    def cpu_ratio(self) -> float:
        """Ceiling CPU per message / pipeline CPU per message (best of each)."""
        return best_cpu(self.ceiling) / best_cpu(self.pipeline)


def best_rate(timings: list[Timing]) -> float:
    return max(t.rate for t in timings)


def best_cpu(timings: list[Timing]) -> float:
    return min(t.cpu_us for t in timings)


def busy(timings: list[Timing]) -> float:
    """CPU / wall clock of the fastest run: how much of the time the client was working."""
    best = max(timings, key=lambda t: t.rate)
    return best.cpu / best.wall


def spread(timings: list[Timing]) -> str:
    """(best - worst) / best of the rates: how noisy the runs were."""
    if len(timings) < 2:
        return "-"
    rates = [t.rate for t in timings]
    return f"{(max(rates) - min(rates)) / max(rates):.0%}"


def section_throughput(cases: Sequence[Case], s: Settings) -> list[ThroughputRow]:
    rows: list[ThroughputRow] = []
    for case in cases:
        for batch in (1, 20):
            n = s.throughput_n[batch]
            pool = str(pool_for(case, n, s))
            with server(["--serve", case.name, "--batch", str(batch), "--pool", pool]) as p:
                for variant in case.variants:
                    row = ThroughputRow(case.name, variant, batch, n, [], [], [])
                    # Interleaved, so a burst of machine noise hits every column alike.
                    for _ in range(s.repeats):
                        row.ceiling.append(measure(ceiling_throughput, case, p, variant, n))
                        row.pipeline.append(measure(pipeline_throughput, case, p, variant, n))
                        if case.floor:
                            row.floor.append(measure(floor_throughput, case, p, variant, n))
                    rows.append(row)
    print_table(
        "1. Throughput: blast server (child process) -> consumer, best of "
        f"{s.repeats} runs (msg/s, and client CPU µs per message)",
        ["provider", "enc", "B", "N", "ceiling", "spread", "busy", "pipeline", "spread", "ratio",
         "ceil CPU µs", "pipe CPU µs", "CPU ratio", "floor", "ratio"],
        [
            [
                r.case, r.variant, str(r.batch), f"{r.n:,}",
                fmt_rate(best_rate(r.ceiling)), spread(r.ceiling), f"{busy(r.ceiling):.0%}",
                fmt_rate(best_rate(r.pipeline)), spread(r.pipeline), f"{r.ratio:.0%}",
                f"{best_cpu(r.ceiling):.2f}", f"{best_cpu(r.pipeline):.2f}",
                f"{r.cpu_ratio:.0%}",
                fmt_rate(best_rate(r.floor)) if r.floor else "-",
                f"{best_rate(r.floor) / best_rate(r.ceiling):.0%}" if r.floor else "-",
            ]
            for r in rows
        ],
    )  # fmt: skip
    for case in cases:
        print(f"ceiling {case.name}: {case.ceiling}.")
    print(
        "B: messages per WebSocket frame (IB: per TCP write, one send(2) each).\n"
        "busy: the best ceiling run's CPU / wall clock; well under 100 % means the ceiling\n"
        "waited for the server (at IB B=1 the server's send(2) per message can be the limit).\n"
        "pipeline: Supervisor -> sup.events(capacity=1024, overflow='block') -> async for.\n"
        "ratio = pipeline / ceiling (wall clock); spread = (best - worst) / best over the runs;\n"
        "CPU µs: this process's CPU time (user + system) per message, best run; CPU ratio =\n"
        "ceiling CPU / pipeline CPU (what the ratio would be if neither ever waited).\n"
        "floor: the ceiling's client also building one event per message as the decoders\n"
        "do (event_builder; Alpaca JSON: rfc3339_to_ns), with no checks, no fan-out and no\n"
        "consumer task: no pipeline that hands out attrs events can beat it; ratio to ceiling."
    )
    return rows


# --------------------------------------------------------------------------- 2. decode


def per_call_seconds(fn: Callable[[], object], seconds: float, repeats: int) -> float:
    """Best seconds per call of ``fn`` over ``repeats`` batches of about ``seconds`` each."""
    loops = 1
    while True:  # calibrate
        start = time.perf_counter()
        for _ in range(loops):
            fn()
        elapsed = time.perf_counter() - start
        if elapsed >= seconds / 4:
            break
        loops *= 2
    loops = max(1, int(loops * seconds / max(elapsed, 1e-9)))
    best = math.inf
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        for _ in range(loops):
            fn()
        best = min(best, (time.perf_counter() - start) / loops)
    return best


@dataclass
class DecodeRow:
    label: str
    baseline_label: str
    baseline_us: float
    receive_us: float
    guarded_us: float
    floor_us: float
    events: int


def section_decode(cases: Sequence[Case], s: Settings) -> list[DecodeRow]:
    rows: list[DecodeRow] = []
    ts = time.time_ns()
    strict_us = math.nan
    monotonic: list[str] = []
    for case in cases:
        for sample in case.decode_samples():
            decode, m = sample.decode, sample.messages
            events = data_events(decode(ts))
            if len(events) != m:
                raise RuntimeError(f"{sample.label}: decoded {len(events)} events, expected {m}")
            guarded = decode_and_guard(decode, ts, SequenceGuard("none"))
            base = per_call_seconds(sample.baseline, s.decode_seconds, s.decode_repeats)
            dec = per_call_seconds(partial(decode, ts), s.decode_seconds, s.decode_repeats)
            grd = per_call_seconds(guarded, s.decode_seconds, s.decode_repeats)
            flo = (
                math.nan
                if sample.floor is None
                else per_call_seconds(sample.floor, s.decode_seconds, s.decode_repeats)
            )
            rows.append(
                DecodeRow(sample.label, sample.baseline_label, base, dec, grd, flo, len(events))
            )
            trades = [e for e in events if isinstance(e, Trade)]
            if trades and math.isnan(strict_us):
                strict_us = strict_guard_us(trades, s)
            protocol = sample.protocol
            if protocol.guard_mode == "monotonic":
                us = session_guard_us(protocol, events, s)
                monotonic.append(
                    f"reference: what the session adds per {sample.label} event, "
                    f"SequenceGuard('monotonic').feed(protocol.stream_key(event), ...) in order: "
                    f"{us:.3f} µs."
                )
    print_table(
        "2. Decode + normalise (+ guard), 20-message frames (IB: 20 messages), best of "
        f"{s.decode_repeats} (µs per message)",
        ["frame", "baseline", "base µs", "receive µs", "x base", "+guard(none) µs", "floor µs"],
        [
            [
                r.label, r.baseline_label, f"{r.baseline_us * 1e6 / r.events:.3f}",
                f"{r.receive_us * 1e6 / r.events:.3f}", f"{r.receive_us / r.baseline_us:.2f}x",
                f"{r.guarded_us * 1e6 / r.events:.3f}",
                "-" if math.isnan(r.floor_us) else f"{r.floor_us * 1e6 / r.events:.3f}",
            ]
            for r in rows
        ],
    )  # fmt: skip
    print(
        "receive = provider.protocol().receive(frame, ts_recv): parse, normalise, build events\n"
        "(IB: one call per message, 20 messages; the codec is past its handshake with the\n"
        "requests open, and each message changes its quote side, so each gives one event).\n"
        "+guard(none): the same plus SequenceGuard('none').feed per event (a pass-through;\n"
        "the session skips the guard entirely for providers without sequence numbers).\n"
        "floor: the baseline plus one event per message built unchecked (event_builder;\n"
        "JSON: rfc3339_to_ns), no validation or conversion: the least any decoder pays.\n"
        f"reference: SequenceGuard('strict').feed on seq-numbered trades, in order: "
        f"{strict_us:.3f} µs per event (guard only)."
    )
    for line in monotonic:
        print(line)
    return rows


def decode_and_guard(
    decode: Callable[[int], list[Any]], ts: int, guard: SequenceGuard[Any]
) -> Callable[[], None]:
    """A call that decodes the sample and feeds each item to ``guard``, as a reader would."""
    feed = guard.feed
    out: list[Any] = []

    def run() -> None:
        for item in decode(ts):
            feed("k", item, 0, out)
        out.clear()

    return run


def session_guard_us(protocol: ProviderProtocol, template: Sequence[Any], s: Settings) -> float:
    """µs per event of the session's guard step for ``protocol``'s mode: the stream key,
    then ``feed``, on seq-numbered copies of ``template`` whose numbers only go up."""
    count = 100_000
    events = [attrs.evolve(template[i % len(template)], seq=i + 1) for i in range(count)]

    def run() -> None:
        guard: SequenceGuard[Any] = SequenceGuard(protocol.guard_mode)
        out: list[Any] = []
        feed, key = guard.feed, protocol.stream_key
        for event in events:
            feed(key(event), event, 0, out)
            out.clear()

    return per_call_seconds(run, s.decode_seconds, s.decode_repeats) * 1e6 / count


def strict_guard_us(template: Sequence[Trade], s: Settings) -> float:
    """µs per event of a strict guard fed in-order, seq-numbered trades of several streams."""
    count = 100_000
    events = [
        attrs.evolve(template[i % len(template)], seq=i // len(template) + 1) for i in range(count)
    ]
    keys = [f"Trade:{e.symbol}:{i % len(template)}" for i, e in enumerate(events)]
    pairs = list(zip(keys, events, strict=True))

    def run() -> None:
        guard: SequenceGuard[Trade] = SequenceGuard("strict")
        out: list[Any] = []
        feed = guard.feed
        for key, event in pairs:
            feed(key, event, 0, out)
            out.clear()

    return per_call_seconds(run, s.decode_seconds, s.decode_repeats) * 1e6 / count


# --------------------------------------------------------------------------- 3. latency


@dataclass
class LatencyRow:
    case: str
    variant: str
    client: str
    rate: float
    #: Sorted ns: consumer - ts_event; ts_recv - ts_event; consumer - ts_recv (pipeline only).
    total: list[int]
    network: list[int] | None = None
    fanout: list[int] | None = None


def pct(values: list[int], q: float) -> float:
    """The q-quantile (nearest rank) of sorted ``values``, in µs."""
    if not values:
        return math.nan
    return values[min(len(values) - 1, int(q * len(values)))] / 1000


class Window:
    """Which receive times count: after ``warmup`` s from the first, for ``seconds`` s."""

    def __init__(self, seconds: float, warmup: float) -> None:
        self.seconds = seconds
        self.warmup = warmup
        self.start = 0
        self.end = 0

    def admit(self, now: int) -> bool | None:
        """True: record; False: not yet; None: the window is over."""
        if not self.start:
            self.start = now + int(self.warmup * 1e9)
            self.end = self.start + int(self.seconds * 1e9)
        if now < self.start:
            return False
        return None if now >= self.end else True


async def bare_latency(
    case: Case, port: int, variant: str, seconds: float, warmup: float
) -> tuple[float, list[int]]:
    """The bare client: time.time_ns() right after each frame arrives - its messages' ts."""
    total: list[int] = []
    window = Window(seconds, warmup)
    with trio.fail_after(RUN_TIMEOUT + seconds + warmup):
        async with case.bare(port, variant) as client:
            if not isinstance(client, StampingClient):
                raise TypeError(f"{case.name}: the bare client cannot read event times")
            receive, stamps = client.receive, client.stamps
            while True:
                frame = await receive()
                now = time.time_ns()
                admit = window.admit(now)
                if admit is None:
                    break
                if admit:
                    total.extend(now - ts for ts in stamps(frame))
    return len(total) / seconds, sorted(total)


async def pipeline_latency(
    case: Case, port: int, variant: str, seconds: float, warmup: float
) -> tuple[float, list[int], list[int], list[int]]:
    """Supervisor -> consumer; per event (ns): total, network + decode, fan-out."""
    total: list[int] = []
    network: list[int] = []
    fanout: list[int] = []
    control = CONTROL_TYPES
    window = Window(seconds, warmup)
    with trio.fail_after(RUN_TIMEOUT + seconds + warmup):
        async with Supervisor.open() as sup:
            add_session(sup, case, port, variant)
            async with sup.events(capacity=DEFAULT_CAPACITY, overflow="block") as events:
                async for ev in events:
                    now = time.time_ns()
                    if type(ev) in control:
                        continue
                    admit = window.admit(now)
                    if admit is None:
                        break
                    if admit:
                        total.append(now - ev.ts_event)
                        network.append(ev.ts_recv - ev.ts_event)
                        fanout.append(now - ev.ts_recv)
    return len(total) / seconds, sorted(total), sorted(network), sorted(fanout)


def section_latency(cases: Sequence[Case], s: Settings, precise: bool) -> list[LatencyRow]:
    rows: list[LatencyRow] = []
    seconds, warmup = s.latency_seconds, s.latency_warmup
    for case in cases:
        if case.sim is None:
            continue
        arguments = ["--serve-sim", case.name, "--rate", str(SIM_RATE), "--batch", "1"]
        with server(arguments + (["--precise"] if precise else [])) as port:
            for variant in case.variants:
                gc.collect()
                rate, total = trio.run(bare_latency, case, port, variant, seconds, warmup)
                rows.append(LatencyRow(case.name, variant, "bare", rate, total))
                gc.collect()
                rate, total, network, fanout = trio.run(
                    pipeline_latency, case, port, variant, seconds, warmup
                )
                rows.append(
                    LatencyRow(case.name, variant, "pipeline", rate, total, network, fanout)
                )

    def cells(values: list[int] | None) -> list[str]:
        if values is None:
            return ["-", "-", "-"]
        return [f"{pct(values, 0.5):.0f}", f"{pct(values, 0.99):.0f}", f"{values[-1] / 1000:.0f}"]

    pacing = "precise pacing" if precise else "plain trio timers"
    print_table(
        f"3. Latency: simulator (child, rate {SIM_RATE:,.0f}/s, 1 msg/frame, {pacing}) -> "
        f"consumer, {seconds:g} s per row (µs)",
        ["provider", "enc", "client", "msg/s", "events", "p50", "p99", "max",
         "net p50", "net p99", "net max", "fan p50", "fan p99", "fan max"],
        [
            [r.case, r.variant, r.client, fmt_rate(r.rate), f"{len(r.total):,}",
             *cells(r.total), *cells(r.network), *cells(r.fanout)]
            for r in rows
        ],
    )  # fmt: skip
    print(
        "p50/p99/max: time.time_ns() in the consumer - ts_event (the simulator's wall clock when\n"
        "it built the frame). bare: the same server, tuned trio-websocket, stamped right after\n"
        "get_message (the floor: loopback, the server's send, trio-websocket, wake-ups).\n"
        "net = ts_recv - ts_event (up to the session reader's stamp); fan = consumer - ts_recv\n"
        f"(decode, fan-out, consumer wake-up). The first {warmup:g} s of each row is warm-up."
    )
    for case in cases:
        if case.sim is not None and case.stamp_resolution_ns > 1:
            us = f"{case.stamp_resolution_ns / 1e3:,.0f} µs"
            print(
                textwrap.fill(
                    f"{case.name}: the wire's event time has {us} resolution (truncated), so "
                    f"its total and net figures, bare rows included, carry 0 to {us} of "
                    "truncation; fan is exact.",
                    NOTE_WIDTH,
                )
            )
    print_skipped(cases, "latency")
    print(
        "The simulators (serve_alpaca, serve_polygon) pace frames with trio timers, whose epoll\n"
        "waits have 1 ms resolution; msg/s is the rate they reached. --precise-sim spins the\n"
        "simulator's event loop to hit the rate, at the cost of a core (on 2 cores that adds\n"
        "scheduler-tick stalls to every process's tail)."
    )
    return rows


# --------------------------------------------------------------------------- 4. rss


def rss_kib() -> tuple[int, int]:
    """(VmRSS, VmHWM) of this process in KiB."""
    values = {}
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value, _ = line.split()
                values[key] = int(value)
    return values["VmRSS:"], values["VmHWM:"]


async def rss_child(
    case: Case, port: int, variant: str, policy: Overflow, seconds: float, warmup: float
) -> dict[str, Any]:
    """Child side: a consumer at exactly RSS_CONSUMER_RATE market events/s; memory, counters.

    Each market event "takes" 1/RSS_CONSUMER_RATE s (a deadline-paced sleep, so the
    rate is exact whatever the timer resolution); Status/Gap events take no time.
    The provider's trading calendar is asked once first: its one-time load (US
    equities: exchange_calendars and pandas, ~60 MB) would otherwise land inside
    the window, at the health check's first staleness deadline (Polygon: 60 s).
    """
    case.provider(port, variant).calendar.session_at(time.time_ns())
    before, _ = rss_kib()
    peak = 0
    handled = 0
    began = 0.0
    log = LogCollector()
    logging.getLogger("puffin_trio").addHandler(log)

    async def consume(events: Any) -> None:
        nonlocal handled
        async for ev in events:
            if type(ev) not in CONTROL_TYPES:
                handled += 1
                await trio.sleep_until(began + handled / RSS_CONSUMER_RATE)

    async def sample() -> None:
        nonlocal peak
        while True:
            peak = max(peak, rss_kib()[0])
            await trio.sleep(0.1)

    async with Supervisor.open() as sup:
        add_session(sup, case, port, variant)
        async with sup.events(capacity=DEFAULT_CAPACITY, overflow=policy, name="slow") as events:
            with trio.fail_after(RUN_TIMEOUT):
                async for ev in events:
                    if type(ev) not in CONTROL_TYPES:
                        began = trio.current_time()
                        break
            with trio.move_on_after(warmup):
                await consume(events)
            start_rss, _ = rss_kib()
            peak = start_rss
            timed_from = trio.current_time()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sample)
                with trio.move_on_after(seconds):
                    await consume(events)
                nursery.cancel_scope.cancel()
            now = trio.current_time()
            stats = sup.statistics()
    consumer = stats.consumers["slow"]
    session = stats.sessions[case.name]
    end_rss, hwm = rss_kib()
    return {
        "policy": policy,
        "before_kib": before,
        "start_kib": start_rss,
        "peak_kib": max(peak, end_rss),
        "hwm_kib": hwm,
        "end_kib": end_rss,
        "seconds": now - timed_from,
        "feed_rate": session.messages / (now - began),
        "handled_rate": handled / (now - began),
        "published": consumer.published,
        "delivered": consumer.delivered,
        "dropped": consumer.dropped,
        "conflated": consumer.conflated,
        "gaps": consumer.gaps,
        "max_queued": consumer.max_queued,
        "reconnects": session.reconnects,
        "log": log.lines,
    }


class LogCollector(logging.Handler):
    """Keeps the package's warnings (reconnects) for the report instead of printing them."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname.lower()}: {record.getMessage()}")


def section_rss(cases: Sequence[Case], s: Settings) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        # One server and one fresh client process per provider and policy, all at
        # once: each pair needs a small fraction of a core (the feed/s column shows
        # whether the simulators kept their rate), and memory does not mind company.
        clients = []
        for case in cases:
            if case.sim is None:
                continue
            variant = case.variants[-1]
            sim = ["--serve-sim", case.name, "--rate", str(SIM_RATE), "--batch", str(RSS_SIM_BATCH)]
            for policy in OVERFLOW_POLICIES:
                port = stack.enter_context(server(sim))
                arguments = [
                    "--rss-child", case.name, "--port", str(port), "--variant", variant,
                    "--policy", policy, "--seconds", str(s.rss_seconds),
                    "--warmup", str(s.rss_warmup),
                ]  # fmt: skip
                clients.append((case.name, variant, stack.enter_context(child(arguments))))
        for name, variant, proc in clients:
            line = read_line(proc, RUN_TIMEOUT + s.rss_seconds + s.rss_warmup)
            results.append({"case": name, "variant": variant, **json.loads(line)})

    def mb(kib: float) -> str:
        return f"{kib / 1024:.1f}"

    print_table(
        f"4. Peak RSS, consumer 10x slower than the feed ({RSS_CONSUMER_RATE:,.0f} vs "
        f"{SIM_RATE:,.0f} msg/s), {s.rss_seconds:g} s, fresh process per policy (MB)",
        ["provider", "enc", "policy", "before", "start", "peak", "VmHWM", "growth", "feed/s",
         "handled/s", "delivered", "dropped", "conflated", "gaps", "max queued", "reconnects"],
        [
            [r["case"], r["variant"], r["policy"], mb(r["before_kib"]), mb(r["start_kib"]),
             mb(r["peak_kib"]), mb(r["hwm_kib"]), mb(r["peak_kib"] - r["start_kib"]),
             fmt_rate(r["feed_rate"]),
             fmt_rate(r["handled_rate"]), f"{r['delivered']:,}", f"{r['dropped']:,}",
             f"{r['conflated']:,}", f"{r['gaps']:,}", f"{r['max_queued']:,}",
             str(r["reconnects"])]
            for r in results
        ],
    )  # fmt: skip
    for r in results:
        for line in r["log"]:
            print(f"{r['case']} {r['policy']}: {line}")
    print(
        "before: after imports and the provider's trading calendar (US equities: a one-time\n"
        "~60 MB, exchange_calendars + pandas, which the health check loads at its first\n"
        f"staleness deadline); start: after {s.rss_warmup:g} s of streaming (buffers full);\n"
        "peak: highest VmRSS sampled every 0.1 s after start; VmHWM: the kernel's high-water\n"
        "mark for the whole process life; growth = peak - start.\n"
        "feed/s: events the session published (under 'block' the feed slows to the consumer's\n"
        "pace: backpressure, and the stalled socket may cost a heartbeat timeout and a\n"
        "reconnect, as puffin_trio.channels documents); handled/s: market events the consumer\n"
        f"took (Status/Gap take no time). Simulator frames carry {RSS_SIM_BATCH} messages."
    )
    print_skipped(cases, "memory")
    return results


# --------------------------------------------------------------------------- profile


#: Pipeline stage of a profiled function, by where it lives (first match wins).
STAGES: tuple[tuple[str, str], ...] = (
    ("providers/", "decode: provider codec"),
    ("orjson", "decode: orjson/msgpack parse"),
    ("msgpack", "decode: orjson/msgpack parse"),
    ("<string>", "event construction (_slot_builder)"),
    ("puffin_trio/channels.py", "fan-out (channels.py)"),
    ("puffin_trio/session.py", "session reader (session.py)"),
    ("puffin_trio/transports/", "transport wrapper (ws.py / tcp.py)"),
    ("trio_websocket", "trio-websocket"),
    ("wsproto", "wsproto (frame parsing)"),
    ("recv", "socket syscalls"),
    ("'send'", "socket syscalls"),
    ("epoll", "trio: waiting in epoll (idle)"),
    ("trio/_core", "trio core (scheduler, checkpoints)"),
    ("collections/__init__", "trio core (scheduler, checkpoints)"),  # trio's Instruments UserDict
    ("outcome", "trio core (scheduler, checkpoints)"),
    ("trio/", "trio (other)"),
    ("bench_e2e.py", "consumer loop (benchmark)"),
    ("logging", "logging (isEnabledFor checks)"),
    ("<built-in method builtins.", "builtins (len, min, ... from every stage)"),
    ("<method '", "builtin methods (deque, dict, list ops from every stage)"),
)


#: Calls worth counting per message: (label, part of the file name, function name).
COUNTED: tuple[tuple[str, str, str], ...] = (
    ("trio scheduler passes (unrolled_run resumes)", "trio/_core/_run.py", "unrolled_run"),
    ("epoll calls", "_io_epoll.py", "get_events"),
    ("tasks parked (ParkingLot.park)", "_parking_lot.py", "park"),
    ("publisher waits for room (FanOut._wait_for_room)", "channels.py", "_wait_for_room"),
    ("frames parsed", "providers/", "receive"),
)


def stage_of(filename: str, name: str) -> str:
    text = f"{filename}:{name}"
    for needle, stage in STAGES:
        if needle in text:
            return stage
    return "other"


def profile(cases: Sequence[Case], s: Settings, tool: str) -> None:
    case = cases[0]
    variant = case.variants[0]
    n = s.throughput_n[20]
    arguments = ["--serve", case.name, "--batch", "20", "--pool", str(pool_for(case, n, s))]
    with server(arguments) as port:
        measure(pipeline_throughput, case, port, variant, n // 10)  # warm up
        if tool == "pyinstrument":
            from pyinstrument import Profiler

            profiler = Profiler(interval=0.0005, async_mode="disabled")
            profiler.start()
            rate = measure(pipeline_throughput, case, port, variant, n).rate
            profiler.stop()
            print(f"\n## Profile (pyinstrument): {case.name} {variant} B=20, {rate:,.0f} msg/s\n")
            print(profiler.output_text(unicode=True, color=False, show_all=False))
            return
        prof = cProfile.Profile()
        prof.enable()
        rate = measure(pipeline_throughput, case, port, variant, n).rate
        prof.disable()
    stats = pstats.Stats(prof, stream=io.StringIO())
    by_stage: dict[str, float] = {}
    total = 0.0
    for (filename, _line, name), (_cc, _nc, tottime, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        stage = stage_of(filename, name)
        by_stage[stage] = by_stage.get(stage, 0.0) + tottime
        total += tottime
    print_table(
        f"Profile (cProfile, self time by stage): {case.name} {variant} B=20, "
        f"{n:,} msgs at {rate:,.0f} msg/s under the profiler",
        ["stage", "self s", "share", "µs/msg"],
        [
            [stage, f"{t:.2f}", f"{t / total:.0%}", f"{t * 1e6 / n:.2f}"]
            for stage, t in sorted(by_stage.items(), key=lambda kv: -kv[1])
        ],
    )
    print()
    for label, file_part, function in COUNTED:
        calls = sum(
            nc
            for (filename, _line, name), (_cc, nc, *_rest) in stats.stats.items()  # type: ignore[attr-defined]
            if name == function and file_part in filename
        )
        print(f"{label}: {calls / n:.2f} per message")
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(25)
    print("\nTop 25 functions by self time:\n")
    print("\n".join(out.getvalue().splitlines()[6:]))


# --------------------------------------------------------------------------- summary


def summary(
    cases: Sequence[Case],
    throughput: list[ThroughputRow] | None,
    decode: list[DecodeRow] | None,
    latency: list[LatencyRow] | None,
    rss: list[dict[str, Any]] | None,
) -> None:
    print("\n## Targets\n")

    def verdict(ok: bool) -> str:
        return "met    " if ok else "NOT MET"

    if throughput:
        for t in throughput:
            if t.batch == 20:
                floor = (
                    f"; floor {best_rate(t.floor) / best_rate(t.ceiling):.0%}" if t.floor else ""
                )
                print(
                    f"{verdict(t.ratio >= THROUGHPUT_TARGET)}  throughput {t.case} {t.variant} "
                    f"B=20: {t.ratio:.0%} of the ceiling (target >= {THROUGHPUT_TARGET:.0%}{floor})"
                )
    if decode:
        for d in decode:
            if d.label.startswith("alpaca trade"):
                us = d.receive_us * 1e6 / d.events
                floor = (
                    ""
                    if math.isnan(d.floor_us)
                    else f"; floor {d.floor_us * 1e6 / d.events:.2f} µs"
                )
                print(
                    f"{verdict(us <= DECODE_TARGET_US)}  decode {d.label} in a 20-message frame: "
                    f"{us:.2f} µs (target <= {DECODE_TARGET_US} µs{floor})"
                )
    if latency:
        resolution_us = {c.name: c.stamp_resolution_ns / 1e3 for c in cases}
        for lr in latency:
            if lr.client != "pipeline":
                continue
            p99 = pct(lr.total, 0.99)
            # The target is stated at SIM_RATE; a feed far slower than that does not check it.
            at_rate = lr.rate >= 0.9 * SIM_RATE
            # ts_event truncated on the wire (Polygon: ms) adds up to its resolution.
            slack = resolution_us[lr.case] if resolution_us[lr.case] > 1 else 0.0
            target = f"{LATENCY_TARGET_US:,.0f} µs" + (
                f" + {slack:,.0f} µs timestamp resolution" if slack else ""
            )
            print(
                f"{verdict(p99 <= LATENCY_TARGET_US + slack) if at_rate else 'n/a    '}  latency "
                f"{lr.case} {lr.variant} p99 at {lr.rate:,.0f} msg/s: {p99:,.0f} µs (target <= "
                f"{target} at {SIM_RATE:,.0f} msg/s"
                + ("" if at_rate else "; the simulator did not reach that rate, see section 3")
                + ")"
            )
    if rss:
        for x in rss:
            growth = (x["peak_kib"] - x["start_kib"]) / 1024
            print(
                f"{verdict(growth <= RSS_TARGET_MB)}  memory {x['case']} {x['policy']}: "
                f"+{growth:.1f} MB in {x['seconds']:.0f} s (target <= {RSS_TARGET_MB:g} MB)"
            )


# --------------------------------------------------------------------------- main


SECTIONS = ("throughput", "decode", "latency", "rss")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small runs (< 60 s): a smoke test")
    parser.add_argument("--only", choices=SECTIONS, help="run one section")
    parser.add_argument(
        "--case", choices=sorted(CASES), action="append", help="provider(s) to run (default: all)"
    )
    parser.add_argument(
        "--profile",
        nargs="?",
        const="cprofile",
        choices=("cprofile", "pyinstrument"),
        help="profile the B=20 throughput path of the first --case (default: alpaca, json) "
        "instead of benchmarking",
    )
    parser.add_argument(
        "--precise-sim",
        action="store_true",
        help="latency: keep the simulator's event loop spinning so it paces 5k frames/s exactly "
        "(costs a core; on a 2-core machine it also lengthens everyone's tail latency)",
    )
    # Internal: the child processes.
    hidden = argparse.SUPPRESS
    parser.add_argument("--serve", choices=sorted(CASES), help=hidden)
    parser.add_argument("--serve-sim", choices=sorted(CASES), help=hidden)
    parser.add_argument("--rss-child", choices=sorted(CASES), help=hidden)
    parser.add_argument("--batch", type=int, default=20, help=hidden)
    parser.add_argument("--pool", type=int, default=FULL.pool, help=hidden)
    parser.add_argument("--rate", type=float, default=SIM_RATE, help=hidden)
    parser.add_argument("--precise", action="store_true", help=hidden)
    parser.add_argument("--port", type=int, help=hidden)
    parser.add_argument("--variant", help=hidden)
    parser.add_argument("--policy", choices=OVERFLOW_POLICIES, help=hidden)
    parser.add_argument("--seconds", type=float, help=hidden)
    parser.add_argument("--warmup", type=float, help=hidden)
    parser.add_argument("--max-seconds", type=float, default=CHILD_MAX_SECONDS, help=hidden)
    return parser.parse_args(argv)


def run_child(args: argparse.Namespace) -> bool:
    """Run the child role ``args`` asks for, if any; True if this process was a child."""
    if args.serve:
        case = CASES[args.serve]
        serve: Any = partial(serve_blast, case, args.batch, args.pool)
        trio.run(run_until_stdin_closes, serve, args.max_seconds)
        return True
    if args.serve_sim:
        case = CASES[args.serve_sim]
        if case.sim is None:
            raise SystemExit(f"{case.name} has no simulator run: {case.no_sim}")
        serve = partial(case.sim, args.rate, args.batch)
        trio.run(run_until_stdin_closes, serve, args.max_seconds, args.precise)
        return True
    if args.rss_child:
        case = CASES[args.rss_child]
        result = trio.run(
            rss_child, case, args.port, args.variant, args.policy, args.seconds, args.warmup
        )
        print(json.dumps(result), flush=True)
        return True
    return False


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if run_child(args):
        return
    s = QUICK if args.quick else FULL
    cases = [CASES[name] for name in args.case or sorted(CASES)]
    print_header(args)
    if args.profile:
        profile(cases, s, args.profile)
        return
    started = time.perf_counter()
    wanted = [args.only] if args.only else list(SECTIONS)
    throughput = section_throughput(cases, s) if "throughput" in wanted else None
    decode = section_decode(cases, s) if "decode" in wanted else None
    latency = section_latency(cases, s, args.precise_sim) if "latency" in wanted else None
    rss = section_rss(cases, s) if "rss" in wanted else None
    summary(cases, throughput, decode, latency, rss)
    load = os.getloadavg()
    print(
        f"\ntotal {time.perf_counter() - started:.0f} s; load average at end: "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )


if __name__ == "__main__":
    main()
