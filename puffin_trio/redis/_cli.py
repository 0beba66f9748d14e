"""The command line's distribution commands: ``publish``, ``stream redis://``, ``demo --redis``.

This module owns the arguments and the composition of these commands; the
parser and the dispatch live in :mod:`puffin_trio.cli`, which calls in here.

* ``puffin-trio publish alpaca|polygon|ib|sim --redis URL``: one supervisor,
  one publisher, a live progress line on stderr; ``sim`` runs the embedded
  simulators (no keys); ``--metrics-port`` serves Prometheus metrics.
* ``puffin-trio stream redis://... [--symbols ...]``: a feed, as JSON lines.
* ``puffin-trio demo --redis URL``: the demo's live view, fed from Redis.

It must not contain pipeline logic: every command composes public pieces.
"""

from __future__ import annotations

import argparse
import gc
import math
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, TextIO

import trio

from puffin_trio import codec
from puffin_trio.errors import ConfigurationError
from puffin_trio.metrics import serve_metrics
from puffin_trio.redis._connection import check_url, redact, unwrap_group
from puffin_trio.redis._feed import open_redis_feed
from puffin_trio.redis._layout import FAMILIES
from puffin_trio.redis._publisher import (
    DEFAULT_BUFFER,
    DEFAULT_MAXLEN,
    RedisPublisher,
    open_redis_publisher,
)
from puffin_trio.supervisor import Supervisor

__all__ = [
    "add_demo_options",
    "add_publish_parser",
    "add_stream_options",
    "is_redis_url",
    "run_publish",
    "run_redis_demo",
    "run_redis_stream",
]

#: Seconds between progress lines: twice a second on a terminal (redrawn in
#: place), every 2 s in a log (one line each, so a log stays readable).
PROGRESS_TTY = 0.5
PROGRESS_LOG = 2.0


def is_redis_url(text: str) -> bool:
    return text.startswith(("redis://", "rediss://", "unix://"))


