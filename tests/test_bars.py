"""BarAggregator: event-time buckets, closing by trade and by flush, late trades."""

from __future__ import annotations

import math
from collections import defaultdict

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from puffin_trio.bars import BarAggregator
from puffin_trio.errors import ConfigurationError
from puffin_trio.events import Bar, Trade

S = 1_000_000_000  # ns per second


def trade(
    ts: int,
    price: float = 100.0,
    size: float = 1.0,
    *,
    symbol: str = "AAPL",
    recv: int | None = None,
    provider: str = "alpaca",
) -> Trade:
    return Trade(
        provider=provider,
        symbol=symbol,
        ts_event=ts,
        ts_recv=ts + 5 if recv is None else recv,
        price=price,
        size=size,
    )


# -- unit tests ------------------------------------------------------------------


@pytest.mark.parametrize("bad", [0, -60, 1.5, True, "60"])
def test_interval_must_be_a_positive_whole_number_of_seconds(bad: object) -> None:
    with pytest.raises(ConfigurationError, match="interval_s must be a whole number of seconds"):
        BarAggregator(bad)  # type: ignore[arg-type]


def test_first_trade_opens_a_bar_and_returns_nothing() -> None:
    bars = BarAggregator(60)
    assert bars.add(trade(10 * S)) is None
    assert bars.statistics().open_bars == 1


def test_trade_in_a_later_bucket_closes_and_returns_the_open_bar() -> None:
    bars = BarAggregator(60)
    bars.add(trade(125 * S, 10.0, 1.0))
    bars.add(trade(130 * S, 12.0, 3.0))
    bars.add(trade(140 * S, 9.0, 2.0))
    bars.add(trade(150 * S, 11.0, 4.0))
    closed = bars.add(trade(181 * S, 50.0, 1.0, recv=999))
    assert closed == Bar(
        provider="alpaca",
        symbol="AAPL",
        ts_event=120 * S,
        ts_recv=999,
        open=10.0,
        high=12.0,
        low=9.0,
        close=11.0,
        volume=10.0,
        interval_s=60,
        trade_count=4,
        vwap=(10.0 + 36.0 + 18.0 + 44.0) / 10.0,
    )


def test_buckets_are_aligned_to_multiples_of_the_interval() -> None:
    bars = BarAggregator(5)
    bars.add(trade(7 * S + 123))
    (bar,) = bars.flush_all()
    assert bar.ts_event == 5 * S
    assert bar.ts_close == 10 * S


def test_trade_exactly_at_the_bucket_end_opens_the_next_bucket() -> None:
    bars = BarAggregator(60)
    bars.add(trade(60 * S - 1, 1.0))
    closed = bars.add(trade(60 * S, 2.0))
    assert closed is not None
    assert (closed.ts_event, closed.close) == (0, 1.0)
    (still_open,) = bars.flush_all()
    assert (still_open.ts_event, still_open.open) == (60 * S, 2.0)


def test_an_interval_without_trades_yields_no_bar() -> None:
    bars = BarAggregator(60)
    bars.add(trade(10 * S))
    closed = bars.add(trade(190 * S))
    assert closed is not None and closed.ts_event == 0
    assert [bar.ts_event for bar in bars.flush_all()] == [180 * S]
    assert bars.statistics().bars == 2


def test_trade_before_the_open_bucket_is_late_and_not_folded() -> None:
    bars = BarAggregator(60)
    bars.add(trade(125 * S, 10.0))
    assert bars.add(trade(119 * S, 99.0, 7.0)) is None
    (bar,) = bars.flush_all()
    assert (bar.high, bar.volume, bar.trade_count) == (10.0, 1.0, 1)
    assert bars.statistics().late == 1


def test_flush_closes_bars_whose_interval_has_ended_at_or_before_now() -> None:
    bars = BarAggregator(60)
    bars.add(trade(10 * S, symbol="AAPL"))
    bars.add(trade(70 * S, symbol="MSFT"))
    assert bars.flush(60 * S - 1) == []
    (bar,) = bars.flush(60 * S)
    assert (bar.symbol, bar.ts_event, bar.ts_recv) == ("AAPL", 0, 60 * S)
    assert bars.statistics().open_bars == 1
    (bar,) = bars.flush(500 * S)
    assert (bar.symbol, bar.ts_recv) == ("MSFT", 500 * S)
    assert bars.flush(10_000 * S) == []


def test_trade_for_an_already_flushed_bucket_is_late() -> None:
    bars = BarAggregator(60)
    bars.add(trade(10 * S))
    bars.flush(60 * S)
    assert bars.add(trade(59 * S)) is None
    assert bars.statistics().late == 1
    assert bars.flush_all() == []


def test_trade_for_a_later_bucket_after_a_flush_opens_a_new_bar() -> None:
    bars = BarAggregator(60)
    bars.add(trade(10 * S))
    bars.flush(60 * S)
    assert bars.add(trade(60 * S, 3.0)) is None
    (bar,) = bars.flush_all()
    assert (bar.ts_event, bar.open) == (60 * S, 3.0)


