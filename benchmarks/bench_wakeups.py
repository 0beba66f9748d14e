"""Where a frame's time goes at one message per frame: wake-ups per task, CPU per stage.

Run: ``python benchmarks/bench_wakeups.py [--quick] [--case NAME]``.

At B=1 a frame costs little to decode; what costs is waking tasks. Against a
blast server (a child process sending one message per WebSocket frame as fast
as the socket takes them) the pipeline (``Supervisor`` -> one "block"
consumer that takes what is queued with ``receive_batch``) runs on each
WebSocket transport, three times:

1. with a trio Instrument counting, per frame: rounds of trio's run loop,
   task steps by task (the WebSocket library's reader task, the session's
   reader, the consumer, the rest), and parks;
2. plain, for the CPU per frame (this process, user + system);
3. under cProfile, for the CPU per frame by stage (decode, guard, fan-out,
   session reader, transport and library, trio's scheduler, the consumer).

The counts say how much of a frame's cost is scheduling: a task step is a
trip through trio's scheduler (~1-5 µs here), and before issue 11 a frame
took about three of them beyond the library's own (the reader's wake-up,
its publish checkpoint, the consumer's wake-up), plus a pass per
``receive`` of the library.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import inspect
import io
import pstats
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import trio
from _blast import Case
from _harness import CONTROL_TYPES, RUN_TIMEOUT, SIM_RATE, print_table, run_script, server
from bench_throughput import stage_of

from puffin_trio import Supervisor
from puffin_trio.channels import DEFAULT_CAPACITY

#: Frames per measured window (B=1: messages = frames).
FULL = 60_000
QUICK = 10_000


def role(task: trio.lowlevel.Task) -> str:
    """Which part of the pipeline a task is, by its name."""
    name = task.name
    if "recv_events" in name or "_reader_task" in name:
        return "library reader"
    if name.endswith(":_reader"):
        return "session reader"
    if "measure" in name:
        return "consumer"
    return "other"


class Steps(trio.abc.Instrument):
    """Counts task steps by role, run-loop rounds and parks while ``on``."""

    def __init__(self) -> None:
        self.on = False
        self.steps: Counter[str] = Counter()
        self.rounds = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if self.on:
            self.steps[role(task)] += 1

    def before_io_wait(self, timeout: float) -> None:
        if self.on:
            self.rounds += 1


def _provider(case: Case, port: int, variant: str, transport: str) -> Any:
    """The case's provider on ``transport`` (a tree without that choice has one transport)."""
    if "transport" in inspect.signature(case.provider).parameters:
        return case.provider(port, variant, transport)
    return case.provider(port, variant)


async def measure(
    case: Case, port: int, variant: str, n: int, transport: str, steps: Steps | None
) -> tuple[int, float]:
    """Frames taken and CPU seconds, from the first market event to ``n`` more."""
    control = CONTROL_TYPES
    with trio.fail_after(RUN_TIMEOUT):
        async with Supervisor.open() as sup:
            sup.add(_provider(case, port, variant, transport), **case.topics)
            async with sup.events(capacity=DEFAULT_CAPACITY, overflow="block") as events:
                async for ev in events:
                    if type(ev) not in control:
                        break
                batched = hasattr(events, "receive_batch")
                cpu = time.process_time()
                if steps is not None:
                    steps.on = True
                got = 0
                while got < n:
                    if batched:
                        for ev in await events.receive_batch(DEFAULT_CAPACITY):
                            if type(ev) not in control:
                                got += 1
                    else:
                        ev = await events.receive()
                        if type(ev) not in control:
                            got += 1
                if steps is not None:
                    steps.on = False
                return got, time.process_time() - cpu
    raise AssertionError("unreachable")  # pragma: no cover


@dataclass
class Result:
    transport: str
    frames: int
    rounds: float
    steps: dict[str, float]
    cpu_us: float
    stages: dict[str, float]


