"""The ``puffin-trio`` command line: demo, stream, sim, record, replay.

This module owns argument parsing and the terminal view. It must not contain
protocol or pipeline logic: every command is a thin composition of public
pieces (``Supervisor``, providers, ``puffin_trio.sim``, ``BarAggregator``).

* ``puffin-trio demo``: starts the Alpaca, Polygon and IB simulators
  in-process and streams all three through one supervisor into a live
  terminal view. No keys.
* ``puffin-trio stream alpaca|polygon|ib --symbols AAPL,MSFT``: real data
  (keys, or a running TWS/Gateway), one JSON line per event on stdout.
* ``puffin-trio sim alpaca|polygon|ib --port 8765``: run a simulator on its own.
* ``puffin-trio record ...`` / ``replay DIR``: see :mod:`puffin_trio.recording._cli`.
* ``puffin-trio publish alpaca|polygon|ib|sim --redis URL``, ``puffin-trio stream
  redis://...`` and ``puffin-trio demo --redis URL``: distribution through Redis
  Streams (see :mod:`puffin_trio.redis._cli`).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from functools import partial

import attrs
import trio
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from puffin_trio import codec
from puffin_trio.bars import BarAggregator
from puffin_trio.errors import ConfigurationError, PuffinError
from puffin_trio.events import Bar, Event, Gap, GapReason, Quote, SessionState, Status, Trade
from puffin_trio.providers import AlpacaProvider, IBProvider, PolygonProvider, Provider
from puffin_trio.redis import _cli as redis_cli
from puffin_trio.supervisor import RestartPolicy, Supervisor

__all__ = ["main"]

DEMO_SYMBOLS = ("AAPL", "MSFT", "NVDA", "AMZN", "TSLA")
DEMO_KEY = "demo-key"
DEMO_SECRET = "demo-secret"  # the simulator's own credentials, not a real secret
DEMO_TITLE = "puffin_trio demo: simulators -> one supervisor -> you"


_INCIDENTS = frozenset({SessionState.RECONNECTING, SessionState.FAILED, SessionState.CLOSED})


@attrs.define
class _SymbolView:
    last: float | None = None
    last_size: float = 0.0
    bid: float | None = None
    ask: float | None = None
    bar: Bar | None = None
    arrivals: deque[float] = attrs.Factory(deque)


@attrs.define
class _Reconnect:
    """An incident line for a reconnect: its outage, and what its backfill recovered."""

    stream: str
    outage_ms: float
    backfilled: int | None = None
    incomplete: bool = False

    def __str__(self) -> str:
        text = f"gap on {self.stream}: reconnect, {self.outage_ms:.0f} ms"
        if self.backfilled is not None:
            text += f", {self.backfilled} trades backfilled"
            if self.incomplete:
                text += " (incomplete)"
        return text


@attrs.define
class DemoView:
    """What the live view shows, updated by the consumer task (one event at a time)."""

    title: str = DEMO_TITLE
    symbols: dict[tuple[str, str], _SymbolView] = attrs.Factory(dict)
    status: dict[str, str] = attrs.Factory(dict)
    events: int = 0
    gaps: int = 0
    log: deque[str | _Reconnect] = attrs.Factory(lambda: deque(maxlen=6))
    #: The last reconnect line of each session, which its backfill's gaps complete.
    _reconnects: dict[str, _Reconnect] = attrs.Factory(dict)

    def apply(self, event: Event, now: float, *, received: bool = True) -> None:
        """Show ``event``; ``received=False`` for a bar the view aggregated itself (not counted)."""
        self.events += received
        if isinstance(event, Trade):
            view = self._symbol(event.provider, event.symbol)
            view.last, view.last_size = event.price, event.size
            self._arrive(view, now)
        elif isinstance(event, Quote):
            view = self._symbol(event.provider, event.symbol)
            view.bid, view.ask = event.bid, event.ask
            self._arrive(view, now)
        elif isinstance(event, Bar):
            self._symbol(event.provider, event.symbol).bar = event
        elif isinstance(event, Status):
            self.status[event.session] = event.state.value
            if event.detail.startswith("backfill"):
                return  # the reconnect's gap line says what its backfill recovered
            if event.attempt or event.detail or event.state in _INCIDENTS:
                detail = f" ({event.detail})" if event.detail else ""
                self.log.append(f"{event.session}: {event.state.value}{detail}")
        elif isinstance(event, Gap):
            self._gap(event)

    def _gap(self, event: Gap) -> None:
        if event.reason is GapReason.BACKFILL:
            line = self._reconnects.get(event.stream)
            if line is not None:
                line.backfilled = (line.backfilled or 0) + event.recovered
                line.incomplete = line.incomplete or not event.complete
            if event.complete:
                return  # nothing is missing: accounting, not a gap
        self.gaps += 1
        start, end = event.window_start, event.window_end
        if event.reason is GapReason.RECONNECT and start is not None and end is not None:
            line = self._reconnects[event.stream] = _Reconnect(event.stream, (end - start) / 1e6)
            self.log.append(line)
        elif event.reason is not GapReason.BACKFILL:
            self.log.append(f"gap on {event.stream}: {event.reason.value}, {event.missing} missing")

    def _symbol(self, provider: str, symbol: str) -> _SymbolView:
        view = self.symbols.get((provider, symbol))
        if view is None:
            view = self.symbols[(provider, symbol)] = _SymbolView()
        return view

    @staticmethod
    def _arrive(view: _SymbolView, now: float) -> None:
        view.arrivals.append(now)
        while view.arrivals and now - view.arrivals[0] > 1.0:
            view.arrivals.popleft()

    def render(self, now: float) -> Group:
        table = Table(title=self.title)
        table.add_column("provider")
        table.add_column("symbol")
        for col in ("last", "bid", "ask", "spread", "1 s bar open", "high", "low", "close"):
            table.add_column(col, justify="right")
        for col in ("volume", "msg/s"):
            table.add_column(col, justify="right")
        for (provider, symbol), v in sorted(self.symbols.items()):
            while v.arrivals and now - v.arrivals[0] > 1.0:
                v.arrivals.popleft()
            spread = v.ask - v.bid if v.bid and v.ask else None
            bar = v.bar
            table.add_row(
                provider,
                symbol,
                _fmt(v.last),
                _fmt(v.bid),
                _fmt(v.ask),
                _fmt(spread, 3),
                *(
                    (_fmt(bar.open), _fmt(bar.high), _fmt(bar.low), _fmt(bar.close))
                    if bar
                    else "----"
                ),
                f"{bar.volume:g}" if bar else "-",
                str(len(v.arrivals)),
            )
        states = ", ".join(f"{k}: {s}" for k, s in sorted(self.status.items())) or "starting"
        header = Text(f"sessions: {states}   events: {self.events}   gaps: {self.gaps}")
        log = Text("\n".join(str(line) for line in self.log) or "(no incidents)", style="dim")
        return Group(header, table, log)


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.{digits}f}"


async def start_simulators(
    nursery: trio.Nursery, symbols: Sequence[str], rate: float, *, chaos: bool
) -> list[Provider]:
    """Start the Alpaca, Polygon and IB simulators in ``nursery``; their providers.

    Every provider runs with ``backfill="trades"`` against its simulator's
    historical API. With ``chaos`` the Alpaca simulator drops the first
    connection after 600 messages, so a reconnect, a resubscribe, its ``Gap``
    and the backfill of its trades can be seen.
    """
    from puffin_trio.sim import FaultPlan, serve_alpaca, serve_ib, serve_polygon

    faults = FaultPlan.drop_after(600, connection=1) if chaos else FaultPlan()
    alpaca_port = await nursery.start(
        partial(
            serve_alpaca,
            symbols=list(symbols),
            rate=rate,
            batch=4,
            key=DEMO_KEY,
            secret=DEMO_SECRET,
            faults=faults,
        )
    )
    polygon_port = await nursery.start(
        partial(serve_polygon, symbols=list(symbols), rate=rate, batch=4, key=DEMO_KEY)
    )
    ib_port = await nursery.start(partial(serve_ib, symbols=list(symbols), rate=rate))
    return [
        AlpacaProvider(
            feed="iex",
            key=DEMO_KEY,
            secret=DEMO_SECRET,
            url=f"ws://127.0.0.1:{alpaca_port}/v2/iex",
            backfill="trades",
            rest_url=f"http://127.0.0.1:{alpaca_port}",
        ),
        PolygonProvider(
            key=DEMO_KEY,
            url=f"ws://127.0.0.1:{polygon_port}/stocks",
            backfill="trades",
            rest_url=f"http://127.0.0.1:{polygon_port}",
        ),
        IBProvider(host="127.0.0.1", port=ib_port, client_id=1, backfill="trades"),
    ]


async def run_demo(
    *,
    duration: float | None,
    symbols: Sequence[str] = DEMO_SYMBOLS,
    rate: float = 200.0,
    chaos: bool = True,
    console: Console | None = None,
    live: bool | None = None,
) -> DemoView:
    """Simulator + supervisor + live view; returns the final view (for tests).

    With ``chaos`` the Alpaca simulator drops the first connection after 600
    messages, so the demo shows a reconnect, a resubscribe, the
    ``Gap(reason="reconnect")`` that announces it and the backfill of the
    outage's trades from the simulator's historical API (every provider runs
    with ``backfill="trades"``).
    """
    async with open_demo_supervisor(symbols=symbols, rate=rate, chaos=chaos) as sup:
        async with sup.events(capacity=4096, overflow="conflate", name="view") as events:
            return await show_events(events, duration=duration, console=console, live=live)


@asynccontextmanager
async def open_demo_supervisor(
    *, symbols: Sequence[str] = DEMO_SYMBOLS, rate: float = 200.0, chaos: bool = True
) -> AsyncIterator[Supervisor]:
    """The Alpaca, Polygon and IB simulators in-process, streaming through one supervisor.

    Each provider is subscribed to trades and quotes of ``symbols``, with
    ``backfill="trades"``. With ``chaos`` the Alpaca simulator drops the first
    connection after 600 messages (a reconnect, a resubscribe, its ``Gap`` and
    the backfill of its trades). The simulators stop when the block ends.
    """
    body_error: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            providers = await start_simulators(nursery, symbols, rate, chaos=chaos)
            restart = RestartPolicy(initial=0.5, max_delay=5.0)
            async with Supervisor.open(restart=restart) as sup:
                for provider in providers:
                    sup.add(provider, trades=list(symbols), quotes=list(symbols))
                try:
                    yield sup
                except BaseException as exc:
                    body_error = exc
                    raise
            nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # The simulators do not raise, so a group here carries the body's own error.
        if body_error is not None and len(group.exceptions) == 1:
            raise body_error from None
        raise


async def show_events(
    events: trio.abc.ReceiveChannel[Event],
    *,
    duration: float | None,
    console: Console | None = None,
    live: bool | None = None,
    title: str = DEMO_TITLE,
    verb: str = "streamed",
    clock: Callable[[], int] | None = time.time_ns,
) -> DemoView:
    """The live terminal view of ``events`` until the channel ends or ``duration`` passes.

    Without a terminal (``live=False``), prints the final table and a
    summary instead. ``clock`` (ns since the epoch) closes the 1-second bars:
    the wall clock for live data; None for a replay, whose time is the
    newest ``ts_recv`` seen.
    """
    console = console or Console(width=None if sys.stdout.isatty() else 120)
    live = console.is_terminal if live is None else live
    view = DemoView(title=title)
    bars: dict[str, BarAggregator] = {}
    started = time.monotonic()
    deadline = math.inf if duration is None else trio.current_time() + duration
    with trio.move_on_at(deadline):
        if live:
            with Live(view.render(0.0), console=console, refresh_per_second=4) as screen:
                await _consume(events, view, bars, screen, clock)
        else:
            await _consume(events, view, bars, None, clock)
    elapsed = time.monotonic() - started
    if not live:
        console.print(view.render(time.monotonic()))
        console.print(
            f"{verb} {view.events} events in {elapsed:.1f} s "
            f"({view.events / max(elapsed, 1e-9):.0f} events/s); gaps announced: {view.gaps}"
        )
    return view


async def _consume(
    events: trio.abc.ReceiveChannel[Event],
    view: DemoView,
    bars: dict[str, BarAggregator],
    screen: Live | None,
    clock: Callable[[], int] | None,
) -> None:
    last_draw = 0.0
    last_flush = 0.0
    replayed = 0
    async for event in events:
        now = time.monotonic()
        replayed = event.ts_recv
        view.apply(event, now)
        if isinstance(event, Trade):
            aggregator = bars.get(event.provider)
            if aggregator is None:
                aggregator = bars[event.provider] = BarAggregator(1, provider=event.provider)
            bar = aggregator.add(event)
            if bar is not None:
                view.apply(bar, now, received=False)
        if now - last_flush >= 0.25:
            last_flush = now
            for aggregator in bars.values():
                for bar in aggregator.flush(replayed if clock is None else clock()):
                    view.apply(bar, now, received=False)
        if screen is not None and now - last_draw >= 0.25:
            last_draw = now
            screen.update(view.render(now))


async def run_stream(
    provider: Provider,
    symbols: Sequence[str],
    channels: Sequence[str],
    duration: float | None,
) -> None:
    """Stream real data as JSON lines (one event per line) on stdout."""
    topics = {channel: list(symbols) for channel in channels}
    async with Supervisor.open() as sup:
        sup.add(provider, **topics)  # type: ignore[arg-type]
        async with sup.events(capacity=8192, overflow="drop_oldest") as events:
            with trio.move_on_after(math.inf if duration is None else duration):
                out = sys.stdout.buffer
                async for event in events:
                    out.write(codec.dumps(event) + b"\n")
                    out.flush()


async def run_sim(provider: str, port: int, symbols: Sequence[str], rate: float) -> None:
    """Run one provider simulator until Ctrl-C."""
    from puffin_trio.sim import serve_alpaca, serve_ib, serve_polygon

    async with trio.open_nursery() as nursery:
        if provider == "alpaca":
            bound = await nursery.start(
                partial(
                    serve_alpaca,
                    port=port,
                    symbols=list(symbols),
                    rate=rate,
                    key=DEMO_KEY,
                    secret=DEMO_SECRET,
                )
            )
            where = f"ws://127.0.0.1:{bound}/v2/iex  (key={DEMO_KEY!r}, secret={DEMO_SECRET!r})"
        elif provider == "polygon":
            bound = await nursery.start(
                partial(serve_polygon, port=port, symbols=list(symbols), rate=rate, key=DEMO_KEY)
            )
            where = f"ws://127.0.0.1:{bound}/stocks and /crypto  (key={DEMO_KEY!r})"
        else:
            bound = await nursery.start(
                partial(serve_ib, port=port, symbols=list(symbols), rate=rate)
            )
            where = f"127.0.0.1:{bound} (TWS API; any client id)"
        print(f"{provider} simulator on {where}; Ctrl-C to stop", flush=True)


def _symbols(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="puffin-trio", description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="simulator + full pipeline + live view (no keys needed)")
    demo.add_argument("--duration", type=float, default=None, help="seconds (default: Ctrl-C)")
    demo.add_argument("--symbols", type=_symbols, default=None, help="AAPL,MSFT,...")
    demo.add_argument("--rate", type=float, default=200.0, help="simulated messages/s")
    demo.add_argument("--no-chaos", action="store_true", help="do not inject a dropped connection")
    redis_cli.add_demo_options(demo)

    stream = sub.add_parser("stream", help="stream real data (or a Redis feed) as JSON lines")
    add_provider_arguments(stream, symbols_required=False, redis_urls=True)
    stream.add_argument("--duration", type=float, default=None)
    redis_cli.add_stream_options(stream)

    sim = sub.add_parser("sim", help="run a provider simulator on 127.0.0.1")
    sim.add_argument("provider", choices=["alpaca", "polygon", "ib"])
    sim.add_argument("--port", type=int, default=8765)
    sim.add_argument("--symbols", type=_symbols, default=list(DEMO_SYMBOLS))
    sim.add_argument("--rate", type=float, default=200.0)

    from puffin_trio.recording._cli import add_parsers

    add_parsers(sub)
    redis_cli.add_publish_parser(sub)
    return parser


def add_provider_arguments(
    parser: argparse.ArgumentParser,
    *,
    providers: Sequence[str] = ("alpaca", "polygon", "ib"),
    symbols_required: bool = True,
    redis_urls: bool = False,
) -> None:
    """The arguments that choose and configure a real provider (``stream``, ``record``,
    ``publish``); with ``redis_urls``, the provider may also be a ``redis://`` URL."""
    if redis_urls:
        parser.add_argument(
            "provider",
            type=partial(_provider_or_url, providers),
            help=f"{', '.join(providers)} or a redis:// URL",
        )
    else:
        parser.add_argument("provider", choices=list(providers))
    parser.add_argument("--symbols", type=_symbols, required=symbols_required)
    parser.add_argument("--channels", type=_symbols, default=["trades", "quotes"])
    parser.add_argument("--feed", default="iex", help="alpaca: iex, sip, delayed_sip, test, crypto")
    parser.add_argument("--market", default="stocks", help="polygon: stocks or crypto")
    parser.add_argument(
        "--delayed", action="store_true", help="polygon: the 15-minute delayed feed"
    )
    parser.add_argument("--url", default=None, help="override the WebSocket URL")
    parser.add_argument("--host", default=None, help="ib: TWS/Gateway host (IB_HOST)")
    parser.add_argument("--port", type=int, default=None, help="ib: TWS/Gateway port (IB_PORT)")
    parser.add_argument("--client-id", type=int, default=None, help="ib: API client id")


