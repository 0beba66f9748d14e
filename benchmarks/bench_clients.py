"""Every client on the same feed, each in its own process: SDKs, bare clients, puffin_trio.

Run: ``python benchmarks/bench_clients.py [--quick] [--case alpaca|polygon] [--rounds R]``.

For each feed (Alpaca stocks in JSON and in msgpack, Polygon stocks ``T``/``Q``)
and frame size (B = 1 and 20 messages per WebSocket frame), one blast server
(a child process: handshake, then pre-encoded frames as fast as the socket
takes them, see ``_blast.py``) feeds, in turn, these clients, each started as
a fresh child process of its own and timed from its first data frame to N
messages after it (wall clock, and that process's own CPU time):

* ``ceiling``: websockets' native trio client + ``orjson.loads`` /
  ``msgpack.unpackb`` per frame, counting messages, building nothing (the
  transport the package uses by default, with the least work on top);
* ``floor``: the same, also building one event per message the way the
  decoders build them, unchecked, from ``orjson``'s dicts: the least a
  pipeline parsing into dicts pays (a typed parser that checks in C, as the
  Polygon and Alpaca JSON stock paths' msgspec decoders, can go below it);
* ``trio-websocket``: the same bare client on trio-websocket (the other
  transport's ceiling);
* ``ours``, ``ours/tws``: ``Supervisor`` -> ``sup.events(overflow="block")``
  -> ``receive_batch``, counting market events, on websockets (the default)
  and on trio-websocket; ``ours/for``: on websockets, iterating instead
  (``async for``: trio's contract, a checkpoint per event);
* ``alpaca-py`` (Alpaca msgpack only: it always speaks msgpack):
  ``StockDataStream`` with handlers for trades and quotes, which receive its
  pydantic models (its default, ``raw_data=False``);
* ``massive``, ``massive+orjson`` (Polygon only): ``WebSocketClient`` as its
  README drives it (``raw=False``: its models, a processor awaited per
  frame), with its default ``json`` and with ``custom_json=orjson``.

The rounds are interleaved (every client once, then again), so machine noise
hits every column alike; each figure is the median of the rounds (the spread
table says how far the rounds were apart). The targets of
issue 11 are checked at the end; where one is missed, the ``floor`` column of
the same run shows how far a pipeline building events can go.
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from importlib.util import find_spec
from statistics import median
from typing import Any

import orjson
import trio
from _blast import SYMBOLS, Case
from _blast_alpaca import ALPACA, KEY, SECRET
from _blast_polygon import KEY as POLYGON_KEY
from _blast_polygon import POLYGON
from _harness import CASES, CONTROL_TYPES, RUN_TIMEOUT, fmt_rate, print_table, run_script, verdict
from bench_throughput import (
    Timing,
    bare_throughput,
    blast_server,
    pipeline_throughput,
    spread,
)

from puffin_trio import Supervisor
from puffin_trio.channels import DEFAULT_CAPACITY

SCRIPT = os.path.abspath(__file__)


@dataclass(frozen=True)
class Settings:
    """Sizes of the runs, full or ``--quick``."""

    rounds: int
    #: Messages per run, by messages per frame: a second or two each for our pipeline.
    messages: dict[int, int]


FULL = Settings(rounds=3, messages={1: 100_000, 20: 400_000})
QUICK = Settings(rounds=1, messages={1: 20_000, 20: 80_000})
#: Seconds a client child may take, start-up included (imports take ~1-2 s).
CHILD_TIMEOUT = RUN_TIMEOUT + 30

#: The feeds: (case, variant).
FEEDS: tuple[tuple[Case, str], ...] = ((ALPACA, "json"), (ALPACA, "msgpack"), (POLYGON, "json"))

#: Targets of issue 11, checked against the same run.
SDK_TARGETS = {
    ("polygon", 1): ("massive+orjson", 1.5),
    ("polygon", 20): ("massive+orjson", 1.5),
    ("alpaca-msgpack", 1): ("alpaca-py", 2.0),
    ("alpaca-msgpack", 20): ("alpaca-py", 3.0),
}
#: ours / ceiling, at both frame sizes, on every feed.
CEILING_TARGET = 0.5


# --------------------------------------------------------------------------- clients (child side)


def _sdk_available(module: str) -> bool:
    return find_spec(module) is not None


@dataclass(frozen=True)
class Client:
    """One column: who runs on which feeds, and how (in the child process)."""

    name: str
    feeds: Callable[[Case, str], bool]
    run: Callable[[Case, str, int, int], Timing]
    needs: str = ""


def _bare(library: str, build: bool) -> Callable[[Case, str, int, int], Timing]:
    def run(case: Case, variant: str, port: int, n: int) -> Timing:
        return trio.run(bare_throughput, case, port, variant, n, build, library)

    return run


def _ours(transport: str, batched: bool = True) -> Callable[[Case, str, int, int], Timing]:
    def run(case: Case, variant: str, port: int, n: int) -> Timing:
        if batched:
            return trio.run(pipeline_throughput, case, port, variant, n, transport)
        return trio.run(_iterated, case, port, variant, n)

    return run


async def _iterated(case: Case, port: int, variant: str, n: int) -> Timing:
    """Our pipeline with a consumer that iterates (``async for``: a checkpoint per event)."""
    control = CONTROL_TYPES
    with trio.fail_after(RUN_TIMEOUT):
        async with Supervisor.open() as sup:
            sup.add(case.provider(port, variant), **case.topics)  # type: ignore[arg-type]
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


def _alpaca_py(case: Case, variant: str, port: int, n: int) -> Timing:
    """alpaca-py's StockDataStream, timed from its first data message to ``n`` more."""
    from alpaca.data.live import StockDataStream

    stream = StockDataStream(
        api_key=KEY, secret_key=SECRET, url_override=f"ws://127.0.0.1:{port}/v2/iex"
    )
    got = -1
    start = cpu = 0.0

    async def handler(_: Any) -> None:
        nonlocal got, start, cpu
        if got < 0:
            got, start, cpu = 0, time.perf_counter(), time.process_time()
            return
        got += 1
        if got >= n:
            _report(Timing(got, time.perf_counter() - start, time.process_time() - cpu))

    stream.subscribe_trades(handler, *SYMBOLS)
    stream.subscribe_quotes(handler, *SYMBOLS)
    stream.run()
    raise SystemExit(f"alpaca-py: the stream ended after {got:,} of {n:,} messages")


