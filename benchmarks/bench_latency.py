"""Latency: the package's simulator -> consumer, p50/p99/max, against a bare client.

Run: ``python benchmarks/bench_latency.py [--quick] [--case NAME] [--precise-sim]``.

The simulator (a child process, 5,000 msg/s, one message per frame, each
message stamped with the wall clock when it was built) feeds a bare client
(the transport tuned as the package tunes it, stamped right after each frame
arrives: the floor) and then the pipeline. Per event: consumer time -
``ts_event``, split into network + decode (``ts_recv - ts_event``) and fan-out
(consumer - ``ts_recv``). Target: p99 <= 1 ms (Polygon: plus its 1 ms timestamp
resolution). Not for IB (no event times worth measuring).
"""

from __future__ import annotations

import argparse
import gc
import math
import textwrap
import time
from collections.abc import Sequence
from dataclasses import dataclass

import trio
from _blast import Case, StampingClient
from _harness import (
    CONTROL_TYPES,
    NOTE_WIDTH,
    RUN_TIMEOUT,
    SIM_RATE,
    Durations,
    add_session,
    fmt_rate,
    print_skipped,
    print_table,
    run_script,
    server,
    verdict,
)

from puffin_trio import Supervisor
from puffin_trio.channels import DEFAULT_CAPACITY

#: p99 of consumer time - ts_event, µs.
TARGET_US = 1000.0


#: How long each row streams, after a warm-up.
FULL = Durations(seconds=10.0, warmup=1.0)
QUICK = Durations(seconds=2.0, warmup=0.5)
#: The script's own command-line options (``add_argument`` keywords by flag).
OPTIONS = {
    "--precise-sim": {
        "action": "store_true",
        "help": "keep the simulator's event loop spinning so it paces 5k frames/s exactly "
        "(costs a core; on a 2-core machine it also lengthens everyone's tail latency)",
    },
}


@dataclass
class Row:
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

    def __init__(self, s: Durations) -> None:
        self.seconds = s.seconds
        self.warmup = s.warmup
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
    case: Case, port: int, variant: str, s: Durations
) -> tuple[float, list[int]]:
    """The bare client: time.time_ns() right after each frame arrives - its messages' ts."""
    total: list[int] = []
    window = Window(s)
    with trio.fail_after(RUN_TIMEOUT + s.seconds + s.warmup):
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
    return len(total) / s.seconds, sorted(total)


async def pipeline_latency(
    case: Case, port: int, variant: str, s: Durations
) -> tuple[float, list[int], list[int], list[int]]:
    """Supervisor -> consumer; per event (ns): total, network + decode, fan-out."""
    total: list[int] = []
    network: list[int] = []
    fanout: list[int] = []
    control = CONTROL_TYPES
    window = Window(s)
    with trio.fail_after(RUN_TIMEOUT + s.seconds + s.warmup):
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
    return len(total) / s.seconds, sorted(total), sorted(network), sorted(fanout)


def latency(cases: Sequence[Case], s: Durations, precise: bool) -> list[Row]:
    rows: list[Row] = []
    for case in cases:
        if not case.has_sim:
            continue
        arguments = ["--serve-sim", case.name, "--rate", str(SIM_RATE), "--batch", "1"]
        with server(arguments + (["--precise"] if precise else [])) as port:
            for variant in case.variants:
                gc.collect()
                rate, total = trio.run(bare_latency, case, port, variant, s)
                rows.append(Row(case.name, variant, "bare", rate, total))
                gc.collect()
                rate, total, network, fanout = trio.run(pipeline_latency, case, port, variant, s)
                rows.append(Row(case.name, variant, "pipeline", rate, total, network, fanout))

    def cells(values: list[int] | None) -> list[str]:
        if values is None:
            return ["-", "-", "-"]
        return [f"{pct(values, 0.5):.0f}", f"{pct(values, 0.99):.0f}", f"{values[-1] / 1000:.0f}"]

    pacing = "precise pacing" if precise else "plain trio timers"
    print_table(
        f"Latency: simulator (child, rate {SIM_RATE:,.0f}/s, 1 msg/frame, {pacing}) -> "
        f"consumer, {s.seconds:g} s per row (µs)",
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
        f"(decode, fan-out, consumer wake-up). The first {s.warmup:g} s of each row is warm-up."
    )
    for case in cases:
        if case.has_sim and case.stamp_resolution_ns > 1:
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


def targets(cases: Sequence[Case], rows: Sequence[Row]) -> None:
    print("\n## Targets\n")
    resolution_us = {c.name: c.stamp_resolution_ns / 1e3 for c in cases}
    for row in rows:
        if row.client != "pipeline":
            continue
        p99 = pct(row.total, 0.99)
        # The target is stated at SIM_RATE; a feed far slower than that does not check it.
        at_rate = row.rate >= 0.9 * SIM_RATE
        # ts_event truncated on the wire (Polygon: ms) adds up to its resolution.
        slack = resolution_us[row.case] if resolution_us[row.case] > 1 else 0.0
        target = f"{TARGET_US:,.0f} µs" + (
            f" + {slack:,.0f} µs timestamp resolution" if slack else ""
        )
        print(
            f"{verdict(p99 <= TARGET_US + slack) if at_rate else 'n/a    '}  latency "
            f"{row.case} {row.variant} p99 at {row.rate:,.0f} msg/s: {p99:,.0f} µs (target <= "
            f"{target} at {SIM_RATE:,.0f} msg/s"
            + ("" if at_rate else "; the simulator did not reach that rate, see the table")
            + ")"
        )


def benchmark(args: argparse.Namespace, cases: list[Case]) -> None:
    targets(cases, latency(cases, QUICK if args.quick else FULL, args.precise_sim))


def main(argv: Sequence[str] | None = None) -> None:
    run_script(__doc__, "latency", benchmark, argv, options=OPTIONS)


if __name__ == "__main__":
    main()