def _names(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def add_publish_parser(sub: Any) -> None:
    """``publish``: a provider (or the simulators) -> supervisor -> Redis."""
    from puffin_trio.cli import add_provider_arguments

    publish = sub.add_parser(
        "publish", help="stream a provider (or the simulators) into Redis Streams"
    )
    add_provider_arguments(
        publish, providers=("sim", "alpaca", "polygon", "ib"), symbols_required=False
    )
    publish.add_argument("--redis", required=True, metavar="URL", help="redis://host:port/db")
    publish.add_argument("--prefix", default="puffin", help="stream key prefix")
    publish.add_argument("--maxlen", type=int, default=DEFAULT_MAXLEN, help="events kept")
    publish.add_argument("--buffer", type=int, default=DEFAULT_BUFFER, help="events held")
    publish.add_argument("--metrics-port", type=int, default=None, help="serve /metrics here")
    publish.add_argument("--duration", type=float, default=None, help="seconds (default: Ctrl-C)")
    publish.add_argument("--rate", type=float, default=200.0, help="sim: messages/s per feed")
    publish.add_argument(
        "--no-chaos", action="store_true", help="sim: do not inject a dropped connection"
    )


def add_stream_options(stream: argparse.ArgumentParser) -> None:
    """``stream redis://...``: the options a Redis feed adds to ``stream``."""
    stream.add_argument("--providers", type=_names, default=None, help="redis: alpaca,ib,...")
    stream.add_argument(
        "--kinds", type=_names, default=None, help=f"redis: {','.join(FAMILIES)}"
    )
    stream.add_argument("--prefix", default="puffin", help="redis: stream key prefix")
    stream.add_argument(
        "--start", default="latest", help="redis: latest, earliest or a saved position"
    )
    stream.add_argument("--group", default=None, help="redis: consumer group to join")
    stream.add_argument("--consumer", default=None, help="redis: member name in the group")


def add_demo_options(demo: argparse.ArgumentParser) -> None:
    demo.add_argument("--redis", default=None, metavar="URL", help="view a Redis feed instead")
    demo.add_argument("--prefix", default="puffin", help="with --redis: stream key prefix")


async def run_publish(args: argparse.Namespace, *, out: TextIO = sys.stderr) -> None:
    """``publish``: until Ctrl-C or ``--duration``."""
    if args.provider != "sim" and not args.symbols:
        raise ConfigurationError("publish needs --symbols (for example --symbols AAPL,MSFT)")
    check_url(args.redis)
    freeze_startup_heap()
    with unwrap_group():
        await _publish(args, out)


def freeze_startup_heap() -> None:
    """Move everything alive now (modules, classes, functions) out of the cyclic GC's reach.

    The process imports ~130,000 GC-tracked objects (trio, coredis, the
    providers) that live until exit. Without this, every full (generation 2)
    collection walks all of them: a 60 ms CPU stall of the event loop, about
    once every 10 s at 5,000 events/s, which every event then in flight waits
    out (benchmarks/bench_redis.py, latency: the max through Redis fell from
    61 to 12 ms on a quiet machine). Frozen objects are
    never collected, which costs nothing for objects that live until exit.
    Only the command-line entry points call it: the heap is the application's.
    """
    gc.collect()
    gc.freeze()


@asynccontextmanager
async def _open_feed(args: argparse.Namespace) -> AsyncIterator[Supervisor]:
    from puffin_trio.cli import DEMO_SYMBOLS, open_demo_supervisor, provider_from

    if args.provider == "sim":
        symbols = args.symbols or list(DEMO_SYMBOLS)
        async with open_demo_supervisor(
            symbols=symbols, rate=args.rate, chaos=not args.no_chaos
        ) as sup:
            yield sup
        return
    provider = provider_from(args)
    async with Supervisor.open() as sup:
        topics = {channel: list(args.symbols) for channel in args.channels}
        sup.add(provider, **topics)  # type: ignore[arg-type]
        yield sup


async def _publish(args: argparse.Namespace, out: TextIO) -> None:
    duration = math.inf if args.duration is None else args.duration
    # The publisher first: a Redis that cannot be reached fails before any connection.
    async with open_redis_publisher(
        args.redis, prefix=args.prefix, maxlen=args.maxlen, buffer=args.buffer
    ) as publisher:
        async with (
            _open_feed(args) as sup,
            sup.events(capacity=4096, overflow="block", name="publisher") as events,
            trio.open_nursery() as tasks,
        ):
            if args.metrics_port is not None:
                serve = partial(
                    serve_metrics, sup, port=args.metrics_port, sources=[publisher.statistics]
                )
                port = await tasks.start(serve)
                print(f"metrics on http://127.0.0.1:{port}/metrics", file=out, flush=True)
            tasks.start_soon(_progress, sup, publisher, out)
            with trio.move_on_after(duration):
                await publisher.publish(events)
            tasks.cancel_scope.cancel()
    _report(publisher, out, final=True)


async def _progress(sup: Supervisor, publisher: RedisPublisher, out: TextIO) -> None:
    """The live progress line: in place on a terminal, one line per interval in a log."""
    tty = out.isatty()
    interval = PROGRESS_TTY if tty else PROGRESS_LOG
    last_time, last_published = trio.current_time(), 0
    while True:
        await trio.sleep(interval)
        now = trio.current_time()
        published = publisher.statistics().published
        rate = (published - last_published) / max(now - last_time, 1e-9)
        last_time, last_published = now, published
        states = ", ".join(f"{name} {s.state}" for name, s in sup.statistics().sessions.items())
        _report(publisher, out, rate=rate, states=states, tty=tty)


def _report(
    publisher: RedisPublisher,
    out: TextIO,
    *,
    rate: float | None = None,
    states: str = "",
    tty: bool = False,
    final: bool = False,
) -> None:
    s = publisher.statistics()
    parts = [f"published {s.published:,} events"]
    if rate is not None:
        parts[0] += f" ({rate:,.0f}/s)"
    parts += [
        f"buffered {s.buffered:,}",
        f"lost {s.lost:,}",
        f"redis {'up' if s.connected else 'DOWN'}",
    ]
    if states:
        parts.append(states)
    line = " | ".join(parts)
    if final:
        out.write(("\n" if out.isatty() else "") + "done: " + line + "\n")
    elif tty:
        out.write("\r" + line + "\x1b[K")
    else:
        out.write(line + "\n")
    out.flush()


async def run_redis_stream(args: argparse.Namespace) -> None:
    """``stream redis://...``: one JSON event per line on stdout."""
    out = sys.stdout.buffer
    freeze_startup_heap()
    async with open_redis_feed(
        args.provider,
        prefix=args.prefix,
        providers=args.providers,
        symbols=args.symbols,
        kinds=args.kinds,
        start=args.start,
        group=args.group,
        consumer=args.consumer,
        capacity=8192,
        overflow="block",
    ) as events:
        with trio.move_on_after(math.inf if args.duration is None else args.duration):
            async for event in events:
                out.write(codec.dumps(event) + b"\n")
                out.flush()


async def run_redis_demo(args: argparse.Namespace) -> None:
    """``demo --redis URL``: the demo's view of what a publisher writes to Redis."""
    from puffin_trio.cli import show_events

    symbols: Sequence[str] | None = args.symbols
    async with open_redis_feed(
        args.redis, prefix=args.prefix, symbols=symbols, capacity=4096, overflow="conflate"
    ) as events:
        await show_events(
            events, duration=args.duration, title=f"puffin_trio demo: Redis {redact(args.redis)}"
        )
