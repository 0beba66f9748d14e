"""Hypothesis strategies for every event class, for property tests of code that consumes events.

This module owns one strategy per class in :data:`puffin_trio.events.EVENT_TYPES`
(:func:`trades`, :func:`quotes`, :func:`book_updates`, :func:`bars`,
:func:`trade_corrections`, :func:`trade_cancels`, :func:`trading_statuses`,
:func:`limit_bands`, :func:`statuses`, :func:`gaps`) and :func:`events` for
any of them. It must not do I/O or know any provider's wire format.

Each takes ``realistic`` (market-shaped events rather than everything the
model allows), ``finite``, ``provider`` and ``symbols``; what each mode draws
is in ``docs/guide/testing.rst``.
"""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import strategies as st

from puffin_trio.events import (
    Bar,
    Event,
    Gap,
    GapReason,
    LimitBands,
    OrderBookUpdate,
    Quote,
    SessionState,
    Status,
    Trade,
    TradeCancel,
    TradeCorrection,
    TradingStatus,
)

__all__ = [
    "bars",
    "book_updates",
    "events",
    "gaps",
    "limit_bands",
    "quotes",
    "statuses",
    "trade_cancels",
    "trade_corrections",
    "trades",
    "trading_statuses",
]

#: A fixed value, a sequence of values to pick from, or a strategy.
Choice = str | Sequence[str] | st.SearchStrategy[str] | None

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
#: Realistic timestamps: 2000-01-01 .. 2100-01-01 UTC in ns, well inside int64.
_TS_MIN = 946_684_800_000_000_000
_TS_MAX = 4_102_444_800_000_000_000
#: Realistic receive latency: up to 5 s, the order of a slow consumer's lag.
_MAX_LATENCY_NS = 5_000_000_000
#: Realistic prices are whole ticks of 0.0001 (the US sub-dollar tick), up to 100 000.
_TICK = 0.0001
_MAX_TICKS = 1_000_000_000
_PROVIDERS = ("alpaca", "polygon", "ib", "sim")
_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_CONDITIONS = ("@", "F", "I", "T", "O", "4", "Z", "R")
_STATUS_CODES = ("H", "T", "Q", "P", "M")
_BAR_INTERVALS_S = (1, 5, 60, 300, 900, 3600, 86_400)
#: Arbitrary text stays short: length adds cost, not coverage, to codec and sink tests.
_MAX_TEXT = 12