def test_flush_all_closes_every_bar_stamped_with_its_last_trade_receive_time() -> None:
    bars = BarAggregator(60)
    bars.add(trade(1 * S, symbol="AAPL", recv=11))
    bars.add(trade(2 * S, symbol="AAPL", recv=22))
    bars.add(trade(3 * S, symbol="MSFT", recv=33))
    closed = bars.flush_all()
    assert [(bar.symbol, bar.ts_recv) for bar in closed] == [("AAPL", 22), ("MSFT", 33)]
    assert bars.flush_all() == []
    assert bars.statistics().open_bars == 0


def test_symbols_are_aggregated_separately() -> None:
    bars = BarAggregator(60)
    bars.add(trade(1 * S, 10.0, symbol="AAPL"))
    bars.add(trade(2 * S, 20.0, symbol="MSFT"))
    assert bars.add(trade(61 * S, 11.0, symbol="AAPL")) is not None
    assert bars.add(trade(3 * S, 21.0, symbol="MSFT")) is None
    (msft,) = [bar for bar in bars.flush_all() if bar.symbol == "MSFT"]
    assert (msft.open, msft.close, msft.trade_count) == (20.0, 21.0, 2)


def test_vwap_of_a_zero_volume_bar_is_its_last_price() -> None:
    bars = BarAggregator(60)
    bars.add(trade(1 * S, 10.0, 0.0))
    bars.add(trade(2 * S, 12.0, 0.0))
    (bar,) = bars.flush_all()
    assert (bar.volume, bar.trade_count, bar.vwap) == (0.0, 2, 12.0)


def test_bars_carry_the_trades_provider_unless_the_aggregator_names_one() -> None:
    plain = BarAggregator(60)
    plain.add(trade(1 * S, provider="polygon"))
    assert [bar.provider for bar in plain.flush_all()] == ["polygon"]
    labelled = BarAggregator(60, provider="merged")
    labelled.add(trade(1 * S, provider="polygon"))
    assert [bar.provider for bar in labelled.flush_all()] == ["merged"]


def test_statistics_count_trades_bars_late_and_open_bars() -> None:
    bars = BarAggregator(60)
    bars.add(trade(100 * S, symbol="AAPL"))
    bars.add(trade(1 * S, symbol="AAPL"))
    bars.add(trade(2 * S, symbol="AAPL"))
    bars.add(trade(100 * S, symbol="MSFT"))
    bars.add(trade(200 * S, symbol="MSFT"))
    stats = bars.statistics()
    assert (stats.trades, stats.bars, stats.late, stats.open_bars) == (5, 1, 2, 2)
    assert dict(stats.late_by_symbol) == {"AAPL": 2}


def test_statistics_is_a_frozen_read_only_copy() -> None:
    bars = BarAggregator(60)
    bars.add(trade(100 * S))
    bars.add(trade(1 * S))
    stats = bars.statistics()
    bars.add(trade(2 * S))
    assert (stats.trades, stats.late, stats.late_by_symbol["AAPL"]) == (2, 1, 1)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        stats.late = 0  # type: ignore[misc]
    with pytest.raises(TypeError):
        stats.late_by_symbol["AAPL"] = 0  # type: ignore[index]


def test_interval_s_and_repr() -> None:
    bars = BarAggregator(300)
    bars.add(trade(1 * S))
    assert bars.interval_s == 300
    assert repr(bars) == "<BarAggregator 300s symbols=1 open=1 bars=0 late=0>"


# -- properties ------------------------------------------------------------------

Op = tuple[str, int, float, float, str]  # ("trade", ts, price, size, symbol) | ("flush", now, ...)


@st.composite
def sessions(draw: st.DrawFn) -> tuple[int, list[Op]]:
    """An interval and a stream of trades (out of order, on and near bucket edges,
    some of zero size) on a few symbols, with flushes mixed in."""
    interval_s = draw(st.sampled_from([1, 5, 60]))
    interval_ns = interval_s * S
    offset = st.sampled_from([0, 1, interval_ns - 1]) | st.integers(0, interval_ns - 1)
    ts = st.builds(lambda bucket, off: bucket * interval_ns + off, st.integers(0, 5), offset)
    trade_op = st.tuples(
        st.just("trade"),
        ts,
        st.floats(0.01, 1e5),
        st.just(0.0) | st.floats(0.0, 1e4),
        st.sampled_from(["AAPL", "BTC/USD"]),
    )
    flush_op = st.tuples(st.just("flush"), ts, st.just(0.0), st.just(0.0), st.just(""))
    ops = draw(st.lists(trade_op | flush_op, max_size=60))
    if draw(st.booleans()):
        ops.sort(key=lambda op: op[1])
    return interval_s, ops


