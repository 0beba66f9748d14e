"""OrderBook: levels, reads, the syncing/live/resync_needed state machine, and a naive model."""

from __future__ import annotations

import math

import attrs
import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from puffin_trio.book import DEFAULT_MAX_PENDING, BookState, OrderBook
from puffin_trio.errors import ConfigurationError
from puffin_trio.events import OrderBookUpdate

Levels = tuple[tuple[float, float], ...]


def update(
    bids: Levels = (),
    asks: Levels = (),
    *,
    snapshot: bool = False,
    seq: int | None = None,
    ts: int = 0,
) -> OrderBookUpdate:
    return OrderBookUpdate(
        provider="test",
        symbol="AAPL",
        ts_event=ts,
        ts_recv=ts,
        bids=bids,
        asks=asks,
        snapshot=snapshot,
        seq=seq,
    )


def snapshot(bids: Levels = (), asks: Levels = (), *, seq: int | None = None) -> OrderBookUpdate:
    return update(bids, asks, snapshot=True, seq=seq)


def live_book(bids: Levels = ((100.0, 1.0),), asks: Levels = ((101.0, 1.0),)) -> OrderBook:
    book = OrderBook("AAPL", "test")
    book.apply(snapshot(bids, asks, seq=10))
    return book


# -- levels and reads ---------------------------------------------------------


def test_new_book_is_syncing_and_empty() -> None:
    book = OrderBook("AAPL")
    assert book.state is BookState.SYNCING
    assert not book.is_valid
    assert list(book.bids) == [] and list(book.asks) == []
    assert book.best_bid is None and book.best_ask is None
    assert book.spread is None and book.mid is None
    assert book.imbalance(5) is None
    assert not book.crossed and not book.locked


def test_snapshot_makes_book_live_with_bids_descending_and_asks_ascending() -> None:
    book = OrderBook("AAPL")
    book.apply(snapshot(((99.0, 1.0), (100.0, 2.0), (98.5, 3.0)), ((102.0, 1.0), (101.0, 4.0))))
    assert book.state is BookState.LIVE
    assert book.is_valid
    assert book.reason == ""
    assert list(book.bids) == [(100.0, 2.0), (99.0, 1.0), (98.5, 3.0)]
    assert list(book.asks) == [(101.0, 4.0), (102.0, 1.0)]


def test_snapshot_replaces_every_previous_level() -> None:
    book = live_book(((100.0, 1.0), (99.0, 1.0)), ((101.0, 1.0),))
    book.apply(snapshot(((50.0, 5.0),), ((60.0, 6.0),)))
    assert list(book.bids) == [(50.0, 5.0)]
    assert list(book.asks) == [(60.0, 6.0)]


def test_snapshot_leaves_out_zero_size_levels() -> None:
    book = OrderBook("AAPL")
    book.apply(snapshot(((100.0, 0.0), (99.0, 1.0)), ((101.0, 0.0),)))
    assert list(book.bids) == [(99.0, 1.0)]
    assert list(book.asks) == []


def test_delta_sets_the_size_of_a_level() -> None:
    book = live_book()
    book.apply(update(((100.0, 7.0), (99.5, 2.0)), ((101.0, 3.0),)))
    assert list(book.bids) == [(100.0, 7.0), (99.5, 2.0)]
    assert list(book.asks) == [(101.0, 3.0)]


def test_delta_with_size_zero_deletes_the_level() -> None:
    book = live_book(((100.0, 1.0), (99.0, 1.0)), ((101.0, 1.0),))
    book.apply(update(((100.0, 0.0),), ((101.0, 0.0),)))
    assert list(book.bids) == [(99.0, 1.0)]
    assert list(book.asks) == []


def test_deleting_an_absent_level_does_nothing() -> None:
    book = live_book()
    book.apply(update(((42.0, 0.0),), ((420.0, 0.0),)))
    assert list(book.bids) == [(100.0, 1.0)]
    assert list(book.asks) == [(101.0, 1.0)]
    assert book.statistics().deltas_applied == 1


def test_last_pair_for_a_price_in_one_update_wins() -> None:
    book = live_book()
    book.apply(update(((99.0, 1.0), (99.0, 0.0), (98.0, 0.0), (98.0, 4.0))))
    assert list(book.bids) == [(100.0, 1.0), (98.0, 4.0)]


def test_best_levels_spread_and_mid() -> None:
    book = live_book(((100.0, 2.0), (99.0, 1.0)), ((100.5, 3.0), (101.0, 1.0)))
    assert book.best_bid == (100.0, 2.0)
    assert book.best_ask == (100.5, 3.0)
    assert book.spread == 0.5
    assert book.mid == 100.25