def _choice(value: Choice, default: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    if value is None:
        return default
    if isinstance(value, str):
        return st.just(value)
    if isinstance(value, st.SearchStrategy):
        return value
    return st.sampled_from(tuple(value))


def _providers(provider: Choice, realistic: bool) -> st.SearchStrategy[str]:
    return _choice(provider, st.sampled_from(_PROVIDERS) if realistic else _text())


def _symbols(symbols: Choice, realistic: bool) -> st.SearchStrategy[str]:
    ticker = st.text(_UPPER, min_size=1, max_size=5)
    crypto = st.builds("{}/USD".format, st.text(_UPPER, min_size=3, max_size=4))
    return _choice(symbols, ticker | crypto if realistic else _text())


def _text() -> st.SearchStrategy[str]:
    return st.text(max_size=_MAX_TEXT)


def _code(realistic: bool, alphabet: str = _UPPER) -> st.SearchStrategy[str]:
    """Short codes such as an exchange or a tape: one letter, or any short text."""
    return st.text(alphabet, min_size=1, max_size=1) if realistic else _text()


def _conditions(realistic: bool) -> st.SearchStrategy[tuple[str, ...]]:
    element = st.sampled_from(_CONDITIONS) if realistic else _text()
    return st.lists(element, max_size=4).map(tuple)


def _floats(finite: bool) -> st.SearchStrategy[float]:
    return st.floats(allow_nan=not finite, allow_infinity=not finite)


def _int64s() -> st.SearchStrategy[int]:
    return st.integers(_INT64_MIN, _INT64_MAX)


def _prices() -> st.SearchStrategy[float]:
    return st.integers(1, _MAX_TICKS).map(lambda ticks: round(ticks * _TICK, 4))


def _sizes() -> st.SearchStrategy[float]:
    """Whole shares, or fractional crypto quantities."""
    return st.integers(1, 1_000_000).map(float) | st.floats(1e-8, 10_000.0)


def _seqs(realistic: bool) -> st.SearchStrategy[int | None]:
    return st.none() | (st.integers(0, 2**40) if realistic else _int64s())


@st.composite
def _times(draw: st.DrawFn, realistic: bool) -> tuple[int, int]:
    """``(ts_event, ts_recv)``."""
    if not realistic:
        return draw(_int64s()), draw(_int64s())
    ts_event = draw(st.integers(_TS_MIN, _TS_MAX))
    return ts_event, ts_event + draw(st.integers(0, _MAX_LATENCY_NS))


@st.composite
def trades(
    draw: st.DrawFn,
    *,
    provider: Choice = None,
    symbols: Choice = None,
    finite: bool = False,
    realistic: bool = False,
) -> Trade:
    """:class:`~puffin_trio.events.Trade` events (``docs/guide/testing.rst``: the arguments)."""
    ts_event, ts_recv = draw(_times(realistic))
    if realistic:
        price, size = draw(_prices()), draw(_sizes())
        trade_id = draw(st.integers(0, 2**53).map(str))
    else:
        price, size, trade_id = draw(_floats(finite)), draw(_floats(finite)), draw(_text())
    return Trade(
        provider=draw(_providers(provider, realistic)),
        symbol=draw(_symbols(symbols, realistic)),
        ts_event=ts_event,
        ts_recv=ts_recv,
        price=price,
        size=size,
        exchange=draw(_code(realistic)),
        trade_id=trade_id,
        conditions=draw(_conditions(realistic)),
        tape=draw(_code(realistic, "ABC")),
        seq=draw(_seqs(realistic)),
        backfilled=draw(st.booleans()),
    )


@st.composite
def quotes(
    draw: st.DrawFn,
    *,
    provider: Choice = None,
    symbols: Choice = None,
    finite: bool = False,
    realistic: bool = False,
) -> Quote:
    """:class:`~puffin_trio.events.Quote` events; realistic ones have ``0 < bid < ask``."""
    ts_event, ts_recv = draw(_times(realistic))
    if realistic:
        bid_ticks = draw(st.integers(1, _MAX_TICKS))
        ask_ticks = bid_ticks + draw(st.integers(1, 1_000))
        bid, ask = round(bid_ticks * _TICK, 4), round(ask_ticks * _TICK, 4)
        bid_size, ask_size = draw(_sizes()), draw(_sizes())
    else:
        floats = _floats(finite)
        bid, ask, bid_size, ask_size = draw(floats), draw(floats), draw(floats), draw(floats)
    return Quote(
        provider=draw(_providers(provider, realistic)),
        symbol=draw(_symbols(symbols, realistic)),
        ts_event=ts_event,
        ts_recv=ts_recv,
        bid=bid,
        ask=ask,
        bid_size=bid_size,
        ask_size=ask_size,
        bid_exchange=draw(_code(realistic)),
        ask_exchange=draw(_code(realistic)),
        conditions=draw(_conditions(realistic)),
        tape=draw(_code(realistic, "ABC")),
        seq=draw(_seqs(realistic)),
    )


@st.composite
def _realistic_levels(
    draw: st.DrawFn, snapshot: bool
) -> tuple[tuple[tuple[float, float], ...], tuple[tuple[float, float], ...]]:
    """Uncrossed ``(bids, asks)``, best first; deltas may carry size 0 (delete the level)."""
    best_bid = draw(st.integers(50, _MAX_TICKS))
    depth = st.lists(st.integers(0, 49), max_size=10, unique=True).map(sorted)
    size = _sizes() if snapshot else st.just(0.0) | _sizes()
    bids = tuple((round((best_bid - off) * _TICK, 4), draw(size)) for off in draw(depth))
    spread = draw(st.integers(1, 50))
    asks = tuple((round((best_bid + spread + off) * _TICK, 4), draw(size)) for off in draw(depth))
    return bids, asks


@st.composite
def book_updates(
    draw: st.DrawFn,
    *,
    provider: Choice = None,
    symbols: Choice = None,
    finite: bool = False,
    realistic: bool = False,
) -> OrderBookUpdate:
    """:class:`~puffin_trio.events.OrderBookUpdate` events.

    Realistic ones have distinct price levels, bids descending and asks
    ascending, best bid below best ask, positive sizes in a snapshot and sizes
    ``>= 0`` in a delta.
    """
    ts_event, ts_recv = draw(_times(realistic))
    snapshot = draw(st.booleans())
    if realistic:
        bids, asks = draw(_realistic_levels(snapshot))
    else:
        levels = st.lists(st.tuples(_floats(finite), _floats(finite)), max_size=5).map(tuple)
        bids, asks = draw(levels), draw(levels)
    return OrderBookUpdate(
        provider=draw(_providers(provider, realistic)),
        symbol=draw(_symbols(symbols, realistic)),
        ts_event=ts_event,
        ts_recv=ts_recv,
        bids=bids,
        asks=asks,
        snapshot=snapshot,
        seq=draw(_seqs(realistic)),
    )


@st.composite
def bars(
    draw: st.DrawFn,
    *,
    provider: Choice = None,
    symbols: Choice = None,
    finite: bool = False,
    realistic: bool = False,
) -> Bar:
    """:class:`~puffin_trio.events.Bar` events.

    Realistic ones open on a multiple of their interval, have
    ``low <= open, close, vwap <= high`` and non-negative volume and trade count.
    """
    if realistic:
        interval_s = draw(st.sampled_from(_BAR_INTERVALS_S))
        interval_ns = interval_s * 1_000_000_000
        ts_event = draw(st.integers(_TS_MIN // interval_ns, _TS_MAX // interval_ns)) * interval_ns
        ts_recv = ts_event + interval_ns + draw(st.integers(0, _MAX_LATENCY_NS))
        ticks = sorted(draw(st.lists(st.integers(1, _MAX_TICKS), min_size=4, max_size=4)))
        low, high = ticks[0], ticks[3]
        open_, close = draw(st.permutations(ticks[1:3]))
        vwap = draw(st.integers(low, high))
        o, h, lo, c, v = (round(t * _TICK, 4) for t in (open_, high, low, close, vwap))
        volume, trade_count = draw(st.integers(0, 10**9).map(float)), draw(st.integers(0, 10**6))
    else:
        ts_event, ts_recv = draw(_times(realistic))
        floats = _floats(finite)
        o, h, lo, c, v, volume = (draw(floats) for _ in range(6))
        interval_s, trade_count = draw(_int64s()), draw(_int64s())
    return Bar(
        provider=draw(_providers(provider, realistic)),
        symbol=draw(_symbols(symbols, realistic)),
        ts_event=ts_event,
        ts_recv=ts_recv,
        open=o,
        high=h,
        low=lo,
        close=c,
        volume=volume,
        interval_s=interval_s,
        trade_count=trade_count,
        vwap=v,
        updated=draw(st.booleans()),
        seq=draw(_seqs(realistic)),
    )


@st.composite
def trade_corrections(
    draw: st.DrawFn,
    *,
    provider: Choice = None,
    symbols: Choice = None,
    finite: bool = False,
    realistic: bool = False,
) -> TradeCorrection:
    """:class:`~puffin_trio.events.TradeCorrection` events."""
    ts_event, ts_recv = draw(_times(realistic))
    prices = _prices() if realistic else _floats(finite)
    sizes = _sizes() if realistic else _floats(finite)
    ids = st.integers(0, 2**53).map(str) if realistic else _text()
    return TradeCorrection(
        provider=draw(_providers(provider, realistic)),
        symbol=draw(_symbols(symbols, realistic)),
        ts_event=ts_event,
        ts_recv=ts_recv,
        original_id=draw(ids),
        original_price=draw(prices),
        original_size=draw(sizes),
        corrected_id=draw(ids),
        corrected_price=draw(prices),
        corrected_size=draw(sizes),
        original_conditions=draw(_conditions(realistic)),
        corrected_conditions=draw(_conditions(realistic)),
        exchange=draw(_code(realistic)),
        tape=draw(_code(realistic, "ABC")),
        seq=draw(_seqs(realistic)),
    )


@st.composite
def trade_cancels(
    draw: st.DrawFn,
    *,
    provider: Choice = None,
    symbols: Choice = None,
    finite: bool = False,
    realistic: bool = False,
) -> TradeCancel:
    """:class:`~puffin_trio.events.TradeCancel` events."""
    ts_event, ts_recv = draw(_times(realistic))
    return TradeCancel(
        provider=draw(_providers(provider, realistic)),
        symbol=draw(_symbols(symbols, realistic)),
        ts_event=ts_event,
        ts_recv=ts_recv,
        trade_id=draw(st.integers(0, 2**53).map(str) if realistic else _text()),
        price=draw(_prices() if realistic else _floats(finite)),
        size=draw(_sizes() if realistic else _floats(finite)),
        is_error=draw(st.booleans()),
        exchange=draw(_code(realistic)),
        tape=draw(_code(realistic, "ABC")),
        seq=draw(_seqs(realistic)),
    )


@st.composite
def trading_statuses(
    draw: st.DrawFn,
    *,
    provider: Choice = None,
    symbols: Choice = None,
    realistic: bool = False,
) -> TradingStatus:
    """:class:`~puffin_trio.events.TradingStatus` events (no float fields, so no ``finite``)."""
    ts_event, ts_recv = draw(_times(realistic))
    short = st.text(_UPPER + "0123456789", max_size=2) if realistic else _text()
    return TradingStatus(
        provider=draw(_providers(provider, realistic)),
        symbol=draw(_symbols(symbols, realistic)),
        ts_event=ts_event,
        ts_recv=ts_recv,
        status_code=draw(st.sampled_from(_STATUS_CODES) if realistic else _text()),
        status_message=draw(_text()),
        reason_code=draw(short),
        reason_message=draw(_text()),
        tape=draw(_code(realistic, "ABC")),
        seq=draw(_seqs(realistic)),
    )


@st.composite
def limit_bands(
    draw: st.DrawFn,
    *,
    provider: Choice = None,
    symbols: Choice = None,
    finite: bool = False,
    realistic: bool = False,
) -> LimitBands:
    """:class:`~puffin_trio.events.LimitBands` events; realistic: ``limit_down < limit_up``."""
    ts_event, ts_recv = draw(_times(realistic))
    if realistic:
        down = draw(st.integers(1, _MAX_TICKS))
        up = down + draw(st.integers(1, _MAX_TICKS))
        limit_down, limit_up = round(down * _TICK, 4), round(up * _TICK, 4)
    else:
        limit_down, limit_up = draw(_floats(finite)), draw(_floats(finite))
    return LimitBands(
        provider=draw(_providers(provider, realistic)),
        symbol=draw(_symbols(symbols, realistic)),
        ts_event=ts_event,
        ts_recv=ts_recv,
        limit_up=limit_up,
        limit_down=limit_down,
        indicator=draw(_code(realistic, "ABC")),
        tape=draw(_code(realistic, "ABC")),
        seq=draw(_seqs(realistic)),
    )


@st.composite
def statuses(
    draw: st.DrawFn,
    *,
    provider: Choice = None,
    realistic: bool = False,
) -> Status:
    """:class:`~puffin_trio.events.Status` events.

    Realistic ones have ``symbol=""`` (a status is about a session), a session
    named after the provider and a small ``attempt``; otherwise any text and int64.
    """
    ts_event, ts_recv = draw(_times(realistic))
    name = draw(_providers(provider, realistic))
    if realistic:
        symbol, session, attempt = "", f"{name}-{draw(st.integers(0, 9))}", draw(st.integers(0, 20))
    else:
        symbol, session, attempt = draw(_text()), draw(_text()), draw(_int64s())
    return Status(
        provider=name,
        ts_event=ts_event,
        ts_recv=ts_recv,
        state=draw(st.sampled_from(SessionState)),
        session=session,
        detail=draw(_text()),
        attempt=attempt,
        symbol=symbol,
        seq=draw(_seqs(realistic)),
    )


@st.composite
def gaps(
    draw: st.DrawFn,
    *,
    provider: Choice = None,
    symbols: Choice = None,
    realistic: bool = False,
) -> Gap:
    """:class:`~puffin_trio.events.Gap` events.

    Realistic ones agree with their reason: a ``sequence`` gap has
    ``expected < received`` and ``missing == received - expected`` on a
    ``"provider:symbol"`` stream; a ``reconnect`` gap has no sequence numbers,
    ``symbol=""`` and ``window_start <= window_end``; a ``malformed`` gap
    names its session, no symbol, at most one known missing message and the
    bad frame's receive time as its window; an ``overflow`` gap names a
    consumer and counts at least one dropped event; a ``backfill`` gap names
    a symbol and its window, counts the trades recovered, and is complete or
    says why not.
    """
    ts_event, ts_recv = draw(_times(realistic))
    name = draw(_providers(provider, realistic))
    reason = draw(st.sampled_from(GapReason))
    if not realistic:
        return Gap(
            provider=name,
            symbol=draw(_symbols(symbols, realistic)),
            ts_event=ts_event,
            ts_recv=ts_recv,
            stream=draw(_text()),
            reason=reason,
            expected=draw(st.none() | _int64s()),
            received=draw(st.none() | _int64s()),
            missing=draw(_int64s()),
            window_start=draw(st.none() | _int64s()),
            window_end=draw(st.none() | _int64s()),
            seq=draw(_seqs(realistic)),
            recovered=draw(_int64s()),
            complete=draw(st.booleans()),
            detail=draw(_text()),
        )
    if reason is GapReason.SEQUENCE:
        symbol = draw(_symbols(symbols, realistic))
        expected = draw(st.integers(0, 2**40))
        received = expected + draw(st.integers(1, 10_000))
        return Gap(
            provider=name,
            symbol=symbol,
            ts_event=ts_event,
            ts_recv=ts_recv,
            stream=f"{name}:{symbol}",
            reason=reason,
            expected=expected,
            received=received,
            missing=received - expected,
        )
    if reason is GapReason.RECONNECT:
        window_start = ts_event - draw(st.integers(0, 600 * 1_000_000_000))
        return Gap(
            provider=name,
            symbol="",
            ts_event=ts_event,
            ts_recv=ts_recv,
            stream=name,
            reason=reason,
            window_start=window_start,
            window_end=ts_event,
        )
    if reason is GapReason.BACKFILL:
        window_start = ts_event - draw(st.integers(0, 3600 * 1_000_000_000))
        complete = draw(st.booleans())
        return Gap(
            provider=name,
            symbol=draw(_symbols(symbols, realistic)),
            ts_event=ts_event,
            ts_recv=ts_recv,
            stream=name,
            reason=reason,
            window_start=window_start,
            window_end=ts_event,
            recovered=draw(st.integers(0, 100_000)),
            missing=0 if complete else draw(st.integers(0, 10_000)),
            complete=complete,
            detail="" if complete else "BackfillError: HTTP 500 (gave up after 5 retries)",
        )
    if reason is GapReason.MALFORMED:
        return Gap(
            provider=name,
            symbol="",
            ts_event=ts_recv,
            ts_recv=ts_recv,
            stream=name,
            reason=reason,
            missing=draw(st.integers(0, 1)),
            window_start=ts_recv,
            window_end=ts_recv,
        )
    return Gap(
        provider=name,
        symbol=draw(_symbols(symbols, realistic)),
        ts_event=ts_event,
        ts_recv=ts_recv,
        stream=f"consumer-{draw(st.integers(0, 9))}",
        reason=reason,
        missing=draw(st.integers(1, 10_000)),
    )


def events(
    *,
    provider: Choice = None,
    symbols: Choice = None,
    finite: bool = False,
    realistic: bool = False,
) -> st.SearchStrategy[Event]:
    """Any event: one of the strategies above, with the arguments each one takes."""
    p, s, r = provider, symbols, realistic
    return st.one_of(
        trades(provider=p, symbols=s, finite=finite, realistic=r),
        quotes(provider=p, symbols=s, finite=finite, realistic=r),
        book_updates(provider=p, symbols=s, finite=finite, realistic=r),
        bars(provider=p, symbols=s, finite=finite, realistic=r),
        trade_corrections(provider=p, symbols=s, finite=finite, realistic=r),
        trade_cancels(provider=p, symbols=s, finite=finite, realistic=r),
        trading_statuses(provider=p, symbols=s, realistic=r),
        limit_bands(provider=p, symbols=s, finite=finite, realistic=r),
        statuses(provider=p, realistic=r),
        gaps(provider=p, symbols=s, realistic=r),
    )
