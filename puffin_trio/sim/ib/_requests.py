"""What the fake TWS keeps per market data request, and the messages each one yields.

This module owns the per-request state of :mod:`puffin_trio.sim.ib`:
``reqMktData`` quotes (:class:`Quotes`), tick-by-tick (:class:`Ticks`),
depth rows with TWS's position semantics (:class:`Depth` and
:func:`row_operations`) and 5-second bars (:class:`Bars`). It must not do
I/O or know about connections: the connection feeds it the market and sends
what it returns.
"""

from __future__ import annotations

import attrs

from puffin_trio.sim.ib._wire import num
from puffin_trio.sim.market import MarketModel, SimBook, SimQuote, SimTrade

__all__ = [
    "BAR_SECONDS",
    "NS",
    "TICK_BY_TICK_TYPES",
    "Bars",
    "Depth",
    "Quotes",
    "Subscription",
    "Ticks",
    "quote_ticks",
    "row_operations",
    "trade_tick",
    "venue",
]

NS = 1_000_000_000
BAR_SECONDS = 5
#: Simulated exchange code -> the venue name TWS prints on a trade.
_VENUES = {"V": "IEX", "Q": "NASDAQ", "N": "NYSE", "P": "ARCA", "K": "EDGX", "Z": "BATS"}
#: Market makers shown on SMART depth rows.
_DEPTH_VENUES = ("NSDQ", "ARCA", "NYSE", "BATS", "IEX")
_INSERT, _UPDATE, _DELETE = 0, 1, 2
#: ``reqTickByTickData`` tick type names -> their wire codes.
TICK_BY_TICK_TYPES = {"Last": "1", "AllLast": "2", "BidAsk": "3", "MidPoint": "4"}


@attrs.define(eq=False)
class Quotes:
    """A ``reqMktData`` request: the last bid/ask (price, size) sent."""

    req_id: str
    symbol: str
    bid: tuple[float, float] | None = None
    ask: tuple[float, float] | None = None


@attrs.define(eq=False)
class Ticks:
    """A ``reqTickByTickData`` request; ``kind`` is the wire tick type ``"1"``..``"4"``."""

    req_id: str
    symbol: str
    kind: str


@attrs.define(eq=False)
class Depth:
    """A ``reqMktDepth`` request: a mirror of the model's book and the rows last sent."""

    req_id: str
    symbol: str
    rows: int
    smart: bool
    seq: int = -1
    bids: dict[float, float] = attrs.Factory(dict)
    asks: dict[float, float] = attrs.Factory(dict)
    bid_rows: list[tuple[float, float]] = attrs.Factory(list)
    ask_rows: list[tuple[float, float]] = attrs.Factory(list)

    def follow(self, model: MarketModel, book: SimBook) -> None:
        """Fold a book message into the mirror (a snapshot whenever a delta was missed)."""
        if not book.snapshot and book.seq != self.seq + 1:
            book = model.book_snapshot(self.symbol, book.ts_ns)
        if book.snapshot:
            self.bids = dict(book.bids)
            self.asks = dict(book.asks)
        else:
            for side, levels in ((self.bids, book.bids), (self.asks, book.asks)):
                for price, size in levels:
                    if size:
                        side[price] = size
                    else:
                        side.pop(price, None)
        self.seq = book.seq

    def messages(self) -> list[list[str]]:
        """The row operations that turn the rows last sent into the mirror's top rows."""
        out: list[list[str]] = []
        new_bids = sorted(self.bids.items(), reverse=True)[: self.rows]
        new_asks = sorted(self.asks.items())[: self.rows]
        for side, old, new in (("1", self.bid_rows, new_bids), ("0", self.ask_rows, new_asks)):
            for position, operation, price, size in row_operations(old, new, self.rows):
                out.append(self._message(position, operation, side, price, size))
        self.bid_rows, self.ask_rows = new_bids, new_asks
        return out

    def _message(self, position: int, op: int, side: str, price: float, size: float) -> list[str]:
        head = ["13", "1", self.req_id, str(position)] if self.smart else ["12", "1", self.req_id]
        if self.smart:
            venue = _DEPTH_VENUES[round(price * 100) % len(_DEPTH_VENUES)]
            return [*head, venue, str(op), side, repr(price), num(size), "1"]
        return [*head, str(position), str(op), side, repr(price), num(size)]


