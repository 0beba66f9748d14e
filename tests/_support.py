"""What the end-to-end test modules share: the simulators, a fixed market clock, collection helpers.

Every helper runs a real simulator on a loopback port in the calling test's
trio run; under trio's autojump ``MockClock`` both ends live in that run, so
loopback data is already in the peer's socket buffer whenever the clock
could jump, and deadlines of seconds or minutes take milliseconds.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from functools import partial
from typing import Any

import trio

from puffin_trio import Event, RestartPolicy, SessionState, Status
from puffin_trio.sim import AlpacaSimRecorder, serve_alpaca
from puffin_trio.sim.ib import IBSimRecorder, serve_ib
from puffin_trio.sim.polygon import PolygonSimRecorder, serve_polygon
from puffin_trio.testing import mock_wall_clock

#: The Alpaca simulator's credentials in the end-to-end tests.
KEY = "PKTEST-KEY"
SECRET = "s3cr3t-do-not-leak"
#: The Polygon simulator's API key in the end-to-end tests.
POLYGON_KEY = "pk-do-not-leak"

#: Tuesday 2026-11-24 15:00 UTC = 10:00 New York: regular session.
MARKET_OPEN_NS = int(datetime(2026, 11, 24, 15, 0, tzinfo=UTC).timestamp() * 1e9)
#: Sunday 2026-11-22 15:00 UTC: closed.
MARKET_CLOSED_NS = int(datetime(2026, 11, 22, 15, 0, tzinfo=UTC).timestamp() * 1e9)

#: Restarts quick enough for tests, with room for the faults they inject.
FAST_RESTART = RestartPolicy(initial=1.0, max_delay=8.0, intensity=20)


@asynccontextmanager
async def serving(serve: Callable[..., Any], **kwargs: Any) -> AsyncIterator[int]:
    """Run a simulator's ``serve_*`` for the block; yields its port; cancelled on exit."""
    async with trio.open_nursery() as nursery:
        port: int = await nursery.start(partial(serve, **kwargs))
        yield port
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def alpaca_sim(
    *, wall_ns: int = MARKET_OPEN_NS, **kwargs: Any
) -> AsyncIterator[tuple[str, AlpacaSimRecorder, Callable[[], int]]]:
    """Run ``serve_alpaca`` (stocks, ``KEY``/``SECRET``) for the block; yields (url, recorder,
    wall clock)."""
    recorder = AlpacaSimRecorder()
    wall = mock_wall_clock(wall_ns)
    kwargs.setdefault("symbols", ["AAPL", "MSFT"])
    kwargs.setdefault("rate", 100.0)
    kwargs.setdefault("key", KEY)
    kwargs.setdefault("secret", SECRET)
    async with serving(serve_alpaca, recorder=recorder, wall_clock=wall, **kwargs) as port:
        yield f"ws://127.0.0.1:{port}/v2/iex", recorder, wall


@asynccontextmanager
async def polygon_sim(
    *, market: str = "stocks", **kwargs: Any
) -> AsyncIterator[tuple[str, PolygonSimRecorder, Callable[[], int]]]:
    """Run ``serve_polygon`` (``POLYGON_KEY``) for the block; yields (url, recorder, wall clock)."""
    recorder = PolygonSimRecorder()
    wall = mock_wall_clock(MARKET_OPEN_NS)
    kwargs.setdefault("symbols", ["AAPL", "MSFT"])
    kwargs.setdefault("rate", 100.0)
    async with serving(
        serve_polygon, key=POLYGON_KEY, recorder=recorder, wall_clock=wall, **kwargs
    ) as port:
        yield f"ws://127.0.0.1:{port}/{market}", recorder, wall


@asynccontextmanager
async def ib_sim(**kwargs: Any) -> AsyncIterator[tuple[int, IBSimRecorder, Callable[[], int]]]:
    """Run ``serve_ib`` for the block; yields (port, recorder, wall clock)."""
    recorder = IBSimRecorder()
    wall = mock_wall_clock(MARKET_OPEN_NS)
    kwargs.setdefault("symbols", ["AAPL", "MSFT"])
    kwargs.setdefault("rate", 100.0)
    async with serving(serve_ib, recorder=recorder, wall_clock=wall, **kwargs) as port:
        yield port, recorder, wall


async def collect_until(
    events: trio.abc.ReceiveChannel[Event],
    done: Callable[[list[Event]], bool],
    *,
    limit: int = 20_000,
    seconds: float = 600.0,
) -> list[Event]:
    """Receive until ``done(seen)``; fail after ``limit`` events or ``seconds`` (mock time)."""
    seen: list[Event] = []
    with trio.fail_after(seconds):
        async for event in events:
            seen.append(event)
            if done(seen):
                return seen
            assert len(seen) < limit, "condition not reached within the event budget"
    raise AssertionError("event channel ended before the condition was reached")


def states(seen: list[Event], session: str | None = None) -> list[tuple[SessionState, int]]:
    """The ``(state, attempt)`` of every ``Status`` seen (of ``session`` only, if given)."""
    return [
        (e.state, e.attempt)
        for e in seen
        if isinstance(e, Status) and (session is None or e.session == session)
    ]


def streaming_again(seen: list[Event]) -> bool:
    """The first reconnect has reached ``streaming``."""
    return (SessionState.STREAMING, 1) in states(seen)