def test_spread_and_mid_are_none_when_one_side_is_empty() -> None:
    book = live_book(bids=())
    assert book.best_bid is None
    assert book.best_ask == (101.0, 1.0)
    assert book.spread is None and book.mid is None


def test_bids_and_asks_are_live_views_of_the_book() -> None:
    book = live_book()
    bids, asks = book.bids, book.asks
    book.apply(update(((100.5, 1.0),), ((101.0, 0.0),)))
    assert list(bids) == [(100.5, 1.0), (100.0, 1.0)]
    assert bids[0] == (100.5, 1.0)
    assert len(asks) == 0
    book.apply(snapshot(((1.0, 1.0),), ((2.0, 1.0),)))
    assert list(bids) == [(1.0, 1.0)]
    assert list(asks) == [(2.0, 1.0)]


def test_depth_returns_the_top_levels_of_each_side() -> None:
    book = live_book(((100.0, 1.0), (99.0, 2.0), (98.0, 3.0)), ((101.0, 4.0),))
    assert book.depth(2) == ([(100.0, 1.0), (99.0, 2.0)], [(101.0, 4.0)])
    assert book.depth(0) == ([], [])


def test_imbalance_weighs_bid_against_ask_volume_over_the_top_levels() -> None:
    book = live_book(((100.0, 3.0), (99.0, 100.0)), ((101.0, 1.0), (102.0, 100.0)))
    assert book.imbalance(1) == pytest.approx((3.0 - 1.0) / (3.0 + 1.0))
    assert book.imbalance(2) == pytest.approx((103.0 - 101.0) / (103.0 + 101.0))
    assert book.imbalance(0) is None


def test_imbalance_is_one_sided_when_a_side_is_empty() -> None:
    assert live_book(asks=()).imbalance(5) == 1.0
    assert live_book(bids=()).imbalance(5) == -1.0


@pytest.mark.parametrize("method", ["depth", "imbalance"])
def test_negative_level_count_is_rejected(method: str) -> None:
    with pytest.raises(ConfigurationError, match="number of levels must be >= 0, got -1"):
        getattr(live_book(), method)(-1)


@pytest.mark.parametrize("bad", [0, -5, 2.5, True, "100"])
def test_max_pending_must_be_a_positive_int(bad: object) -> None:
    with pytest.raises(ConfigurationError, match=r"max_pending .* must be an int >= 1"):
        OrderBook("AAPL", max_pending=bad)  # type: ignore[arg-type]


def test_default_max_pending_is_documented_constant() -> None:
    assert OrderBook("AAPL").max_pending == DEFAULT_MAX_PENDING


# -- state machine --------------------------------------------------------------


def test_deltas_while_syncing_are_buffered_not_applied() -> None:
    book = OrderBook("AAPL")
    book.apply(update(((100.0, 1.0),), seq=1))
    assert list(book.bids) == []
    assert book.state is BookState.SYNCING
    assert book.statistics().pending == 1


def test_buffered_deltas_newer_than_the_snapshot_are_replayed_after_it() -> None:
    book = OrderBook("AAPL")
    book.apply(update(((100.0, 9.0),), seq=4))
    book.apply(update(((100.0, 5.0),), seq=5))
    book.apply(update(((99.0, 6.0),), seq=6))
    book.apply(snapshot(((100.0, 1.0),), ((101.0, 1.0),), seq=5))
    assert book.state is BookState.LIVE
    assert list(book.bids) == [(100.0, 1.0), (99.0, 6.0)]
    stats = book.statistics()
    assert (stats.deltas_applied, stats.deltas_discarded, stats.pending) == (1, 2, 0)
    assert book.last_seq == 6


def test_deltas_without_seq_before_a_snapshot_are_discarded() -> None:
    book = OrderBook("AAPL")
    book.apply(update(((100.0, 9.0),)))
    assert book.statistics().pending == 0
    book.apply(snapshot(((100.0, 1.0),), ((101.0, 1.0),)))
    assert list(book.bids) == [(100.0, 1.0)]
    assert book.statistics().deltas_discarded == 1


def test_snapshot_without_seq_discards_every_buffered_delta() -> None:
    book = OrderBook("AAPL")
    book.apply(update(((99.0, 9.0),), seq=100))
    book.apply(snapshot(((100.0, 1.0),), ((101.0, 1.0),)))
    assert list(book.bids) == [(100.0, 1.0)]
    assert book.statistics().deltas_discarded == 1


