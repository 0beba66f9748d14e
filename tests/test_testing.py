"""puffin_trio.testing: the strategies promise what their docstrings say."""

from __future__ import annotations

import math

import trio
from hypothesis import given
from trio.testing import MockClock

from puffin_trio import Bar, Gap, GapReason, OrderBookUpdate, Quote
from puffin_trio.testing import bars, book_updates, events, gaps, mock_wall_clock, quotes


@given(book_updates(realistic=True))
def test_realistic_book_updates_are_uncrossed_and_sorted_best_first(
    update: OrderBookUpdate,
) -> None:
    """Realistic books: bids descending, asks ascending, best bid below best ask."""
    bid_prices = [p for p, _ in update.bids]
    ask_prices = [p for p, _ in update.asks]
    assert bid_prices == sorted(bid_prices, reverse=True)
    assert ask_prices == sorted(ask_prices)
    if bid_prices and ask_prices:
        assert bid_prices[0] < ask_prices[0]


@given(bars(realistic=True))
def test_realistic_bars_are_internally_consistent(bar: Bar) -> None:
    """Realistic bars: low <= open, close, vwap <= high; aligned to their interval."""
    assert bar.low <= min(bar.open, bar.close) <= max(bar.open, bar.close) <= bar.high
    assert bar.low <= bar.vwap <= bar.high
    assert bar.ts_event % (bar.interval_s * 1_000_000_000) == 0


@given(quotes(realistic=True))
def test_realistic_quotes_have_timestamps_in_order(quote: Quote) -> None:
    """Realistic quotes: received after the event, within seconds."""
    assert quote.ts_event <= quote.ts_recv <= quote.ts_event + 5_000_000_000


@given(gaps(realistic=True))
def test_realistic_gaps_agree_with_their_reason(gap: Gap) -> None:
    """A sequence gap says what was expected and what came; a reconnect gap has a window;
    a malformed gap is a moment of one session, without sequence numbers."""
    if gap.reason is GapReason.SEQUENCE:
        assert gap.expected is not None and gap.received is not None
        assert gap.missing == gap.received - gap.expected
    if gap.reason is GapReason.RECONNECT:
        assert gap.window_start is not None and gap.window_end is not None
    if gap.reason is GapReason.MALFORMED:
        assert gap.window_start == gap.window_end == gap.ts_recv
        assert gap.expected is None and gap.received is None and gap.missing in (0, 1)


@given(events(finite=True))
def test_finite_events_carry_no_nan_or_infinity(event: object) -> None:
    """``finite=True`` excludes NaN and infinities from every float field."""
    for name in getattr(type(event), "__slots__", ()):
        value = getattr(event, name, None)
        if isinstance(value, float):
            assert math.isfinite(value)


async def test_mock_wall_clock_follows_the_mock_clock(autojump_clock: MockClock) -> None:
    wall = mock_wall_clock(1_700_000_000_000_000_000)
    assert wall() == 1_700_000_000_000_000_000
    await trio.sleep(90)
    assert wall() == 1_700_000_090_000_000_000
