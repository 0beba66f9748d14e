"""Our Polygon pipeline against the official massive SDK, on the same feed.

Run: ``python benchmarks/bench_massive_sdk.py [--quick]``.

One Polygon blast server (``_blast_polygon.py``: connected, auth, a status per
topic, then pre-encoded stocks ``T``/``Q`` frames as fast as the socket takes
them) feeds, in turn and interleaved, on the same subscription (trades and
quotes of ten symbols):

* **ceiling**: tuned trio-websocket + ``orjson.loads`` per frame (as in
  ``bench_throughput.py``);
* **ours**: ``Supervisor`` -> ``sup.events()`` with ``PolygonProvider``, the
  consumer counting market events;
* **massive**: ``massive.WebSocketClient(feed="127.0.0.1:PORT",
  secure=False)`` as its README drives it (``raw=False``: the SDK parses each
  frame into its models and awaits the processor once per frame), in a child
  process of its own (it is asyncio-based), once with its default ``json``
  module and once with ``custom_json=orjson``.

Each client is timed from its first data frame to N messages after it; each
row is the best of several runs; ``ours / massive`` is the ratio of the best
rates. CPU µs per message is each client process's own CPU time.

It must not be imported by the package or the tests; the massive SDK is only
needed here (the comparison is skipped, with a message, when it is missing).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import version
from importlib.util import find_spec
from typing import Any

import orjson
from _blast import SYMBOLS, Case
from _blast_polygon import KEY as POLYGON_KEY
from _blast_polygon import POLYGON
from _harness import RUN_TIMEOUT, fmt_rate, print_table, run_script
from bench_throughput import (
    FULL,
    QUICK,
    Settings,
    Timing,
    bare_throughput,
    best_cpu,
    best_rate,
    blast_server,
    measure,
    pipeline_throughput,
    pool_for,
    spread,
)

SCRIPT = os.path.abspath(__file__)
#: JSON modules the SDK is run with: its default, and the one it documents as
#: pluggable (``custom_json``) that our provider uses.
PARSERS = ("json", "orjson")


@dataclass
class Row:
    batch: int
    n: int
    ceiling: list[Timing]
    ours: list[Timing]
    massive: dict[str, list[Timing]]


def massive_child(port: int, n: int, parser: str) -> dict[str, float]:
    """Child side: the SDK on ``port``, timed from its first data frame to ``n`` more messages."""
    from massive import WebSocketClient  # type: ignore[import-untyped]

    extra: dict[str, Any] = {"custom_json": orjson} if parser == "orjson" else {}
    client = WebSocketClient(
        api_key=POLYGON_KEY,
        feed=f"127.0.0.1:{port}",
        market="stocks",
        secure=False,
        subscriptions=[f"{ev}.{symbol}" for ev in ("T", "Q") for symbol in SYMBOLS],
        max_reconnects=0,
        **extra,
    )
    got = -1
    start = cpu = 0.0
    result: dict[str, float] = {}

    async def processor(messages: list[Any]) -> None:
        nonlocal got, start, cpu
        if got < 0:  # the first data frame starts the clock, as for the ceiling
            got, start, cpu = 0, time.perf_counter(), time.process_time()
            return
        got += len(messages)
        if got >= n:
            result.update(
                messages=got, wall=time.perf_counter() - start, cpu=time.process_time() - cpu
            )
            # Not client.close(): its closing handshake waits behind megabytes of
            # queued frames nobody reads any more, and times out. The process exits.
            raise _Done

    async def run() -> None:
        with contextlib.suppress(_Done):
            await asyncio.wait_for(client.connect(processor), RUN_TIMEOUT)

    asyncio.run(run())
    if not result:
        raise SystemExit(f"massive SDK: connection ended after {got:,} of {n:,} messages")
    return result


class _Done(Exception):
    """Raised by the SDK child's processor once it has counted enough messages."""


