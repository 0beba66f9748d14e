"""Nothing missed across a reconnect: the outage's trades, backfilled, in order, exactly once.

End to end over real loopback sockets under trio's MockClock: a simulator
drops the connection, the supervisor keeps it down 30 s (simulated), the
reconnect backfills the window from the simulator's historical endpoint (the
same port for Alpaca and Polygon; ``reqHistoricalTicks`` for IB), and the
consumer's trades are compared with every trade the simulator's market
printed (its tape).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Hashable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from trio.testing import MockClock

from puffin_trio import (
    Event,
    Gap,
    GapReason,
    RestartPolicy,
    SessionState,
    Status,
    Supervisor,
    Trade,
    codec,
)
from puffin_trio.history import _backfill
from puffin_trio.providers import AlpacaProvider, IBProvider, PolygonProvider, Provider
from puffin_trio.sim import FaultPlan
from puffin_trio.sim._server import SimRecorder
from tests._support import KEY, POLYGON_KEY, SECRET, alpaca_sim, ib_sim, polygon_sim

NS = 1_000_000_000
SYMBOLS = ("AAPL", "MSFT")
#: The outage: the first reconnect comes 30 s (simulated) after the drop.
DOWN_30_S = RestartPolicy(initial=30.0, jitter=0.0, intensity=50)
#: Live trades a test waits for after its backfill is done (the seam is behind them).
AFTER = 40
#: How late a live trade may be delivered: the backfill holds the live trades of its
#: symbols for at most ``backfill_timeout`` (10 s), plus the publishing after it.
DELAY_BOUND_NS = 11 * NS


def identity(provider: str, trade: Trade) -> Hashable:
    """What names a trade of each provider: Alpaca's id, Polygon's sequence number, IB's
    second, price and size."""
    if provider == "alpaca":
        return trade.trade_id
    if provider == "polygon":
        return trade.seq
    return (trade.ts_event, trade.price, trade.size)


def printed(provider: str, recorder: SimRecorder[Any], symbol: str) -> list[Hashable]:
    """Every trade of ``symbol`` the simulator's market printed, named as ``identity``."""
    return printed_as(provider, recorder.tape.page(symbol, 0, 2**63 - 1, None, None))


