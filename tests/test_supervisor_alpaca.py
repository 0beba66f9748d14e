"""The supervised pipeline end to end: Alpaca simulator -> session -> supervisor -> consumers.

Every test runs over a real loopback WebSocket against ``serve_alpaca``, on
trio's autojump ``MockClock`` (pytest-trio's ``autojump_clock`` fixture); see
tests/_support.py for why that is sound.
"""

from __future__ import annotations

import contextlib
import logging
from contextlib import AsyncExitStack
from functools import partial
from typing import Any

import pytest
import trio
from trio.testing import MockClock
from trio_websocket import ConnectionClosed, WebSocketRequest, serve_websocket

from puffin_trio import (
    AuthenticationError,
    ConfigurationError,
    ConsumerStatistics,
    Event,
    EventReceiver,
    Gap,
    GapReason,
    Quote,
    RestartBudgetExceeded,
    RestartPolicy,
    SessionState,
    SessionTimeouts,
    Status,
    Supervisor,
    Trade,
)
from puffin_trio.providers.alpaca import AlpacaProvider
from puffin_trio.sim import FaultPlan

from ._support import (
    FAST_RESTART,
    KEY,
    MARKET_CLOSED_NS,
    MARKET_OPEN_NS,
    SECRET,
    alpaca_sim,
    collect_until,
    states,
    streaming_again,
)


def provider(url: str, **kwargs: Any) -> AlpacaProvider:
    kwargs.setdefault("stale_after", 30.0)
    kwargs.setdefault("encoding", "json")
    return AlpacaProvider(feed="iex", key=KEY, secret=SECRET, url=url, **kwargs)


# --------------------------------------------------------------------------- lifecycle


async def test_session_announces_each_lifecycle_state_before_the_data(
    autojump_clock: MockClock,
) -> None:
    async with alpaca_sim() as (url, _, wall), Supervisor.open(wall_clock=wall) as sup:
        sup.add(provider(url), trades=["AAPL"], quotes=["AAPL"])
        async with sup.events() as events:
            seen = await collect_until(events, lambda s: isinstance(s[-1], Trade))
    lifecycle = [e.state for e in seen if isinstance(e, Status)]
    assert lifecycle == [
        SessionState.CONNECTING,
        SessionState.AUTHENTICATING,
        SessionState.SUBSCRIBING,
        SessionState.STREAMING,
    ]
    first_data = next(i for i, e in enumerate(seen) if isinstance(e, Trade | Quote))
    assert isinstance(seen[first_data - 1], Status)
    assert seen[first_data - 1].state is SessionState.STREAMING


async def test_abrupt_close_reconnects_resubscribes_and_announces_the_gap(
    autojump_clock: MockClock,
) -> None:
    async with alpaca_sim(faults=FaultPlan.drop_after(40)) as (url, rec, wall):
        async with Supervisor.open(wall_clock=wall, restart=FAST_RESTART) as sup:
            sup.add(provider(url), trades=["AAPL"], quotes=["AAPL", "MSFT"])
            async with sup.events() as events:
                seen = await collect_until(
                    events, lambda s: streaming_again(s) and isinstance(s[-1], Trade | Quote)
                )
            stats = sup.statistics().sessions["alpaca"]
    assert rec.accepted == 2
    first, second = rec.connections
    assert first.actions("subscribe") == second.actions("subscribe")
    assert second.actions("subscribe") == [
        {"action": "subscribe", "trades": ["AAPL"], "quotes": ["AAPL", "MSFT"]}
    ]
    assert (SessionState.RECONNECTING, 1) in states(seen)
    gaps = [e for e in seen if isinstance(e, Gap)]
    assert len(gaps) == 1
    gap = gaps[0]
    assert gap.reason is GapReason.RECONNECT
    assert gap.window_start is not None and gap.window_end is not None
    assert gap.window_start < gap.window_end
    # The gap sits right after the reconnect's SUBSCRIBING status, before any of its data.
    index = seen.index(gap)
    before = seen[index - 1]
    assert isinstance(before, Status)
    assert (before.state, before.attempt) == (SessionState.SUBSCRIBING, 1)
    assert not any(isinstance(e, Trade | Quote) for e in seen[seen.index(before) : index])
    assert stats.connects == 2 and stats.reconnects == 1


