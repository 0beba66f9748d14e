"""Memory: peak RSS growth of a client whose consumer is 10x slower than the feed.

Run: ``python benchmarks/bench_rss.py [--quick] [--case NAME]``.

For each provider and overflow policy, a fresh client process consumes the
package's simulator (a child process, 5,000 msg/s) at exactly 500 market
events/s, and samples its own RSS. Target: <= 20 MB of growth. Not for IB (its
simulator cannot feed 5,000 msg/s).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import time
from collections.abc import Sequence
from typing import Any

import trio
from _blast import Case
from _harness import (
    CASES,
    CONTROL_TYPES,
    RUN_TIMEOUT,
    SIM_RATE,
    Durations,
    add_session,
    child,
    fmt_rate,
    print_skipped,
    print_table,
    read_line,
    run_script,
    server,
    verdict,
)

from puffin_trio import Supervisor
from puffin_trio.channels import DEFAULT_CAPACITY, OVERFLOW_POLICIES, Overflow

#: Peak growth with a 10x slower consumer, MB.
TARGET_MB = 20.0
#: The consumer handles this many events/s (exactly 10x slower than the feed).
CONSUMER_RATE = SIM_RATE / 10
#: Simulator frames carry 10 messages: the simulator paces frames with trio
#: timers, whose epoll wake-ups have millisecond resolution, so 500 frames/s
#: (2 ms apart) keep 5 000 msg/s exactly; one message per frame would not.
SIM_BATCH = 10


#: How long each client streams, after filling its buffers.
FULL = Durations(seconds=60.0, warmup=1.0)
QUICK = Durations(seconds=10.0, warmup=1.0)


def rss_kib() -> tuple[int, int]:
    """(VmRSS, VmHWM) of this process in KiB."""
    values = {}
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value, _ = line.split()
                values[key] = int(value)
    return values["VmRSS:"], values["VmHWM:"]


class LogCollector(logging.Handler):
    """Keeps the package's warnings (reconnects) for the report instead of printing them."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname.lower()}: {record.getMessage()}")


async def rss_child(
    case: Case, port: int, variant: str, policy: Overflow, s: Durations
) -> dict[str, Any]:
    """Child side: a consumer at exactly CONSUMER_RATE market events/s; memory, counters.

    Each market event "takes" 1/CONSUMER_RATE s (a deadline-paced sleep, so the
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
                await trio.sleep_until(began + handled / CONSUMER_RATE)

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
            with trio.move_on_after(s.warmup):
                await consume(events)
            start_rss, _ = rss_kib()
            peak = start_rss
            timed_from = trio.current_time()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sample)
                with trio.move_on_after(s.seconds):
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


def rss(cases: Sequence[Case], s: Durations) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        # One server and one fresh client process per provider and policy, all at
        # once: each pair needs a small fraction of a core (the feed/s column shows
        # whether the simulators kept their rate), and memory does not mind company.
        clients = []
        for case in cases:
            if not case.has_sim:
                continue
            variant = case.variants[-1]
            sim = ["--serve-sim", case.name, "--rate", str(SIM_RATE), "--batch", str(SIM_BATCH)]
            for policy in OVERFLOW_POLICIES:
                port = stack.enter_context(server(sim))
                arguments = [
                    "--rss-child", case.name, "--port", str(port), "--variant", variant,
                    "--policy", policy, "--seconds", str(s.seconds), "--warmup", str(s.warmup),
                ]  # fmt: skip
                clients.append((case.name, variant, stack.enter_context(child(arguments))))
        for name, variant, proc in clients:
            line = read_line(proc, RUN_TIMEOUT + s.seconds + s.warmup)
            results.append({"case": name, "variant": variant, **json.loads(line)})

    def mb(kib: float) -> str:
        return f"{kib / 1024:.1f}"

    print_table(
        f"Peak RSS, consumer 10x slower than the feed ({CONSUMER_RATE:,.0f} vs "
        f"{SIM_RATE:,.0f} msg/s), {s.seconds:g} s, fresh process per policy (MB)",
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
        f"staleness deadline); start: after {s.warmup:g} s of streaming (buffers full);\n"
        "peak: highest VmRSS sampled every 0.1 s after start; VmHWM: the kernel's high-water\n"
        "mark for the whole process life; growth = peak - start.\n"
        "feed/s: events the session published (under 'block' the feed slows to the consumer's\n"
        "pace: backpressure, and the stalled socket may cost a heartbeat timeout and a\n"
        "reconnect, as docs/guide/channels.rst explains); handled/s: market events the consumer\n"
        f"took (Status/Gap take no time). Simulator frames carry {SIM_BATCH} messages."
    )
    print_skipped(cases, "memory")
    return results


def targets(results: Sequence[dict[str, Any]]) -> None:
    print("\n## Targets\n")
    for x in results:
        growth = (x["peak_kib"] - x["start_kib"]) / 1024
        print(
            f"{verdict(growth <= TARGET_MB)}  memory {x['case']} {x['policy']}: "
            f"+{growth:.1f} MB in {x['seconds']:.0f} s (target <= {TARGET_MB:g} MB)"
        )


def benchmark(args: argparse.Namespace, cases: list[Case]) -> None:
    targets(rss(cases, QUICK if args.quick else FULL))


#: The client child's role (``--rss-child NAME``) and what it measures; internal.
OPTIONS: dict[str, dict[str, Any]] = {
    "--rss-child": {"choices": sorted(CASES), "help": argparse.SUPPRESS},
    "--port": {"type": int, "help": argparse.SUPPRESS},
    "--variant": {"help": argparse.SUPPRESS},
    "--policy": {"choices": OVERFLOW_POLICIES, "help": argparse.SUPPRESS},
    "--seconds": {"type": float, "help": argparse.SUPPRESS},
    "--warmup": {"type": float, "help": argparse.SUPPRESS},
}


def client_role(args: argparse.Namespace) -> bool:
    """Run the client child ``--rss-child`` asks for, if it does: print its result as JSON."""
    if not args.rss_child:
        return False
    s = Durations(seconds=args.seconds, warmup=args.warmup)
    case = CASES[args.rss_child]
    print(json.dumps(trio.run(rss_child, case, args.port, args.variant, args.policy, s)))
    return True


def main(argv: Sequence[str] | None = None) -> None:
    run_script(__doc__, "memory", benchmark, argv, options=OPTIONS, roles=client_role)


if __name__ == "__main__":
    main()