def _provider_or_url(providers: Sequence[str], text: str) -> str:
    if text in providers or redis_cli.is_redis_url(text):
        return text
    raise argparse.ArgumentTypeError(
        f"invalid choice: {text!r} (choose from {', '.join(providers)}, or a redis:// URL)"
    )


def provider_from(args: argparse.Namespace) -> Provider:
    """The provider that :func:`add_provider_arguments`' arguments describe."""
    if args.provider == "alpaca":
        return AlpacaProvider(feed=args.feed, url=args.url)
    if args.provider == "polygon":
        return PolygonProvider(market=args.market, delayed=args.delayed, url=args.url)
    return IBProvider(host=args.host, port=args.port, client_id=args.client_id)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``puffin-trio``; returns the process exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.ERROR,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.command == "demo" and args.redis:
            trio.run(redis_cli.run_redis_demo, args)
        elif args.command == "demo":
            trio.run(
                lambda: run_demo(
                    duration=args.duration,
                    symbols=args.symbols or list(DEMO_SYMBOLS),
                    rate=args.rate,
                    chaos=not args.no_chaos,
                )
            )
        elif args.command == "stream" and redis_cli.is_redis_url(args.provider):
            trio.run(redis_cli.run_redis_stream, args)
        elif args.command == "publish":
            trio.run(redis_cli.run_publish, args)
        elif args.command == "stream":
            if not args.symbols:
                raise ConfigurationError("stream needs --symbols (for example --symbols AAPL,MSFT)")
            trio.run(
                run_stream, provider_from(args), args.symbols, args.channels, args.duration
            )
        elif args.command == "sim":
            trio.run(run_sim, args.provider, args.port, args.symbols, args.rate)
        else:
            from puffin_trio.recording._cli import run_command

            return run_command(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader of our stdout went away (`... | head`): stop quietly, and keep
        # the interpreter's final flush from failing too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except ConfigurationError as exc:
        print(f"puffin-trio: {exc}", file=sys.stderr)
        return 2
    except PuffinError as exc:
        print(f"puffin-trio: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