async def test_heartbeat_timeout_restarts_the_session(autojump_clock: MockClock) -> None:
    """No pong, and nothing else either: the link is dead."""
    faults = FaultPlan.ignore_pings_after(5) + FaultPlan.silent_after(5)
    async with alpaca_sim(faults=faults) as (url, rec, wall):
        async with Supervisor.open(wall_clock=wall, restart=FAST_RESTART) as sup:
            sup.add(provider(url, ping_interval=5.0, ping_timeout=3.0), quotes=["AAPL"])
            async with sup.events() as events:
                seen = await collect_until(events, streaming_again)
    reconnecting = [
        e for e in seen if isinstance(e, Status) and e.state is SessionState.RECONNECTING
    ]
    assert "HeartbeatTimeout" in reconnecting[0].detail
    assert rec.accepted == 2


async def test_a_link_that_streams_but_answers_no_ping_is_kept(autojump_clock: MockClock) -> None:
    """Inbound data is a sign of life: the pong deadline applies only when nothing arrives."""
    faults = FaultPlan.ignore_pings_after(5)
    async with alpaca_sim(faults=faults, rate=20.0) as (url, rec, wall):
        async with Supervisor.open(wall_clock=wall, restart=FAST_RESTART) as sup:
            sup.add(provider(url, ping_interval=5.0, ping_timeout=3.0), quotes=["AAPL"])
            async with sup.events() as events:
                seen: list[Event] = []
                with trio.move_on_after(60):
                    async for event in events:
                        seen.append(event)
                        assert len(seen) < 10_000
    assert SessionState.RECONNECTING not in [e.state for e in seen if isinstance(e, Status)]
    assert sum(isinstance(e, Quote) for e in seen) > 60 * 20 * 0.9
    assert rec.accepted == 1


async def test_heartbeat_measures_round_trip_time(autojump_clock: MockClock) -> None:
    async with alpaca_sim() as (url, _, wall), Supervisor.open(wall_clock=wall) as sup:
        sup.add(provider(url, ping_interval=1.0), quotes=["AAPL"])
        async with sup.events() as events:
            with trio.move_on_after(5):
                async for _ in events:
                    pass
        assert sup.statistics().sessions["alpaca"].heartbeat_rtt is not None


async def test_silent_feed_in_market_hours_is_resubscribed_then_reconnected(
    autojump_clock: MockClock,
) -> None:
    faults = FaultPlan.silent_after(10)
    async with alpaca_sim(faults=faults, wall_ns=MARKET_OPEN_NS) as (url, rec, wall):
        async with Supervisor.open(wall_clock=wall, restart=FAST_RESTART) as sup:
            sup.add(provider(url, stale_after=30.0), trades=["AAPL"], quotes=["AAPL"])
            async with sup.events() as events:
                seen = await collect_until(events, streaming_again)
            stats = sup.statistics().sessions["alpaca"]
    first = rec.connections[0]
    _initial, *again = first.actions("subscribe")
    resubscribed = sorted(
        (ch, sym) for m in again for ch in ("trades", "quotes") for sym in m.get(ch, ())
    )
    assert resubscribed == [("quotes", "AAPL"), ("trades", "AAPL")], "each silent topic once"
    reconnecting = [
        e for e in seen if isinstance(e, Status) and e.state is SessionState.RECONNECTING
    ]
    assert "StaleFeedError" in reconnecting[0].detail
    assert stats.resubscribes == len(again)
    assert rec.accepted == 2


async def test_silent_feed_outside_market_hours_is_left_alone(autojump_clock: MockClock) -> None:
    faults = FaultPlan.silent_after(10)
    async with alpaca_sim(faults=faults, wall_ns=MARKET_CLOSED_NS) as (url, rec, wall):
        async with Supervisor.open(wall_clock=wall, restart=FAST_RESTART) as sup:
            sup.add(provider(url, stale_after=30.0), trades=["AAPL"], quotes=["AAPL"])
            async with sup.events() as events:
                with trio.move_on_after(30.0 * 10):
                    async for _ in events:
                        pass
            stats = sup.statistics().sessions["alpaca"]
    assert rec.accepted == 1
    assert len(rec.connections[0].actions("subscribe")) == 1
    assert stats.resubscribes == 0
    assert stats.state is SessionState.STREAMING


