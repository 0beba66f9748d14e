"""OrderBooks: routing updates to books and turning Gap announcements into resyncs."""

from __future__ import annotations

from puffin_trio import BookState, Gap, GapReason, OrderBooks, OrderBookUpdate, Trade


def update(provider: str, symbol: str, *, snapshot: bool = True) -> OrderBookUpdate:
    return OrderBookUpdate(
        provider=provider,
        symbol=symbol,
        ts_event=1,
        ts_recv=2,
        bids=((99.0, 1.0),),
        asks=((101.0, 2.0),),
        snapshot=snapshot,
    )


def gap(provider: str, symbol: str, reason: GapReason) -> Gap:
    return Gap(
        provider=provider,
        symbol=symbol,
        ts_event=3,
        ts_recv=3,
        stream="s",
        reason=reason,
        missing=2,
    )


def three_live_books() -> OrderBooks:
    books = OrderBooks()
    for provider, symbol in (("alpaca", "BTC/USD"), ("alpaca", "ETH/USD"), ("polygon", "BTC-USD")):
        books.apply(update(provider, symbol))
    assert {b.state for b in books} == {BookState.LIVE}
    return books


def test_updates_are_routed_to_one_book_per_provider_and_symbol() -> None:
    books = three_live_books()
    assert len(books) == 3
    book = books.get("BTC/USD", "alpaca")
    assert book is not None and book.best_bid == (99.0, 1.0) and book.best_ask == (101.0, 2.0)
    assert books.get("BTC/USD") is book  # unambiguous without the provider
    assert books.get("XRP/USD") is None


def test_other_events_change_nothing() -> None:
    books = three_live_books()
    trade = Trade(provider="alpaca", symbol="BTC/USD", ts_event=1, ts_recv=1, price=1.0, size=1.0)
    assert books.apply(trade) is None
    assert books.needing_resync() == {}


def test_a_reconnect_distrusts_every_book_of_that_provider_only() -> None:
    books = three_live_books()
    books.apply(gap("alpaca", "", GapReason.RECONNECT))
    assert books.needing_resync() == {"alpaca": ["BTC/USD", "ETH/USD"]}
    book = books.get("BTC/USD", "alpaca")
    assert book is not None and "reconnect" in book.reason


def test_a_sequence_gap_distrusts_only_that_symbol() -> None:
    books = three_live_books()
    books.apply(gap("alpaca", "ETH/USD", GapReason.SEQUENCE))
    assert books.needing_resync() == {"alpaca": ["ETH/USD"]}


def test_a_malformed_message_distrusts_every_book_of_that_provider_only() -> None:
    """It may have been any book's update: the provider's books wait for a snapshot."""
    books = three_live_books()
    books.apply(gap("polygon", "", GapReason.MALFORMED))
    assert books.needing_resync() == {"polygon": ["BTC-USD"]}
    book = books.get("BTC-USD", "polygon")
    assert book is not None and "malformed" in book.reason


def test_a_malformed_message_of_a_known_symbol_distrusts_only_that_book() -> None:
    books = three_live_books()
    books.apply(gap("alpaca", "BTC/USD", GapReason.MALFORMED))
    assert books.needing_resync() == {"alpaca": ["BTC/USD"]}


def test_an_overflow_distrusts_every_book() -> None:
    books = three_live_books()
    books.apply(gap("puffin", "", GapReason.OVERFLOW))
    assert books.needing_resync() == {"alpaca": ["BTC/USD", "ETH/USD"], "polygon": ["BTC-USD"]}


def test_a_snapshot_after_a_resync_makes_the_book_live_again() -> None:
    books = three_live_books()
    books.apply(gap("alpaca", "", GapReason.RECONNECT))
    books.apply(update("alpaca", "BTC/USD"))
    assert books.needing_resync() == {"alpaca": ["ETH/USD"]}


def test_a_delta_before_any_snapshot_leaves_a_syncing_book() -> None:
    books = OrderBooks()
    books.apply(update("alpaca", "BTC/USD", snapshot=False))
    assert books.needing_resync() == {"alpaca": ["BTC/USD"]}
