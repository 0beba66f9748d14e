"""A seeded, deterministic market for the simulators: trades, quotes and L2 books.

This module owns the price dynamics of the simulated instruments and the
provider-neutral tick objects they produce (:class:`SimTrade`,
:class:`SimQuote`, :class:`SimBook`); every provider simulator turns these
ticks into its own wire format. It must not read a clock (time is always
passed in), do I/O, or know any wire format. How the market moves (a random
walk of an L2 book that is never crossed or locked), what the seed determines,
and what a book delta holds are in ``docs/guide/simulators.rst``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence

import attrs

from puffin_trio.errors import ConfigurationError

__all__ = [
    "MAX_SPREAD_TICKS",
    "MarketModel",
    "SimBook",
    "SimQuote",
    "SimTick",
    "SimTrade",
    "fold_trade",
    "is_crypto_symbol",
]

#: Widest spread, in ticks, the model lets a book reach before it stops
#: depleting the best levels. Five cents on a stock is a realistic quiet-market
#: spread for a mid-cap; it keeps quotes plausible without freezing the price.
MAX_SPREAD_TICKS = 5

#: Stock tick size (Reg NMS sub-penny rule for prices above $1).
STOCK_TICK = 0.01
#: Stock book levels and quote sizes are whole round lots of this many shares.
ROUND_LOT = 100
#: Exchange codes a simulated stock prints on (IEX is ``V``).
STOCK_EXCHANGES = ("V", "Q", "N", "P", "K", "Z")
#: Crypto ticks are this many orders of magnitude below the price (BTC at
#: 60 000 -> 0.1), much finer relative to the price than a stock's cent.
CRYPTO_TICK_DIGITS = 5

_REGULAR = ("@",)
_ODD_LOT = ("@", "I")
_QUOTE_CONDITIONS = ("R",)

# Book event thresholds on one uniform draw: resize < 0.5 <= improve < 0.65 <=
# deplete < 0.8 <= nothing. Resizes dominate, as in real books, and improve ==
# deplete keeps the random walk unbiased.
_RESIZE = 0.5
_IMPROVE = 0.65
_DEPLETE = 0.8


def fold_trade(bars: dict[str, list[float]], trade: SimTrade) -> None:
    """Fold ``trade`` into the open bar of its symbol in ``bars``, opening it if needed.

    A bar is ``[open, high, low, close, volume, count, price * volume]``: what
    every simulator's bar messages are made of.
    """
    price, size = trade.price, trade.size
    bar = bars.get(trade.symbol)
    if bar is None:
        bars[trade.symbol] = [price, price, price, price, size, 1, price * size]
        return
    if price > bar[1]:
        bar[1] = price
    if price < bar[2]:
        bar[2] = price
    bar[3] = price
    bar[4] += size
    bar[5] += 1
    bar[6] += price * size


def is_crypto_symbol(symbol: str) -> bool:
    """``True`` for crypto pairs written ``BASE/QUOTE`` (``"BTC/USD"``)."""
    return "/" in symbol


@attrs.frozen
class SimTrade:
    """One simulated execution.

    ``taker_side`` is ``"B"`` when a buyer lifted the ask, ``"S"`` when a seller
    hit the bid. ``trade_id`` increases per symbol. ``seq`` is a per-symbol
    counter shared by trades and quotes (strictly increasing).
    """

    symbol: str
    price: float
    size: float
    ts_ns: int
    trade_id: int
    exchange: str
    conditions: tuple[str, ...]
    taker_side: str
    tape: str
    seq: int


@attrs.frozen
class SimQuote:
    """Top of the simulated book. Sizes are in shares/units (not round lots)."""

    symbol: str
    bid: float
    bid_size: float
    ask: float
    ask_size: float
    ts_ns: int
    bid_exchange: str
    ask_exchange: str
    conditions: tuple[str, ...]
    tape: str
    seq: int


@attrs.frozen
class SimBook:
    """An L2 book message: the whole book (``snapshot=True``) or the changed levels.

    ``bids`` are best (highest) first, ``asks`` best (lowest) first, each a
    ``(price, size)`` pair. In a delta, size ``0`` deletes the level. ``seq``
    counts this symbol's book messages (see ``docs/guide/simulators.rst``).
    """

    symbol: str
    bids: tuple[tuple[float, float], ...]
    asks: tuple[tuple[float, float], ...]
    snapshot: bool
    ts_ns: int
    seq: int


SimTick = SimTrade | SimQuote | SimBook


class _Symbol:
    """Mutable per-symbol state: the book in integer ticks, counters, own RNG.

    Hot path: draws use ``random()`` directly (``randint`` is several times
    slower) and prices are ``ticks / scale``, which is exactly the float
    nearest the decimal price because the tick is a power of ten.
    """

    __slots__ = (
        "ask_sizes",
        "asks",
        "bid_sizes",
        "bids",
        "book_seq",
        "crypto",
        "depth",
        "fresh_asks",
        "fresh_bids",
        "name",
        "next_trade_id",
        "pending_asks",
        "pending_bids",
        "random",
        "resync",
        "rng",
        "scale",
        "seq",
        "size_decimals",
        "size_unit",
        "tape",
    )

    def __init__(self, name: str, seed: int, depth: int) -> None:
        self.name = name
        self.depth = depth
        self.rng = rng = random.Random(f"{seed}:{name}")
        self.scale: int
        self.random = rng.random
        self.crypto = is_crypto_symbol(name)
        if self.crypto:
            price = 10 ** rng.uniform(0.0, 4.8)
            self.scale = 10 ** (CRYPTO_TICK_DIGITS - math.floor(math.log10(price)))
            # Sizes worth roughly $10-$50k: a unit of about $1000 of the coin.
            unit_exponent = math.floor(math.log10(1000.0 / price))
            self.size_unit = 10.0**unit_exponent
            self.size_decimals = max(0, 3 - unit_exponent)
            self.tape = ""
        else:
            price = rng.uniform(10.0, 500.0)
            self.scale = round(1 / STOCK_TICK)
            self.size_unit = float(ROUND_LOT)
            self.size_decimals = 0
            self.tape = rng.choice("ABC")
        best_bid = round(price * self.scale) - 1
        self.bids: list[int] = [best_bid]
        self.asks: list[int] = [best_bid + self.draw(1, MAX_SPREAD_TICKS)]
        while len(self.bids) < depth and self.bids[-1] > 3:
            self.bids.append(self.bids[-1] - self.draw(1, 3))
        while len(self.asks) < depth:
            self.asks.append(self.asks[-1] + self.draw(1, 3))
        self.bid_sizes: dict[int, float] = {p: self.level_size() for p in self.bids}
        self.ask_sizes: dict[int, float] = {p: self.level_size() for p in self.asks}
        self.pending_bids: dict[int, float] = {}
        self.pending_asks: dict[int, float] = {}
        self.fresh_bids: set[int] = set()  # levels inserted since the last book message
        self.fresh_asks: set[int] = set()
        self.resync = False
        self.book_seq = 0
        self.seq = 0
        self.next_trade_id = 1

    def draw(self, low: int, high: int) -> int:
        """A uniform integer in ``[low, high]``."""
        return low + int(self.random() * (high - low + 1))

    def level_size(self) -> float:
        if self.crypto:
            return round((0.1 + 49.9 * self.random()) * self.size_unit, self.size_decimals)
        return ROUND_LOT * (1 + int(30 * self.random()))

    def trade_size(self) -> float:
        if self.crypto:
            return round((0.001 + 4.999 * self.random()) * self.size_unit, self.size_decimals)
        if self.random() < 0.2:
            return 1 + int((ROUND_LOT - 1) * self.random())  # odd lot
        return ROUND_LOT * (1 + int(10 * self.random()))

    def note(self, bid_side: bool, ticks: int, size: float, new: bool = False) -> None:
        """Remember a level change for the next delta (size 0: deleted; ``new``: inserted).

        A level inserted and deleted again between two book messages is
        forgotten, so a delta never deletes a level the consumer never saw.
        """
        if self.resync:
            return
        pending = self.pending_bids if bid_side else self.pending_asks
        fresh = self.fresh_bids if bid_side else self.fresh_asks
        if new and ticks not in pending:
            fresh.add(ticks)
        if size == 0 and ticks in fresh:
            fresh.discard(ticks)
            del pending[ticks]
            return
        pending[ticks] = size
        # A consumer that never asks for deltas must not make this grow without
        # bound: past a few books' worth of changes a snapshot is cheaper.
        if len(self.pending_bids) + len(self.pending_asks) > 4 * self.depth:
            self.resync = True
            self.clear_pending()

    def clear_pending(self) -> None:
        self.pending_bids.clear()
        self.pending_asks.clear()
        self.fresh_bids.clear()
        self.fresh_asks.clear()

    def step(self, idle: bool) -> None:
        """Apply one random book event; ``idle=False`` forbids the no-op event."""
        rand = self.random
        draw = rand() * (1.0 if idle else _DEPLETE)
        if draw >= _DEPLETE:
            return
        bid_side = rand() < 0.5
        levels = self.bids if bid_side else self.asks
        sizes = self.bid_sizes if bid_side else self.ask_sizes
        spread = self.asks[0] - self.bids[0]
        if draw >= _IMPROVE and (spread >= MAX_SPREAD_TICKS or len(levels) < 2):
            draw = _RESIZE  # cannot deplete: improve instead
        if _RESIZE <= draw < _IMPROVE and spread < 2:
            draw = 0.0  # no room inside the spread: resize instead
        if draw < _RESIZE:
            ticks = levels[int(rand() * len(levels))]
            size = self.level_size()
            sizes[ticks] = size
            self.note(bid_side, ticks, size)
        elif draw < _IMPROVE:
            inside = self.draw(1, spread - 1)
            ticks = self.bids[0] + inside if bid_side else self.asks[0] - inside
            size = self.level_size()
            levels.insert(0, ticks)
            sizes[ticks] = size
            self.note(bid_side, ticks, size, new=True)
            if len(levels) > self.depth:
                self.remove(bid_side, levels.pop())
        else:
            self.remove(bid_side, levels.pop(0))
            gap = self.draw(1, 3)
            ticks = levels[-1] - gap if bid_side else levels[-1] + gap
            if ticks > 0:
                size = self.level_size()
                levels.append(ticks)
                sizes[ticks] = size
                self.note(bid_side, ticks, size, new=True)

    def remove(self, bid_side: bool, ticks: int) -> None:
        (self.bid_sizes if bid_side else self.ask_sizes).pop(ticks)
        self.note(bid_side, ticks, 0)


class MarketModel:
    """A seeded market of ``symbols``, stepping one tick per call.

    ``depth`` is the number of levels per side of each L2 book (10: Alpaca's
    crypto books and IB's default depth request are around that size, enough
    to look like a book while keeping snapshots small). ``trade_weight``,
    ``quote_weight`` and ``book_weight`` set the mix of :meth:`next_tick`
    (default 1:3:2; quotes outnumber trades on every real feed).

    Symbols not given up front are added on first use (:meth:`add_symbols`).
    The model is not thread-safe; it never blocks and never reads a clock.
    """

    def __init__(
        self,
        symbols: Sequence[str],
        *,
        seed: int = 0,
        depth: int = 10,
        trade_weight: float = 1.0,
        quote_weight: float = 3.0,
        book_weight: float = 2.0,
    ) -> None:
        if isinstance(symbols, str):
            raise ConfigurationError(
                f"symbols must be a sequence of symbols, not the string {symbols!r}"
            )
        if depth < 1:
            raise ConfigurationError(f"depth must be at least 1, got {depth}")
        weights = (trade_weight, quote_weight, book_weight)
        if any(w < 0 for w in weights) or not any(w > 0 for w in weights):
            raise ConfigurationError(
                f"trade/quote/book weights must be >= 0 and not all 0, got {weights}"
            )
        self._seed = seed
        self._depth = depth
        self._trade_weight = trade_weight
        self._quote_weight = quote_weight
        self._book_weight = book_weight
        self._random = random.Random(seed).random
        self._states: dict[str, _Symbol] = {}
        self._symbols: tuple[str, ...] = ()
        self.add_symbols(symbols)

    @property
    def symbols(self) -> tuple[str, ...]:
        """Every symbol the model knows, in the order they were added."""
        return self._symbols

    @property
    def depth(self) -> int:
        """Levels per side of each book."""
        return self._depth

    def add_symbols(self, symbols: Iterable[str]) -> None:
        """Add symbols (known ones are ignored). Raises ``ConfigurationError`` for a bad symbol."""
        for symbol in symbols:
            self._state(symbol)

    def _state(self, symbol: str) -> _Symbol:
        state = self._states.get(symbol)
        if state is None:
            if not isinstance(symbol, str) or not symbol or symbol.strip() != symbol:
                raise ConfigurationError(f"a symbol must be a non-empty string, got {symbol!r}")
            state = self._states[symbol] = _Symbol(symbol, self._seed, self._depth)
            self._symbols += (symbol,)
        return state

    def tick_size(self, symbol: str) -> float:
        """The symbol's price increment (a power of ten)."""
        return 1 / self._state(symbol).scale

    def next_tick(
        self,
        ts_ns: int,
        *,
        trades: Sequence[str] | None = None,
        quotes: Sequence[str] | None = None,
        books: Sequence[str] = (),
    ) -> SimTick:
        """Step the market once and return the resulting trade, quote or book delta.

        The kind is drawn by weight among the kinds with candidates, then the
        symbol uniformly from that kind's candidates: ``trades`` and ``quotes``
        default to every known symbol, ``books`` to none (a book is opt-in).
        Pass candidates in a stable order (the draw indexes into them).
        Raises ``ValueError`` if every candidate list is empty.
        """
        trade_from = self._symbols if trades is None else trades
        quote_from = self._symbols if quotes is None else quotes
        tw = self._trade_weight if trade_from else 0.0
        qw = self._quote_weight if quote_from else 0.0
        bw = self._book_weight if books else 0.0
        total = tw + qw + bw
        if total <= 0:
            raise ValueError("next_tick needs at least one candidate symbol with a nonzero weight")
        rand = self._random
        draw = rand() * total
        if draw < tw:
            return self.trade(trade_from[int(rand() * len(trade_from))], ts_ns)
        if draw < tw + qw:
            return self.quote(quote_from[int(rand() * len(quote_from))], ts_ns)
        return self.book_delta(books[int(rand() * len(books))], ts_ns)

    def trade(self, symbol: str, ts_ns: int) -> SimTrade:
        """Step ``symbol`` and print a trade at its best bid or ask."""
        st = self._states.get(symbol) or self._state(symbol)
        st.step(True)
        rand = st.random
        buy = rand() < 0.5
        price = (st.asks[0] if buy else st.bids[0]) / st.scale
        size = st.trade_size()
        trade_id = st.next_trade_id
        st.next_trade_id = trade_id + 1
        st.seq += 1
        if st.crypto:
            exchange = ""
            conditions: tuple[str, ...] = ()
        else:
            exchange = STOCK_EXCHANGES[int(rand() * len(STOCK_EXCHANGES))]
            conditions = _ODD_LOT if size < ROUND_LOT else _REGULAR
        return SimTrade(
            symbol, price, size, ts_ns, trade_id, exchange, conditions, "B" if buy else "S",
            st.tape, st.seq,
        )  # fmt: skip

    def quote(self, symbol: str, ts_ns: int) -> SimQuote:
        """Step ``symbol`` and return its top of book."""
        st = self._states.get(symbol) or self._state(symbol)
        st.step(True)
        st.seq += 1
        bid, ask = st.bids[0], st.asks[0]
        if st.crypto:
            bx = ax = ""
            conditions: tuple[str, ...] = ()
        else:
            rand = st.random
            bx = STOCK_EXCHANGES[int(rand() * len(STOCK_EXCHANGES))]
            ax = STOCK_EXCHANGES[int(rand() * len(STOCK_EXCHANGES))]
            conditions = _QUOTE_CONDITIONS
        scale = st.scale
        return SimQuote(
            symbol, bid / scale, st.bid_sizes[bid], ask / scale, st.ask_sizes[ask], ts_ns,
            bx, ax, conditions, st.tape, st.seq,
        )  # fmt: skip

    def book_snapshot(self, symbol: str, ts_ns: int) -> SimBook:
        """The whole book of ``symbol`` (no step). Pending changes are folded into it."""
        st = self._state(symbol)
        st.clear_pending()
        st.resync = False
        st.book_seq += 1
        scale = st.scale
        return SimBook(
            symbol,
            tuple((p / scale, st.bid_sizes[p]) for p in st.bids),
            tuple((p / scale, st.ask_sizes[p]) for p in st.asks),
            True,
            ts_ns,
            st.book_seq,
        )

    def book_delta(self, symbol: str, ts_ns: int) -> SimBook:
        """Step ``symbol``'s book and return every level changed since its last book message.

        Returns a snapshot instead when too many changes piled up (more than
        four books' worth) since the last book message.
        """
        st = self._state(symbol)
        st.step(False)
        if st.resync:
            return self.book_snapshot(symbol, ts_ns)
        scale = st.scale
        bids = tuple((p / scale, s) for p, s in sorted(st.pending_bids.items(), reverse=True))
        asks = tuple((p / scale, s) for p, s in sorted(st.pending_asks.items()))
        st.clear_pending()
        st.book_seq += 1
        return SimBook(symbol, bids, asks, False, ts_ns, st.book_seq)
