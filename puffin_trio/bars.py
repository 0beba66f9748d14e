"""Trade-to-bar aggregation in event time.

This module owns :class:`BarAggregator`: it folds
:class:`~puffin_trio.events.Trade` s into OHLCV :class:`~puffin_trio.events.Bar`
s per symbol, in buckets aligned to multiples of the interval in exchange time
(``ts_event``), and counts the trades that arrive too late for their bucket.

It is sans-IO and must not do I/O, log, read a clock or run a timer: the
caller passes the time to :meth:`BarAggregator.flush` (a timer task calls it
to close quiet intervals). It does not validate trades (the provider protocols
do, at the trust boundary). Every method is synchronous, never blocks and is
not a trio checkpoint.
"""

from __future__ import annotations

import types
from collections.abc import Mapping

import attrs

from puffin_trio.errors import ConfigurationError
from puffin_trio.events import Bar, Trade

__all__ = ["BarAggregator", "BarAggregatorStatistics"]

_NS_PER_S = 1_000_000_000


@attrs.frozen
class BarAggregatorStatistics:
    """A point-in-time copy of a :class:`BarAggregator`'s counters.

    * ``trades``: every trade passed to :meth:`BarAggregator.add`, late ones included.
    * ``bars``: bars emitted (by ``add``, ``flush`` or ``flush_all``).
    * ``late``: trades that arrived after their bucket was closed or passed.
    * ``open_bars``: bars being built now (at most one per symbol).
    * ``late_by_symbol``: ``late`` split by symbol (symbols with late trades only).
    """

    trades: int
    bars: int
    late: int
    open_bars: int
    late_by_symbol: Mapping[str, int]


class _SymbolBar:
    """One symbol's bar under construction, reused from bucket to bucket.

    ``start`` is the open bucket's start while ``is_open``; otherwise it is the
    end of the last emitted bucket, the earliest start a trade may still have.
    """

    __slots__ = (
        "close",
        "count",
        "high",
        "is_open",
        "late",
        "low",
        "notional",
        "open",
        "provider",
        "start",
        "symbol",
        "ts_recv",
        "volume",
    )

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.is_open = False
        self.start = 0
        self.late = 0
        self.provider = ""
        self.open = self.high = self.low = self.close = 0.0
        self.volume = self.notional = 0.0
        self.count = 0
        self.ts_recv = 0

    def begin(self, trade: Trade, start: int, provider: str | None) -> None:
        price = trade.price
        size = trade.size
        self.is_open = True
        self.start = start
        self.provider = trade.provider if provider is None else provider
        self.open = self.high = self.low = self.close = price
        self.volume = size
        self.notional = price * size
        self.count = 1
        self.ts_recv = trade.ts_recv