def _massive(parser: str) -> Callable[[Case, str, int, int], Timing]:
    def run(case: Case, variant: str, port: int, n: int) -> Timing:
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

        async def processor(messages: list[Any]) -> None:
            nonlocal got, start, cpu
            if got < 0:  # the first data frame starts the clock, as for the others
                got, start, cpu = 0, time.perf_counter(), time.process_time()
                return
            got += len(messages)
            if got >= n:
                _report(Timing(got, time.perf_counter() - start, time.process_time() - cpu))

        asyncio.run(asyncio.wait_for(client.connect(processor), RUN_TIMEOUT))
        raise SystemExit(f"massive: the connection ended after {got:,} of {n:,} messages")

    return run


def _report(timing: Timing) -> None:
    """Print the child's result and leave at once: the SDKs' own shutdown would wait
    behind megabytes of frames nobody reads any more."""
    print(json.dumps({"messages": timing.messages, "wall": timing.wall, "cpu": timing.cpu}))
    sys.stdout.flush()
    os._exit(0)


def _any(case: Case, variant: str) -> bool:
    return True


CLIENTS: tuple[Client, ...] = (
    Client("ceiling", _any, _bare("websockets", build=False)),
    Client("floor", _any, _bare("websockets", build=True)),
    Client("trio-websocket", _any, _bare("trio-websocket", build=False)),
    Client("ours", _any, _ours("websockets")),
    Client("ours/tws", _any, _ours("trio-websocket")),
    Client("ours/for", _any, _ours("websockets", batched=False)),
    Client(
        "alpaca-py",
        lambda case, variant: case.name == "alpaca" and variant == "msgpack",
        _alpaca_py,
        needs="alpaca",
    ),
    Client("massive", lambda case, v: case.name == "polygon", _massive("json"), "massive"),
    Client(
        "massive+orjson", lambda case, v: case.name == "polygon", _massive("orjson"), "massive"
    ),
)
BY_NAME = {c.name: c for c in CLIENTS}


def client_role(args: argparse.Namespace) -> bool:
    """The child side: ``--client NAME CASE VARIANT PORT N`` runs one client and prints
    its timing as JSON."""
    if not args.client:
        return False
    name, case_name, variant, port, n = args.client
    client = BY_NAME[name]
    timing = client.run(CASES[case_name], variant, int(port), int(n))
    _report(timing)
    return True


# --------------------------------------------------------------------------- the parent


