"""The normalised event model: every provider's data ends up as one of these.

This module owns the value types that flow from the provider protocols to the consumers:
``Trade``, ``Quote``, ``OrderBookUpdate``, ``Bar`` (market data) and
``Status``, ``Gap`` (what happened to the stream itself). They are frozen,
slotted attrs classes: cheap to build on the hot path (one allocation per
event, no validation there; validation lives at the trust boundaries, the
provider codecs and :mod:`puffin_trio.codec`).

It must not do I/O, parse wire formats or know about any provider.

Conventions shared by every event:

* ``provider``: the provider name (``"alpaca"``, ``"polygon"``, ``"ib"``, ...).
* ``symbol``: the instrument as the provider spells it (``"AAPL"``,
  ``"BTC/USD"``); ``""`` for session-level ``Status``/``Gap`` events.
* ``ts_event``: integer nanoseconds since the Unix epoch, provider/exchange
  time. For a ``Bar`` it is the bar's *open* time.
* ``ts_recv``: integer nanoseconds since the Unix epoch, local receive time.
* ``seq``: the provider's sequence number where it has one, else ``None``.

Prices and sizes are floats: that is what the providers' JSON carries, and
crypto sizes are fractional.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime

import attrs

__all__ = [
    "EVENT_TYPES",
    "Bar",
    "Event",
    "Gap",
    "GapReason",
    "LimitBands",
    "MarketEvent",
    "OrderBookUpdate",
    "Quote",
    "SessionState",
    "Status",
    "Trade",
    "TradeCancel",
    "TradeCorrection",
    "TradingStatus",
    "ns_to_datetime",
]


def ns_to_datetime(ts_ns: int) -> datetime:
    """Integer nanoseconds since the epoch -> aware UTC datetime (microsecond precision)."""
    seconds, ns = divmod(ts_ns, 1_000_000_000)
    return datetime.fromtimestamp(seconds, UTC).replace(microsecond=ns // 1000)


# Every event class is ``attrs.frozen(kw_only=True, weakref_slot=False)``.
# No ``__weakref__`` slot (events are values; nothing holds them weakly): that
# keeps the layout that lets the decoders build events fast
# (:func:`~puffin_trio._event_builder.event_builder`).


class _Timestamped:
    """Mixin for the ``.timestamp`` convenience property."""

    __slots__ = ()
    ts_event: int

    @property
    def timestamp(self) -> datetime:
        """``ts_event`` as an aware UTC datetime (truncated to microseconds)."""
        return ns_to_datetime(self.ts_event)


@attrs.frozen(kw_only=True, weakref_slot=False)
class Trade(_Timestamped):
    """One execution."""

    provider: str
    symbol: str
    ts_event: int
    ts_recv: int
    price: float
    size: float
    exchange: str = ""
    trade_id: str = ""
    conditions: tuple[str, ...] = ()
    tape: str = ""
    seq: int | None = None
    #: True for a trade recovered from the provider's historical API after a
    #: reconnect (``backfill="trades"``), False for one received live.
    backfilled: bool = False

    @property
    def volume(self) -> float:
        """Puffin's name for the size of a trade."""
        return self.size

    @property
    def notional(self) -> float:
        """``price * size``."""
        return self.price * self.size


@attrs.frozen(kw_only=True, weakref_slot=False)
class Quote(_Timestamped):
    """Top of book (L1). A price of 0 means there is no bid or ask on that side."""

    provider: str
    symbol: str
    ts_event: int
    ts_recv: int
    bid: float
    ask: float
    bid_size: float
    ask_size: float
    bid_exchange: str = ""
    ask_exchange: str = ""
    conditions: tuple[str, ...] = ()
    tape: str = ""
    seq: int | None = None

    @property
    def mid(self) -> float | None:
        """Midpoint, or ``None`` when either side is empty (price <= 0)."""
        if self.bid <= 0 or self.ask <= 0:
            return None
        return (self.bid + self.ask) / 2

    @property
    def spread(self) -> float | None:
        """``ask - bid``, or ``None`` when either side is empty."""
        if self.bid <= 0 or self.ask <= 0:
            return None
        return self.ask - self.bid


@attrs.frozen(kw_only=True, weakref_slot=False)
class OrderBookUpdate(_Timestamped):
    """L2 book change. ``bids``/``asks`` are ``(price, size)`` pairs; size 0 deletes a level.

    ``snapshot=True`` means the update *replaces* the whole book.
    """

    provider: str
    symbol: str
    ts_event: int
    ts_recv: int
    bids: tuple[tuple[float, float], ...] = ()
    asks: tuple[tuple[float, float], ...] = ()
    snapshot: bool = False
    seq: int | None = None


@attrs.frozen(kw_only=True, weakref_slot=False)
class Bar(_Timestamped):
    """OHLCV bar; ``ts_event`` is the bar's open time, ``interval_s`` its length.

    ``updated=True`` marks a late correction that replaces the bar with the same
    symbol, interval and ``ts_event`` (Alpaca ``updatedBars``).
    """

    provider: str
    symbol: str
    ts_event: int
    ts_recv: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    interval_s: int
    trade_count: int = 0
    vwap: float = 0.0
    updated: bool = False
    seq: int | None = None

    @property
    def ts_close(self) -> int:
        """End of the bar's interval in ns (exclusive)."""
        return self.ts_event + self.interval_s * 1_000_000_000


