"""Throughput: events/s through Supervisor -> sup.events() against a bare-client ceiling.

Run: ``python benchmarks/bench_throughput.py [--quick] [--case NAME] [--profile [TOOL]]``.

A blast server in another process (handshake, then pre-encoded messages as
fast as the socket takes them) feeds, in turn and interleaved so that machine
noise hits every column alike:

* the *ceiling*: the transport tuned as the package tunes it plus a bare parse
  (WebSocket: websockets' trio client + ``orjson.loads``; IB: de-framing + a
  NUL split), nothing built;
* the *pipeline*: ``Supervisor`` -> ``sup.events(overflow="block")`` -> a
  consumer that counts market events (``receive_batch``);
* the *floor* (Alpaca, Polygon): the ceiling also building one event per
  message, unchecked, from ``orjson``'s dicts: no pipeline parsing into dicts
  can be faster (a typed parser checking in C, as the msgspec decoders of the
  Polygon and Alpaca JSON stock paths, can).

Each row is the best of several runs. Target: pipeline >= 75 % of the ceiling
at 20 messages per frame (IB: per TCP write). ``--profile`` profiles the
pipeline instead (B=20, the first ``--case`` and its first encoding: Alpaca
JSON by default) and prints the costs by pipeline stage.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import pstats
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import trio
from _blast import Case, FloorClient
from _harness import (
    CONTROL_TYPES,
    RUN_TIMEOUT,
    fmt_rate,
    print_table,
    run_script,
    server,
    verdict,
)

from puffin_trio import Supervisor
from puffin_trio.channels import DEFAULT_CAPACITY

#: Pipeline / ceiling at 20 messages per frame.
TARGET = 0.75


@dataclass(frozen=True)
class Settings:
    """Sizes of the runs, full or ``--quick``."""

    repeats: int
    #: Messages per run, by messages per frame: a few seconds each.
    messages: dict[int, int]
    #: Messages in the blast server's pre-encoded pool, sent round and round
    #: (a case whose pool must not repeat gets a whole run's worth, see pool_for).
    pool: int


FULL = Settings(repeats=3, messages={1: 100_000, 20: 300_000}, pool=20_000)
QUICK = Settings(repeats=1, messages={1: 20_000, 20: 60_000}, pool=4_000)
#: The script's own command-line options (``add_argument`` keywords by flag).
OPTIONS = {
    "--profile": {
        "nargs": "?",
        "const": "cprofile",
        "choices": ("cprofile", "pyinstrument"),
        "help": "profile the B=20 pipeline of the first --case (default: alpaca, json) "
        "instead of benchmarking",
    },
}


def pool_for(case: Case, n: int, s: Settings) -> int:
    """The blast pool for runs of ``n`` messages: ``s.pool`` cycled, or, for a case whose
    data must not repeat (sequence numbers), ``n`` plus 10 % (the messages before the
    timed window)."""
    return s.pool if case.cycles else max(s.pool, n + n // 10)


def blast_server(case: Case, batch: int, pool: int) -> Any:
    """The case's blast server in a child process; the context manager yields its port."""
    return server(["--serve", case.name, "--batch", str(batch), "--pool", str(pool)])


# --------------------------------------------------------------------------- measurements


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


async def bare_throughput(
    case: Case, port: int, variant: str, n: int, build: bool, library: str = "websockets"
) -> Timing:
    """The bare client on ``library``, timed from the first data frame to ``n`` messages
    after it: counting them (the ceiling), or building one event per message with
    ``build`` (the floor: the least a pipeline can cost)."""
    with trio.fail_after(RUN_TIMEOUT):
        async with case.bare(port, variant, library) as client:
            if build and not isinstance(client, FloorClient):
                raise TypeError(f"{case.name}: the bare client cannot build events")
            receive = client.receive
            parse = client.build if isinstance(client, FloorClient) and build else client.count
            await receive()
            start, cpu = time.perf_counter(), time.process_time()
            got = 0
            while got < n:
                got += parse(await receive())
            return Timing(got, time.perf_counter() - start, time.process_time() - cpu)
    raise AssertionError("unreachable")  # pragma: no cover


async def pipeline_throughput(
    case: Case, port: int, variant: str, n: int, transport: str = "websockets"
) -> Timing:
    """Supervisor + one "block" consumer, timed from the first market event to ``n`` more.

    The consumer does the least a consumer can: it counts market events (the
    ceiling counts messages per frame with ``len``), taking what is queued with
    ``receive_batch`` (one checkpoint per call, the documented fast way).
    """
    control = CONTROL_TYPES
    with trio.fail_after(RUN_TIMEOUT):
        async with Supervisor.open() as sup:
            sup.add(case.provider(port, variant, transport), **case.topics)  # type: ignore[arg-type]
            async with sup.events(capacity=DEFAULT_CAPACITY, overflow="block") as events:
                async for ev in events:
                    if type(ev) not in control:
                        break
                start, cpu = time.perf_counter(), time.process_time()
                got = 0
                while got < n:
                    for ev in await events.receive_batch(DEFAULT_CAPACITY):
                        if type(ev) not in control:
                            got += 1
                return Timing(got, time.perf_counter() - start, time.process_time() - cpu)
    raise AssertionError("unreachable")  # pragma: no cover