def test_delta_not_newer_than_the_book_is_discarded_as_stale() -> None:
    book = live_book()
    book.apply(update(((100.0, 7.0),), seq=10))
    book.apply(update(((100.0, 8.0),), seq=9))
    assert book.best_bid == (100.0, 1.0)
    book.apply(update(((100.0, 2.0),), seq=11))
    assert book.best_bid == (100.0, 2.0)
    assert book.statistics().deltas_discarded == 2


def test_full_pending_buffer_is_dropped_and_counted() -> None:
    book = OrderBook("AAPL", max_pending=2)
    for seq in (1, 2, 3):
        book.apply(update(((99.0, float(seq)),), seq=seq))
    stats = book.statistics()
    assert (stats.buffer_overflows, stats.deltas_discarded, stats.pending) == (1, 2, 1)


def test_snapshot_older_than_deltas_lost_to_overflow_needs_resync() -> None:
    book = OrderBook("AAPL", max_pending=2)
    for seq in (1, 2, 3):
        book.apply(update(((99.0, float(seq)),), seq=seq))
    book.apply(snapshot(((100.0, 1.0),), ((101.0, 1.0),), seq=1))
    assert book.state is BookState.RESYNC_NEEDED
    assert "overflowed" in book.reason
    assert book.statistics().resyncs == 1


def test_the_newest_delta_ever_lost_to_overflow_decides_whether_a_snapshot_covers_it() -> None:
    book = OrderBook("AAPL", max_pending=1)
    for seq in (5, 3, 2):
        book.apply(update(((99.0, 1.0),), seq=seq))
    book.apply(snapshot(((100.0, 1.0),), ((101.0, 1.0),), seq=4))
    assert book.state is BookState.RESYNC_NEEDED


def test_snapshot_covering_the_deltas_lost_to_overflow_goes_live() -> None:
    book = OrderBook("AAPL", max_pending=2)
    for seq in (1, 2, 3):
        book.apply(update(((99.0, float(seq)),), seq=seq))
    book.apply(snapshot(((100.0, 1.0),), ((101.0, 1.0),), seq=2))
    assert book.state is BookState.LIVE
    assert list(book.bids) == [(100.0, 1.0), (99.0, 3.0)]


def test_delta_that_crosses_the_book_makes_it_resync_needed() -> None:
    book = live_book()
    book.apply(update(((101.5, 1.0),)))
    assert book.crossed
    assert book.state is BookState.RESYNC_NEEDED
    assert not book.is_valid
    assert book.reason == "crossed: best bid 101.5 > best ask 101.0"
    assert book.statistics().resyncs == 1


def test_locked_book_stays_live_and_is_flagged() -> None:
    book = live_book()
    book.apply(update(((101.0, 1.0),)))
    assert book.locked and not book.crossed
    assert book.state is BookState.LIVE
    assert book.spread == 0.0


def test_crossed_snapshot_needs_resync() -> None:
    book = OrderBook("AAPL")
    book.apply(snapshot(((102.0, 1.0),), ((101.0, 1.0),)))
    assert book.state is BookState.RESYNC_NEEDED


def test_mark_resync_flags_a_live_book_and_keeps_its_levels() -> None:
    book = live_book()
    book.mark_resync("sequence gap")
    assert book.state is BookState.RESYNC_NEEDED
    assert book.reason == "sequence gap"
    assert book.best_bid == (100.0, 1.0)
    assert book.statistics().resyncs == 1


def test_mark_resync_on_a_syncing_book_keeps_it_syncing_and_drops_the_buffer() -> None:
    book = OrderBook("AAPL")
    book.apply(update(((99.0, 1.0),), seq=5))
    book.mark_resync("reconnect")
    assert book.state is BookState.SYNCING
    assert book.reason == "reconnect"
    stats = book.statistics()
    assert (stats.pending, stats.deltas_discarded, stats.resyncs) == (0, 1, 0)


def test_resync_needed_book_buffers_deltas_until_a_snapshot() -> None:
    book = live_book()
    book.mark_resync("reconnect")
    book.apply(update(((99.0, 1.0),), seq=21))
    assert list(book.bids) == [(100.0, 1.0)]
    book.apply(snapshot(((100.0, 2.0),), ((101.0, 1.0),), seq=20))
    assert book.state is BookState.LIVE
    assert list(book.bids) == [(100.0, 2.0), (99.0, 1.0)]


def test_clear_empties_the_book_and_returns_it_to_syncing() -> None:
    book = live_book()
    book.mark_resync("reconnect")
    book.apply(update(((99.0, 1.0),), seq=30))
    book.clear()
    assert book.state is BookState.SYNCING
    assert book.reason == "cleared"
    assert list(book.bids) == [] and list(book.asks) == []
    assert book.last_seq is None
    assert book.statistics().pending == 0