# --------------------------------------------------------------------------- provider errors


async def test_auth_failure_is_fatal_after_exactly_one_connection(
    autojump_clock: MockClock,
) -> None:
    async with alpaca_sim(faults=FaultPlan.reject_auth(402, connection=None)) as (url, rec, wall):
        seen: list[Event] = []
        with pytest.raises(AuthenticationError) as info:
            async with Supervisor.open(wall_clock=wall, restart=FAST_RESTART) as sup:
                sup.add(provider(url), quotes=["AAPL"])
                async with sup.events() as events:
                    async for event in events:
                        seen.append(event)
        assert rec.accepted == 1
    assert info.value.code == 402
    assert states(seen)[-1] == (SessionState.FAILED, 0)


async def test_fatal_error_without_fail_fast_leaves_the_session_failed(
    autojump_clock: MockClock,
) -> None:
    async with alpaca_sim(faults=FaultPlan.reject_auth(402, connection=None)) as (url, rec, wall):
        async with Supervisor.open(wall_clock=wall, fail_fast=False) as sup:
            sup.add(provider(url), quotes=["AAPL"])
            async with sup.events() as events:
                await collect_until(
                    events, lambda s: (SessionState.FAILED, 0) in states(s), seconds=60
                )
            with trio.move_on_after(120):
                await trio.sleep_forever()
            assert sup.statistics().sessions["alpaca"].state is SessionState.FAILED
            assert isinstance(sup.failures["alpaca"], AuthenticationError)
        assert rec.accepted == 1


async def test_connection_limit_waits_out_the_cooldown_before_reconnecting(
    autojump_clock: MockClock,
) -> None:
    faults = FaultPlan.connection_limit(connection=1)
    async with alpaca_sim(faults=faults) as (url, rec, wall):
        async with Supervisor.open(wall_clock=wall, restart=FAST_RESTART) as sup:
            sup.add(provider(url, limit_cooldown=90.0), quotes=["AAPL"])
            times: dict[tuple[SessionState, int], float] = {}
            async with sup.events() as events:
                with trio.fail_after(600):
                    async for event in events:
                        if isinstance(event, Status):
                            times.setdefault((event.state, event.attempt), trio.current_time())
                            if (event.state, event.attempt) == (SessionState.STREAMING, 1):
                                break
    waited = times[(SessionState.CONNECTING, 1)] - times[(SessionState.RECONNECTING, 1)]
    assert 90.0 <= waited < 95.0
    assert rec.accepted == 2


async def test_restart_budget_exhaustion_escalates_a_typed_error(autojump_clock: MockClock) -> None:
    policy = RestartPolicy(initial=1.0, max_delay=4.0, intensity=3, period=600.0)
    async with alpaca_sim(faults=FaultPlan.drop_after(5, connection=None)) as (url, rec, wall):
        with pytest.raises(RestartBudgetExceeded) as info:
            async with Supervisor.open(wall_clock=wall, restart=policy) as sup:
                sup.add(provider(url), quotes=["AAPL"])
                with trio.fail_after(600):
                    await trio.sleep_forever()
        assert rec.accepted == 4
    assert "failed 4 times" in str(info.value)
    assert info.value.__cause__ is not None


async def test_backoff_grows_between_consecutive_failures(autojump_clock: MockClock) -> None:
    policy = RestartPolicy(initial=1.0, factor=2.0, max_delay=60.0, jitter=0.0, intensity=10)
    async with alpaca_sim(faults=FaultPlan.drop_after(3, connection=None)) as (url, _, wall):
        async with Supervisor.open(wall_clock=wall, restart=policy) as sup:
            sup.add(provider(url), quotes=["AAPL"])
            async with sup.events() as events:
                seen = await collect_until(
                    events, lambda s: (SessionState.CONNECTING, 4) in states(s)
                )
    details = [
        e.detail for e in seen if isinstance(e, Status) and e.state is SessionState.RECONNECTING
    ]
    assert [d.rsplit("retry in ", 1)[1] for d in details] == ["1.0 s", "2.0 s", "4.0 s", "8.0 s"]