class BarAggregator:
    """Folds trades into bars of ``interval_s`` seconds, per symbol, in event time.

    A trade belongs to the bucket ``[k * interval, (k + 1) * interval)`` that
    holds its ``ts_event``; a trade exactly at a bucket's end opens the next
    bucket. Each symbol has at most one open bar:

    * :meth:`add` folds a trade into its symbol's open bar. A trade for a
      later bucket closes the open bar, returns it and opens a new one. A
      trade for a bucket before the open one, or for a bucket already
      emitted, is *late*: it is counted and dropped, never folded into
      another bucket's bar.
    * An interval without trades yields no bar (no zero-volume fillers).
    * :meth:`flush` closes bars whose interval has ended; :meth:`flush_all`
      closes everything, at shutdown.

    A bar's ``ts_event`` is its bucket's start; ``ts_recv`` is the
    ``ts_recv`` of the trade that closed it, ``now_ns`` for :meth:`flush`,
    or its last trade's ``ts_recv`` for :meth:`flush_all`. ``vwap`` is
    ``sum(price * size) / volume``, or the close when the volume is 0 (only
    zero-size trades), so that it is always a price the bar traded at.
    ``provider`` is the aggregator's ``provider`` if given, else that of the
    bar's first trade: give one aggregator one provider's trades, or set
    ``provider`` to label bars that merge several (then mind trades reported
    twice).

    One trade stamped far in the future opens a far-future bucket for its
    symbol, and every trade before it is then late: exchange timestamps are
    trusted here, so the provider protocols must reject nonsense.
    """

    __slots__ = ("_bars", "_interval_ns", "_late", "_open_bars", "_symbols", "_trades", "provider")

    def __init__(self, interval_s: int, *, provider: str | None = None) -> None:
        if isinstance(interval_s, bool) or not isinstance(interval_s, int) or interval_s <= 0:
            raise ConfigurationError(
                f"interval_s must be a whole number of seconds > 0, got {interval_s!r}"
            )
        self._interval_ns = interval_s * _NS_PER_S
        self.provider = provider
        self._symbols: dict[str, _SymbolBar] = {}
        self._trades = 0
        self._bars = 0
        self._late = 0
        self._open_bars = 0

    @property
    def interval_s(self) -> int:
        """The bar length in seconds."""
        return self._interval_ns // _NS_PER_S

    def add(self, trade: Trade) -> Bar | None:
        """Fold ``trade`` into its symbol's bar; return the bar it closed, if any."""
        self._trades += 1
        ts = trade.ts_event
        start = ts - ts % self._interval_ns
        acc = self._symbols.get(trade.symbol)
        if acc is None:
            acc = self._symbols[trade.symbol] = _SymbolBar(trade.symbol)
            acc.begin(trade, start, self.provider)
            self._open_bars += 1
            return None
        if acc.is_open:
            if start == acc.start:
                price = trade.price
                size = trade.size
                if price > acc.high:
                    acc.high = price
                elif price < acc.low:
                    acc.low = price
                acc.close = price
                acc.volume += size
                acc.notional += price * size
                acc.count += 1
                acc.ts_recv = trade.ts_recv
                return None
            if start > acc.start:
                bar = self._close(acc, trade.ts_recv)
                acc.begin(trade, start, self.provider)
                self._open_bars += 1
                return bar
        elif start >= acc.start:
            acc.begin(trade, start, self.provider)
            self._open_bars += 1
            return None
        acc.late += 1
        self._late += 1
        return None

    def flush(self, now_ns: int) -> list[Bar]:
        """Close and return every open bar whose interval ended at or before ``now_ns``.

        ``now_ns`` is compared with exchange time: pass the current time minus
        a grace period to wait for trades that are still in flight. A trade for
        a flushed bucket is late. Bars come in the order symbols were first seen.
        """
        last_start = now_ns - self._interval_ns
        return [
            self._close(acc, now_ns)
            for acc in self._symbols.values()
            if acc.is_open and acc.start <= last_start
        ]

    def flush_all(self) -> list[Bar]:
        """Close and return every open bar (at shutdown), in the order symbols were first seen."""
        return [self._close(acc, acc.ts_recv) for acc in self._symbols.values() if acc.is_open]

    def statistics(self) -> BarAggregatorStatistics:
        """The aggregator's counters, as a frozen copy."""
        return BarAggregatorStatistics(
            trades=self._trades,
            bars=self._bars,
            late=self._late,
            open_bars=self._open_bars,
            late_by_symbol=types.MappingProxyType(
                {symbol: acc.late for symbol, acc in self._symbols.items() if acc.late}
            ),
        )

    def __repr__(self) -> str:
        return (
            f"<BarAggregator {self.interval_s}s symbols={len(self._symbols)}"
            f" open={self._open_bars} bars={self._bars} late={self._late}>"
        )

    def _close(self, acc: _SymbolBar, ts_recv: int) -> Bar:
        volume = acc.volume
        bar = Bar(
            provider=acc.provider,
            symbol=acc.symbol,
            ts_event=acc.start,
            ts_recv=ts_recv,
            open=acc.open,
            high=acc.high,
            low=acc.low,
            close=acc.close,
            volume=volume,
            interval_s=self._interval_ns // _NS_PER_S,
            trade_count=acc.count,
            vwap=acc.notional / volume if volume > 0 else acc.close,
        )
        acc.is_open = False
        acc.start += self._interval_ns
        self._open_bars -= 1
        self._bars += 1
        return bar
