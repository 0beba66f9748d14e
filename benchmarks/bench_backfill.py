"""Backfill: the time to recover an outage of N trades, and the live latency it adds.

Run: ``python benchmarks/bench_backfill.py [--quick]``.

1. Recovery, bound by page size: a simulator's tape holds N trades of an
   outage (1 ms apart) and a session's backfill recovers them over loopback
   (REST for Alpaca and Polygon, ``reqHistoricalTicks`` for IB), with a
   consumer draining the fan-out. Simulator and client share this process
   (and a core), so the figures include both ends. Peak memory is traced
   (tracemalloc) in a second pass: it follows the page size, not N.
2. Recovery, bound by rate limits: the same recoveries under trio's MockClock
   with the providers' documented limits in force (Alpaca's free plan, 200
   requests a minute; Massive's free plan, 5; IB's pacing, 60 requests per 10
   minutes and 5 per 2 s per contract): the simulated seconds a recovery takes
   when the limits are what binds.
3. Live latency right after a reconnect (real clock, the Alpaca simulator at
   2 000 trades/s): how long after arriving a live trade reaches the consumer,
   during the first 2 s after the reconnect, with ``backfill="trades"`` (held
   while the outage is recovered) and without (the baseline, same run).
"""

from __future__ import annotations

import argparse
import textwrap
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import trio
from _harness import NOTE_WIDTH, print_table
from trio.testing import MockClock

from puffin_trio import FanOut, RestartPolicy, SessionState, Status, Supervisor, Trade
from puffin_trio.history import Backfiller, Pacer
from puffin_trio.providers import AlpacaProvider, IBProvider, PolygonProvider, Provider
from puffin_trio.sim import FaultPlan, MarketModel, serve_alpaca, serve_ib, serve_polygon
from puffin_trio.sim._server import SimRecorder
from puffin_trio.sim.alpaca import AlpacaSimRecorder
from puffin_trio.sim.ib import IBSimRecorder
from puffin_trio.sim.polygon import PolygonSimRecorder

NS = 1_000_000_000
MS = 1_000_000
#: 2026-11-24 15:00 UTC: the outage's first trade.
T0 = 1_795_532_400 * NS
KEY, SECRET = "bench-key", "bench-secret"
#: Documented rate limits (requests per minute) of the plans the second table assumes.
ALPACA_FREE = 200
MASSIVE_FREE = 5


def wall_clock_from(start_ns: int) -> Callable[[], int]:
    """A wall clock that starts at ``start_ns`` and moves with trio's clock (mocked or not)."""
    origin = trio.current_time()
    return lambda: start_ns + int((trio.current_time() - origin) * NS)


def fill_tape(recorder: SimRecorder[Any], symbols: list[str], per_symbol: int) -> None:
    """``per_symbol`` trades of each symbol, 1 ms apart, from T0, in print order."""
    model = MarketModel(symbols, seed=7, trade_weight=1.0, quote_weight=0.0, book_weight=0.0)
    for i in range(per_symbol):
        for symbol in symbols:
            recorder.tape.record(model.trade(symbol, T0 + i * MS))


def notice(provider: str, detail: str) -> Status:
    return Status(
        provider=provider, ts_event=0, ts_recv=0, state=SessionState.STREAMING, detail=detail
    )


class Drain:
    """A consumer that counts backfilled trades and says when it has seen ``target``."""

    def __init__(self) -> None:
        self.count = 0
        self.target: int | None = None
        self.done = trio.Event()

    def expect(self, target: int) -> None:
        self.target = target
        if self.count >= target:
            self.done.set()

    async def run(self, fanout: FanOut, *, task_status: Any) -> None:
        async with fanout.consumer(capacity=65_536) as events:
            task_status.started()
            async for event in events:
                if isinstance(event, Trade) and event.backfilled:
                    self.count += 1
                    if self.target is not None and self.count >= self.target:
                        self.done.set()


async def _ib_session(port: int, backfiller: Backfiller, *, task_status: Any) -> None:
    """A bare IB connection whose reader hands history answers to the backfill."""
    provider = IBProvider(port=port, client_id=5)
    proto = provider.protocol()
    async with provider.open_transport() as transport:
        await transport.send_all(proto.data_to_send())
        started = False
        while True:
            frame = await transport.receive()
            for item in proto.receive(frame, 0):
                kind = type(item).__name__
                if kind == "Authenticated" and not started:
                    started = True
                    task_status.started((proto, transport))
                elif kind == "HistoryReply":
                    backfiller.answer(item)  # type: ignore[arg-type]
            out = proto.data_to_send()
            if out:
                await transport.send_all(out)


