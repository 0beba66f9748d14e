"""Specification of the simulators' market model (puffin_trio.sim.market)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from puffin_trio.errors import ConfigurationError
from puffin_trio.sim import MarketModel, SimBook, SimQuote, SimTrade
from puffin_trio.sim.market import ROUND_LOT, is_crypto_symbol

SYMBOLS = ("AAPL", "MSFT", "BTC/USD", "ETH/USD")

#: One call on a model: (method, symbol index).
operations = st.lists(
    st.tuples(st.sampled_from(["trade", "quote", "delta", "tick"]), st.integers(0, 3)),
    max_size=300,
)


def run(model: MarketModel, ops: list[tuple[str, int]]) -> list[SimTrade | SimQuote | SimBook]:
    out: list[SimTrade | SimQuote | SimBook] = []
    for ts, (op, index) in enumerate(ops):
        symbol = SYMBOLS[index]
        if op == "trade":
            out.append(model.trade(symbol, ts))
        elif op == "quote":
            out.append(model.quote(symbol, ts))
        elif op == "delta":
            out.append(model.book_delta(symbol, ts))
        else:
            out.append(model.next_tick(ts, books=SYMBOLS))
    return out


def assert_book_sane(book: SimBook, depth: int) -> None:
    bids = [p for p, _ in book.bids]
    asks = [p for p, _ in book.asks]
    assert bids == sorted(bids, reverse=True)
    assert asks == sorted(asks)
    assert len(set(bids)) == len(bids) and len(set(asks)) == len(asks)
    assert 1 <= len(bids) <= depth and 1 <= len(asks) <= depth
    assert all(s > 0 for _, s in book.bids + book.asks)
    assert bids[0] < asks[0], "crossed or locked book"


@given(seed=st.integers(0, 2**32), ops=operations)
def test_same_seed_and_same_calls_give_the_same_ticks(
    seed: int, ops: list[tuple[str, int]]
) -> None:
    """Two models with the same seed, fed the same calls, produce identical ticks."""
    assert run(MarketModel(SYMBOLS, seed=seed), ops) == run(MarketModel(SYMBOLS, seed=seed), ops)


def test_different_seeds_give_different_markets() -> None:
    ops = [("quote", 0)] * 20
    assert run(MarketModel(SYMBOLS, seed=1), ops) != run(MarketModel(SYMBOLS, seed=2), ops)


def test_adding_a_symbol_does_not_change_another_symbols_path() -> None:
    alone = MarketModel(["AAPL"], seed=7)
    crowded = MarketModel(["MSFT", "AAPL", "NVDA"], seed=7)
    for ts in range(200):
        crowded.quote("MSFT", ts)
        assert alone.quote("AAPL", ts) == crowded.quote("AAPL", ts)


@given(seed=st.integers(0, 2**32), ops=operations)
def test_books_are_never_crossed(seed: int, ops: list[tuple[str, int]]) -> None:
    """Whatever the calls, every symbol's full book is sorted, positive and uncrossed."""
    model = MarketModel(SYMBOLS, seed=seed, depth=5)
    run(model, ops)
    for symbol in SYMBOLS:
        assert_book_sane(model.book_snapshot(symbol, 0), depth=5)


@given(seed=st.integers(0, 2**32), ops=operations)
def test_deltas_applied_to_a_snapshot_reproduce_the_book(
    seed: int, ops: list[tuple[str, int]]
) -> None:
    """Snapshot, then every later book message applied to a plain dict book (size 0 deletes),
    equals the model's own book; book seq grows by one per message; the rebuilt book is never
    crossed."""
    model = MarketModel(SYMBOLS, seed=seed, depth=4)
    books: dict[str, tuple[dict[float, float], dict[float, float]]] = {}
    last_seq: dict[str, int] = {}

    def apply(book: SimBook) -> None:
        assert book.seq == last_seq[book.symbol] + 1
        last_seq[book.symbol] = book.seq
        if book.snapshot:
            books[book.symbol] = (dict(book.bids), dict(book.asks))
            return
        for side, levels in zip(books[book.symbol], (book.bids, book.asks), strict=True):
            for price, size in levels:
                if size == 0:
                    del side[price]
                else:
                    side[price] = size
        bids, asks = books[book.symbol]
        assert max(bids) < min(asks)

    for symbol in SYMBOLS:
        snapshot = model.book_snapshot(symbol, 0)
        books[symbol] = (dict(snapshot.bids), dict(snapshot.asks))
        last_seq[symbol] = snapshot.seq
    for tick in run(model, ops):
        if isinstance(tick, SimBook):
            apply(tick)
    for symbol in SYMBOLS:
        apply(model.book_delta(symbol, 1))
        truth = model.book_snapshot(symbol, 2)
        assert books[symbol] == (dict(truth.bids), dict(truth.asks))


def test_a_book_left_unread_for_long_comes_back_as_a_snapshot() -> None:
    model = MarketModel(["AAPL"], seed=3, depth=3)
    model.book_snapshot("AAPL", 0)
    for ts in range(500):
        model.quote("AAPL", ts)
    book = model.book_delta("AAPL", 500)
    assert book.snapshot
    assert_book_sane(book, depth=3)


@given(seed=st.integers(0, 2**32), ops=operations)
def test_trade_ids_and_seq_increase_per_symbol(seed: int, ops: list[tuple[str, int]]) -> None:
    """Per symbol, trade ids count up from 1 without gaps and trade/quote seq strictly increases."""
    next_id: dict[str, int] = {}
    last_seq: dict[str, int] = {}
    for tick in run(MarketModel(SYMBOLS, seed=seed), ops):
        if isinstance(tick, SimTrade):
            assert tick.trade_id == next_id.get(tick.symbol, 1)
            next_id[tick.symbol] = tick.trade_id + 1
        if isinstance(tick, SimTrade | SimQuote):
            assert tick.seq > last_seq.get(tick.symbol, 0)
            last_seq[tick.symbol] = tick.seq


