"""The supervised pipeline end to end: Polygon simulator -> session -> supervisor -> consumers.

Every test runs over a real loopback WebSocket against ``serve_polygon`` (and,
for multi-provider supervision, ``serve_alpaca`` beside it), on trio's autojump
``MockClock`` (pytest-trio's ``autojump_clock`` fixture), so deadlines of
seconds or minutes take milliseconds. What the simulator sent (its recorder)
is the reference every assertion compares against.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import orjson
import pytest
import trio
from trio.testing import MockClock

from puffin_trio import (
    AuthenticationError,
    ConfigurationError,
    Event,
    Gap,
    GapReason,
    OrderBook,
    OrderBookUpdate,
    Quote,
    SessionState,
    Status,
    SubscriptionError,
    Supervisor,
    Trade,
)
from puffin_trio.providers.alpaca import AlpacaProvider
from puffin_trio.providers.polygon import PolygonProvider
from puffin_trio.sim import AlpacaSimRecorder, FaultPlan, MarketModel, serve_alpaca

from ._peer import Peer, serve_peer
from ._support import FAST_RESTART, polygon_sim, serving, transport
from ._support import POLYGON_KEY as KEY
from ._support import collect_until as _collect_until
from ._support import states as _states

#: Every test here runs once per WebSocket transport.
pytestmark = pytest.mark.usefixtures("ws_transport")

Message = dict[str, Any]


def provider(url: str, **kwargs: Any) -> PolygonProvider:
    kwargs.setdefault("stale_after", 30.0)
    kwargs.setdefault("transport", transport())
    return PolygonProvider(key=KEY, url=url, **kwargs)


#: The shared helper, with a larger event budget (Polygon runs carry more events).
collect_until = partial(_collect_until, limit=50_000)


def states(seen: list[Event], session: str = "polygon") -> list[tuple[SessionState, int]]:
    return _states(seen, session)


def streaming_again(seen: list[Event]) -> bool:
    return (SessionState.STREAMING, 1) in states(seen)


def count(kind: type, n: int) -> Callable[[list[Event]], bool]:
    return lambda seen: sum(isinstance(e, kind) for e in seen) >= n


def sequenced(seen: list[Event], symbol: str = "AAPL") -> dict[str, list[int]]:
    """``seq`` of the delivered polygon trades and quotes per stream key, in delivery order."""
    out: dict[str, list[int]] = {}
    for e in seen:
        if isinstance(e, Trade | Quote) and e.provider == "polygon" and e.symbol == symbol:
            assert e.seq is not None
            out.setdefault(f"{'T' if isinstance(e, Trade) else 'Q'}:{symbol}", []).append(e.seq)
    return out


# --------------------------------------------------------------------------- lifecycle


async def test_states_come_before_the_data_and_the_data_is_what_was_sent(
    autojump_clock: MockClock,
) -> None:
    async with polygon_sim() as (url, rec, wall), Supervisor.open(wall_clock=wall) as sup:
        sup.add(provider(url), trades=["AAPL"], quotes=["AAPL", "MSFT"])
        async with sup.events() as events:
            seen = await collect_until(events, count(Trade, 30))
    assert [e.state for e in seen if isinstance(e, Status)] == [
        SessionState.CONNECTING,
        SessionState.AUTHENTICATING,
        SessionState.SUBSCRIBING,
        SessionState.STREAMING,
    ]
    first_data = next(i for i, e in enumerate(seen) if isinstance(e, Trade | Quote))
    announced = seen[first_data - 1]
    assert isinstance(announced, Status) and announced.state is SessionState.STREAMING
    record = rec.connections[0]
    assert record.actions("subscribe") == [
        {"action": "subscribe", "params": "Q.AAPL,Q.MSFT,T.AAPL"}
    ]
    data = [e for e in seen if isinstance(e, Trade | Quote)]
    sent = record.data_messages()[: len(data)]
    assert [(e.symbol, e.seq, e.ts_event) for e in data] == [
        (m["sym"], m["q"], m["t"] * 1_000_000) for m in sent
    ]
    trades = [(e, m) for e, m in zip(data, sent, strict=True) if isinstance(e, Trade)]
    assert all((e.price, e.size, e.trade_id) == (m["p"], m["s"], m["i"]) for e, m in trades)


async def test_dropped_connection_reconnects_resubscribes_and_announces_the_gap(
    autojump_clock: MockClock,
) -> None:
    async with polygon_sim(faults=FaultPlan.drop_after(40)) as (url, rec, wall):
        async with Supervisor.open(wall_clock=wall, restart=FAST_RESTART) as sup:
            sup.add(provider(url), trades=["AAPL"], quotes=["MSFT"])
            async with sup.events() as events:
                seen = await collect_until(
                    events, lambda s: streaming_again(s) and isinstance(s[-1], Trade | Quote)
                )
            stats = sup.statistics().sessions["polygon"]
    assert rec.accepted == 2
    first, second = rec.connections
    assert first.actions("subscribe") == second.actions("subscribe")
    gaps = [e for e in seen if isinstance(e, Gap)]
    assert [g.reason for g in gaps] == [GapReason.RECONNECT]
    assert stats.connects == 2


@pytest.mark.parametrize("code", [1000, 1008, 1011])
async def test_a_server_close_with_any_code_is_transient(
    autojump_clock: MockClock, code: int
) -> None:
    async with polygon_sim(faults=FaultPlan.close_after(20, code=code)) as (url, rec, wall):
        async with Supervisor.open(wall_clock=wall, restart=FAST_RESTART) as sup:
            sup.add(provider(url), quotes=["AAPL"])
            async with sup.events() as events:
                seen = await collect_until(events, streaming_again)
    assert rec.accepted == 2
    assert rec.connections[0].close_code == code
    reconnecting = [
        e for e in seen if isinstance(e, Status) and e.state is SessionState.RECONNECTING
    ]
    assert "ConnectionLost" in reconnecting[0].detail


# --------------------------------------------------------------------------- sequence numbers


async def test_contiguous_gaps_are_announced_exactly_where_they_are(
    autojump_clock: MockClock,
) -> None:
    faults = FaultPlan.gap_after(30, count=5) + FaultPlan.gap_after(60, count=2)
    async with polygon_sim(faults=faults, sequence="contiguous") as (url, rec, wall):
        async with Supervisor.open(wall_clock=wall) as sup:
            sup.add(provider(url, sequence="strict"), trades=["AAPL"], quotes=["AAPL"])
            async with sup.events() as events:
                seen = await collect_until(events, count(Quote, 150))
            stats = sup.statistics().sessions["polygon"]
    skipped: dict[str, list[int]] = {}
    for m in rec.connections[0].skipped:
        skipped.setdefault(f"{m['ev']}:{m['sym']}", []).append(m["q"])
    expected = []
    for stream, numbers in skipped.items():
        runs = [[numbers[0]]]
        for q in numbers[1:]:
            if q == runs[-1][-1] + 1:
                runs[-1].append(q)
            else:
                runs.append([q])
        expected += [(stream, run[0], run[-1] + 1, len(run)) for run in runs]
    gaps = [e for e in seen if isinstance(e, Gap)]
    assert sorted((g.stream, g.expected, g.received, g.missing) for g in gaps) == sorted(expected)
    assert all(g.reason is GapReason.SEQUENCE and g.provider == "polygon" for g in gaps)
    assert stats.gaps == len(expected) and stats.duplicates == stats.late == 0
    for gap in gaps:  # announced right before the message it was waiting for
        after = next(e for e in seen[seen.index(gap) + 1 :] if isinstance(e, Trade | Quote))
        assert after.seq == gap.received and after.symbol == "AAPL"
    delivered = sequenced(seen)
    for stream, numbers in delivered.items():
        holes = set(skipped.get(stream, ()))
        assert numbers == [q for q in range(1, numbers[-1] + 1) if q not in holes]


async def test_polygon_sequences_with_holes_raise_no_gap(autojump_clock: MockClock) -> None:
    async with polygon_sim(sequence="polygon") as (url, rec, wall):
        async with Supervisor.open(wall_clock=wall) as sup:
            sup.add(provider(url), trades=["AAPL"], quotes=["AAPL"])
            async with sup.events() as events:
                seen = await collect_until(events, count(Quote, 150))
            stats = sup.statistics().sessions["polygon"]
    assert not [e for e in seen if isinstance(e, Gap)]
    assert stats.gaps == stats.duplicates == stats.late == 0
    sent = [m["q"] for m in rec.connections[0].data_messages() if m["ev"] == "Q"]
    assert sequenced(seen)["Q:AAPL"] == sent[: len(sequenced(seen)["Q:AAPL"])]


async def test_duplicates_and_reordering_are_dropped_and_counted(autojump_clock: MockClock) -> None:
    faults = FaultPlan.duplicate_after(20, count=3) + FaultPlan.reorder_after(40, count=4)
    async with polygon_sim(faults=faults, sequence="polygon") as (url, rec, wall):
        async with Supervisor.open(wall_clock=wall) as sup:
            sup.add(provider(url), quotes=["AAPL"])
            async with sup.events() as events:
                seen = await collect_until(events, count(Quote, 80))
            stats = sup.statistics().sessions["polygon"]
    assert (stats.duplicates, stats.late, stats.gaps) == (3, 3, 0)
    numbers = sequenced(seen)["Q:AAPL"]
    assert numbers == sorted(set(numbers)), "delivered in increasing order, each once"
    sent = [m["q"] for m in rec.connections[0].data_messages()]
    reordered = sent[40:44]
    assert reordered == sorted(reordered, reverse=True)
    assert reordered[0] in numbers and not set(reordered[1:]) & set(numbers)


async def test_contiguous_reordering_is_repaired_and_duplicates_dropped(
    autojump_clock: MockClock,
) -> None:
    faults = FaultPlan.reorder_after(20, count=5) + FaultPlan.duplicate_after(40, count=2)
    async with polygon_sim(faults=faults) as (url, _, wall):
        async with Supervisor.open(wall_clock=wall) as sup:
            sup.add(provider(url, sequence="strict"), quotes=["AAPL"])
            async with sup.events() as events:
                seen = await collect_until(events, count(Quote, 80))
            stats = sup.statistics().sessions["polygon"]
    numbers = sequenced(seen)["Q:AAPL"]
    assert numbers == list(range(1, len(numbers) + 1))
    assert (stats.duplicates, stats.late, stats.gaps) == (2, 0, 0)


# --------------------------------------------------------------------------- provider errors


async def test_auth_failure_is_fatal_after_exactly_one_connection(
    autojump_clock: MockClock,
) -> None:
    faults = FaultPlan.reject_auth(1, connection=None)
    async with polygon_sim(faults=faults) as (url, rec, wall):
        seen: list[Event] = []
        with pytest.raises(AuthenticationError) as info:
            async with Supervisor.open(wall_clock=wall, restart=FAST_RESTART) as sup:
                sup.add(provider(url), quotes=["AAPL"])
                async with sup.events() as events:
                    async for event in events:
                        seen.append(event)
        assert rec.accepted == 1
    assert info.value.code == "auth_failed"
    assert states(seen)[-1] == (SessionState.FAILED, 0)


async def test_a_topic_the_plan_lacks_is_fatal(autojump_clock: MockClock) -> None:
    async with polygon_sim(entitlements={"Q"}) as (url, rec, wall):
        with pytest.raises(SubscriptionError, match="not authorized"):
            async with Supervisor.open(wall_clock=wall, restart=FAST_RESTART) as sup:
                sup.add(provider(url), quotes=["AAPL"], trades=["AAPL"])
                with trio.fail_after(60):
                    await trio.sleep_forever()
        assert rec.accepted == 1


async def test_max_connections_waits_out_the_cooldown_before_reconnecting(
    autojump_clock: MockClock,
) -> None:
    faults = FaultPlan.connection_limit(connection=1)
    async with polygon_sim(faults=faults) as (url, rec, wall):
        async with Supervisor.open(wall_clock=wall, restart=FAST_RESTART) as sup:
            sup.add(provider(url, limit_cooldown=90.0), quotes=["AAPL"])
            times: dict[tuple[SessionState, int], float] = {}
            details: list[str] = []
            async with sup.events() as events:
                with trio.fail_after(600):
                    async for event in events:
                        if isinstance(event, Status):
                            times.setdefault((event.state, event.attempt), trio.current_time())
                            details.append(event.detail)
                            if (event.state, event.attempt) == (SessionState.STREAMING, 1):
                                break
    waited = times[(SessionState.CONNECTING, 1)] - times[(SessionState.RECONNECTING, 1)]
    assert 90.0 <= waited < 95.0
    assert any("ConnectionLimitError" in d for d in details)
    assert rec.accepted == 2
    assert rec.connections[0].close_code == 1008


async def test_a_second_session_on_the_same_key_evicts_the_first(
    autojump_clock: MockClock,
) -> None:
    def evicted(seen: list[Event]) -> int | None:
        for i, e in enumerate(seen):
            if isinstance(e, Status) and "ConnectionLimitError" in e.detail:
                return i
        return None

    async with polygon_sim() as (url, rec, wall):
        async with Supervisor.open(wall_clock=wall, restart=FAST_RESTART) as sup:
            sup.add(provider(url, limit_cooldown=30.0), quotes=["AAPL"])
            sup.add(provider(url, name="second"), quotes=["MSFT"])
            async with sup.events() as events:
                seen = await collect_until(
                    events,
                    lambda s: evicted(s) is not None and isinstance(s[-1], Quote),
                )
    index = evicted(seen)
    assert index is not None
    reconnecting = seen[index]
    assert isinstance(reconnecting, Status)
    # Both connect at once, so either may be first and be evicted by the other.
    cooldown, survivor = {"polygon": ("30.0", "MSFT"), "second": ("90.0", "AAPL")}[
        reconnecting.session
    ]
    assert reconnecting.detail.endswith(f"retry in {cooldown} s")
    assert {e.symbol for e in seen[index:] if isinstance(e, Quote)} == {survivor}
    [evicted_record] = [r for r in rec.connections if r.close_code is not None]
    assert evicted_record.close_code == 1008
    assert evicted_record.statuses()[-1]["status"] == "max_connections"


async def test_malformed_and_unknown_messages_are_counted_and_streaming_goes_on(
    caplog: pytest.LogCaptureFixture, autojump_clock: MockClock
) -> None:
    caplog.set_level(logging.WARNING, logger="puffin_trio")
    faults = FaultPlan.malformed_after(20) + FaultPlan.unknown_message_after(30)
    async with polygon_sim(faults=faults) as (url, rec, wall):
        async with Supervisor.open(wall_clock=wall) as sup:
            sup.add(provider(url), quotes=["AAPL"])
            async with sup.events() as events:
                await collect_until(events, count(Quote, 80))
            stats = sup.statistics().sessions["polygon"]
    assert (stats.malformed, stats.unknown) == (1, 1)
    assert rec.accepted == 1
    assert [r.getMessage() for r in caplog.records if "malformed" in r.getMessage()]


async def test_missing_key_fails_before_any_connection(
    monkeypatch: pytest.MonkeyPatch, autojump_clock: MockClock
) -> None:
    monkeypatch.delenv("MASSIVE_API_KEY", raising=False)
    monkeypatch.delenv("POLYGON_API_KEY", raising=False)
    async with polygon_sim() as (url, rec, wall), Supervisor.open(wall_clock=wall) as sup:
        with pytest.raises(ConfigurationError, match="MASSIVE_API_KEY"):
            sup.add(PolygonProvider(url=url, transport=transport()), quotes=["AAPL"])
        with pytest.raises(ConfigurationError, match="only on the crypto cluster"):
            sup.add(provider(url), books=["AAPL"])
        await trio.sleep(1)
        assert rec.accepted == 0


async def test_the_key_never_appears_in_repr_logs_or_exceptions(
    caplog: pytest.LogCaptureFixture, autojump_clock: MockClock
) -> None:
    caplog.set_level(logging.DEBUG)
    faults = FaultPlan.drop_after(10) + FaultPlan.reject_auth(1, connection=2)
    async with polygon_sim(faults=faults) as (url, _, wall):
        p = provider(url)
        with pytest.raises(AuthenticationError) as info:
            async with Supervisor.open(wall_clock=wall, restart=FAST_RESTART) as sup:
                sup.add(p, quotes=["AAPL"])
                async with sup.events() as events:
                    async for event in events:
                        assert KEY not in repr(event)
        texts = [repr(p), str(info.value), repr(info.value), repr(sup.statistics())]
        texts += [r.getMessage() for r in caplog.records] + [str(r.args) for r in caplog.records]
    assert not [t for t in texts if KEY in t]


# --------------------------------------------------------------------------- subscriptions


async def test_live_subscribe_and_unsubscribe_are_confirmed_per_topic(
    autojump_clock: MockClock,
) -> None:
    async with polygon_sim(symbols=["AAPL", "NVDA"]) as (url, rec, wall):
        async with Supervisor.open(wall_clock=wall) as sup:
            sup.add(provider(url), quotes=["AAPL"])
            async with sup.events(capacity=100_000) as events:
                await collect_until(events, lambda s: isinstance(s[-1], Quote))
                assert await sup.subscribe("polygon", quotes=["NVDA"], trades=["NVDA"]) is True
                await collect_until(
                    events, lambda s: isinstance(s[-1], Trade) and s[-1].symbol == "NVDA"
                )
                assert await sup.unsubscribe("polygon", quotes=["NVDA"], trades=["NVDA"]) is True
            stats = sup.statistics().sessions["polygon"]
    assert rec.connections[0].topics == ["Q.AAPL"]
    assert stats.desired == stats.confirmed == {"quotes": frozenset({"AAPL"})}


async def test_large_subscriptions_are_split_and_every_topic_confirmed(
    autojump_clock: MockClock,
) -> None:
    symbols = [f"S{i:04d}" for i in range(700)]
    async with polygon_sim(symbols=["AAPL"], rate=10.0) as (url, rec, wall):
        async with Supervisor.open(wall_clock=wall) as sup:
            sup.add(provider(url), trades=symbols)
            async with sup.events() as events:
                await collect_until(
                    events, lambda s: (SessionState.STREAMING, 0) in states(s), seconds=30
                )
            stats = sup.statistics().sessions["polygon"]
    subscribes = rec.connections[0].actions("subscribe")
    assert len(subscribes) > 1
    topics = [t for m in subscribes for t in m["params"].split(",")]
    assert topics == [f"T.{s}" for s in symbols]
    assert stats.confirmed == {"trades": frozenset(symbols)}


# --------------------------------------------------------------------------- crypto books


async def test_level2_updates_rebuild_the_simulators_book(autojump_clock: MockClock) -> None:
    model = MarketModel(["BTC/USD", "ETH/USD"], seed=11)
    faults = FaultPlan.silent_after(120)
    async with polygon_sim(market="crypto", model=model, faults=faults) as (url, _, wall):
        async with Supervisor.open(wall_clock=wall) as sup:
            sup.add(provider(url, market="crypto"), books=["BTC-USD", "ETH-USD"])
            async with sup.events() as events:
                seen = await collect_until(events, count(OrderBookUpdate, 120))
    books = {"BTC-USD": OrderBook("BTC-USD"), "ETH-USD": OrderBook("ETH-USD")}
    for update in (e for e in seen if isinstance(e, OrderBookUpdate)):
        assert update.snapshot
        books[update.symbol].apply(update)
    for pair, book in books.items():
        truth = model.book_snapshot(pair.replace("-", "/"), 0)
        assert book.is_valid
        assert list(book.bids) == list(truth.bids)
        assert list(book.asks) == list(truth.asks)


# --------------------------------------------------------------------------- several providers


@asynccontextmanager
async def alpaca_sim(
    wall: Callable[[], int], **kwargs: Any
) -> AsyncIterator[tuple[str, AlpacaSimRecorder]]:
    recorder = AlpacaSimRecorder()
    async with serving(
        serve_alpaca,
        key="ak",
        secret="as",
        symbols=["AAPL", "MSFT"],
        rate=100.0,
        recorder=recorder,
        wall_clock=wall,
        **kwargs,
    ) as port:
        yield f"ws://127.0.0.1:{port}/v2/iex", recorder


@pytest.mark.parametrize("failing", ["polygon", "alpaca"])
async def test_one_provider_restarting_costs_the_other_no_event(
    autojump_clock: MockClock, failing: str
) -> None:
    """Alpaca and Polygon in one supervisor: one drops and reconnects while every event
    the healthy one sent arrives, in order, with contiguous trade ids / sequence numbers."""
    drop = FaultPlan.drop_after(150)
    async with (
        polygon_sim(faults=drop if failing == "polygon" else FaultPlan()) as (purl, prec, wall),
        alpaca_sim(wall, faults=drop if failing == "alpaca" else FaultPlan()) as (aurl, arec),
    ):
        async with Supervisor.open(wall_clock=wall, restart=FAST_RESTART) as sup:
            sup.add(provider(purl, sequence="strict"), trades=["AAPL"], quotes=["AAPL"])
            sup.add(
                AlpacaProvider(
                    key="ak",
                    secret="as",
                    url=aurl,
                    encoding="json",
                    stale_after=30,
                    transport=transport(),
                ),
                trades=["AAPL", "MSFT"],
                quotes=["MSFT"],
            )
            healthy = "alpaca" if failing == "polygon" else "polygon"
            async with sup.events(capacity=100_000) as events:
                seen = await collect_until(
                    events,
                    lambda s: (
                        (SessionState.STREAMING, 1) in states(s, failing)
                        and sum(isinstance(e, Trade) and e.provider == healthy for e in s[-200:])
                        >= 20
                    ),
                )
            stats = sup.statistics().sessions
    assert stats[failing].connects == 2 and stats[healthy].connects == 1
    assert (SessionState.RECONNECTING, 1) not in states(seen, healthy)
    if healthy == "alpaca":
        assert arec.accepted == 1
        sent = [m for m in arec.connections[0].data_messages() if m["T"] == "t"]
        got = [e for e in seen if isinstance(e, Trade) and e.provider == "alpaca"]
        assert [(e.symbol, int(e.trade_id)) for e in got] == [
            (m["S"], m["i"]) for m in sent[: len(got)]
        ]
        for symbol in ("AAPL", "MSFT"):
            ids = [int(e.trade_id) for e in got if e.symbol == symbol]
            assert ids == list(range(ids[0], ids[0] + len(ids)))
    else:
        assert prec.accepted == 1
        assert not [e for e in seen if isinstance(e, Gap) and e.provider == "polygon"]
        sent = prec.connections[0].data_messages()
        data = [e for e in seen if isinstance(e, Trade | Quote) and e.provider == "polygon"]
        assert [(e.symbol, e.seq) for e in data] == [(m["sym"], m["q"]) for m in sent[: len(data)]]
        for numbers in sequenced(seen).values():
            assert numbers == list(range(1, len(numbers) + 1))


async def test_what_the_guard_holds_when_the_connection_drops_is_delivered_not_lost(
    autojump_clock: MockClock,
) -> None:
    """A hole, then the connection drops while the guard still holds what came after it:
    every message sent on the first connection is delivered or announced missing, in
    order, before the reconnect begins."""
    faults = FaultPlan.gap_after(30, count=3) + FaultPlan.drop_after(33)
    async with polygon_sim(faults=faults, sequence="contiguous") as (url, rec, wall):
        async with Supervisor.open(wall_clock=wall, restart=FAST_RESTART) as sup:
            sup.add(provider(url, sequence="strict"), trades=["AAPL"], quotes=["AAPL"])
            async with sup.events() as events:
                seen = await collect_until(events, streaming_again)
    reconnect_at = seen.index(next(e for e in seen if isinstance(e, Status) and e.attempt == 1))
    first = seen[:reconnect_at]
    sent: dict[str, list[int]] = {}
    for m in rec.connections[0].data_messages():
        sent.setdefault(f"{m['ev']}:{m['sym']}", []).append(m["q"])
    skipped = {f"{m['ev']}:{m['sym']}": m["q"] for m in rec.connections[0].skipped}
    assert skipped, "the fault skipped sequence numbers"
    assert sequenced(first) == sent  # every message sent before the drop, in order
    announced = {
        (g.stream, q)
        for g in first
        if isinstance(g, Gap) and g.reason is GapReason.SEQUENCE
        for q in range(g.expected or 0, g.received or 0)
    }
    assert announced == {
        (s, q) for s, q in ((f"{m['ev']}:{m['sym']}", m["q"]) for m in rec.connections[0].skipped)
    }


async def test_a_reconnects_data_before_its_confirmation_goes_through_a_fresh_guard(
    autojump_clock: MockClock,
) -> None:
    """A server that restarted its numbering sends data on the reconnect before it confirms
    the subscription: that data goes through the new connection's sequence guard, so its
    first number is a start, not a message far behind the last connection's watermark."""
    ms = 1_796_314_379_320

    def trades(*numbers: int) -> str:
        return orjson.dumps(
            [
                {"ev": "T", "sym": "AAPL", "i": str(q), "x": 4, "p": 100.0, "s": 10,
                 "t": ms + q, "q": q, "z": 3}
                for q in numbers
            ]
        ).decode()  # fmt: skip

    def status(status: str, message: str) -> str:
        return orjson.dumps([{"ev": "status", "status": status, "message": message}]).decode()

    async def script(peer: Peer) -> None:
        first = server.peers[0] is peer
        await peer.send_text(status("connected", "Connected Successfully"))
        await peer.receive()  # auth
        await peer.send_text(status("auth_success", "authenticated"))
        await peer.receive()  # subscribe
        if first:
            await peer.send_text(status("success", "subscribed to: T.AAPL"))
            await peer.send_text(trades(10, 11, 12))
            await peer.fin()
            return
        await peer.send_text(trades(1))
        await peer.send_text(status("success", "subscribed to: T.AAPL"))
        await peer.send_text(trades(2, 3))
        await peer.drain()

    async with serve_peer(script) as server:
        async with Supervisor.open(restart=FAST_RESTART) as sup:
            sup.add(provider(server.url), trades=["AAPL"])
            async with sup.events() as events:
                seen = await collect_until(events, count(Trade, 6), seconds=60)
            stats = sup.statistics().sessions["polygon"]
    assert [e.seq for e in seen if isinstance(e, Trade)] == [10, 11, 12, 1, 2, 3]
    assert (stats.connects, stats.late, stats.duplicates) == (2, 0, 0)