def row_operations(
    old: list[tuple[float, float]], new: list[tuple[float, float]], limit: int
) -> list[tuple[int, int, float, float]]:
    """TWS row operations (position, op, price, size) that turn ``old`` rows into ``new``.

    Both lists are sorted best first with unique prices and hold at most
    ``limit`` rows. Walking down the rows: equal prices give an update if the
    size changed; a row whose price is gone, facing a price that is new,
    becomes an update *with a new price* (as TWS does); a gone price alone is
    deleted (the rows below move up); a new price alone is inserted (the rows
    below move down), after deleting the lowest gone row first if the side
    is full, so no side ever holds more than ``limit`` rows.
    """
    current = list(old)
    wanted = {price for price, _ in new}
    ops: list[tuple[int, int, float, float]] = []
    i = 0
    while i < len(new) or i < len(current):
        if i >= len(new):
            price, _ = current.pop(i)
            ops.append((i, _DELETE, price, 0.0))
            continue
        price, size = new[i]
        if i >= len(current):
            current.append(new[i])
            ops.append((i, _INSERT, price, size))
            i += 1
            continue
        here, here_size = current[i]
        if here == price:
            if here_size != size:
                current[i] = new[i]
                ops.append((i, _UPDATE, price, size))
            i += 1
        elif here not in wanted and all(p != price for p, _ in current[i:]):
            current[i] = new[i]
            ops.append((i, _UPDATE, price, size))
            i += 1
        elif here not in wanted:
            current.pop(i)
            ops.append((i, _DELETE, here, 0.0))
        else:
            if len(current) >= limit:
                # Some lower row's price must be gone (else new would exceed the limit).
                gone = max(j for j in range(i, len(current)) if current[j][0] not in wanted)
                ops.append((gone, _DELETE, current.pop(gone)[0], 0.0))
            current.insert(i, new[i])
            ops.append((i, _INSERT, price, size))
            i += 1
    return ops


@attrs.define(eq=False)
class Bars:
    """A ``reqRealTimeBars`` request: the 5-second bar being built (``window`` in Unix s)."""

    req_id: str
    symbol: str
    window: int = -1
    ohlc: list[float] = attrs.Factory(list)
    volume: float = 0.0
    notional: float = 0.0
    count: int = 0

    def add(self, trade: SimTrade, window: int) -> list[str] | None:
        """Fold a trade in; return the finished bar's message when a new window starts."""
        done = self.roll(window)
        price = trade.price
        if self.count == 0:
            self.ohlc = [price, price, price, price]
        else:
            ohlc = self.ohlc
            ohlc[1] = max(ohlc[1], price)
            ohlc[2] = min(ohlc[2], price)
            ohlc[3] = price
        self.volume += trade.size
        self.notional += price * trade.size
        self.count += 1
        return done

    def roll(self, window: int) -> list[str] | None:
        if window == self.window:
            return None
        done = None
        if self.count:
            o, h, low, c = self.ohlc
            done = [
                "50", "3", self.req_id, str(self.window), repr(o), repr(h), repr(low), repr(c),
                num(self.volume), repr(self.notional / self.volume), str(self.count),
            ]  # fmt: skip
        self.window, self.volume, self.notional, self.count = window, 0.0, 0.0, 0
        return done


Subscription = Quotes | Ticks | Depth | Bars


# --------------------------------------------------------------------------- data messages
# Messages as field lists (``encode_message`` puts them on the wire). The
# benchmarks' blast server builds its data with these.


def venue(exchange: str) -> str:
    """The venue name TWS prints for a simulated exchange code."""
    return _VENUES.get(exchange, exchange)


def trade_tick(req_id: str, kind: str, trade: SimTrade, seconds: int) -> list[str]:
    """A ``tickByTick`` (99) trade of type ``kind`` (``"1"`` Last, ``"2"`` AllLast)."""
    conditions = " ".join(c for c in trade.conditions if c != "@")
    return [
        "99", req_id, kind, str(seconds), repr(trade.price), num(trade.size), "0",
        venue(trade.exchange), conditions,
    ]  # fmt: skip


def quote_ticks(
    req_id: str,
    quote: SimQuote,
    bid: tuple[float, float] | None,
    ask: tuple[float, float] | None,
) -> list[list[str]]:
    """``reqMktData`` L1 for ``quote``, given the (price, size) last sent per side.

    A ``tickPrice`` (1) for a side whose price moved (or was never sent), a
    ``tickSize`` (2) for one whose size alone did, nothing for an unchanged side.
    """
    out = []
    for tick_type, size_type, price, size, last in (
        ("1", "0", quote.bid, quote.bid_size, bid),
        ("2", "3", quote.ask, quote.ask_size, ask),
    ):
        if last is None or last[0] != price:
            out.append(["1", "6", req_id, tick_type, repr(price), num(size), "1"])
        elif last[1] != size:
            out.append(["2", "6", req_id, size_type, num(size)])
    return out