def printed_as(provider: str, tape: list[Any]) -> list[Hashable]:
    """The simulator's tape entries, named as ``identity``."""
    out: list[Hashable] = []
    for p in tape:
        if provider == "alpaca":
            out.append(str(p.trade.trade_id))
        elif provider == "polygon":
            out.append(p.seq)
        else:
            out.append((p.trade.ts_ns // NS * NS, p.trade.price, p.trade.size))
    return out


@asynccontextmanager
async def simulator(
    kind: str, **kwargs: Any
) -> AsyncIterator[tuple[Callable[..., Provider], SimRecorder[Any], Callable[[], int]]]:
    """A simulator of ``kind`` and a factory of providers pointed at it (backfill on)."""
    if kind == "alpaca":
        async with alpaca_sim(**kwargs) as (url, recorder, wall):
            base = "http://" + url.split("//")[1].split("/")[0]

            def alpaca(**options: Any) -> Provider:
                options.setdefault("backfill", "trades")
                return AlpacaProvider(key=KEY, secret=SECRET, url=url, rest_url=base, **options)

            yield alpaca, recorder, wall
    elif kind == "polygon":
        async with polygon_sim(**kwargs) as (url, recorder, wall):
            base = "http://" + url.split("//")[1].split("/")[0]

            def polygon(**options: Any) -> Provider:
                options.setdefault("backfill", "trades")
                return PolygonProvider(key=POLYGON_KEY, url=url, rest_url=base, sequence="strict",
                                       **options)  # fmt: skip

            yield polygon, recorder, wall
    else:
        async with ib_sim(**kwargs) as (port, recorder, wall):

            def ib(**options: Any) -> Provider:
                options.setdefault("backfill", "trades")
                return IBProvider(port=port, **options)

            yield ib, recorder, wall


def backfill_ended(seen: list[Event]) -> bool:
    ends = ("backfill done", "backfill incomplete", "backfill failed")
    return any(isinstance(e, Status) and e.detail.startswith(ends) for e in seen)


async def run_outage(
    kind: str,
    *,
    faults: FaultPlan | None = None,
    provider_options: dict[str, Any] | None = None,
    restart: RestartPolicy = DOWN_30_S,
    ended: Callable[[list[Event]], bool] = backfill_ended,
    **sim: Any,
) -> tuple[list[tuple[int, Event]], SimRecorder[Any], Any]:
    """Stream ``SYMBOLS``' trades, drop after 200 data messages, reconnect 30 s later;
    collect until ``ended`` and ``AFTER`` more live trades. Returns ((consumer wall ns,
    event) pairs, the simulator's recorder, the session's statistics)."""
    sim.setdefault("faults", FaultPlan.drop_after(200) + (faults or FaultPlan()))
    async with simulator(kind, **sim) as (make, recorder, wall):
        async with Supervisor.open(wall_clock=wall, restart=restart) as sup:
            sup.add(make(**(provider_options or {})), trades=SYMBOLS)
            seen: list[tuple[int, Event]] = []
            after = 0
            async with sup.events(capacity=100_000) as events:
                with trio.fail_after(600):
                    async for event in events:
                        seen.append((wall(), event))
                        if isinstance(event, Trade) and not event.backfilled and after_end(seen):
                            after += 1
                            if after >= AFTER:
                                break
                        assert len(seen) < 200_000
            stats = sup.statistics().sessions[kind]
    return seen, recorder, stats


def after_end(seen: list[tuple[int, Event]]) -> bool:
    return backfill_ended([e for _, e in seen])


def check_every_trade_once_in_order(
    kind: str, seen: list[tuple[int, Event]], recorder: SimRecorder[Any]
) -> None:
    trades = [e for _, e in seen if isinstance(e, Trade)]
    for symbol in SYMBOLS:
        got = [identity(kind, t) for t in trades if t.symbol == symbol]
        tape = printed(kind, recorder, symbol)
        assert got, symbol
        assert got == tape[: len(got)], f"{symbol}: first difference at " + str(
            next((i for i, (a, b) in enumerate(zip(got, tape, strict=False)) if a != b), None)
        )


def in_order_without_repeats(got: list[Hashable], tape: list[Hashable]) -> bool:
    """Whether ``got`` is ``tape`` with some trades left out: nothing twice, nothing out
    of order (twins, such as IB trades alike in second, price and size, match in turn)."""
    position = 0
    for item in got:
        try:
            position = tape.index(item, position) + 1
        except ValueError:
            return False
    return True


def gaps_of(seen: list[tuple[int, Event]], reason: GapReason) -> list[Gap]:
    return [e for _, e in seen if isinstance(e, Gap) and e.reason is reason]


def details(seen: list[tuple[int, Event]]) -> list[str]:
    return [e.detail for _, e in seen if isinstance(e, Status) and e.detail.startswith("backfill")]


def max_live_delay(seen: list[tuple[int, Event]]) -> int:
    return max(at - e.ts_recv for at, e in seen if isinstance(e, Trade) and not e.backfilled)


# --------------------------------------------------------------------------- the outage


@pytest.mark.parametrize("kind", ["alpaca", "polygon", "ib"])
async def test_after_a_30_s_outage_the_consumer_gets_every_trade_once_in_order(
    autojump_clock: MockClock, kind: str
) -> None:
    seen, recorder, stats = await run_outage(kind)
    check_every_trade_once_in_order(kind, seen, recorder)
    events = [e for _, e in seen]
    # Announced: the reconnect gap, the start, one closing gap per symbol, the end.
    (reconnect,) = gaps_of(seen, GapReason.RECONNECT)
    assert reconnect.window_end - reconnect.window_start >= 30 * NS  # type: ignore[operator]
    closing = gaps_of(seen, GapReason.BACKFILL)
    assert sorted(g.symbol for g in closing) == list(SYMBOLS)
    assert all(g.complete and g.missing == 0 and g.detail == "" for g in closing)
    started, done = details(seen)
    assert started.startswith("backfill of trades started: 2 symbols")
    assert done.startswith("backfill done:") and "2 of 2 symbols complete" in done
    assert events.index(reconnect) < min(events.index(g) for g in closing)
    # The backfilled trades are flagged, counted by their gap, and come just before it.
    for gap in closing:
        at = events.index(gap)
        mine = [e for e in events[:at] if isinstance(e, Trade) and e.symbol == gap.symbol]
        flagged = [t for t in mine if t.backfilled]
        assert len(flagged) == gap.recovered > 30  # 30 s of a symbol's trades
        assert mine[-gap.recovered :] == flagged
        assert gap.window_start <= flagged[0].ts_event  # type: ignore[operator]
    assert stats.backfill.recovered == sum(g.recovered for g in closing)
    assert stats.backfill.backfills == 1 and stats.backfill.incomplete == 0
    assert stats.backfill.held == 0
    assert max_live_delay(seen) <= DELAY_BOUND_NS


async def test_without_backfill_a_reconnect_is_announced_and_nothing_is_held(
    autojump_clock: MockClock,
) -> None:
    async with simulator("alpaca", faults=FaultPlan.drop_after(100)) as (make, _, wall):
        async with Supervisor.open(wall_clock=wall, restart=DOWN_30_S) as sup:
            sup.add(make(backfill=None), trades=SYMBOLS)
            async with sup.events() as events:
                got: list[Event] = []
                with trio.fail_after(120):
                    async for event in events:
                        got.append(event)
                        if sum(isinstance(e, Trade) for e in got) > 150:
                            break
            assert sup.statistics().sessions["alpaca"].backfill is None
    assert [e.reason for e in got if isinstance(e, Gap)] == [GapReason.RECONNECT]
    assert not any(isinstance(e, Trade) and e.backfilled for e in got)
    assert not any(isinstance(e, Status) and "backfill" in e.detail for e in got)


async def test_backfill_events_round_trip_through_the_codec(autojump_clock: MockClock) -> None:
    seen, _, _ = await run_outage("alpaca")
    for _, event in seen:
        if isinstance(event, Gap | Status) or (isinstance(event, Trade) and event.backfilled):
            for fmt in ("json", "msgpack"):
                data = codec.dumps(event, format=fmt)  # type: ignore[arg-type]
                assert codec.loads(data, format=fmt) == event  # type: ignore[arg-type]


# --------------------------------------------------------------------------- REST faults


FAULTS = {
    "429": FaultPlan.rate_limited(0, reset=2.0),
    "500": FaultPlan.http_error(0, status=500, count=2),
    "slow page": FaultPlan.slow_page(0, delay=3.0),
    "truncated": FaultPlan.truncated_page(0),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
@pytest.mark.parametrize("kind", ["alpaca", "polygon", "ib"])
async def test_a_backfill_completes_through_a_passing_fault(
    autojump_clock: MockClock, kind: str, fault: str
) -> None:
    """429 (waited out as the reset header says), 500s (retried), a slow page or a
    truncated one (retried): the backfill completes, nothing is duplicated, and no live
    trade waits longer than the documented bound."""
    sim = {"history_page_size": 60} if kind != "ib" else {}
    seen, recorder, stats = await run_outage(kind, faults=FAULTS[fault], **sim)
    check_every_trade_once_in_order(kind, seen, recorder)
    assert all(g.complete for g in gaps_of(seen, GapReason.BACKFILL))
    assert details(seen)[-1].startswith("backfill done")
    assert max_live_delay(seen) <= DELAY_BOUND_NS
    if fault in ("429", "500", "truncated"):
        assert stats.backfill.requests > stats.backfill.pages  # a request was retried
    if fault == "429" and kind == "alpaca":
        assert any(status == 429 for _, status in recorder.history)


@pytest.mark.parametrize("status", [401, 403])
@pytest.mark.parametrize("kind", ["alpaca", "polygon", "ib"])
async def test_a_refused_backfill_is_announced_typed_and_the_live_stream_goes_on(
    autojump_clock: MockClock, kind: str, status: int
) -> None:
    """A key without the data (401, 403; IB: error 162 without permissions): the backfill
    fails at once with a typed detail in its ``Gap`` and ``Status``, nothing is retried,
    and the live stream goes on."""
    seen, recorder, stats = await run_outage(kind, faults=FaultPlan.http_error(0, status=status))
    closing = gaps_of(seen, GapReason.BACKFILL)
    assert len(closing) == 2 and not any(g.complete for g in closing)
    assert all("BackfillRefused" in g.detail and g.recovered == 0 for g in closing)
    if kind != "ib":
        assert all(f"HTTP {status}" in g.detail for g in closing)
    final = details(seen)[-1]
    assert final.startswith("backfill failed: 0 trades recovered") and "BackfillRefused" in final
    assert stats.backfill.requests == 1  # a refusal is not retried
    assert stats.state is SessionState.STREAMING
    # Live trades flow on, unduplicated; the outage's trades are missing, as announced.
    trades = [e for _, e in seen if isinstance(e, Trade)]
    for symbol in SYMBOLS:
        got = [identity(kind, t) for t in trades if t.symbol == symbol]
        assert in_order_without_repeats(got, printed(kind, recorder, symbol))


@pytest.mark.parametrize("kind", ["alpaca", "polygon", "ib"])
async def test_a_backfill_past_its_timeout_delivers_what_it_has_and_announces_the_rest(
    autojump_clock: MockClock, kind: str
) -> None:
    """A page that takes longer than ``backfill_timeout``: the backfill gives up at the
    timeout, the recovered part and the held live trades are delivered in order, and the
    rest is announced as not recovered (with the count, where the numbering tells it)."""
    sim = {"history_page_size": 60} if kind != "ib" else {}
    seen, recorder, stats = await run_outage(
        kind, faults=FaultPlan.slow_page(1, delay=20.0), **sim
    )
    closing = gaps_of(seen, GapReason.BACKFILL)
    assert [g.complete for g in closing].count(False) >= 1
    incomplete = [g for g in closing if not g.complete]
    assert all("backfill_timeout=10.0" in g.detail for g in incomplete)
    assert max_live_delay(seen) <= DELAY_BOUND_NS
    trades = [e for _, e in seen if isinstance(e, Trade)]
    for symbol in SYMBOLS:  # in order, with a hole where announced
        got = [identity(kind, t) for t in trades if t.symbol == symbol]
        assert in_order_without_repeats(got, printed(kind, recorder, symbol))
    if kind == "polygon":
        for gap in incomplete:
            total = (gap.recovered + gap.missing)
            assert gap.missing > 0 and total > 30
    assert stats.backfill.incomplete == len(incomplete)


async def test_a_drop_during_the_backfill_hands_the_held_trades_on_announced(
    autojump_clock: MockClock,
) -> None:
    """The second connection drops while its backfill waits for a slow page: the held
    live trades are delivered first thing on the third connection, the interrupted
    backfill is announced, and the third backfill continues from what was delivered."""
    faults = FaultPlan.slow_page(0, delay=8.0) + FaultPlan.drop_after(150, connection=2)
    seen, recorder, stats = await run_outage("polygon", faults=faults, history_page_size=60)
    texts = details(seen)
    assert any(t.startswith("backfill interrupted") for t in texts)
    assert texts[-1].startswith("backfill done")
    trades = [e for _, e in seen if isinstance(e, Trade)]
    for symbol in SYMBOLS:
        got = [t.seq for t in trades if t.symbol == symbol]
        assert len(got) == len(set(got))
        assert got == sorted(got)
    assert stats.backfill.backfills == 2
    del recorder


async def test_a_full_hold_ends_the_backfill_at_once(
    autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The held live trades reach their bound while a slow page is awaited: the backfill
    stops, announces what it could not recover, and the held trades flow, in order."""
    monkeypatch.setattr(_backfill, "MAX_HELD", 50)
    seen, recorder, stats = await run_outage(
        "alpaca", faults=FaultPlan.slow_page(0, delay=9.0), history_page_size=60
    )
    closing = gaps_of(seen, GapReason.BACKFILL)
    assert all(not g.complete and "50 live trades" in g.detail for g in closing)
    assert stats.backfill.held == 0
    trades = [e for _, e in seen if isinstance(e, Trade)]
    for symbol in SYMBOLS:
        got = [t.trade_id for t in trades if t.symbol == symbol]
        assert in_order_without_repeats(got, printed("alpaca", recorder, symbol))


@pytest.mark.parametrize("kind", ["alpaca", "polygon", "ib"])
async def test_a_malformed_historical_row_is_dropped_counted_and_its_window_not_complete(
    autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """One row inside the outage (AAPL's first one 2 s past the window's first row)
    served with a negative size, which the stream's checks refuse: the backfill goes on,
    that trade alone is missing, the row is counted, and AAPL's window is announced as
    not complete, with why."""
    import puffin_trio.sim.alpaca as sim_alpaca
    import puffin_trio.sim.ib._connection as sim_ib
    import puffin_trio.sim.polygon as sim_polygon

    first: list[int] = []  # the first AAPL row's time
    bad: list[Any] = []  # the tape entry served as a malformed row

    def is_bad(p: Any) -> bool:
        if p.trade.symbol != "AAPL":
            return False
        if not first:
            first.append(p.trade.ts_ns)
        if not bad and p.trade.ts_ns >= first[0] + 2 * NS:
            bad.append(p)
        return bool(bad) and p is bad[0]

    if kind == "ib":
        honest_ticks = sim_ib.historical_ticks_last

        def corrupt_ticks(req_id: str, printed: list[Any], *, truncated: bool) -> list[str]:
            fields: list[str] = honest_ticks(req_id, printed, truncated=truncated)
            for i, p in enumerate(printed):
                if is_bad(p):
                    fields[3 + 6 * i + 3] = "-1"  # its size
            return fields

        monkeypatch.setattr(sim_ib, "historical_ticks_last", corrupt_ticks)
        sim: dict[str, Any] = {}
    else:
        module: Any = sim_alpaca if kind == "alpaca" else sim_polygon
        honest_row = module.stock_trade_row

        def corrupt_row(p: Any) -> dict[str, Any]:
            row: dict[str, Any] = honest_row(p)
            if is_bad(p):
                row["s" if kind == "alpaca" else "size"] = -1
            return row

        monkeypatch.setattr(module, "stock_trade_row", corrupt_row)
        sim = {"history_page_size": 60}
    seen, recorder, stats = await run_outage(kind, **sim)
    (aapl,) = [g for g in gaps_of(seen, GapReason.BACKFILL) if g.symbol == "AAPL"]
    (msft,) = [g for g in gaps_of(seen, GapReason.BACKFILL) if g.symbol == "MSFT"]
    assert not aapl.complete and aapl.detail == "malformed rows dropped: 1"
    assert aapl.recovered > 30
    assert msft.complete and msft.detail == ""
    assert stats.backfill.malformed == 1 and stats.backfill.incomplete == 1
    final = details(seen)[-1]
    assert final.startswith("backfill incomplete") and "malformed rows dropped: 1" in final
    trades = [e for _, e in seen if isinstance(e, Trade)]
    for symbol in SYMBOLS:
        got = [identity(kind, t) for t in trades if t.symbol == symbol]
        tape = [x for x in recorder.tape.page(symbol, 0, 2**63 - 1, None, None) if x is not bad[0]]
        expected = printed_as(kind, tape)
        assert got == expected[: len(got)]


# --------------------------------------------------------------------------- property


@st.composite
def outages(draw: st.DrawFn) -> dict[str, Any]:
    """An outage of up to a minute at up to 100 trades a second, in pages small enough
    to take many requests but few enough (at most ~200) to keep an example cheap."""
    down = draw(st.floats(1.0, 60.0))
    rate = draw(st.sampled_from([20.0, 50.0, 100.0]))
    return {
        "kind": draw(st.sampled_from(["alpaca", "polygon", "ib"])),
        "down": down,
        "drop_after": draw(st.integers(1, 300)),
        "rate": rate,
        "page": draw(st.integers(max(1, int(rate * down) // 200), 500)),
    }


@settings(
    max_examples=max(4, settings().max_examples // 10),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=outages())
@example(  # IB: the window's first answer ends in the second of the reconnect, unfinished
    case={"kind": "ib", "down": 39.5, "drop_after": 6, "rate": 50.0, "page": 9}
)
def test_live_and_backfill_are_everything_the_simulator_sent(case: dict[str, Any]) -> None:
    """Property: for any outage length, drop point, trade rate and page size, the live
    trades and the backfilled ones together are every trade the simulator printed, each
    once, in order per symbol."""
    kind = case["kind"]
    sim: dict[str, Any] = {"rate": case["rate"], "faults": FaultPlan.drop_after(case["drop_after"])}
    if kind != "ib":
        sim["history_page_size"] = case["page"]
    restart = RestartPolicy(initial=case["down"], max_delay=120.0, jitter=0.0, intensity=50)

    async def main() -> None:
        seen, recorder, _ = await run_outage(kind, restart=restart, **sim)
        check_every_trade_once_in_order(kind, seen, recorder)
        assert all(g.complete for g in gaps_of(seen, GapReason.BACKFILL))

    trio.run(main, clock=MockClock(autojump_threshold=0))


# --------------------------------------------------------------------------- large windows


async def test_an_hour_long_outage_of_many_symbols_is_bounded_in_memory_and_time(
    autojump_clock: MockClock,
) -> None:
    """An hour down, 40 symbols: the window (~30 000 trades) comes back in pages of at
    most 10 000, within ``backfill_timeout``, holding at most a page in flight and the
    live trades of those symbols (bounded by MAX_HELD)."""
    symbols = [f"S{i:02d}" for i in range(40)]
    down = RestartPolicy(initial=3600.0, max_delay=3600.0, jitter=0.0, intensity=50)
    async with simulator("alpaca", symbols=symbols, rate=8.0,
                         faults=FaultPlan.drop_after(400)) as (make, recorder, wall):  # fmt: skip
        async with Supervisor.open(wall_clock=wall, restart=down) as sup:
            sup.add(make(), trades=symbols)
            seen: list[Event] = []
            peak_held = 0
            async with sup.events(capacity=100_000) as events:
                with trio.fail_after(7200):
                    async for event in events:
                        seen.append(event)
                        held = sup.statistics().sessions["alpaca"].backfill.held
                        peak_held = max(peak_held, held)
                        if backfill_ended(seen[-3:]):
                            break
            stats = sup.statistics().sessions["alpaca"].backfill
    closing = [e for e in seen if isinstance(e, Gap) and e.reason is GapReason.BACKFILL]
    assert len(closing) == 40 and all(g.complete for g in closing)
    recovered = sum(g.recovered for g in closing)
    assert recovered > 25_000
    assert stats.pages == -(-recovered // 10_000) or stats.pages == -(-recovered // 10_000) + 1
    assert stats.last_duration is not None and stats.last_duration <= 10.0
    assert peak_held <= _backfill.MAX_HELD
    for symbol in symbols[:5]:
        got = [t.trade_id for t in seen if isinstance(t, Trade) and t.symbol == symbol]
        tape = [str(t.trade_id) for t in recorder.tape.between(symbol, 0, 2**63 - 1)]
        assert got == tape[: len(got)]


async def test_a_sessions_backfill_counters_are_exported_as_metrics(
    autojump_clock: MockClock,
) -> None:
    from prometheus_client import generate_latest

    from puffin_trio.metrics import metrics_registry

    async with simulator("alpaca", faults=FaultPlan.drop_after(100)) as (make, _, wall):
        async with Supervisor.open(wall_clock=wall, restart=DOWN_30_S) as sup:
            sup.add(make(), trades=SYMBOLS)
            async with sup.events() as events:
                seen: list[Event] = []
                with trio.fail_after(120):
                    async for event in events:
                        seen.append(event)
                        if backfill_ended(seen[-1:]):
                            break
            text = generate_latest(metrics_registry(sup)).decode()
            recovered = sup.statistics().sessions["alpaca"].backfill.recovered  # type: ignore[union-attr]
    assert recovered > 0
    labels = '{provider="alpaca",session="alpaca"}'
    assert f"puffin_session_backfill_recovered_total{labels} {recovered}.0" in text
    assert f"puffin_session_backfill_held{labels} 0.0" in text
