"""The ``record`` and ``replay`` commands of ``puffin-trio``.

This module owns those two subcommands: their arguments, the progress line
of ``record``, and the wiring of a feed into a recorder, or of a replay into
the demo's terminal view or JSON lines. It must not contain recording or
replay logic (:func:`~puffin_trio.recording.open_recorder` and
:func:`~puffin_trio.recording.open_replay` do that) or its own copy of the
view (it reuses :func:`puffin_trio.cli.show_events`).

* ``puffin-trio record sim --out DIR [--duration S]``: the embedded
  simulators (as in ``demo``) into a recording; no keys.
* ``puffin-trio record alpaca|polygon|ib --symbols AAPL,MSFT --out DIR``: a
  real feed (keys, or a running TWS/Gateway).
* ``puffin-trio replay DIR [--speed 10] [--symbols ...] [--print]``: the
  demo's live view of a recording, or JSON lines (as ``stream`` prints).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TextIO

import trio

from puffin_trio import codec
from puffin_trio.cli import (
    DEMO_SYMBOLS,
    add_provider_arguments,
    open_demo_supervisor,
    provider_from,
    show_events,
)
from puffin_trio.errors import ConfigurationError
from puffin_trio.events import Event
from puffin_trio.metrics import serve_metrics
from puffin_trio.recording._recorder import (
    DEFAULT_FLUSH_INTERVAL,
    DEFAULT_ROTATE_BYTES,
    DEFAULT_ROTATE_INTERVAL,
    Recorder,
    open_recorder,
)
from puffin_trio.recording._replay import open_replay
from puffin_trio.supervisor import Supervisor

__all__ = ["add_parsers", "run_command"]

#: Seconds between two progress lines of ``record``.
_PROGRESS_EVERY = 1.0
#: JSON lines written between two flushes of stdout when replaying as fast as
#: possible (a paced replay flushes every line, as ``stream`` does).
_PRINT_FLUSH_EVERY = 1024


def _symbols(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def _speed(text: str) -> float | None:
    if text == "max":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number or 'max': {text!r}") from None
    if not value > 0 or math.isnan(value):
        raise argparse.ArgumentTypeError(f"speed must be > 0, got {text!r}")
    return value


def _instant(text: str) -> int:
    """ns since the epoch, or an ISO 8601 time (UTC unless it says otherwise) -> ns."""
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an ISO 8601 time or integer ns since the epoch: {text!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``record`` and ``replay`` on the ``puffin-trio`` parser."""
    record = sub.add_parser(
        "record",
        help="record a feed into Parquet files (sim: the embedded simulators, no keys)",
    )
    add_provider_arguments(
        record, providers=("sim", "alpaca", "polygon", "ib"), symbols_required=False
    )
    record.add_argument("--out", type=Path, required=True, help="the recording's directory")
    record.add_argument("--duration", type=float, default=None, help="seconds (default: Ctrl-C)")
    record.add_argument("--rate", type=float, default=200.0, help="sim: messages/s per provider")
    record.add_argument(
        "--no-chaos", action="store_true", help="sim: do not inject a dropped connection"
    )
    record.add_argument(
        "--flush-interval",
        type=float,
        default=DEFAULT_FLUSH_INTERVAL,
        help="seconds between seals to disk (what a crash can lose)",
    )
    record.add_argument(
        "--rotate-interval",
        type=float,
        default=DEFAULT_ROTATE_INTERVAL,
        help="seconds after which a file is finished",
    )
    record.add_argument(
        "--metrics-port", type=int, default=None, help="serve Prometheus /metrics on this port"
    )
    record.add_argument(
        "--rotate-mb",
        type=float,
        default=DEFAULT_ROTATE_BYTES / 2**20,
        help="MiB after which a file is finished",
    )

    replay = sub.add_parser("replay", help="replay a recording: the live view, or JSON lines")
    replay.add_argument("directory", type=Path)
    replay.add_argument(
        "--speed",
        type=_speed,
        default=None,
        help="1 = as recorded, 10 = ten times faster, max = as fast as possible "
        "(default: 1 for the view, max with --print)",
    )
    replay.add_argument("--symbols", type=_symbols, default=None)
    replay.add_argument("--providers", type=_symbols, default=None)
    replay.add_argument("--kinds", type=_symbols, default=None, help="trade, quote, book, ...")
    replay.add_argument("--start", type=_instant, default=None, help="ISO 8601 or ns (UTC)")
    replay.add_argument("--end", type=_instant, default=None, help="ISO 8601 or ns (exclusive)")
    replay.add_argument("--print", action="store_true", help="one JSON event per line on stdout")
    replay.add_argument("--duration", type=float, default=None, help="stop after S seconds")