def run_one(case: Case, port: int, variant: str, n: int, transport: str) -> Result:
    steps = Steps()
    gc.collect()
    trio.run(measure, case, port, variant, n, transport, steps, instruments=[steps])
    gc.collect()
    got, cpu = trio.run(measure, case, port, variant, n, transport, None)
    gc.collect()
    prof = cProfile.Profile()
    prof.enable()
    trio.run(measure, case, port, variant, n, transport, None)
    prof.disable()
    stats = pstats.Stats(prof, stream=io.StringIO())
    by_stage: Counter[str] = Counter()
    total = 0.0
    for (filename, _line, name), (_cc, _nc, tottime, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        stage = stage_of(filename, name)
        if stage.startswith("trio: waiting in epoll"):
            continue  # cProfile's clock counts the idle wait; process CPU does not
        by_stage[stage] += tottime
        total += tottime
    # cProfile inflates everything; its shares times the plain run's CPU per frame.
    cpu_us = cpu * 1e6 / got
    stages = {stage: cpu_us * t / total for stage, t in by_stage.items()}
    return Result(
        transport,
        got,
        steps.rounds / n,
        {k: v / n for k, v in steps.steps.items()},
        cpu_us,
        stages,
    )


def benchmark(args: argparse.Namespace, cases: list[Case]) -> None:
    n = QUICK if args.quick else FULL
    roles = ["library reader", "session reader", "consumer", "other"]
    for case in cases:
        if case.name not in ("alpaca", "polygon"):
            continue
        variant = case.variants[0]
        transports = ["websockets", "trio-websocket"]
        if "transport" not in inspect.signature(case.provider).parameters:
            transports = ["trio-websocket"]
        results: list[tuple[str, Result]] = []
        pool = str(20_000 if case.cycles else 4 * n)
        feeds = (
            (f"blast, {n:,} frames", n, ["--serve", case.name, "--batch", "1", "--pool", pool]),
            (f"simulator at {SIM_RATE:,.0f}/s, {n // 4:,} frames", n // 4,
             ["--serve-sim", case.name, "--batch", "1", "--rate", str(SIM_RATE), "--precise"]),
        )  # fmt: skip
        for feed, frames, arguments in feeds:
            with server(arguments) as port:
                for transport in transports:
                    results.append((feed, run_one(case, port, variant, frames, transport)))
        print_table(
            f"{case.name} {variant}, one message per frame: per frame",
            ["feed", "transport", "loop rounds", *[f"steps: {r}" for r in roles], "CPU µs"],
            [
                [feed, r.transport, f"{r.rounds:.2f}"]
                + [f"{r.steps.get(name, 0.0):.2f}" for name in roles]
                + [f"{r.cpu_us:.2f}"]
                for feed, r in results
            ],
        )
        stages = sorted(
            {s for _, r in results for s in r.stages}, key=lambda s: -results[0][1].stages.get(s, 0)
        )
        print_table(
            f"{case.name} {variant}, one message per frame: CPU µs per frame by stage "
            "(cProfile's shares x the plain run's CPU)",
            ["stage", *[f"{r.transport}, {f.split(',')[0].split()[0]}" for f, r in results]],
            [[stage, *[f"{r.stages.get(stage, 0.0):.2f}" for _, r in results]] for stage in stages],
        )
    print(
        "loop rounds: passes of trio's run loop (each polls epoll); steps: task steps (each a\n"
        "trip through the scheduler) by task: the WebSocket library's reader task (websockets'\n"
        "recv_events, trio-websocket's _reader_task), the session's reader, the consumer\n"
        "(receive_batch), the rest (heartbeat, health checker, ...). CPU µs: this process, per\n"
        "frame, in a run without the instrument. At the blast server's pace frames pile up and\n"
        "are taken many per wake-up; the simulator (its loop spinning to pace 5,000 frames/s\n"
        "exactly) sends each frame alone. Stages: cProfile's self time without the idle epoll\n"
        "wait, as shares of the plain run's CPU."
    )


def main(argv: Sequence[str] | None = None) -> None:
    run_script(__doc__, "wake-ups per frame at B=1", benchmark, argv)


if __name__ == "__main__":
    main()
