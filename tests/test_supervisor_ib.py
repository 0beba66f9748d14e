"""IB end to end: fake TWS -> framed TCP -> IBProtocol -> session -> supervisor -> consumers.

Every test runs over real loopback TCP against ``serve_ib`` on trio's
autojump ``MockClock`` (see tests/_support.py for why that is
sound), through ``Supervisor.add(IBProvider(host=..., port=..., client_id=...))``.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
from trio.testing import MockClock

from puffin_trio import (
    AuthenticationError,
    Bar,
    Event,
    Gap,
    OrderBookUpdate,
    Quote,
    SessionState,
    Status,
    Supervisor,
    Trade,
)
from puffin_trio.providers.ib import IBProvider
from puffin_trio.sim import FaultPlan
from puffin_trio.sim.ib import IBConnectionRecord

from ._support import FAST_RESTART, collect_until, ib_sim, states, streaming_again


def ib(port: int, **kwargs: Any) -> IBProvider:
    kwargs.setdefault("stale_after", 30.0)
    return IBProvider(host="127.0.0.1", port=port, client_id=kwargs.pop("client_id", 1), **kwargs)


def details(seen: list[Event], state: SessionState | None = None) -> list[str]:
    return [
        e.detail
        for e in seen
        if isinstance(e, Status) and (state is None or e.state is state) and e.detail
    ]


def request_ids(record: IBConnectionRecord) -> dict[str, list[int]]:
    """Market data request ids per request message id ("1", "97", "10", "50")."""
    out: dict[str, list[int]] = {}
    for m in record.received:
        if m[0] in ("1", "10", "50"):
            out.setdefault(m[0], []).append(int(m[2]))
        elif m[0] == "97":
            out.setdefault(m[0], []).append(int(m[1]))
    return out


# --------------------------------------------------------------------------- streaming


async def test_every_channel_streams_from_the_fake_tws_after_the_lifecycle_states(
    autojump_clock: MockClock,
) -> None:
    async with ib_sim() as (port, rec, wall), Supervisor.open(wall_clock=wall) as sup:
        sup.add(ib(port), trades=["AAPL"], quotes=["AAPL"], books=["MSFT"], bars=["AAPL"])
        async with sup.events(capacity=100_000) as events:
            seen = await collect_until(
                events,
                lambda s: all(any(isinstance(e, k) for e in s) for k in (Trade, Quote, Bar)),
            )
        stats = sup.statistics().sessions["ib"]
    assert [e.state for e in seen if isinstance(e, Status)] == [
        SessionState.CONNECTING,
        SessionState.AUTHENTICATING,
        SessionState.SUBSCRIBING,
        SessionState.STREAMING,
    ]
    books = [e for e in seen if isinstance(e, OrderBookUpdate)]
    assert books[0].snapshot and not any(b.snapshot for b in books[1:])
    assert {e.symbol for e in seen if isinstance(e, Trade | Quote | Bar)} == {"AAPL"}
    record = rec.connections[0]
    assert record.client_id == 1
    assert [m[14] for m in record.requests("97")] == ["AllLast"]
    assert [m[4] for m in record.requests("1")] == ["AAPL"]
    assert [(m[4], m[15], m[16]) for m in record.requests("10")] == [("MSFT", "10", "1")]
    assert [(m[4], m[15], m[16]) for m in record.requests("50")] == [("AAPL", "5", "TRADES")]
    assert stats.malformed == 0 and stats.connects == 1


async def test_req_current_time_is_the_heartbeat_and_measures_the_round_trip(
    autojump_clock: MockClock,
) -> None:
    async with ib_sim() as (port, rec, wall), Supervisor.open(wall_clock=wall) as sup:
        sup.add(ib(port, ping_interval=2.0), quotes=["AAPL"])
        async with sup.events() as events:
            with trio.move_on_after(9):
                async for _ in events:
                    pass
        assert sup.statistics().sessions["ib"].heartbeat_rtt is not None
    assert len(rec.connections[0].requests("49")) == 4


async def test_unanswered_current_time_is_a_heartbeat_timeout_and_reconnects(
    autojump_clock: MockClock,
) -> None:
    """No ``currentTime`` reply, and nothing else either: TWS is gone."""
    faults = FaultPlan.ignore_pings_after(5) + FaultPlan.silent_after(5)
    async with ib_sim(faults=faults) as (port, rec, wall):
        async with Supervisor.open(wall_clock=wall, restart=FAST_RESTART) as sup:
            sup.add(ib(port, ping_interval=5.0, ping_timeout=3.0), trades=["AAPL"])
            async with sup.events() as events:
                seen = await collect_until(events, streaming_again)
    assert "HeartbeatTimeout" in details(seen, SessionState.RECONNECTING)[0]
    assert rec.accepted == 2


async def test_a_tws_that_streams_but_answers_no_current_time_is_kept(
    autojump_clock: MockClock,
) -> None:
    """Inbound data is a sign of life: the reply deadline applies only when nothing arrives."""
    async with ib_sim(faults=FaultPlan.ignore_pings_after(5)) as (port, rec, wall):
        async with Supervisor.open(wall_clock=wall, restart=FAST_RESTART) as sup:
            sup.add(ib(port, ping_interval=5.0, ping_timeout=3.0), trades=["AAPL"])
            async with sup.events() as events:
                seen: list[Event] = []
                with trio.move_on_after(60):
                    async for event in events:
                        seen.append(event)
                        assert len(seen) < 100_000
    assert SessionState.RECONNECTING not in [e.state for e in seen if isinstance(e, Status)]
    assert sum(isinstance(e, Trade) for e in seen) > 100
    assert rec.accepted == 1


async def test_a_dropped_socket_reconnects_with_a_fresh_handshake_and_fresh_request_ids(
    autojump_clock: MockClock,
) -> None:
    async with ib_sim(faults=FaultPlan.drop_after(40)) as (port, rec, wall):
        async with Supervisor.open(wall_clock=wall, restart=FAST_RESTART) as sup:
            sup.add(ib(port), trades=["AAPL"], quotes=["AAPL", "MSFT"], books=["MSFT"])
            async with sup.events() as events:
                seen = await collect_until(
                    events, lambda s: streaming_again(s) and isinstance(s[-1], Trade | Quote)
                )
    first, second = rec.connections
    assert second.version_range == "v157..178"
    assert second.requests("71") == [["71", "2", "1", ""]]
    old, new = request_ids(first), request_ids(second)
    assert {k: len(v) for k, v in old.items()} == {k: len(v) for k, v in new.items()}
    assert {k: len(v) for k, v in new.items()} == {"1": 2, "97": 1, "10": 1}
    assert sorted(i for v in new.values() for i in v) == [1, 2, 3, 4], "fresh ids, from 1"
    assert [g for g in seen if isinstance(g, Gap)], "the outage is announced"


# --------------------------------------------------------------------------- TWS notices


async def test_connectivity_loss_marks_data_stale_and_1102_resubscribes(
    autojump_clock: MockClock,
) -> None:
    faults = FaultPlan.connectivity_loss_after(30, duration=120.0, code=1102)
    async with ib_sim(faults=faults) as (port, rec, wall):
        async with Supervisor.open(wall_clock=wall, restart=FAST_RESTART) as sup:
            sup.add(ib(port, stale_after=30.0), trades=["AAPL"], books=["MSFT"])
            async with sup.events(capacity=100_000) as events:
                seen = await collect_until(events, lambda s: any("1100" in d for d in details(s)))
                assert sup.statistics().sessions["ib"].stale
                seen += await collect_until(
                    events, lambda s: sum(isinstance(e, Trade) for e in s) >= 20
                )
            stats = sup.statistics().sessions["ib"]
    announced = details(seen)
    assert announced[0].startswith("data stale: 1100")
    assert announced[1:] == [announced[1]], "one notice, one announcement"
    assert announced[1].startswith("data fresh: 1102")
    assert not stats.stale and stats.resubscribes == 1
    assert rec.accepted == 1, "a TWS that lost IB is not helped by reconnecting to it"
    record = rec.connections[0]
    ids = request_ids(record)
    assert len(ids["97"]) == 2 and len(ids["10"]) == 2 and len(set(ids["97"] + ids["10"])) == 4
    assert [m[:2] for m in record.requests("98")] == [["98", str(ids["97"][0])]]
    assert [m[2] for m in record.requests("11")] == [str(ids["10"][0])]
    resubscribed = [i for i, e in enumerate(seen) if isinstance(e, OrderBookUpdate) and e.snapshot]
    assert len(resubscribed) == 2, "the new depth request starts with a fresh snapshot"


async def test_restoration_with_data_lost_resubscribes_without_cancelling(
    autojump_clock: MockClock,
) -> None:
    faults = FaultPlan.connectivity_loss_after(30, duration=10.0, code=1101)
    async with ib_sim(faults=faults) as (port, rec, wall):
        async with Supervisor.open(wall_clock=wall) as sup:
            sup.add(ib(port), trades=["AAPL"])
            async with sup.events(capacity=100_000) as events:
                seen = await collect_until(events, lambda s: any("1101" in d for d in details(s)))
                await collect_until(events, lambda s: sum(isinstance(e, Trade) for e in s) >= 5)
    assert details(seen)[-1].startswith("data fresh: 1101")
    record = rec.connections[0]
    assert len(record.requests("97")) == 2 and record.requests("98") == []


async def test_a_broken_data_farm_marks_data_stale_until_it_is_ok_again(
    autojump_clock: MockClock,
) -> None:
    faults = FaultPlan.farm_status_after(10, code=2103) + FaultPlan.farm_status_after(40, code=2104)
    async with ib_sim(faults=faults) as (port, rec, wall), Supervisor.open(wall_clock=wall) as sup:
        sup.add(ib(port), trades=["AAPL"])
        async with sup.events() as events:
            seen = await collect_until(events, lambda s: len(details(s)) >= 2)
    assert [d.split(":")[0] for d in details(seen)] == ["data stale", "data fresh"]
    assert "2103" in details(seen)[0] and "2104" in details(seen)[1]
    assert rec.connections[0].faults == ["farm_status", "farm_status"]


async def test_a_taken_client_id_is_fatal_after_exactly_one_connection(
    autojump_clock: MockClock,
) -> None:
    async with ib_sim(faults=FaultPlan.reject_auth(326, connection=None)) as (port, rec, wall):
        seen: list[Event] = []
        with pytest.raises(AuthenticationError) as info:
            async with Supervisor.open(wall_clock=wall, restart=FAST_RESTART) as sup:
                sup.add(ib(port, client_id=9), quotes=["AAPL"])
                async with sup.events() as events:
                    async for event in events:
                        seen.append(event)
        assert rec.accepted == 1
    assert info.value.code == 326
    assert "client id 9" in str(info.value) and "client_id=" in str(info.value)
    assert states(seen)[-1] == (SessionState.FAILED, 0)


async def test_a_second_session_with_the_same_client_id_is_refused(
    autojump_clock: MockClock,
) -> None:
    async with (
        ib_sim() as (port, rec, wall),
        Supervisor.open(wall_clock=wall, fail_fast=False) as sup,
    ):
        sup.add(ib(port, client_id=4, name="first"), trades=["AAPL"])
        async with sup.events() as events:
            await collect_until(events, lambda s: (SessionState.STREAMING, 0) in states(s))
            sup.add(ib(port, client_id=4, name="second"), trades=["MSFT"])
            await collect_until(events, lambda s: (SessionState.FAILED, 0) in states(s))
        stats = sup.statistics().sessions
        assert stats["first"].state is SessionState.STREAMING
        assert stats["second"].state is SessionState.FAILED
        assert isinstance(sup.failures["second"], AuthenticationError)
    assert rec.accepted == 2


async def test_an_unknown_symbol_drops_only_its_own_subscription(
    autojump_clock: MockClock,
) -> None:
    async with ib_sim() as (port, rec, wall), Supervisor.open(wall_clock=wall) as sup:
        sup.add(ib(port), quotes=["AAPL", "NOPE"], trades=["NOPE", "MSFT"])
        async with sup.events(capacity=100_000) as events:
            seen = await collect_until(
                events,
                lambda s: (
                    sum(isinstance(e, Quote) for e in s) >= 20
                    and sum(isinstance(e, Trade) for e in s) >= 20
                ),
            )
        stats = sup.statistics().sessions["ib"]
    assert stats.desired == {"quotes": frozenset({"AAPL"}), "trades": frozenset({"MSFT"})}
    assert stats.connects == 1 and rec.accepted == 1
    assert {e.symbol for e in seen if isinstance(e, Quote | Trade)} == {"AAPL", "MSFT"}


# --------------------------------------------------------------------------- subscriptions


async def test_a_silent_feed_is_resubscribed_with_new_request_ids_then_reconnected(
    autojump_clock: MockClock,
) -> None:
    async with ib_sim(faults=FaultPlan.silent_after(10)) as (port, rec, wall):
        async with Supervisor.open(wall_clock=wall, restart=FAST_RESTART) as sup:
            sup.add(ib(port, stale_after=30.0), trades=["AAPL"])
            async with sup.events() as events:
                seen = await collect_until(events, streaming_again)
    assert "StaleFeedError" in details(seen, SessionState.RECONNECTING)[0]
    first = rec.connections[0]
    old_id, new_id = request_ids(first)["97"]
    assert old_id != new_id
    assert first.requests("98") == [["98", str(old_id)]]


async def test_live_subscribe_and_unsubscribe_send_requests_and_cancels(
    autojump_clock: MockClock,
) -> None:
    async with ib_sim() as (port, rec, wall), Supervisor.open(wall_clock=wall) as sup:
        sup.add(ib(port), quotes=["AAPL"])
        async with sup.events(capacity=100_000) as events:
            await collect_until(events, lambda s: isinstance(s[-1], Quote))
            assert await sup.subscribe("ib", books=["MSFT"]) is True
            await collect_until(events, lambda s: isinstance(s[-1], OrderBookUpdate))
            assert await sup.unsubscribe("ib", books=["MSFT"]) is True
        stats = sup.statistics().sessions["ib"]
    record = rec.connections[0]
    [depth] = record.requests("10")
    assert record.requests("11") == [["11", "1", depth[2], "1"]]
    assert stats.desired == {"quotes": frozenset({"AAPL"})}


async def test_many_subscriptions_are_paced_below_tws_message_limit(
    autojump_clock: MockClock,
) -> None:
    symbols = [f"S{i:03d}" for i in range(60)]
    async with ib_sim(symbols=["AAPL", *symbols], rate=10.0) as (port, rec, wall):
        async with Supervisor.open(wall_clock=wall) as sup:
            sup.add(ib(port), trades=symbols)
            times: dict[SessionState, float] = {}
            async with sup.events() as events:
                with trio.fail_after(60):
                    async for event in events:
                        if isinstance(event, Status):
                            times[event.state] = trio.current_time()
                            if event.state is SessionState.STREAMING:
                                break
    # Prologue + startApi + 60 requests = 62 messages: the 46th waits for the
    # first one-second window to pass.
    assert times[SessionState.STREAMING] - times[SessionState.CONNECTING] >= 1.0
    assert len(rec.connections[0].requests("97")) == 60