def run_command(args: argparse.Namespace) -> int:
    """Run ``record`` or ``replay``; the exit code (errors propagate to ``cli.main``)."""
    if args.command == "record":
        trio.run(run_record, args)
        return 0
    try:
        trio.run(run_replay, args)
    except BrokenPipeError:
        # The reader went away (``| head``): not an error. Point stdout at
        # /dev/null so that the interpreter's final flush does not complain.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


@asynccontextmanager
async def _open_feed(args: argparse.Namespace) -> AsyncIterator[Supervisor]:
    if args.provider == "sim":
        symbols = args.symbols or list(DEMO_SYMBOLS)
        async with open_demo_supervisor(
            symbols=symbols, rate=args.rate, chaos=not args.no_chaos
        ) as sup:
            yield sup
        return
    if not args.symbols:
        raise ConfigurationError(f"record {args.provider} needs --symbols (e.g. AAPL,MSFT)")
    provider = provider_from(args)
    async with Supervisor.open() as sup:
        topics = {channel: list(args.symbols) for channel in args.channels}
        sup.add(provider, **topics)  # type: ignore[arg-type]
        yield sup


async def run_record(args: argparse.Namespace, progress: TextIO | None = None) -> Recorder:
    """``puffin-trio record``: a feed into ``args.out`` until ``args.duration`` or Ctrl-C.

    Prints a progress line every second on ``progress`` (stderr), and a
    summary on stdout at the end. Returns the (closed) recorder.
    """
    out = sys.stderr if progress is None else progress
    feed: AbstractAsyncContextManager[Supervisor] = _open_feed(args)
    started = trio.current_time()
    # The recorder first: a directory that cannot take files fails before any connection.
    async with open_recorder(
        args.out,
        flush_interval=args.flush_interval,
        rotate_interval=args.rotate_interval,
        rotate_bytes=max(1, int(args.rotate_mb * 2**20)),
    ) as recorder:
        async with (
            feed as sup,
            sup.events(capacity=4096, overflow="block", name="recorder") as events,
        ):
            async with trio.open_nursery() as nursery:
                if args.metrics_port is not None:
                    serve = partial(
                        serve_metrics, sup, port=args.metrics_port, sources=[recorder.statistics]
                    )
                    port = await nursery.start(serve)
                    print(f"metrics on http://127.0.0.1:{port}/metrics", file=out, flush=True)
                nursery.start_soon(_show_progress, recorder, out)
                with trio.move_on_after(math.inf if args.duration is None else args.duration):
                    await recorder.record(events)
                nursery.cancel_scope.cancel()
    stats = recorder.statistics()
    elapsed = trio.current_time() - started
    print(
        f"recorded {stats.events} events into {args.out} in {elapsed:.1f} s: "
        f"{stats.files} files, {stats.bytes} bytes",
        flush=True,
    )
    return recorder


async def _show_progress(recorder: Recorder, out: TextIO) -> None:
    """A progress line every second: events written, files, bytes, events/s, last flush."""
    terminal = out.isatty()
    last_events, last_time = 0, time.monotonic()
    while True:
        await trio.sleep(_PROGRESS_EVERY)
        stats = recorder.statistics()
        now = time.monotonic()
        rate = (stats.events - last_events) / max(now - last_time, 1e-9)
        last_events, last_time = stats.events, now
        line = (
            f"{stats.events:,} events written, {stats.files} files, "
            f"{stats.bytes / 2**20:.2f} MiB on disk, {rate:,.0f} events/s, "
            f"last flush {stats.last_flush_age:.1f} s ago"
        )
        out.write(f"\r{line}   " if terminal else line + "\n")
        out.flush()


async def run_replay(args: argparse.Namespace) -> None:
    """``puffin-trio replay``: the live view of a recording, or JSON lines with ``--print``."""
    speed = args.speed if args.speed is not None or args.print else 1.0
    async with open_replay(
        args.directory,
        speed=speed,
        start=args.start,
        end=args.end,
        providers=args.providers,
        symbols=args.symbols,
        kinds=args.kinds,
    ) as events:
        if args.print:
            with trio.move_on_after(math.inf if args.duration is None else args.duration):
                flush_every = 1 if speed is not None else _PRINT_FLUSH_EVERY
                await _print_events(events, flush_every)
            return
        await show_events(
            events,
            duration=args.duration,
            title=f"puffin_trio replay: {args.directory}",
            verb="replayed",
            clock=None,
        )


async def _print_events(events: trio.abc.ReceiveChannel[Event], flush_every: int) -> None:
    out = sys.stdout.buffer
    written = 0
    try:
        async for event in events:
            out.write(codec.dumps(event) + b"\n")
            written += 1
            if written % flush_every == 0:
                out.flush()
    finally:
        out.flush()