async def test_malformed_frame_is_counted_logged_truncated_and_streaming_goes_on(
    caplog: pytest.LogCaptureFixture,
    autojump_clock: MockClock,
) -> None:
    garbage = "{" + "x" * 5000
    faults = FaultPlan.malformed_after(20, payload=garbage)
    caplog.set_level(logging.WARNING, logger="puffin_trio")
    async with alpaca_sim(faults=faults) as (url, rec, wall):
        async with Supervisor.open(wall_clock=wall) as sup:
            sup.add(provider(url), quotes=["AAPL"])
            async with sup.events() as events:
                seen = await collect_until(
                    events, lambda s: sum(isinstance(e, Quote) for e in s) >= 60
                )
            stats = sup.statistics().sessions["alpaca"]
    assert stats.malformed == 1
    assert rec.accepted == 1
    assert [e.state for e in seen if isinstance(e, Status)][-1] is SessionState.STREAMING
    logged = [r.getMessage() for r in caplog.records if "malformed" in r.getMessage()]
    assert len(logged) == 1
    assert "xxxx" in logged[0] and len(logged[0]) < 400


async def test_unknown_message_type_is_ignored_and_counted(autojump_clock: MockClock) -> None:
    faults = FaultPlan.unknown_message_after(20)
    async with alpaca_sim(faults=faults) as (url, rec, wall):
        async with Supervisor.open(wall_clock=wall) as sup:
            sup.add(provider(url), quotes=["AAPL"])
            async with sup.events() as events:
                await collect_until(events, lambda s: sum(isinstance(e, Quote) for e in s) >= 60)
            stats = sup.statistics().sessions["alpaca"]
    assert stats.unknown == 1
    assert stats.malformed == 0
    assert rec.accepted == 1


async def test_missing_credentials_fail_before_any_connection(
    monkeypatch: pytest.MonkeyPatch,
    autojump_clock: MockClock,
) -> None:
    monkeypatch.delenv("APCA_API_KEY_ID", raising=False)
    monkeypatch.delenv("APCA_API_SECRET_KEY", raising=False)
    async with alpaca_sim() as (url, rec, wall), Supervisor.open(wall_clock=wall) as sup:
        with pytest.raises(ConfigurationError, match="APCA_API_KEY_ID"):
            sup.add(AlpacaProvider(url=url), quotes=["AAPL"])
        with pytest.raises(ConfigurationError, match="list of symbols"):
            sup.add(provider(url), quotes="AAPL")
        await trio.sleep(1)
        assert rec.accepted == 0


# --------------------------------------------------------------------------- subscriptions


async def test_live_subscribe_and_unsubscribe_are_confirmed_and_kept(
    autojump_clock: MockClock,
) -> None:
    async with alpaca_sim(symbols=["AAPL", "NVDA"]) as (url, rec, wall):
        async with Supervisor.open(wall_clock=wall) as sup:
            sup.add(provider(url), quotes=["AAPL"])
            async with sup.events(capacity=100_000) as events:
                await collect_until(events, lambda s: isinstance(s[-1], Quote))
                assert await sup.subscribe("alpaca", quotes=["NVDA"]) is True
                await collect_until(
                    events, lambda s: isinstance(s[-1], Quote) and s[-1].symbol == "NVDA"
                )
                assert rec.connections[0].subscriptions["quotes"] == ["AAPL", "NVDA"]
                assert await sup.unsubscribe("alpaca", quotes=["NVDA"]) is True
                in_flight = events.statistics().queued
                after = await collect_until(events, lambda s: len(s) >= in_flight + 200)
            stats = sup.statistics().sessions["alpaca"]
    late_nvda = [i for i, e in enumerate(after) if isinstance(e, Quote) and e.symbol == "NVDA"]
    assert all(i < in_flight for i in late_nvda)
    assert stats.desired == {"quotes": frozenset({"AAPL"})}
    assert stats.confirmed == {"quotes": frozenset({"AAPL"})}