def test_last_seq_and_ts_event_follow_the_applied_updates() -> None:
    book = OrderBook("AAPL")
    assert (book.last_seq, book.ts_event) == (None, 0)
    book.apply(update(snapshot=True, seq=3, ts=1_000))
    book.apply(update(((1.0, 1.0),), seq=4, ts=2_000))
    assert (book.last_seq, book.ts_event) == (4, 2_000)


def test_statistics_is_a_frozen_copy() -> None:
    book = live_book()
    stats = book.statistics()
    book.apply(update(((99.0, 1.0),)))
    assert stats.deltas_applied == 0
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        stats.resyncs = 5  # type: ignore[misc]


def test_repr_shows_name_state_best_levels_and_depth() -> None:
    book = live_book(((100.0, 2.0), (99.0, 1.0)), ((100.5, 3.0),))
    assert repr(book) == "<OrderBook test:AAPL live bid 2.0@100.0 ask 3.0@100.5 levels 2/1>"
    assert str(book) == repr(book)


def test_repr_of_a_book_that_is_not_live_says_why() -> None:
    assert repr(OrderBook("BTC/USD")) == (
        "<OrderBook BTC/USD syncing (no snapshot yet) bid - ask - levels 0/0>"
    )


# -- against a naive model --------------------------------------------------------


class NaiveBook:
    """The reference: plain dicts, sorted on every read, the state rules spelled out."""

    def __init__(self, max_pending: int) -> None:
        self.max_pending = max_pending
        self.bids: dict[float, float] = {}
        self.asks: dict[float, float] = {}
        self.state = BookState.SYNCING
        self.pending: list[OrderBookUpdate] = []
        self.seq: int | None = None
        self.lost_seq: int | None = None
        self.applied = self.snapshots = self.discarded = self.overflows = self.resyncs = 0

    def sorted_bids(self) -> list[tuple[float, float]]:
        return sorted(self.bids.items(), reverse=True)

    def sorted_asks(self) -> list[tuple[float, float]]:
        return sorted(self.asks.items())

    def crossed(self) -> bool:
        return bool(self.bids and self.asks and max(self.bids) > min(self.asks))

    def apply(self, u: OrderBookUpdate) -> None:
        if u.snapshot:
            self.bids, self.asks = {}, {}
            self.set_levels(u)
            self.snapshots += 1
            self.seq = u.seq
            self.state = BookState.LIVE
            if u.seq is None:
                self.discarded += len(self.pending)
            else:
                for delta in self.pending:
                    self.delta(delta)
            lost = u.seq is not None and self.lost_seq is not None and self.lost_seq > u.seq
            self.pending, self.lost_seq = [], None
            if lost or self.crossed():
                self.state = BookState.RESYNC_NEEDED
                self.resyncs += 1
        elif self.state is BookState.LIVE:
            self.delta(u)
            if self.crossed():
                self.state = BookState.RESYNC_NEEDED
                self.resyncs += 1
        elif u.seq is None:
            self.discarded += 1
        else:
            if len(self.pending) == self.max_pending:
                newest = max(d.seq for d in self.pending if d.seq is not None)
                self.lost_seq = newest if self.lost_seq is None else max(newest, self.lost_seq)
                self.overflows += 1
                self.discarded += len(self.pending)
                self.pending = []
            self.pending.append(u)

    def delta(self, u: OrderBookUpdate) -> None:
        if u.seq is not None and self.seq is not None and u.seq <= self.seq:
            self.discarded += 1
            return
        if u.seq is not None:
            self.seq = u.seq
        self.set_levels(u)
        self.applied += 1

    def set_levels(self, u: OrderBookUpdate) -> None:
        for side, levels in ((self.bids, u.bids), (self.asks, u.asks)):
            for price, size in levels:
                if size == 0:
                    side.pop(price, None)
                else:
                    side[price] = size

    def mark_resync(self) -> None:
        self.discarded += len(self.pending)
        self.pending, self.lost_seq = [], None
        if self.state is BookState.LIVE:
            self.state = BookState.RESYNC_NEEDED
            self.resyncs += 1

    def clear(self) -> None:
        self.discarded += len(self.pending)
        self.bids, self.asks, self.pending = {}, {}, []
        self.seq = self.lost_seq = None
        self.state = BookState.SYNCING