async def recover(
    kind: str, symbols: list[str], per_symbol: int, *, limited: bool, traced: bool = False
) -> tuple[float, int, int, int, int]:
    """Backfill an outage of ``per_symbol`` trades of each of ``symbols``; returns
    (seconds on trio's clock, trades recovered, requests, pages, peak traced bytes).

    With ``traced``, memory is traced from the moment the tape is full: the
    peak is the backfill's (and the simulator's answer to it), not the tape's.
    """
    wall = wall_clock_from(T0 + per_symbol * MS + NS)
    serve: Callable[..., Awaitable[Any]]
    if kind == "alpaca":
        recorder: SimRecorder[Any] = AlpacaSimRecorder()
        serve = partial(serve_alpaca, key=KEY, secret=SECRET,
                        history_rate_limit=ALPACA_FREE if limited else None)  # fmt: skip
    elif kind == "polygon":
        recorder = PolygonSimRecorder()
        limit = MASSIVE_FREE if limited else None
        serve = partial(serve_polygon, key=KEY, history_rate_limit=limit)
    else:
        recorder = IBSimRecorder()
        serve = serve_ib
    fill_tape(recorder, symbols, per_symbol)
    if traced:
        tracemalloc.start()
    drain = Drain()
    async with trio.open_nursery() as nursery:
        port = await nursery.start(
            partial(serve, symbols=symbols, rate=None, recorder=recorder, wall_clock=wall)
        )
        provider: Provider
        options = {"backfill": "trades", "backfill_timeout": 24 * 3600.0}
        if kind == "alpaca":
            provider = AlpacaProvider(key=KEY, secret=SECRET, url=f"ws://127.0.0.1:{port}/v2/iex",
                                      rest_url=f"http://127.0.0.1:{port}", **options)  # type: ignore[arg-type]  # fmt: skip
        elif kind == "polygon":
            provider = PolygonProvider(key=KEY, url=f"ws://127.0.0.1:{port}/stocks",
                                       rest_url=f"http://127.0.0.1:{port}", **options)  # type: ignore[arg-type]  # fmt: skip
        else:
            provider = IBProvider(port=port, **options)  # type: ignore[arg-type]
        fanout = FanOut()
        backfiller = Backfiller(
            provider,
            stream=kind,
            fanout=fanout,
            wall_clock=wall,
            # The real-clock rows measure us, not IB's pacing (the MockClock rows do).
            pacer=None if limited else Pacer(burst=10**9, per_symbol=0.0),
            status=partial(notice, kind),
        )
        await nursery.start(drain.run, fanout)
        proto: Any = None
        transport: Any = None
        if kind == "ib":
            proto, transport = await nursery.start(_ib_session, port, backfiller)
        backfiller.prepare(symbols, outage_start=T0)
        started = trio.current_time()
        await backfiller.run(proto, transport)
        elapsed = trio.current_time() - started
        stats = backfiller.statistics()
        drain.expect(stats.recovered)
        await drain.done.wait()
        nursery.cancel_scope.cancel()
    peak = 0
    if traced:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return elapsed, stats.recovered, stats.requests, stats.pages, peak


def recovery_tables(sizes: list[int]) -> None:
    cases = [(k, ["AAPL"], n) for k in ("alpaca", "polygon", "ib") for n in sizes]
    many = [f"S{i:03d}" for i in range(100)]
    cases += [("alpaca", many, 1000), ("polygon", many, 1000)]
    rows, limited_rows = [], []
    for kind, symbols, per_symbol in cases:
        total = len(symbols) * per_symbol
        seconds, recovered, requests, pages, _ = trio.run(
            partial(recover, kind, symbols, per_symbol, limited=False)
        )
        assert recovered == total, (kind, recovered, total)
        peak = trio.run(partial(recover, kind, symbols, per_symbol, limited=False, traced=True))[4]
        rows.append([
            kind, str(len(symbols)), f"{total:,}", str(pages), str(requests), f"{seconds:.2f}",
            f"{total / seconds:,.0f}", f"{seconds / total * 1e6:.1f}", f"{peak / 2**20:.1f}",
        ])  # fmt: skip
        mock_seconds, recovered, requests, _, _ = trio.run(
            partial(recover, kind, symbols, per_symbol, limited=True),
            # Jump only after 50 ms of real idleness: a 10 MB page in flight on loopback
            # leaves both ends waiting for a moment, and a jump then would fire the read
            # timeout (a retry the real clock never sees).
            clock=MockClock(autojump_threshold=0.05),
        )
        assert recovered == total
        limit = {"alpaca": f"{ALPACA_FREE}/min", "polygon": f"{MASSIVE_FREE}/min",
                 "ib": "60/10 min, 5/2 s"}[kind]  # fmt: skip
        limited_rows.append([kind, str(len(symbols)), f"{total:,}", limit, str(requests),
                             f"{mock_seconds:,.1f}"])  # fmt: skip
    print_table(
        "recovery over loopback (page-size bound; simulator and client in one process)",
        ["provider", "symbols", "trades", "pages", "requests", "seconds", "trades/s",
         "µs/trade", "peak MiB"],
        rows,
    )  # fmt: skip
    print(
        textwrap.fill(
            "page sizes: Alpaca 10,000 trades (all symbols of a request share it), Polygon "
            "50,000 (one ticker per request), IB 1,000. On a real network add a round trip "
            "(~20-100 ms) per page. Peak memory is traced once the tape is full; it includes "
            "the simulator building its answer in this process.",
            NOTE_WIDTH,
        )
    )
    print_table(
        "recovery under the providers' rate limits (simulated seconds, MockClock)",
        ["provider", "symbols", "trades", "limit", "requests", "seconds"],
        limited_rows,
    )


