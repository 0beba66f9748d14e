"""Helpers for the distribution tests: deterministic events, publishing them, collecting."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import attrs
import trio

from puffin_trio import (
    Bar,
    Event,
    FanOut,
    Gap,
    GapReason,
    OrderBookUpdate,
    Quote,
    SessionState,
    Status,
    Trade,
    open_redis_feed,
    open_redis_publisher,
)
from puffin_trio.redis import RedisFeed

SYMBOLS = ("AAPL", "MSFT", "NVDA", "AMZN", "TSLA", "BTC/USD")
T0 = 1_700_000_000_000_000_000


def make_events(count: int, *, start: int = 0) -> list[Event]:
    """``count`` varied events (every kind, several providers and symbols), deterministic."""
    out: list[Event] = []
    for i in range(start, start + count):
        symbol = SYMBOLS[i % len(SYMBOLS)]
        provider = ("alpaca", "polygon", "ib")[i % 3]
        ts = T0 + i * 1_000
        kind = i % 11
        event: Event
        if kind in (0, 3, 6, 9):
            event = Trade(
                provider=provider, symbol=symbol, ts_event=ts, ts_recv=ts + 7, price=100 + i / 100,
                size=float(i % 500 + 1), exchange="V", trade_id=str(i), conditions=("@", "T"),
                seq=i,
            )
        elif kind in (1, 4, 7, 10):
            event = Quote(
                provider=provider, symbol=symbol, ts_event=ts, ts_recv=ts + 5, bid=99.5 + i / 100,
                ask=100.5 + i / 100, bid_size=3.0, ask_size=4.0, conditions=("R",),
            )
        elif kind == 2:
            event = OrderBookUpdate(
                provider=provider, symbol=symbol, ts_event=ts, ts_recv=ts + 9,
                bids=((99.0, 1.5), (98.5, 0.0)), asks=((101.0, 2.0),), snapshot=i % 22 == 2, seq=i,
            )
        elif kind == 5:
            event = Bar(
                provider=provider, symbol=symbol, ts_event=ts, ts_recv=ts + 3, open=1.0, high=2.0,
                low=0.5, close=1.5, volume=100.0, interval_s=60, trade_count=7, vwap=1.2,
            )
        else:
            event = Status(
                provider=provider, ts_event=ts, ts_recv=ts, state=SessionState.STREAMING,
                session=provider, detail=f"event {i}",
            )
        out.append(event)
    out.append(
        Gap(
            provider="alpaca", symbol="AAPL", ts_event=T0, ts_recv=T0, stream="T:AAPL",
            reason=GapReason.SEQUENCE, expected=start + 1, received=start + 3, missing=2,
        )
    )
    return out


def same_gaps(events: Sequence[Event]) -> list[Event]:
    """``events`` with the feed's own Gaps stamped 0: they carry the time they were noticed,
    which differs between two readings of the same stream."""
    return [
        attrs.evolve(e, ts_event=0, ts_recv=0)
        if isinstance(e, Gap)
        and e.provider == "puffin"
        and not e.stream.startswith("redis-publisher")
        else e
        for e in events
    ]


def data(events: Sequence[Event]) -> list[Event]:
    """Everything but the publisher's and the channels' own announcements."""
    return [e for e in events if e.provider != "puffin"]


async def publish(url: str, events: Sequence[Event], **options: object) -> None:
    """Publish ``events`` through a fan-out (as sup.events() would) and wait until written."""
    fanout = FanOut()
    async with (
        fanout.consumer(capacity=256) as channel,
        open_redis_publisher(url, **options) as publisher,  # type: ignore[arg-type]
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(publisher.publish, channel)
        await fanout.publish_batch(events)
        fanout.close()


async def collect(feed: RedisFeed, count: int, *, seconds: float = 20.0) -> list[Event]:
    """Receive until ``count`` non-announcement events arrived (or fail after ``seconds``)."""
    out: list[Event] = []
    got = 0
    with trio.fail_after(seconds):
        async for event in feed:
            out.append(event)
            if event.provider != "puffin":
                got += 1
                if got == count:
                    break
    return out


async def take(feed: RedisFeed, count: int, *, seconds: float = 20.0) -> list[Event]:
    """Receive exactly ``count`` items (announcements included), failing after ``seconds``."""
    with trio.fail_after(seconds):
        return [await feed.receive() for _ in range(count)]


async def read_all(url: str, count: int, **options: object) -> list[Event]:
    async with open_redis_feed(url, start="earliest", **options) as feed:  # type: ignore[arg-type]
        return await collect(feed, count)


#: How long wait_until waits for a condition before failing the test.
WAIT_SECONDS = 60.0


async def wait_until(condition: Callable[[], bool]) -> None:
    """Wait until ``condition()`` holds, checking every 10 ms; fail after WAIT_SECONDS.

    For state owned by another component that offers no notification (a
    publisher's counters, a subprocess's output): this polls a fact, it does
    not sleep and hope.
    """
    with trio.fail_after(WAIT_SECONDS):
        while not condition():  # noqa: ASYNC110 - no event to wait on; see the docstring
            await trio.sleep(0.01)
