"""L2 books end to end: Alpaca crypto simulator -> supervisor -> OrderBooks.

The property under test: a book is either equal to the book the simulator
sent, or it says it cannot be trusted (``RESYNC_NEEDED``/``SYNCING``) until a
fresh snapshot makes it equal again. Never silently wrong.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio
from trio.testing import MockClock

from puffin_trio import (
    BookState,
    Event,
    Gap,
    GapReason,
    OrderBooks,
    OrderBookUpdate,
    RestartPolicy,
    SessionState,
    Supervisor,
)
from puffin_trio.providers.alpaca import AlpacaProvider
from puffin_trio.sim import AlpacaConnectionRecord, FaultPlan

from ._support import KEY, SECRET, alpaca_sim

SYMBOLS = ["BTC/USD", "ETH/USD"]


def crypto_provider(url: str) -> AlpacaProvider:
    return AlpacaProvider(feed="crypto", key=KEY, secret=SECRET, url=url, encoding="msgpack")


def sent_books(record: AlpacaConnectionRecord, symbol: str) -> list[dict[str, Any]]:
    """The order-book messages the simulator sent for ``symbol`` on one connection."""
    return [m for m in record.data_messages() if m.get("T") == "o" and m.get("S") == symbol]


def reference_book(messages: list[dict[str, Any]]) -> tuple[list[tuple[float, float]], ...]:
    """Apply the wire messages to plain dicts: what the book must be."""
    bids: dict[float, float] = {}
    asks: dict[float, float] = {}
    for message in messages:
        if message.get("r"):
            bids.clear()
            asks.clear()
        for side, levels in ((bids, message["b"]), (asks, message["a"])):
            for level in levels:
                if level["s"] == 0:
                    side.pop(level["p"], None)
                else:
                    side[level["p"]] = level["s"]
    return sorted(bids.items(), reverse=True), sorted(asks.items())


async def consume(
    events: trio.abc.ReceiveChannel[Event],
    books: OrderBooks,
    until: Callable[[Event], bool],
    *,
    limit: int = 50_000,
) -> list[Event]:
    seen: list[Event] = []
    with trio.fail_after(600):
        async for event in events:
            books.apply(event)
            seen.append(event)
            if until(event):
                return seen
            assert len(seen) < limit
    raise AssertionError("channel ended")


def deltas_applied(books: OrderBooks) -> int:
    return sum(book.statistics().deltas_applied for book in books)


def book_updates_after(seen: list[Event], start: int, symbol: str) -> int:
    return sum(1 for e in seen[start:] if isinstance(e, OrderBookUpdate) and e.symbol == symbol)


async def test_books_match_what_the_simulator_sent(autojump_clock: MockClock) -> None:
    async with alpaca_sim(symbols=SYMBOLS, rate=500.0) as (url, rec, wall):
        async with Supervisor.open(wall_clock=wall) as sup:
            sup.add(crypto_provider(url), books=SYMBOLS)
            books = OrderBooks()
            async with sup.events(capacity=100_000) as events:
                seen = await consume(events, books, lambda e: deltas_applied(books) >= 200)
    for symbol in SYMBOLS:
        book = books.get(symbol)
        assert book is not None and book.state is BookState.LIVE
        received = book_updates_after(seen, 0, symbol)
        expected = reference_book(sent_books(rec.connections[0], symbol)[:received])
        assert (list(book.bids), list(book.asks)) == expected
        assert not book.crossed


async def test_a_reconnect_marks_books_for_resync_until_the_new_snapshot(
    autojump_clock: MockClock,
) -> None:
    policy = RestartPolicy(initial=1.0, max_delay=4.0)
    async with alpaca_sim(symbols=SYMBOLS, rate=500.0, faults=FaultPlan.drop_after(300)) as (
        url,
        rec,
        wall,
    ):
        async with Supervisor.open(wall_clock=wall, restart=policy) as sup:
            sup.add(crypto_provider(url), books=SYMBOLS)
            books = OrderBooks()
            async with sup.events(capacity=100_000) as events:
                seen = await consume(
                    events, books, lambda e: isinstance(e, Gap) and e.reason is GapReason.RECONNECT
                )
                assert {b.state for b in books} == {BookState.RESYNC_NEEDED}
                gap_at = len(seen)
                more = await consume(
                    events,
                    books,
                    lambda e: (
                        isinstance(e, OrderBookUpdate)
                        and all(b.state is BookState.LIVE for b in books)
                        and all(b.statistics().deltas_applied > 0 for b in books)
                    ),
                )
    seen += more
    for symbol in SYMBOLS:
        book = books.get(symbol)
        assert book is not None
        received = book_updates_after(seen, gap_at, symbol)
        messages = sent_books(rec.connections[1], symbol)
        assert messages[0]["r"] is True  # the resubscribe brought a fresh snapshot
        assert (list(book.bids), list(book.asks)) == reference_book(messages[:received])


async def test_an_overflow_drop_marks_books_and_resync_brings_them_back(
    autojump_clock: MockClock,
) -> None:
    async with alpaca_sim(symbols=SYMBOLS, rate=2000.0, batch=10) as (url, rec, wall):
        async with Supervisor.open(wall_clock=wall) as sup:
            sup.add(crypto_provider(url), books=SYMBOLS)
            books = OrderBooks()
            async with sup.events(capacity=16, overflow="drop_oldest") as events:
                await consume(events, books, lambda e: len(books) == 2)
                await trio.sleep(1.0)  # fall behind: the 16-event buffer overflows
                await consume(
                    events, books, lambda e: isinstance(e, Gap) and e.reason is GapReason.OVERFLOW
                )
                needing = books.needing_resync()
                assert needing == {"alpaca": SYMBOLS}
                assert await sup.resync("alpaca", books=needing["alpaca"]) is True
                await consume(
                    events,
                    books,
                    lambda e: all(b.state is BookState.LIVE for b in books),
                )
            assert books.needing_resync() == {}
            stats = sup.statistics()
    actions = [m["action"] for m in rec.connections[0].received if "action" in m]
    assert actions[-2:] == ["unsubscribe", "subscribe"]
    assert stats.sessions["alpaca"].state is SessionState.STREAMING
    assert stats.sessions["alpaca"].connects == 1  # resynced without reconnecting
