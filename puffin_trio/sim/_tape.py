"""The simulated market's memory: every trade it printed, what the historical endpoints serve.

This module owns :class:`TradeTape`, which a simulator fills with every trade
its market model generates (sent to a client or not, connected or not) and
reads back, by symbol and time, to answer historical requests, with the
pagination every historical endpoint shares (:meth:`TradeTape.page`: a
position that survives trimming and trades printed meanwhile). It must not
do I/O, read a clock or know a wire format.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable

import attrs

from puffin_trio.sim.market import SimTrade

__all__ = ["DEFAULT_TAPE_LIMIT", "Printed", "TradeTape"]

#: Trades kept per symbol: an hour of a busy stock (~250 trades/s) at ~200
#: bytes each, ~200 MB at most per symbol; the oldest go first. A test or a
#: demo stays far below it; a historical request for trades older than the
#: tape gets only those still on it (the simulator's notion of retention).
DEFAULT_TAPE_LIMIT = 1_000_000


@attrs.frozen
class Printed:
    """One trade on the tape: the model's trade, its provider sequence number (Polygon's
    ``q``; the model's own per-symbol counter elsewhere) and its position on the tape
    (``ordinal``: 0, 1, 2, ... per symbol, never reused)."""

    trade: SimTrade
    seq: int
    ordinal: int


class _Symbol:
    __slots__ = ("base", "printed", "times")

    def __init__(self) -> None:
        self.base = 0  # ordinal of printed[0]
        self.printed: list[Printed] = []
        self.times: list[int] = []


class TradeTape:
    """Every trade printed, per symbol, oldest first (``limit`` kept per symbol).

    Trades are recorded in the order the market prints them, which is also
    time order (every simulator stamps ticks from one non-decreasing wall
    clock); a trade stamped earlier than the last one is recorded at the last
    one's time, so the tape stays sorted.
    """

    def __init__(self, limit: int = DEFAULT_TAPE_LIMIT) -> None:
        self.limit = limit
        self._symbols: dict[str, _Symbol] = {}
        #: Trades recorded so far (trimmed ones included).
        self.recorded = 0

    def record(self, trade: SimTrade, seq: int | None = None) -> Printed:
        """Put ``trade`` on the tape (``seq``: its wire sequence number, default the model's)."""
        state = self._symbols.get(trade.symbol)
        if state is None:
            state = self._symbols[trade.symbol] = _Symbol()
        times = state.times
        if times and trade.ts_ns < times[-1]:
            trade = attrs.evolve(trade, ts_ns=times[-1])
        printed = Printed(trade, trade.seq if seq is None else seq, state.base + len(times))
        state.printed.append(printed)
        times.append(trade.ts_ns)
        self.recorded += 1
        # Trim in chunks (a quarter of the limit at a time), not one by one.
        if len(times) > self.limit + self.limit // 4:
            drop = len(times) - self.limit
            del state.printed[:drop]
            del times[:drop]
            state.base += drop
        return printed

    def symbols(self) -> list[str]:
        """Every symbol with a trade on the tape, in the order they first printed."""
        return list(self._symbols)

    def between(self, symbol: str, start_ns: int, end_ns: int) -> list[SimTrade]:
        """Every trade of ``symbol`` with ``start_ns <= ts <= end_ns`` still on the tape."""
        return [p.trade for p in self.page(symbol, start_ns, end_ns, None, None)]

    def page(
        self, symbol: str, start_ns: int, end_ns: int, after: int | None, limit: int | None
    ) -> list[Printed]:
        """Up to ``limit`` trades of ``symbol`` in ``[start_ns, end_ns]``, from ordinal
        ``after + 1`` on (``after=None``: from the start of the window)."""
        state = self._symbols.get(symbol)
        if state is None:
            return []
        first = bisect_left(state.times, start_ns)
        if after is not None:
            first = max(first, after + 1 - state.base)
        out: list[Printed] = []
        for printed in _from(state.printed, first):
            if printed.trade.ts_ns > end_ns or (limit is not None and len(out) >= limit):
                break
            out.append(printed)
        return out


def _from(items: list[Printed], first: int) -> Iterable[Printed]:
    for index in range(max(first, 0), len(items)):
        yield items[index]