@given(seed=st.integers(0, 2**32), symbol=st.sampled_from(SYMBOLS), kinds=st.lists(st.booleans()))
def test_quotes_show_the_top_of_book_and_trades_print_at_it(
    seed: int, symbol: str, kinds: list[bool]
) -> None:
    """A quote's bid/ask and sizes are the best levels of the book right after it; a buy prints
    at the best ask, a sell at the best bid."""
    model = MarketModel(SYMBOLS, seed=seed)
    for ts, is_trade in enumerate(kinds):
        tick = model.trade(symbol, ts) if is_trade else model.quote(symbol, ts)
        top = model.book_snapshot(symbol, ts)
        if isinstance(tick, SimTrade):
            assert tick.price == (top.asks[0][0] if tick.taker_side == "B" else top.bids[0][0])
        else:
            assert (tick.bid, tick.bid_size) == top.bids[0]
            assert (tick.ask, tick.ask_size) == top.asks[0]


@given(seed=st.integers(0, 2**32), ops=operations)
def test_prices_are_whole_ticks(seed: int, ops: list[tuple[str, int]]) -> None:
    """Every price is exactly the float of a whole number of ticks (no float drift)."""
    model = MarketModel(SYMBOLS, seed=seed)
    for tick in run(model, ops):
        scale = round(1 / model.tick_size(tick.symbol))
        if isinstance(tick, SimBook):
            prices = [p for p, _ in tick.bids + tick.asks]
        elif isinstance(tick, SimTrade):
            prices = [tick.price]
        else:
            prices = [tick.bid, tick.ask]
        assert all(round(p * scale) / scale == p for p in prices)


def test_stocks_trade_whole_shares_and_quote_round_lots_with_cent_ticks() -> None:
    model = MarketModel(["AAPL"], seed=11)
    assert model.tick_size("AAPL") == 0.01
    ticks = [model.next_tick(ts) for ts in range(300)]
    trades = [t for t in ticks if isinstance(t, SimTrade)]
    quotes = [t for t in ticks if isinstance(t, SimQuote)]
    assert trades and quotes
    assert all(isinstance(t.size, int) and t.size > 0 for t in trades)
    assert all(t.exchange and t.tape in "ABC" and "@" in t.conditions for t in trades)
    assert all(q.bid_size % ROUND_LOT == 0 and q.ask_size % ROUND_LOT == 0 for q in quotes)


def test_crypto_trades_fractional_sizes_with_a_finer_relative_tick() -> None:
    model = MarketModel(["BTC/USD", "AAPL"], seed=5)
    trades = [model.trade("BTC/USD", ts) for ts in range(100)]
    assert any(t.size != int(t.size) for t in trades)
    assert all(t.exchange == "" and t.conditions == () for t in trades)
    relative = {s: model.tick_size(s) / model.quote(s, 0).bid for s in ("BTC/USD", "AAPL")}
    assert relative["BTC/USD"] < relative["AAPL"]
    assert is_crypto_symbol("BTC/USD") and not is_crypto_symbol("AAPL")


@given(seed=st.integers(0, 2**32))
def test_next_tick_draws_only_from_the_candidates_it_is_given(seed: int) -> None:
    """Trades come only from ``trades``, quotes from ``quotes``, book deltas from ``books``."""
    model = MarketModel(SYMBOLS, seed=seed)
    for ts in range(50):
        tick = model.next_tick(ts, trades=["AAPL"], quotes=["MSFT"], books=["BTC/USD"])
        expected = {SimTrade: "AAPL", SimQuote: "MSFT", SimBook: "BTC/USD"}[type(tick)]
        assert tick.symbol == expected


def test_books_are_opt_in_and_zero_weights_never_happen() -> None:
    model = MarketModel(["AAPL"], seed=1, quote_weight=0.0)
    assert all(isinstance(model.next_tick(ts), SimTrade) for ts in range(100))
    kinds = {type(model.next_tick(ts, trades=(), books=["AAPL"])) for ts in range(100)}
    assert kinds == {SimBook}


def test_the_mix_follows_the_weights() -> None:
    model = MarketModel(["AAPL"], seed=2, trade_weight=1.0, quote_weight=3.0, book_weight=0.0)
    trades = sum(isinstance(model.next_tick(ts), SimTrade) for ts in range(4000))
    assert math.isclose(trades / 4000, 0.25, abs_tol=0.05)


def test_symbols_are_added_on_first_use_in_order() -> None:
    model = MarketModel(["AAPL"])
    model.quote("TSLA", 0)
    model.add_symbols(["AAPL", "NVDA"])
    assert model.symbols == ("AAPL", "TSLA", "NVDA")


def test_next_tick_with_no_candidates_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least one candidate"):
        MarketModel(["AAPL"]).next_tick(0, trades=(), quotes=())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"symbols": "AAPL"}, "not the string"),
        ({"symbols": ["AAPL", ""]}, "non-empty string"),
        ({"symbols": [" AAPL"]}, "non-empty string"),
        ({"symbols": ["AAPL"], "depth": 0}, "depth must be at least 1"),
        ({"symbols": ["AAPL"], "trade_weight": -1.0}, "weights must be >= 0"),
        (
            {"symbols": ["AAPL"], "trade_weight": 0.0, "quote_weight": 0.0, "book_weight": 0.0},
            "not all 0",
        ),
    ],
)
def test_bad_model_settings_are_configuration_errors(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        MarketModel(**kwargs)  # type: ignore[arg-type]