def measure_massive(port: int, n: int, parser: str) -> Timing:
    """Run the SDK in a child process (this script, ``--massive-child``)."""
    arguments = ["--massive-child", str(port), str(n), parser]
    done = subprocess.run(
        [sys.executable, SCRIPT, *arguments],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT + 30,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"massive child failed ({done.returncode}): {done.stderr.strip()}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return Timing(int(result["messages"]), result["wall"], result["cpu"])


def compare(s: Settings) -> list[Row]:
    """Every client on one server per frame size, ``s.repeats`` interleaved rounds of
    ``s.messages`` messages (the sizes of ``bench_throughput.py``)."""
    rows = []
    for batch, n in s.messages.items():
        with blast_server(POLYGON, batch, pool_for(POLYGON, n, s)) as port:
            row = Row(batch, n, [], [], {p: [] for p in PARSERS})
            for _ in range(s.repeats):  # interleaved, so machine noise hits every column alike
                row.ceiling.append(measure(bare_throughput, POLYGON, port, "json", n, False))
                row.ours.append(measure(pipeline_throughput, POLYGON, port, "json", n))
                for parser in PARSERS:
                    row.massive[parser].append(measure_massive(port, n, parser))
            rows.append(row)
    return rows


def report(rows: Sequence[Row], repeats: int) -> None:
    print_table(
        f"Polygon stocks T/Q (JSON) from one blast server, best of {repeats} runs (msg/s)",
        ["B", "N", "ceiling", "ours", "spread", "ours/ceil", "massive", "spread",
         "massive+orjson", "spread", "ours/massive", "ours/massive+orjson"],
        [
            [
                str(r.batch), f"{r.n:,}", fmt_rate(best_rate(r.ceiling)),
                fmt_rate(best_rate(r.ours)), spread(r.ours),
                f"{best_rate(r.ours) / best_rate(r.ceiling):.0%}",
                fmt_rate(best_rate(r.massive["json"])), spread(r.massive["json"]),
                fmt_rate(best_rate(r.massive["orjson"])), spread(r.massive["orjson"]),
                f"{best_rate(r.ours) / best_rate(r.massive['json']):.2f}x",
                f"{best_rate(r.ours) / best_rate(r.massive['orjson']):.2f}x",
            ]
            for r in rows
        ],
    )  # fmt: skip
    print_table(
        "CPU µs per message (each client process, best run)",
        ["B", "ceiling", "ours", "massive", "massive+orjson"],
        [
            [
                str(r.batch), f"{best_cpu(r.ceiling):.2f}", f"{best_cpu(r.ours):.2f}",
                f"{best_cpu(r.massive['json']):.2f}", f"{best_cpu(r.massive['orjson']):.2f}",
            ]
            for r in rows
        ],
    )  # fmt: skip
    print(
        "B: messages per WebSocket frame. ceiling: trio-websocket (64 KiB reads, queue 256) +\n"
        "orjson.loads per frame. ours: Supervisor -> sup.events(capacity=1024, overflow='block')\n"
        "-> async for, PolygonProvider (normalised Trade/Quote events, monotonic sequence guard).\n"
        "massive: WebSocketClient(raw=False) -> its EquityTrade/EquityQuote models -> an async\n"
        "processor per frame; +orjson: custom_json=orjson. The SDK runs in its own process on\n"
        "asyncio's default event loop. spread = (best - worst) / best over the runs."
    )


def benchmark(args: argparse.Namespace, cases: list[Case]) -> None:
    if find_spec("massive") is None:
        print("the massive SDK is not installed (pip install massive): nothing to compare")
        return
    print(f"massive {version('massive')}, websockets {version('websockets')}")
    s = QUICK if args.quick else FULL
    report(compare(s), s.repeats)


#: The SDK child's role (``--massive-child PORT N JSON``); internal.
OPTIONS = {"--massive-child": {"nargs": 3, "help": argparse.SUPPRESS}}


def sdk_role(args: argparse.Namespace) -> bool:
    """Run the SDK child ``--massive-child PORT N JSON`` asks for, if it does."""
    if not args.massive_child:
        return False
    port, n, json_module = args.massive_child
    print(json.dumps(massive_child(int(port), int(n), json_module)), flush=True)
    return True


def main(argv: Sequence[str] | None = None) -> None:
    run_script(
        __doc__, "puffin_trio vs the massive SDK", benchmark, argv, options=OPTIONS, roles=sdk_role
    )


if __name__ == "__main__":
    main()