def _levels(low_tick: int, high_tick: int) -> st.SearchStrategy[Levels]:
    """Quarter-tick prices from a narrow band (so levels collide), sizes often 0."""
    price = st.integers(low_tick, high_tick).map(lambda tick: tick / 4)
    size = st.sampled_from([0.0, 0.0, 1.0, 2.5]) | st.floats(0.001, 1e6)
    return st.lists(st.tuples(price, size), max_size=6).map(tuple)


# Bid and ask bands overlap a little, so books sometimes cross and must resync.
BID_LEVELS = _levels(380, 402)
ASK_LEVELS = _levels(398, 420)


class OrderBookMatchesNaiveModel(RuleBasedStateMachine):
    """After any sequence of snapshots, deltas (with and without seq, stale,
    deleting absent levels, repeating prices), resyncs and clears, the book
    reads exactly like a dict sorted on read, and its state and counters match
    the rules spelled out naively."""

    def __init__(self) -> None:
        super().__init__()
        self.book = OrderBook("AAPL", "test", max_pending=2)
        self.model = NaiveBook(max_pending=2)
        self.last_seq = 0

    def feed(self, u: OrderBookUpdate) -> None:
        self.book.apply(u)
        self.model.apply(u)

    @rule(bids=BID_LEVELS, asks=ASK_LEVELS, with_seq=st.booleans())
    def delta(self, bids: Levels, asks: Levels, with_seq: bool) -> None:
        seq = None
        if with_seq:
            self.last_seq += 1
            seq = self.last_seq
        self.feed(update(bids, asks, seq=seq))

    @rule(batch=st.lists(st.tuples(BID_LEVELS, ASK_LEVELS), min_size=2, max_size=4))
    def burst_of_deltas(self, batch: list[tuple[Levels, Levels]]) -> None:
        for bids, asks in batch:
            self.last_seq += 1
            self.feed(update(bids, asks, seq=self.last_seq))

    @rule(bids=BID_LEVELS, asks=ASK_LEVELS, age=st.integers(0, 3))
    def stale_delta(self, bids: Levels, asks: Levels, age: int) -> None:
        self.feed(update(bids, asks, seq=self.last_seq - age))

    @rule(bids=BID_LEVELS, asks=ASK_LEVELS, lag=st.none() | st.integers(0, 3))
    def snapshot(self, bids: Levels, asks: Levels, lag: int | None) -> None:
        seq = None if lag is None else self.last_seq - lag
        self.feed(update(bids, asks, snapshot=True, seq=seq))

    @rule()
    def mark_resync(self) -> None:
        self.book.mark_resync("gap")
        self.model.mark_resync()

    @rule()
    def clear(self) -> None:
        self.book.clear()
        self.model.clear()

    @invariant()
    def reads_match_the_model(self) -> None:
        book, model = self.book, self.model
        bids, asks = model.sorted_bids(), model.sorted_asks()
        assert list(book.bids) == bids
        assert list(book.asks) == asks
        assert book.best_bid == (bids[0] if bids else None)
        assert book.best_ask == (asks[0] if asks else None)
        if bids and asks:
            assert book.spread == asks[0][0] - bids[0][0]
            assert book.mid == (asks[0][0] + bids[0][0]) / 2
        else:
            assert book.spread is None and book.mid is None
        assert book.crossed == model.crossed()
        assert book.locked == bool(bids and asks and bids[0][0] == asks[0][0])
        for n in (0, 1, 3, 100):
            assert book.depth(n) == (bids[:n], asks[:n])
            bid_volume = sum(size for _, size in bids[:n])
            ask_volume = sum(size for _, size in asks[:n])
            total = bid_volume + ask_volume
            imbalance = book.imbalance(n)
            if total == 0:
                assert imbalance is None
            else:
                assert imbalance is not None
                assert math.isclose(imbalance, (bid_volume - ask_volume) / total, abs_tol=1e-12)

    @invariant()
    def state_and_counters_match_the_model(self) -> None:
        stats, model = self.book.statistics(), self.model
        assert stats.state is model.state
        assert self.book.is_valid == (model.state is BookState.LIVE)
        assert (stats.reason == "") == (model.state is BookState.LIVE)
        assert stats.pending == len(model.pending)
        assert stats.deltas_applied == model.applied
        assert stats.snapshots_applied == model.snapshots
        assert stats.deltas_discarded == model.discarded
        assert stats.buffer_overflows == model.overflows
        assert stats.resyncs == model.resyncs
        assert (stats.bid_levels, stats.ask_levels) == (len(model.bids), len(model.asks))
        if model.state is BookState.LIVE:
            assert not self.book.crossed


TestOrderBookMatchesNaiveModel = OrderBookMatchesNaiveModel.TestCase