@attrs.frozen
class Run:
    interval_s: int
    bars: list[Bar]  # in emission order
    trades: list[Trade]  # in arrival order
    late: list[bool]  # per trade: counted late by the aggregator
    stats_trades: int
    stats_late: int

    @property
    def accepted(self) -> list[Trade]:
        return [t for t, late in zip(self.trades, self.late, strict=True) if not late]

    @property
    def late_trades(self) -> list[Trade]:
        return [t for t, late in zip(self.trades, self.late, strict=True) if late]


def run(interval_s: int, ops: list[Op]) -> Run:
    aggregator = BarAggregator(interval_s)
    bars: list[Bar] = []
    trades: list[Trade] = []
    late: list[bool] = []
    for kind, ts, price, size, symbol in ops:
        if kind == "flush":
            bars.extend(aggregator.flush(ts))
            continue
        t = trade(ts, price, size, symbol=symbol)
        late_before = aggregator.statistics().late
        closed = aggregator.add(t)
        if closed is not None:
            bars.append(closed)
        trades.append(t)
        late.append(aggregator.statistics().late > late_before)
    bars.extend(aggregator.flush_all())
    stats = aggregator.statistics()
    assert stats.open_bars == 0
    assert stats.bars == len(bars)
    return Run(interval_s, bars, trades, late, stats.trades, stats.late)


@given(sessions())
def test_every_trade_lands_in_exactly_one_bar_or_is_counted_late(
    session: tuple[int, list[Op]],
) -> None:
    """After flush_all, bar trade counts plus late trades equal all trades, and
    bar volumes plus late sizes equal the total size."""
    result = run(*session)
    assert result.stats_trades == len(result.trades)
    assert result.stats_late == sum(result.late)
    assert sum(bar.trade_count for bar in result.bars) + result.stats_late == len(result.trades)
    assert math.isclose(
        sum(bar.volume for bar in result.bars) + sum(t.size for t in result.late_trades),
        sum(t.size for t in result.trades),
        rel_tol=1e-9,
        abs_tol=1e-6,
    )


@given(sessions())
def test_each_bar_summarises_exactly_the_accepted_trades_of_its_bucket(
    session: tuple[int, list[Op]],
) -> None:
    """One bar per (symbol, bucket) with accepted trades; open/close are its first
    and last trade in arrival order, high/low the max/min price, volume and count
    the sums, vwap the size-weighted price (the close when the volume is 0)."""
    result = run(*session)
    interval_ns = result.interval_s * S
    buckets: dict[tuple[str, int], list[Trade]] = defaultdict(list)
    for t in result.accepted:
        buckets[t.symbol, t.ts_event // interval_ns * interval_ns].append(t)
    by_key = {(bar.symbol, bar.ts_event): bar for bar in result.bars}
    assert len(by_key) == len(result.bars)
    assert by_key.keys() == buckets.keys()
    for key, trades in buckets.items():
        bar = by_key[key]
        prices = [t.price for t in trades]
        volume = sum(t.size for t in trades)
        assert (bar.open, bar.close) == (prices[0], prices[-1])
        assert (bar.high, bar.low) == (max(prices), min(prices))
        assert bar.trade_count == len(trades)
        assert bar.interval_s == result.interval_s
        assert math.isclose(bar.volume, volume, rel_tol=1e-9)
        if volume > 0:
            vwap = sum(t.price * t.size for t in trades) / volume
            assert math.isclose(bar.vwap, vwap, rel_tol=1e-9)
        else:
            assert bar.vwap == bar.close


@given(sessions())
def test_bars_of_a_symbol_come_in_strictly_increasing_aligned_buckets(
    session: tuple[int, list[Op]],
) -> None:
    """Per symbol, emitted bars have strictly increasing ts_event, and every
    ts_event is a multiple of the interval."""
    result = run(*session)
    interval_ns = result.interval_s * S
    last: dict[str, int] = {}
    for bar in result.bars:
        assert bar.ts_event % interval_ns == 0
        assert bar.ts_event > last.get(bar.symbol, -1)
        last[bar.symbol] = bar.ts_event


@given(sessions())
def test_a_trade_is_late_exactly_when_its_bucket_was_passed_or_flushed(
    session: tuple[int, list[Op]],
) -> None:
    """A trade is late iff an earlier accepted trade of its symbol was in a later
    bucket, or a flush already closed its bucket or a later one."""
    interval_s, ops = session
    interval_ns = interval_s * S
    floor: dict[str, int] = {}  # end of the last flushed bucket, per symbol
    newest: dict[str, int] = {}  # bucket of the newest accepted trade, per symbol
    expected: list[bool] = []
    for kind, ts, _, _, symbol in ops:
        if kind == "flush":
            for sym, start in newest.items():
                if start + interval_ns <= ts:
                    floor[sym] = start + interval_ns
            continue
        start = ts // interval_ns * interval_ns
        is_late = start < max(floor.get(symbol, 0), newest.get(symbol, 0))
        expected.append(is_late)
        if not is_late:
            newest[symbol] = start
    assert run(interval_s, ops).late == expected