async def test_subscriptions_changed_live_are_replayed_after_a_reconnect(
    autojump_clock: MockClock,
) -> None:
    async with (
        alpaca_sim(symbols=["AAPL", "NVDA"], faults=FaultPlan.drop_after(200)) as (
            url,
            rec,
            wall,
        ),
        Supervisor.open(wall_clock=wall, restart=FAST_RESTART) as sup,
    ):
        sup.add(provider(url), quotes=["AAPL"])
        async with sup.events(capacity=100_000) as events:
            await collect_until(events, lambda s: isinstance(s[-1], Quote))
            assert await sup.subscribe("alpaca", trades=["NVDA"]) is True
            await collect_until(events, streaming_again)
    assert rec.connections[1].actions("subscribe") == [
        {"action": "subscribe", "trades": ["NVDA"], "quotes": ["AAPL"]}
    ]


async def test_large_subscriptions_are_split_into_frames_under_the_limit(
    autojump_clock: MockClock,
) -> None:
    symbols = [f"S{i:04d}" for i in range(700)]
    async with alpaca_sim(symbols=["AAPL"], rate=10.0) as (url, rec, wall):
        async with Supervisor.open(wall_clock=wall) as sup:
            sup.add(provider(url), trades=symbols)
            async with sup.events() as events:
                await collect_until(
                    events, lambda s: (SessionState.STREAMING, 0) in states(s), seconds=30
                )
    subscribes = rec.connections[0].actions("subscribe")
    assert len(subscribes) > 1
    assert sorted(s for m in subscribes for s in m["trades"]) == symbols


# --------------------------------------------------------------------------- consumers


async def test_many_consumers_each_receive_every_event_in_order(autojump_clock: MockClock) -> None:
    async with alpaca_sim(rate=1000.0, batch=5) as (url, _, wall):
        async with Supervisor.open(wall_clock=wall) as sup:
            sup.add(provider(url), trades=["AAPL", "MSFT"], quotes=["AAPL", "MSFT"])
            results: list[list[Event]] = []

            async def consume(events: EventReceiver) -> None:
                got: list[Event] = []
                async for event in events:
                    got.append(event)
                    if len(got) == 500:
                        break
                results.append(got)

            async with AsyncExitStack() as stack:
                receivers = [
                    await stack.enter_async_context(sup.events(capacity=64, name=f"c{i}"))
                    for i in range(6)
                ]
                async with trio.open_nursery() as nursery:
                    for events in receivers:
                        nursery.start_soon(consume, events)
    assert len(results) == 6
    assert all(r == results[0] for r in results)
    assert len(results[0]) == 500


def policy_engaged(consumer: ConsumerStatistics) -> bool:
    """The consumer's overflow policy has acted: a full buffer, a drop or a conflation."""
    if consumer.policy == "block":
        return consumer.queued == consumer.capacity
    if consumer.policy == "drop_oldest":
        return consumer.dropped > 0
    return consumer.conflated > 0


@pytest.mark.parametrize("overflow", ["block", "drop_oldest", "conflate"])
async def test_slow_consumer_keeps_its_buffer_bounded(
    overflow: str, autojump_clock: MockClock
) -> None:
    """A consumer 10x slower than the feed keeps its buffer within its capacity.

    Deterministic whatever the scheduling: the slow consumer reads nothing until
    a witness consumer has received ``4 * capacity`` events (``capacity`` for
    "block", whose full buffer stops the feed), every one of which was
    published to the slow consumer too, so its policy has engaged; then it reads
    exactly 500 events at 200/s against a 2000/s feed.
    """
    capacity = 32
    async with alpaca_sim(rate=2000.0, batch=10) as (url, _, wall):
        async with Supervisor.open(wall_clock=wall) as sup:
            sup.add(provider(url), trades=["AAPL", "MSFT"], quotes=["AAPL", "MSFT"])
            async with sup.events(capacity=capacity, overflow=overflow, name="slow") as events:  # type: ignore[arg-type]
                needed = capacity if overflow == "block" else 4 * capacity
                async with sup.events(capacity=100_000, name="witness") as witness:
                    await collect_until(witness, lambda seen: len(seen) >= needed)
                assert policy_engaged(sup.statistics().consumers["slow"])
                received: list[Event] = []
                with trio.fail_after(60):
                    while len(received) < 500:
                        received.append(await events.receive())
                        await trio.sleep(0.005)  # 200/s against a 2000/s feed: 10x slower
                stats = sup.statistics()
    consumer = stats.consumers["slow"]
    assert consumer.max_queued <= capacity
    assert len(received) == 500
    if overflow == "block":
        assert consumer.dropped == 0
        assert not any(isinstance(e, Gap) for e in received)
    elif overflow == "drop_oldest":
        assert consumer.dropped > 0
        assert isinstance(received[0], Gap), "the loss is announced before anything else"
        announced = sum(e.missing for e in received if isinstance(e, Gap))
        assert announced > 0
        assert announced <= consumer.dropped
    else:
        assert consumer.conflated > 0