# --------------------------------------------------------------------------- live latency


async def live_latency(outage: float, backfill: bool) -> tuple[list[float], int]:
    """(µs from arrival to the consumer of each live trade in the 2 s after the reconnect,
    trades backfilled)."""
    recorder = AlpacaSimRecorder()
    async with trio.open_nursery() as nursery:
        port = await nursery.start(
            partial(serve_alpaca, key=KEY, secret=SECRET, symbols=["AAPL", "MSFT"], rate=2000.0,
                    batch=10, recorder=recorder, faults=FaultPlan.drop_after(2000))
        )  # fmt: skip
        provider = AlpacaProvider(
            key=KEY, secret=SECRET, url=f"ws://127.0.0.1:{port}/v2/iex",
            rest_url=f"http://127.0.0.1:{port}", backfill="trades" if backfill else None,
        )  # fmt: skip
        restart = RestartPolicy(initial=outage, jitter=0.0)
        delays: list[float] = []
        backfilled = 0
        reconnected_at: float | None = None
        async with Supervisor.open(restart=restart) as sup:
            sup.add(provider, trades=["AAPL", "MSFT"])
            async with sup.events(capacity=65_536) as events:
                with trio.fail_after(60):
                    async for event in events:
                        now = time.time_ns()
                        if isinstance(event, Status) and event.attempt == 1:
                            if event.state is SessionState.SUBSCRIBING:
                                reconnected_at = time.monotonic()
                        elif isinstance(event, Trade) and event.backfilled:
                            backfilled += 1
                        elif isinstance(event, Trade) and reconnected_at is not None:
                            delays.append((now - event.ts_recv) / 1e3)
                            if time.monotonic() - reconnected_at > 2.0:
                                break
        nursery.cancel_scope.cancel()
    return delays, backfilled


def latency_table(outages: list[float]) -> None:
    rows = []
    for outage in outages:
        results = {}
        for backfill in (False, True):
            delays, backfilled = trio.run(live_latency, outage, backfill)
            delays.sort()
            results[backfill] = (delays, backfilled)
        base = results[False][0]
        for backfill in (False, True):
            delays, backfilled = results[backfill]

            def q(values: list[float], p: float) -> float:
                return values[min(len(values) - 1, int(p * len(values)))]

            rows.append([
                f"{outage:g} s", "trades" if backfill else "None", f"{backfilled:,}",
                f"{len(delays):,}", f"{q(delays, 0.5):,.0f}", f"{q(delays, 0.99):,.0f}",
                f"{delays[-1]:,.0f}", f"{q(delays, 0.99) / max(q(base, 0.99), 1.0):.1f}x",
            ])  # fmt: skip
    print_table(
        "live trades in the 2 s after a reconnect: arrival -> consumer (µs), Alpaca, 2,000/s",
        ["outage", "backfill", "backfilled", "live", "p50", "p99", "max", "p99 vs None"],
        rows,
    )
    print(
        textwrap.fill(
            "With backfill the live trades of the backfilled symbols wait for their backfill "
            "(at most backfill_timeout, 10 s): the added latency is the time to recover the "
            "window. Everything else, and every later trade, flows as without it.",
            NOTE_WIDTH,
        )
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small runs: a smoke test")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    recovery_tables([1000, 10_000] if args.quick else [1000, 10_000, 100_000])
    latency_table([1.0] if args.quick else [1.0, 5.0])
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