def measure(fn: Callable[..., Awaitable[Timing]], *args: Any) -> Timing:
    """Run one throughput measurement in a fresh trio run."""
    gc.collect()
    return trio.run(fn, *args)


# --------------------------------------------------------------------------- the table


@dataclass
class Row:
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


def throughput(cases: Sequence[Case], s: Settings) -> list[Row]:
    rows: list[Row] = []
    for case in cases:
        for batch in (1, 20):
            n = s.messages[batch]
            with blast_server(case, batch, pool_for(case, n, s)) as port:
                for variant in case.variants:
                    row = Row(case.name, variant, batch, n, [], [], [])
                    # Interleaved, so a burst of machine noise hits every column alike.
                    for _ in range(s.repeats):
                        args = (case, port, variant, n)
                        row.ceiling.append(measure(bare_throughput, *args, False))
                        row.pipeline.append(measure(pipeline_throughput, *args))
                        if case.floor:
                            row.floor.append(measure(bare_throughput, *args, True))
                    rows.append(row)
    print_table(
        "Throughput: blast server (child process) -> consumer, best of "
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
        "pipeline: Supervisor -> sup.events(capacity=1024, overflow='block') ->\n"
        "receive_batch(1024), on the default transport (websockets).\n"
        "ratio = pipeline / ceiling (wall clock); spread = (best - worst) / best over the runs;\n"
        "CPU µs: this process's CPU time (user + system) per message, best run; CPU ratio =\n"
        "ceiling CPU / pipeline CPU (what the ratio would be if neither ever waited).\n"
        "floor: the ceiling's client also building one event per message as the decoders\n"
        "do (event_builder; Alpaca JSON: rfc3339_to_ns), with no checks, no fan-out and no\n"
        "consumer task: no pipeline parsing into dicts can beat it (a typed C parser, as\n"
        "ours for JSON stock frames, can); ratio to ceiling."
    )
    return rows


def targets(rows: Sequence[Row]) -> None:
    print("\n## Targets\n")
    for row in rows:
        if row.batch == 20:
            floor = ""
            if row.floor:
                floor = f"; floor {best_rate(row.floor) / best_rate(row.ceiling):.0%}"
            print(
                f"{verdict(row.ratio >= TARGET)}  throughput {row.case} {row.variant} B=20: "
                f"{row.ratio:.0%} of the ceiling (target >= {TARGET:.0%}{floor})"
            )


# --------------------------------------------------------------------------- profile

#: Pipeline stage of a profiled function, by where it lives (first match wins).
STAGES: tuple[tuple[str, str], ...] = (
    ("providers/", "decode: provider protocol"),
    ("orjson", "decode: orjson/msgpack parse"),
    ("msgpack", "decode: orjson/msgpack parse"),
    ("<string>", "event construction (event_builder)"),
    ("puffin_trio/channels.py", "fan-out (channels.py)"),
    ("puffin_trio/session.py", "session reader (session.py)"),
    ("puffin_trio/transports/", "transport wrapper (transports/)"),
    ("websockets/", "websockets (frames, reader task)"),
    ("trio_websocket", "trio-websocket"),
    ("wsproto", "wsproto (frame parsing)"),
    ("recv", "socket syscalls"),
    ("'send'", "socket syscalls"),
    ("epoll", "trio: waiting in epoll (idle)"),
    ("trio/_core", "trio core (scheduler, checkpoints)"),
    ("collections/__init__", "trio core (scheduler, checkpoints)"),  # trio's Instruments UserDict
    ("outcome", "trio core (scheduler, checkpoints)"),
    ("trio/", "trio (other)"),
    ("bench_throughput.py", "consumer loop (benchmark)"),
    ("bench_wakeups.py", "consumer loop (benchmark)"),
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


def profile(case: Case, s: Settings, tool: str) -> None:
    variant = case.variants[0]
    n = s.messages[20]
    with blast_server(case, 20, pool_for(case, n, s)) as port:
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


# --------------------------------------------------------------------------- main


def benchmark(args: argparse.Namespace, cases: list[Case]) -> None:
    s = QUICK if args.quick else FULL
    if args.profile:
        profile(cases[0], s, args.profile)
    else:
        targets(throughput(cases, s))


def main(argv: Sequence[str] | None = None) -> None:
    run_script(__doc__, "throughput", benchmark, argv, options=OPTIONS)


if __name__ == "__main__":
    main()