def measure(client: Client, case: Case, variant: str, port: int, n: int) -> Timing:
    """Run ``client`` in a fresh child process against the server on ``port``."""
    arguments = ["--client", client.name, case.name, variant, str(port), str(n)]
    done = subprocess.run(
        [sys.executable, SCRIPT, *arguments],
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT,
        check=False,
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{client.name} failed ({done.returncode}): {done.stderr.strip()}")
    result = json.loads(lines[-1])
    return Timing(int(result["messages"]), result["wall"], result["cpu"])


@dataclass
class Row:
    feed: str
    batch: int
    n: int
    timings: dict[str, list[Timing]] = field(default_factory=dict)

    def rate(self, client: str) -> float | None:
        timings = self.timings.get(client)
        return median(t.rate for t in timings) if timings else None


def feed_name(case: Case, variant: str) -> str:
    return case.name if case.name == "polygon" else f"{case.name}-{variant}"


def compare(cases: Sequence[Case], s: Settings) -> list[Row]:
    clients = [c for c in CLIENTS if not c.needs or _sdk_available(c.needs)]
    rows = []
    for case, variant in FEEDS:
        if case not in cases:
            continue
        for batch, n in s.messages.items():
            # Polygon's q must keep increasing on a connection: a pool without repeats.
            pool = 20_000 if case.cycles else n + n // 10
            row = Row(feed_name(case, variant), batch, n)
            here = [c for c in clients if c.feeds(case, variant)]
            with blast_server(case, batch, pool) as port:
                for _ in range(s.rounds):
                    for client in here:
                        timing = measure(client, case, variant, port, n)
                        row.timings.setdefault(client.name, []).append(timing)
            rows.append(row)
            print(f"  done: {row.feed} B={batch}", file=sys.stderr, flush=True)
    return rows


def report(rows: Sequence[Row], s: Settings) -> None:
    names = [c.name for c in CLIENTS if any(c.name in r.timings for r in rows)]

    def cell(row: Row, name: str) -> str:
        rate = row.rate(name)
        return fmt_rate(rate) if rate is not None else "-"

    print_table(
        f"msg/s, each client in its own process, median of {s.rounds} rounds",
        ["feed", "B", "N", *names, "ours/ceil", "floor/ceil"],
        [
            [
                r.feed, str(r.batch), f"{r.n:,}", *[cell(r, name) for name in names],
                f"{(r.rate('ours') or 0) / (r.rate('ceiling') or 1):.0%}",
                f"{(r.rate('floor') or 0) / (r.rate('ceiling') or 1):.0%}",
            ]
            for r in rows
        ],
    )  # fmt: skip
    print_table(
        "CPU µs per message (each client process's own, median of the rounds)",
        ["feed", "B", *names],
        [
            [r.feed, str(r.batch)]
            + [
                f"{median(t.cpu_us for t in r.timings[name]):.2f}" if name in r.timings else "-"
                for name in names
            ]
            for r in rows
        ],
    )
    print_table(
        "spread of the rounds ((best - worst) / best of msg/s)",
        ["feed", "B", *names],
        [
            [r.feed, str(r.batch)]
            + [spread(r.timings[name]) if name in r.timings else "-" for name in names]
            for r in rows
        ],
    )
    print(
        "B: messages per WebSocket frame. ceiling: websockets' trio client + parse per frame,\n"
        "counting messages. floor: the ceiling also building one event per message unchecked\n"
        "from orjson's dicts (a typed C parser, as ours for JSON stock frames, can beat it).\n"
        "trio-websocket: the same bare client on trio-websocket (64 KiB reads, queue 256).\n"
        "ours: Supervisor -> sup.events(capacity=1024, overflow='block') -> receive_batch(1024),\n"
        "normalised events (Polygon: monotonic sequence guard); ours/tws: on trio-websocket;\n"
        "ours/for: async for instead of receive_batch (a checkpoint per event).\n"
        "alpaca-py: StockDataStream (msgpack) -> handlers get its models. massive:\n"
        "WebSocketClient(raw=False) -> its models -> a processor per frame; +orjson:\n"
        "custom_json=orjson. The SDKs run asyncio in their own processes."
    )


def targets(rows: Sequence[Row]) -> None:
    print("\n## Targets (issue 11)\n")
    for row in rows:
        ours, ceiling = row.rate("ours"), row.rate("ceiling")
        if ours is None or ceiling is None:
            continue
        floor = row.rate("floor")
        note = f"; floor {floor / ceiling:.0%}" if floor else ""
        print(
            f"{verdict(ours >= CEILING_TARGET * ceiling)}  {row.feed} B={row.batch}: ours "
            f"{ours / ceiling:.0%} of the websockets ceiling (target >= "
            f"{CEILING_TARGET:.0%}{note})"
        )
        sdk = SDK_TARGETS.get((row.feed, row.batch))
        if sdk is not None and row.rate(sdk[0]) is not None:
            other = row.rate(sdk[0]) or 1.0
            print(
                f"{verdict(ours >= sdk[1] * other)}  {row.feed} B={row.batch}: ours "
                f"{ours / other:.2f}x {sdk[0]} (target >= {sdk[1]:g}x)"
            )


def benchmark(args: argparse.Namespace, cases: list[Case]) -> None:
    installed = []
    for name in ("websockets", "alpaca-py", "massive"):
        with contextlib.suppress(PackageNotFoundError):
            installed.append(f"{name} {version(name)}")
    print(", ".join(installed))
    s = QUICK if args.quick else FULL
    if args.rounds:
        s = Settings(rounds=args.rounds, messages=s.messages)
    rows = compare([c for c in cases if c.name in ("alpaca", "polygon")], s)
    report(rows, s)
    targets(rows)


OPTIONS = {
    "--client": {"nargs": 5, "help": argparse.SUPPRESS},
    "--rounds": {"type": int, "default": 0, "help": "rounds per feed (default: 3; --quick: 1)"},
}


def main(argv: Sequence[str] | None = None) -> None:
    with contextlib.suppress(BrokenPipeError):
        run_script(
            __doc__,
            "every client on the same feed",
            benchmark,
            argv,
            options=OPTIONS,
            roles=client_role,
        )


if __name__ == "__main__":
    main()