# --------------------------------------------------------------------------- hygiene


def task_tree() -> list[str]:
    """Names of every living task, depth first."""
    names: list[str] = []
    stack = [trio.lowlevel.current_root_task()]
    while stack:
        task = stack.pop()
        names.append(task.name)
        stack.extend(t for n in task.child_nurseries for t in n.child_tasks)
    return sorted(names)


async def test_clean_shutdown_leaves_no_task_behind(autojump_clock: MockClock) -> None:
    async with alpaca_sim() as (url, _, wall):
        before = task_tree()
        async with Supervisor.open(wall_clock=wall) as sup:
            sup.add(provider(url), quotes=["AAPL"], trades=["AAPL"])
            async with sup.events() as events:
                await collect_until(events, lambda s: len(s) >= 50)
            during = task_tree()
            closing = trio.current_time()
        shutdown = trio.current_time() - closing
        after = task_tree()
        assert sup.statistics().sessions["alpaca"].state is SessionState.CLOSED
    assert any(name.startswith("alpaca:") for name in during)  # the session's sibling tasks
    assert shutdown < 0.1, "shutdown must not sit out a close-handshake timeout"
    # Only the simulator's own handler for the closed connection may still be winding down.
    assert [name for name in after if not name.endswith("_run_handler")] == before


async def test_secrets_never_appear_in_repr_logs_or_exceptions(
    caplog: pytest.LogCaptureFixture,
    autojump_clock: MockClock,
) -> None:
    caplog.set_level(logging.DEBUG)
    faults = FaultPlan.drop_after(10) + FaultPlan.reject_auth(402, connection=2)
    async with alpaca_sim(faults=faults) as (url, _, wall):
        p = provider(url)
        with pytest.raises(AuthenticationError) as info:
            async with Supervisor.open(wall_clock=wall, restart=FAST_RESTART) as sup:
                sup.add(p, quotes=["AAPL"])
                async with sup.events() as events:
                    async for event in events:
                        assert SECRET not in repr(event)
        texts = [repr(p), str(p), str(info.value), repr(info.value), repr(sup.statistics())]
        texts += [r.getMessage() for r in caplog.records]
        texts += [str(r.args) for r in caplog.records]
    assert not [t for t in texts if SECRET in t]


async def test_a_server_that_never_authenticates_is_retried_with_backoff(
    autojump_clock: MockClock,
) -> None:
    """Handshake deadlines are failures like any other: Status, backoff, reconnect."""
    connections = 0

    async def mute(request: WebSocketRequest) -> None:
        nonlocal connections
        connections += 1
        ws = await request.accept()
        await ws.send_message('[{"T":"success","msg":"connected"}]')
        with contextlib.suppress(ConnectionClosed):
            while True:
                await ws.get_message()  # the auth message, never answered

    policy = RestartPolicy(initial=1.0, factor=2.0, jitter=0.0, intensity=10)
    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(serve_websocket, mute, "127.0.0.1", 0, None))
        url = f"ws://127.0.0.1:{server.port}/v2/iex"
        async with Supervisor.open(restart=policy, timeouts=SessionTimeouts(handshake=5.0)) as sup:
            sup.add(provider(url), quotes=["AAPL"])
            async with sup.events() as events:
                seen = await collect_until(
                    events, lambda s: (SessionState.AUTHENTICATING, 3) in states(s)
                )
        nursery.cancel_scope.cancel()
    reconnecting = [
        e for e in seen if isinstance(e, Status) and e.state is SessionState.RECONNECTING
    ]
    assert [e.attempt for e in reconnecting] == [1, 2, 3]
    assert all("no authentication reply within 5.0 s" in e.detail for e in reconnecting)
    assert [e.detail.rsplit("retry in ", 1)[1] for e in reconnecting] == ["1.0 s", "2.0 s", "4.0 s"]
    assert connections == 4
