"""The session's and the supervisor's contracts where a review found them bent.

Clocks (deadlines on trio's clock, timestamps on the wall clock), what
``stable_after`` measures, ``statistics()`` outside a run, cancellation of a
live ``subscribe``, and the default consumer capacity. The end-to-end tests
run over real loopback WebSockets: the simulators where they can produce the
situation, a scripted server (a few lines of the provider's wire protocol)
where the test needs frames at exact moments.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial

import orjson
import trio
from trio.testing import MockClock
from trio_websocket import WebSocketConnection, WebSocketRequest, serve_websocket

from puffin_trio import (
    Event,
    Gap,
    RestartPolicy,
    SessionState,
    SessionTimeouts,
    Status,
    Supervisor,
    Trade,
    open_feed,
)
from puffin_trio.channels import DEFAULT_CAPACITY
from puffin_trio.providers import AlpacaProvider, PolygonProvider
from puffin_trio.testing import mock_wall_clock

from ._support import KEY, MARKET_OPEN_NS, SECRET, alpaca_sim, collect_until

Script = Callable[[WebSocketConnection, int], Awaitable[None]]


@asynccontextmanager
async def scripted_server(script: Script) -> AsyncIterator[int]:
    """A loopback WebSocket server running ``script(ws, connection_number)`` per connection."""
    accepted = 0

    async def handler(request: WebSocketRequest) -> None:
        nonlocal accepted
        accepted += 1
        await script(await request.accept(), accepted)

    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(serve_websocket, handler, "127.0.0.1", 0, None))
        yield server.port
        nursery.cancel_scope.cancel()


def alpaca(url: str) -> AlpacaProvider:
    return AlpacaProvider(key=KEY, secret=SECRET, url=url, encoding="json", stale_after=math.inf)


def retry_details(seen: list[Event]) -> list[str]:
    return [
        e.detail for e in seen if isinstance(e, Status) and e.state is SessionState.RECONNECTING
    ]


# --------------------------------------------------------------------------- restart policy


async def test_stable_after_counts_only_the_time_spent_streaming(
    autojump_clock: MockClock,
) -> None:
    """A connection whose handshake took 50 s and that streamed 1 s is not "stable" at
    ``stable_after=30``: its failure continues the incident, and the backoff doubles."""

    async def script(ws: WebSocketConnection, number: int) -> None:
        if number == 2:
            await trio.sleep(50.0)  # a slow server: the hello comes 50 s after the upgrade
        await ws.send_message('[{"T":"success","msg":"connected"}]')
        await ws.get_message()
        await ws.send_message('[{"T":"success","msg":"authenticated"}]')
        await ws.get_message()
        await ws.send_message('[{"T":"subscription","trades":["AAPL"]}]')
        trade = {"T": "t", "S": "AAPL", "p": 1.5, "s": 2, "t": "2026-11-24T15:00:00Z", "i": 1}
        await ws.send_message(orjson.dumps([trade]).decode())
        if number > 2:
            await trio.sleep_forever()
        await trio.sleep(1.0)  # streams for one second, then the server fails
        await ws.aclose(1011, "simulated failure")

    policy = RestartPolicy(initial=1.0, factor=2.0, jitter=0.0, stable_after=30.0, max_delay=60.0)
    async with scripted_server(script) as port:
        wall = mock_wall_clock(MARKET_OPEN_NS)
        async with Supervisor.open(
            restart=policy, wall_clock=wall, timeouts=SessionTimeouts(handshake=100.0)
        ) as sup:
            sup.add(alpaca(f"ws://127.0.0.1:{port}/v2/iex"), trades=["AAPL"])
            async with sup.events() as events:
                seen = await collect_until(events, lambda s: len(retry_details(s)) == 2)
    first, second = retry_details(seen)
    assert "retry in 1.0 s" in first
    assert "retry in 2.0 s" in second, "1 s of streaming after a 50 s handshake is not stable"


# --------------------------------------------------------------------------- the guard's clocks


async def test_a_wall_clock_step_does_not_make_the_guard_give_up_early(
    autojump_clock: MockClock,
) -> None:
    """The guard's deadlines run on trio's clock: an NTP step of the wall clock an hour
    forward, while trade 2 is a millisecond late, announces no false gap."""
    step = [0]
    clock = mock_wall_clock(MARKET_OPEN_NS)

    def wall() -> int:
        return clock() + step[0]

    def trade(seq: int) -> str:
        message = {"ev": "T", "sym": "AAPL", "p": 1.5, "s": 2, "t": 1_795_532_400_000, "q": seq}
        return orjson.dumps([message]).decode()

    async def script(ws: WebSocketConnection, number: int) -> None:
        await ws.send_message('[{"ev":"status","status":"connected","message":"Connected"}]')
        await ws.get_message()
        await ws.send_message('[{"ev":"status","status":"auth_success","message":"ok"}]')
        await ws.get_message()
        await ws.send_message(
            '[{"ev":"status","status":"success","message":"subscribed to: T.AAPL"}]'
        )
        for seq in (1, 3, 4, 2, 5):
            if seq == 4:
                step[0] += 3600 * 10**9
            await ws.send_message(trade(seq))
            await trio.sleep(0.001)
        await trio.sleep_forever()

    async with scripted_server(script) as port:
        provider = PolygonProvider(
            key="k", url=f"ws://127.0.0.1:{port}/stocks", sequence="strict", stale_after=math.inf
        )
        async with Supervisor.open(wall_clock=wall) as sup:
            sup.add(provider, trades=["AAPL"])
            async with sup.events() as events:
                seen = await collect_until(
                    events, lambda s: isinstance(s[-1], Trade) and s[-1].seq == 5
                )
        stats = sup.statistics().sessions["polygon"]
    assert [e.seq for e in seen if isinstance(e, Trade)] == [1, 2, 3, 4, 5]
    assert not [e for e in seen if isinstance(e, Gap)]
    assert (stats.gaps, stats.late) == (0, 0)


# --------------------------------------------------------------------------- statistics


def test_session_statistics_can_be_read_after_the_trio_run_is_over() -> None:
    """``statistics()`` is cheap and never blocks, inside a run or after it."""
    sessions = []

    async def main() -> None:
        async with alpaca_sim() as (url, _, wall), Supervisor.open(wall_clock=wall) as sup:
            sessions.append(sup.add(alpaca(url), trades=["AAPL"]))
            async with sup.events() as events:
                await collect_until(events, lambda s: isinstance(s[-1], Trade))

    trio.run(main, clock=MockClock(autojump_threshold=0))
    stats = sessions[0].statistics()
    assert stats.state is SessionState.CLOSED
    assert stats.messages > 0
    age = stats.last_message_age["trades:AAPL"]
    assert age is not None and age >= 0.0


# --------------------------------------------------------------------------- cancellation


async def test_a_subscribe_cancelled_before_it_starts_changes_nothing(
    autojump_clock: MockClock,
) -> None:
    async with alpaca_sim() as (url, rec, wall), Supervisor.open(wall_clock=wall) as sup:
        sup.add(alpaca(url), trades=["AAPL"])
        async with sup.events() as events:
            await collect_until(events, lambda s: isinstance(s[-1], Trade))
            for call in (sup.subscribe, sup.unsubscribe):
                with trio.CancelScope() as scope:
                    scope.cancel()
                    await call("alpaca", quotes=["MSFT"], trades=["AAPL"])
                assert scope.cancelled_caught
                assert sup.session("alpaca").subscriptions.desired == {
                    "trades": frozenset({"AAPL"})
                }
            assert await sup.subscribe("alpaca", quotes=["MSFT"]) is True
    assert [m.get("quotes") for m in rec.connections[0].actions("subscribe")] == [None, ["MSFT"]]


# --------------------------------------------------------------------------- capacity


def test_the_default_consumer_capacity_is_the_channels_constant() -> None:
    """One owner: ``sup.events()`` and ``open_feed`` default to ``DEFAULT_CAPACITY`` itself."""
    for function in (Supervisor.events, open_feed):
        default = inspect.signature(function).parameters["capacity"].default
        assert default is DEFAULT_CAPACITY