@attrs.frozen(kw_only=True, weakref_slot=False)
class TradeCorrection(_Timestamped):
    """A correction of an earlier trade (Alpaca ``c``): the original and corrected values."""

    provider: str
    symbol: str
    ts_event: int
    ts_recv: int
    original_id: str
    original_price: float
    original_size: float
    corrected_id: str
    corrected_price: float
    corrected_size: float
    original_conditions: tuple[str, ...] = ()
    corrected_conditions: tuple[str, ...] = ()
    exchange: str = ""
    tape: str = ""
    seq: int | None = None


@attrs.frozen(kw_only=True, weakref_slot=False)
class TradeCancel(_Timestamped):
    """An earlier trade was cancelled (``is_error=False``) or was an error (Alpaca ``x``)."""

    provider: str
    symbol: str
    ts_event: int
    ts_recv: int
    trade_id: str
    price: float
    size: float
    is_error: bool = False
    exchange: str = ""
    tape: str = ""
    seq: int | None = None


@attrs.frozen(kw_only=True, weakref_slot=False)
class TradingStatus(_Timestamped):
    """Halt / resume / pause of one instrument (Alpaca ``s``)."""

    provider: str
    symbol: str
    ts_event: int
    ts_recv: int
    status_code: str
    status_message: str = ""
    reason_code: str = ""
    reason_message: str = ""
    tape: str = ""
    seq: int | None = None


@attrs.frozen(kw_only=True, weakref_slot=False)
class LimitBands(_Timestamped):
    """Limit-up / limit-down price bands (Alpaca ``l``, Polygon ``LULD``)."""

    provider: str
    symbol: str
    ts_event: int
    ts_recv: int
    limit_up: float
    limit_down: float
    indicator: str = ""
    tape: str = ""
    seq: int | None = None


class SessionState(enum.StrEnum):
    """Lifecycle of a provider session, as announced by ``Status`` events."""

    CONNECTING = "connecting"
    AUTHENTICATING = "authenticating"
    SUBSCRIBING = "subscribing"
    STREAMING = "streaming"
    RECONNECTING = "reconnecting"
    CLOSED = "closed"
    FAILED = "failed"


class GapReason(enum.StrEnum):
    """Why a ``Gap`` was announced."""

    SEQUENCE = "sequence"  #: sequence numbers skipped (or a message came too late to deliver)
    RECONNECT = "reconnect"  #: the connection was down; data in the window is missing
    OVERFLOW = "overflow"  #: a consumer's overflow policy dropped events
    MALFORMED = "malformed"  #: a frame (or a message in one) could not be decoded here
    #: one symbol's trades of a reconnect window were backfilled (see ``Gap``)
    BACKFILL = "backfill"


@attrs.frozen(kw_only=True, weakref_slot=False)
class Status(_Timestamped):
    """A provider session changed state. ``symbol`` is ``""``; ``session`` names the session."""

    provider: str
    ts_event: int
    ts_recv: int
    state: SessionState
    session: str = ""
    detail: str = ""
    attempt: int = 0
    symbol: str = ""
    seq: int | None = None


@attrs.frozen(kw_only=True, weakref_slot=False)
class Gap(_Timestamped):
    """Something is missing from a stream, and this says what.

    * ``stream``: which stream: the sequence key for a sequence gap (e.g.
      ``"T:AAPL"``, with ``provider``/``symbol`` saying whose), the session
      name for a reconnect or malformed gap, the consumer name for an
      overflow gap.
    * ``expected``/``received``: the sequence number we expected and the one
      that arrived instead (``None`` where the stream has no sequence).
    * ``missing``: how many messages are known to be missing (``0`` when
      unknown, as for a reconnect window or a frame that did not decode).
    * ``window_start``/``window_end``: the time span of the loss in ns: for a
      reconnect gap the outage window (last message before the drop, first
      after the reconnect); for a malformed gap the receive time of the bad
      frame (both ends).

    A ``backfill`` gap closes the backfill of one symbol's trades after a
    reconnect (``docs/guide/backfill.rst``): the ``recovered`` trades before it,
    flagged ``Trade.backfilled``, came from the provider's historical API for
    the window ``window_start``..``window_end`` (provider time);
    ``complete`` says whether the whole window was fetched; if not,
    ``detail`` says why and ``missing`` counts the trades known to be lost
    (``0`` when the provider's numbering cannot tell). The other reasons leave
    ``recovered`` 0, ``complete`` False and ``detail`` empty.
    """

    provider: str
    symbol: str
    ts_event: int
    ts_recv: int
    stream: str
    reason: GapReason
    expected: int | None = None
    received: int | None = None
    missing: int = 0
    window_start: int | None = None
    window_end: int | None = None
    seq: int | None = None
    recovered: int = 0
    complete: bool = False
    detail: str = ""


#: Market data events (what a provider produces).
MarketEvent = (
    Trade
    | Quote
    | OrderBookUpdate
    | Bar
    | TradeCorrection
    | TradeCancel
    | TradingStatus
    | LimitBands
)
#: Everything that travels on an event channel.
Event = MarketEvent | Status | Gap
#: Every concrete event class, in a stable order (the codec's type tags come from these names).
EVENT_TYPES: tuple[type, ...] = (
    Trade,
    Quote,
    OrderBookUpdate,
    Bar,
    TradeCorrection,
    TradeCancel,
    TradingStatus,
    LimitBands,
    Status,
    Gap,
)
