"""Interactive Brokers TWS API: provider configuration and the sans-IO protocol.

This module owns :class:`IBProvider` (host, port, client id, channel mapping,
timing knobs) and :class:`IBProtocol` (one connection's wire protocol: the
``API\\0`` handshake and ``startApi``, market data requests and cancels, and
decoding TWS messages into normalised events and control items), plus the
pieces they are made of: :class:`IBContract` (what a request asks for) and
:class:`DepthRows` (IB's position-indexed depth rows -> price levels).
Requests are encoded exactly as ib_async 2.1.0 encodes them at server version
176. It must not do I/O, read a clock (``ts_recv`` is passed in) or log per
message; TWS is spoken natively, with no asyncio and no ib_async at run time.
The request behind each channel, the error codes, the data-stale signal and
the hot path are described in ``docs/guide/ib.rst``.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, ClassVar, Literal

import attrs

from puffin_trio.errors import (
    AuthenticationError,
    ConfigurationError,
    FatalProviderError,
    ProtocolError,
    SubscriptionError,
)
from puffin_trio.events import Bar, Event, OrderBookUpdate, Quote, Trade
from puffin_trio.providers._base import (
    GENERIC_CHANNELS,
    Authenticated,
    Connected,
    Control,
    Frame,
    HeartbeatReply,
    Malformed,
    Provider,
    ProviderFailure,
    ProviderNotice,
    ProviderProtocol,
    Topics,
    Transport,
    UnknownMessage,
    event_builder,
    normalize_topics,
    truncate_sample,
)
from puffin_trio.transports.tcp import DEFAULT_MAX_FRAME_SIZE, encode_frame, open_tcp_transport

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager

    from puffin_trio.market_hours import TradingCalendar

__all__ = [
    "BAR_SECONDS",
    "DEFAULT_DEPTH_ROWS",
    "DEFAULT_HOST",
    "DEFAULT_MAX_MESSAGES_PER_SECOND",
    "DEFAULT_PORT",
    "MAX_CLIENT_VERSION",
    "MIN_SERVER_VERSION",
    "NOTICES",
    "PORTS",
    "PROLOGUE",
    "REQUEST_FAILURES",
    "DepthRows",
    "IBContract",
    "IBProtocol",
    "IBProvider",
]

PROVIDER = "ib"

#: TWS and IB Gateway API ports, as installed.
PORTS: Mapping[str, int] = {
    "tws_live": 7496,
    "tws_paper": 7497,
    "gateway_live": 4001,
    "gateway_paper": 4002,
}
DEFAULT_HOST = "127.0.0.1"
#: TWS paper trading: the safe default (a mistake there costs nothing).
DEFAULT_PORT = PORTS["tws_paper"]
#: ib_async's default; see :class:`IBProvider` on choosing another.
DEFAULT_CLIENT_ID = 1

#: The version range we advertise, as ib_async 2.1.0 does (``v157..178``):
#: 157 is TWS/Gateway 972, the oldest ib_async accepts; 178 is the newest
#: layout ib_async (and this codec) knows. Every request and message used
#: here has the same layout throughout this range.
MIN_SERVER_VERSION = 157
MAX_CLIENT_VERSION = 178
#: Outgoing messages per second. TWS allows 50 (counting every message type)
#: and answers more with error 100, possibly followed by a disconnect;
#: ib_async throttles at 45, leaving 10 % for timing jitter between our count
#: and TWS's (it counts on arrival, and the network can bunch messages).
DEFAULT_MAX_MESSAGES_PER_SECOND = 45
_MAX_MESSAGES_PER_SECOND = 50
#: Depth rows per side. SMART depth returns what the venues offer, usually
#: 5-10 rows a side for a US stock; 10 takes all of that (and matches the
#: simulator's books) at no extra cost in market data lines.
DEFAULT_DEPTH_ROWS = 10
#: The only bar size ``reqRealTimeBars`` supports.
BAR_SECONDS = 5

_ENV_HOST = "IB_HOST"
_ENV_PORT = "IB_PORT"
_ENV_CLIENT_ID = "IB_CLIENT_ID"
_MAX_INT = 2**31 - 1  # TWS is Java: ids are 32-bit signed ints

_CONNECT_HINT = (
    "is TWS or IB Gateway running, with the API enabled (Global Configuration > API > "
    "Settings) on this port? Defaults: 7496/7497 TWS live/paper, 4001/4002 Gateway live/paper"
)


# --------------------------------------------------------------------------- contracts


def _wire_text(name: str, value: object) -> str:
    if not isinstance(value, str) or not value.isascii() or "\0" in value:
        raise ConfigurationError(f"{PROVIDER}: {name} must be an ASCII string, not {value!r}")
    return value


@attrs.frozen
class IBContract:
    """The instrument a request asks for (the TWS contract block).

    ``IBContract("AAPL")`` is a US stock routed SMART in USD, which is how
    every subscribed symbol is sent unless :class:`IBProvider` is given a
    contract for it. ``con_id`` (IB's contract id; 0 = let TWS resolve the
    rest) and ``primary_exchange`` (e.g. ``"NASDAQ"``: settles an ambiguous
    symbol) are the fields worth setting; ``symbol`` is IB's spelling, which
    may differ from the name you subscribe with (``IBContract("BRK B")`` for
    ``books=["BRK.B"]``). Raises :class:`ConfigurationError` for a field that
    cannot travel on the wire.
    """

    symbol: str
    sec_type: str = "STK"
    exchange: str = "SMART"
    currency: str = "USD"
    primary_exchange: str = ""
    con_id: int = 0
    local_symbol: str = ""
    trading_class: str = ""

    def __attrs_post_init__(self) -> None:
        for name in ("sec_type", "exchange", "currency", "primary_exchange", "local_symbol"):
            _wire_text(name, getattr(self, name))
        _wire_text("trading_class", self.trading_class)
        if not _wire_text("symbol", self.symbol) and not self.con_id:
            raise ConfigurationError(f"{PROVIDER}: a contract needs a symbol or a con_id")
        con_id = self.con_id
        if isinstance(con_id, bool) or not isinstance(con_id, int) or not 0 <= con_id <= _MAX_INT:
            raise ConfigurationError(f"{PROVIDER}: con_id must be an int >= 0, not {con_id!r}")

    def wire(self) -> str:
        """The 12 NUL-joined contract fields, in TWS order (no trailing NUL)."""
        return "\0".join(
            (
                str(self.con_id),
                self.symbol,
                self.sec_type,
                "",  # lastTradeDateOrContractMonth
                "0.0",  # strike (ib_async sends str(0.0))
                "",  # right
                "",  # multiplier
                self.exchange,
                self.primary_exchange,
                self.currency,
                self.local_symbol,
                self.trading_class,
            )
        )


# --------------------------------------------------------------------------- encoding


def _message(*fields: str) -> bytes:
    """One length-prefixed TWS message: every field NUL-terminated."""
    return encode_frame(("\0".join(fields) + "\0").encode())


#: ``API\\0`` then the length-prefixed version range: the only unframed bytes.
PROLOGUE = b"API\0" + encode_frame(f"v{MIN_SERVER_VERSION}..{MAX_CLIENT_VERSION}".encode())
_REQ_CURRENT_TIME = _message("49", "1")


def _req_mkt_data(req_id: int, contract: str) -> bytes:
    # 1 v11: reqId, contract, deltaNeutral=0, genericTickList, snapshot, regulatorySnapshot, options
    return _message("1", "11", str(req_id), contract, "0", "", "0", "0", "")


def _req_tick_by_tick(req_id: int, contract: str, tick_type: str) -> bytes:
    # 97 (no version): reqId, contract, tickType, numberOfTicks=0 (stream), ignoreSize=0
    return _message("97", str(req_id), contract, tick_type, "0", "0")


def _req_mkt_depth(req_id: int, contract: str, rows: int) -> bytes:
    # 10 v5: reqId, contract, numRows, isSmartDepth=1, mktDepthOptions
    return _message("10", "5", str(req_id), contract, str(rows), "1", "")


def _req_real_time_bars(req_id: int, contract: str) -> bytes:
    # 50 v3: reqId, contract, barSize=5, whatToShow, useRTH=0 (all hours), options
    return _message("50", "3", str(req_id), contract, str(BAR_SECONDS), "TRADES", "0", "")


# --------------------------------------------------------------------------- depth rows

_Level = tuple[float, float]


class DepthRows:
    """IB's market depth rows of one request, converted to price-level changes.

    TWS addresses depth by *row position*: ``insert`` at row ``p`` shifts the
    rows from ``p`` down, ``delete`` at ``p`` shifts the rows below it up,
    ``update`` at ``p`` replaces the row (possibly with a new price). Rows are
    kept per side exactly as TWS describes them; the book we publish is those
    rows **aggregated by price** (SMART depth has one row per venue, so two
    rows can share a price, and a row can transiently repeat a price another
    row still holds while TWS moves rows around).

    Every operation touches at most two prices (the row's old and new
    price). For each, :meth:`apply` sums the sizes of the rows now at that
    price, in row order, and reports ``(price, total)``, or ``(price, 0.0)``
    when no row (or only empty rows) remain there. Shifting rows never
    changes a price's total, so after every call the published levels equal
    the rows aggregated by price, exactly: the same floats summed in the same
    order (the property tests check this against a naive row list).

    A side holds at most ``numRows`` rows (TWS's own bound), so the sums are
    short; :meth:`apply` costs O(rows). ``live`` is False until the first
    operation succeeded (the protocol then emits a snapshot).
    """

    __slots__ = ("_ask_levels", "_bid_levels", "asks", "bids", "live")

    def __init__(self) -> None:
        self.bids: list[_Level] = []
        self.asks: list[_Level] = []
        self._bid_levels: dict[float, float] = {}
        self._ask_levels: dict[float, float] = {}
        self.live = False

    def reset(self) -> None:
        """Forget every row (TWS error 317: depth reset)."""
        self.bids.clear()
        self.asks.clear()
        self._bid_levels.clear()
        self._ask_levels.clear()

    def apply(
        self, position: int, operation: int, side: int, price: float, size: float
    ) -> tuple[_Level, ...]:
        """Apply one TWS depth operation; return the price levels it changed on that side.

        ``operation``: 0 insert, 1 update, 2 delete; ``side``: 0 ask, 1 bid
        (TWS's codes). Raises ``ValueError`` for an unknown operation or side
        and for a position outside the rows (the rows are left unchanged).
        """
        if side == 1:
            rows, levels = self.bids, self._bid_levels
        elif side == 0:
            rows, levels = self.asks, self._ask_levels
        else:
            raise ValueError(f"depth side must be 0 (ask) or 1 (bid), not {side}")
        count = len(rows)
        if operation == 0:
            if not 0 <= position <= count:
                raise ValueError(f"depth insert at row {position} of {count}")
            rows.insert(position, (price, size))
            touched: tuple[float, ...] = (price,)
        elif operation == 1:
            if not 0 <= position < count:
                raise ValueError(f"depth update at row {position} of {count}")
            old = rows[position][0]
            rows[position] = (price, size)
            touched = (price,) if old == price else (old, price)
        elif operation == 2:
            if not 0 <= position < count:
                raise ValueError(f"depth delete at row {position} of {count}")
            touched = (rows.pop(position)[0],)
        else:
            raise ValueError(f"depth operation must be 0, 1 or 2, not {operation}")
        changes: list[_Level] = []
        for level in touched:
            total = 0.0
            for row_price, row_size in rows:
                if row_price == level:
                    total += row_size
            if total > 0:
                if levels.get(level) != total:
                    levels[level] = total
                    changes.append((level, total))
            elif level in levels:
                del levels[level]
                changes.append((level, 0.0))
        return tuple(changes)

    def levels(self) -> tuple[tuple[_Level, ...], tuple[_Level, ...]]:
        """The whole book: (bids best first, asks best first)."""
        bids = tuple(sorted(self._bid_levels.items(), reverse=True))
        asks = tuple(sorted(self._ask_levels.items()))
        return bids, asks


# --------------------------------------------------------------------------- errors

#: Errors that refuse one request: that subscription is dropped (the same
#: request would fail the same way after a reconnect). Any other code below
#: 2000 or from 10000 up that names an open request ends it too (IB's
#: convention: an error with a request id means the request failed); codes
#: 2000-2999 are warnings.
REQUEST_FAILURES: Mapping[int, str] = {
    101: "the account's market data lines are used up (100 by default); subscribe to fewer",
    102: "TWS says this request id is already in use",
    200: "no security definition: check the symbol, or give IBProvider a contract for it",
    309: "too many market depth subscriptions (TWS allows 3 by default)",
    322: "TWS refused the request (a request limit, e.g. tick-by-tick, was reached)",
    354: (
        "the account has no market data subscription for this instrument (retrying cannot "
        "help; market_data_type=3 asks for delayed data instead)"
    ),
    10089: "the instrument needs an additional market data subscription for API access",
    10168: "no market data subscription, and delayed data is not enabled",
    10189: "no permission for tick-by-tick data of this instrument",
    10190: "too many tick-by-tick subscriptions (IB allows only a few per account)",
}
#: Codes that are only reported (a ProviderNotice), even with a request id:
#:
#: * 100 pacing violation: we pace at 45/s below TWS's 50/s, so this means
#:   another client shares the budget; TWS may follow with a disconnect, which
#:   the supervisor handles.
#: * 300/310 cancel of a request TWS no longer knows (after 1101 it dropped
#:   them): harmless.
#: * 316 depth halted: the rows stay, and data resumes or the health check acts.
#: * 317 depth reset: the rows are emptied (an empty snapshot is emitted).
#: * 1300 TWS's API port was reset; the close that follows reconnects us.
#: * 10167 delayed data is shown instead: data flows, just late.
#: * 10197 a competing live session (the same login on another device) takes
#:   the data; no data flows until it ends. The subscriptions are kept: the
#:   health check resubscribes and, if still silent, reconnects, which is
#:   what brings data back once the other session is closed.
NOTICES: Mapping[int, str] = {
    100: "TWS reports too many messages per second (is another client using this TWS?)",
    300: "TWS could not find the request to cancel",
    310: "TWS could not find the depth request to cancel",
    316: "market depth data halted",
    317: "market depth data reset: the book was emptied",
    1300: "TWS reset its API port; this connection is being dropped",
    10167: "market data is not subscribed; TWS shows delayed data",
    10197: "no market data while a competing live session is open (same login elsewhere)",
}
_DUPLICATE_CLIENT_ID = 326
#: Connectivity between TWS and IB lost / restored (data lost / kept).
_LOST = frozenset({1100, 2110})
_RESTORED_DATA_LOST = 1101
_RESTORED_DATA_KEPT = 1102
_FARM_BROKEN = 2103
_FARM_OK = 2104
_DEPTH_RESET = 317


# --------------------------------------------------------------------------- protocol

#: Quote(provider, symbol, ts_event, ts_recv, bid, ask, bid_size, ask_size)
_new_quote = event_builder(
    Quote, "provider", "symbol", "ts_event", "ts_recv", "bid", "ask", "bid_size", "ask_size"
)
#: Trade(provider, symbol, ts_event, ts_recv, price, size, exchange, conditions)
_new_trade = event_builder(
    Trade, "provider", "symbol", "ts_event", "ts_recv", "price", "size", "exchange", "conditions"
)
#: OrderBookUpdate(provider, symbol, ts_event, ts_recv, bids, asks, snapshot)
_new_book = event_builder(
    OrderBookUpdate, "provider", "symbol", "ts_event", "ts_recv", "bids", "asks", "snapshot"
)

_NS = 1_000_000_000
#: reqMktData tick types (as sent on the wire) that carry the bid or the ask:
#: price ticks BID 1 / ASK 2 and their delayed twins 66 / 67; size ticks
#: BID_SIZE 0 / ASK_SIZE 3 and delayed 69 / 70. Value: 1 bid, 2 ask.
_PRICE_SIDE: Mapping[bytes, int] = {b"1": 1, b"66": 1, b"2": 2, b"67": 2}
_SIZE_SIDE: Mapping[bytes, int] = {b"0": 1, b"69": 1, b"3": 2, b"70": 2}
_FIELD_ERRORS = (ValueError, IndexError, KeyError, TypeError, OverflowError)

_Out = list["Event | Control"]
_Handler = Callable[[list[bytes], int, _Out], None]
_Channel = Literal["trades", "quotes", "books", "bars"]


def _text(raw: bytes) -> str:
    """A text field as ib_async decodes it (UTF-8, undecodable bytes escaped)."""
    return raw.decode("utf-8", "backslashreplace")


class _L1:
    """The latest bid and ask of one ``reqMktData`` request. ``sides``: 1 bid seen, 2 ask seen."""

    __slots__ = ("ask", "ask_size", "bid", "bid_size", "sides", "symbol")

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.bid = self.ask = self.bid_size = self.ask_size = 0.0
        self.sides = 0


@attrs.frozen
class _Request:
    """One open market data request: what it is for and how to cancel it."""

    req_id: int
    channel: _Channel
    symbol: str
    kind: Literal["mktdata", "tick_by_tick", "depth", "bars"]


class IBProtocol(ProviderProtocol):
    """One TWS API connection, sans-IO: frames in, events and control items out.

    At construction it queues the ``API\\0`` prologue and the version range.
    The server's two-field reply gives :class:`Connected` and queues
    ``startApi`` (71) with the client id; ``nextValidId`` (9) gives
    :class:`Authenticated` (``managedAccounts`` (15) is kept in
    :attr:`accounts`). Then :meth:`subscribe` queues one request per channel
    and symbol (see ``docs/guide/ib.rst``) with request ids drawn from
    ``request_ids``; subscribing a topic that is already open cancels the old
    request and opens a new one (that is what a resubscription is).
    :meth:`heartbeat` queues ``reqCurrentTime`` (49), answered by
    :class:`HeartbeatReply`.

    Frames in are de-framed payloads (``bytes``); frames out are wire-ready
    ``bytes`` including their length prefixes.
    """

    confirms_subscriptions: ClassVar[bool] = False
    guard_mode: ClassVar[Literal["strict", "monotonic", "none"]] = "none"

    def __init__(
        self,
        *,
        client_id: int = DEFAULT_CLIENT_ID,
        contracts: Mapping[str, IBContract] | None = None,
        trade_ticks: Literal["AllLast", "Last"] = "AllLast",
        quotes_via: Literal["mktdata", "tick_by_tick"] = "mktdata",
        depth_rows: int = DEFAULT_DEPTH_ROWS,
        market_data_type: int = 1,
        request_ids: Iterator[int] | None = None,
    ) -> None:
        self.client_id = client_id
        self._contracts: Mapping[str, IBContract] = contracts or {}
        self._trade_ticks = trade_ticks
        self._quotes_via = quotes_via
        self._depth_rows = depth_rows
        self._market_data_type = market_data_type
        self._ids = request_ids if request_ids is not None else itertools.count(1)
        self._outbox: list[Frame] = [PROLOGUE]
        #: The negotiated server version (0 until the handshake reply).
        self.server_version = 0
        #: The accounts TWS manages for this login (``managedAccounts``).
        self.accounts: tuple[str, ...] = ()
        #: ``nextValidId``'s value (the next order id; not used for data requests).
        self.next_valid_id: int | None = None
        self._by_topic: dict[tuple[str, str], _Request] = {}
        self._requests: dict[int, _Request] = {}
        # Per-request state, keyed by the request id as it appears on the wire.
        self._l1: dict[bytes, _L1] = {}
        self._ticks: dict[bytes, str] = {}
        self._depth: dict[bytes, tuple[str, DepthRows]] = {}
        self._bars: dict[bytes, str] = {}
        self._lost = False
        self._broken_farms: set[str] = set()
        self._stale = False
        self._handlers: dict[bytes, _Handler] = {
            b"1": self._tick_price,
            b"2": self._tick_size,
            b"4": self._error,
            b"9": self._next_valid_id,
            b"12": self._depth_update,
            b"13": self._depth_update_l2,
            b"15": self._managed_accounts,
            b"45": _ignore,  # tickGeneric: halted/shortable flags, not requested
            b"46": _ignore,  # tickString: last timestamp, RTVolume (not requested)
            b"49": self._current_time,
            b"50": self._real_time_bar,
            b"57": _ignore,  # tickSnapshotEnd: we never ask for snapshots
            b"99": self._tick_by_tick,
        }

    def __repr__(self) -> str:
        return (
            f"IBProtocol(client_id={self.client_id}, server_version={self.server_version}, "
            f"requests={len(self._requests)})"
        )

    # ------------------------------------------------------------------ sending

    def data_to_send(self) -> list[Frame]:
        """Frames queued for sending, in order; the queue is emptied."""
        out, self._outbox = self._outbox, []
        return out

    def heartbeat(self) -> bool:
        """Queue ``reqCurrentTime`` (49); TWS answers with ``currentTime`` at once."""
        self._outbox.append(_REQ_CURRENT_TIME)
        return True

    def subscribe(self, topics: Topics) -> None:
        """Queue one request per (channel, symbol), replacing any open one for it.

        Raises :class:`ConfigurationError` for an unknown channel or a symbol
        that cannot travel on the wire.
        """
        clean = _normalize(topics)
        for channel in sorted(clean):
            for symbol in sorted(clean[channel]):
                old = self._by_topic.get((channel, symbol))
                if old is not None:
                    self._close(old)
                self._open(channel, symbol)  # type: ignore[arg-type]

    def unsubscribe(self, topics: Topics) -> None:
        """Queue the cancel of every open request among ``topics`` (others are ignored)."""
        clean = _normalize(topics)
        for channel in sorted(clean):
            for symbol in sorted(clean[channel]):
                request = self._by_topic.get((channel, symbol))
                if request is not None:
                    self._close(request)

    def _contract(self, symbol: str) -> str:
        contract = self._contracts.get(symbol)
        return (contract or IBContract(symbol)).wire()

    def _open(self, channel: _Channel, symbol: str) -> None:
        req_id = next(self._ids)
        if not 0 < req_id <= _MAX_INT:
            raise ProtocolError(f"request id {req_id} is outside TWS's range", provider=PROVIDER)
        contract = self._contract(symbol)
        wire_id = str(req_id).encode()
        if channel == "trades":
            kind: Literal["mktdata", "tick_by_tick", "depth", "bars"] = "tick_by_tick"
            self._outbox.append(_req_tick_by_tick(req_id, contract, self._trade_ticks))
            self._ticks[wire_id] = symbol
        elif channel == "quotes" and self._quotes_via == "tick_by_tick":
            kind = "tick_by_tick"
            self._outbox.append(_req_tick_by_tick(req_id, contract, "BidAsk"))
            self._ticks[wire_id] = symbol
        elif channel == "quotes":
            kind = "mktdata"
            self._outbox.append(_req_mkt_data(req_id, contract))
            self._l1[wire_id] = _L1(symbol)
        elif channel == "books":
            kind = "depth"
            self._outbox.append(_req_mkt_depth(req_id, contract, self._depth_rows))
            self._depth[wire_id] = (symbol, DepthRows())
        else:
            kind = "bars"
            self._outbox.append(_req_real_time_bars(req_id, contract))
            self._bars[wire_id] = symbol
        request = _Request(req_id, channel, symbol, kind)
        self._by_topic[(channel, symbol)] = request
        self._requests[req_id] = request

    def _close(self, request: _Request, *, cancel: bool = True) -> None:
        """Forget a request; queue its cancel unless TWS already ended it."""
        self._forget(request)
        if not cancel:
            return
        req_id = str(request.req_id)
        if request.kind == "mktdata":
            self._outbox.append(_message("2", "2", req_id))
        elif request.kind == "tick_by_tick":
            self._outbox.append(_message("98", req_id))
        elif request.kind == "depth":
            self._outbox.append(_message("11", "1", req_id, "1"))
        else:
            self._outbox.append(_message("51", "1", req_id))

    def _forget(self, request: _Request) -> None:
        wire_id = str(request.req_id).encode()
        del self._requests[request.req_id]
        del self._by_topic[(request.channel, request.symbol)]
        self._l1.pop(wire_id, None)
        self._ticks.pop(wire_id, None)
        self._depth.pop(wire_id, None)
        self._bars.pop(wire_id, None)

    # ------------------------------------------------------------------ receiving

    def receive(self, frame: Frame, ts_recv: int) -> list[Event | Control]:
        """Decode one TWS message (one de-framed payload) into events and control items.

        Never raises on bad input: a message whose fields do not parse gives
        :class:`Malformed`, an id we do not handle :class:`UnknownMessage`.
        """
        out: _Out = []
        if type(frame) is not bytes:
            out.append(Malformed("a TWS message must be bytes", truncate_sample(frame)))
            return out
        fields = frame.split(b"\0")
        if not fields[-1]:
            fields.pop()  # the empty string after the last field's terminating NUL
        if not self.server_version:
            self._handshake_reply(fields, frame, out)
            return out
        handler = self._handlers.get(fields[0]) if fields else None
        if handler is None:
            out.append(UnknownMessage(_text(fields[0][:20])))
            return out
        try:
            handler(fields, ts_recv, out)
        except _FIELD_ERRORS as exc:
            reason = "lacks a field" if isinstance(exc, IndexError) else f"has a bad field: {exc}"
            out.append(Malformed(f"message {_text(fields[0][:20])} {reason}", _sample(frame)))
        return out

    def _handshake_reply(self, fields: list[bytes], frame: bytes, out: _Out) -> None:
        if len(fields) != 2:
            # The official client skips anything before the two-field reply.
            kind = _text(fields[0][:20]) if fields else "empty message"
            out.append(UnknownMessage(f"{kind} before the handshake reply"))
            return
        try:
            version = int(fields[0])
        except ValueError:
            error = ProtocolError(
                f"unexpected handshake reply {_sample(frame)}: is this a TWS API port?",
                provider=PROVIDER,
            )
            out.append(ProviderFailure(error))
            return
        if not MIN_SERVER_VERSION <= version <= MAX_CLIENT_VERSION:
            older = version < MIN_SERVER_VERSION
            detail = (
                "TWS/IB Gateway is too old (version 972 or newer is needed); upgrade it"
                if older
                else f"outside the range {MIN_SERVER_VERSION}..{MAX_CLIENT_VERSION} we offered"
            )
            out.append(
                ProviderFailure(
                    FatalProviderError(f"server API version {version}: {detail}", provider=PROVIDER)
                )
            )
            return
        self.server_version = version
        self._outbox.append(_message("71", "2", str(self.client_id), ""))
        out.append(Connected(f"server version {version}, connected at {_text(fields[1])}"))

    # -- session messages

    def _next_valid_id(self, f: list[bytes], ts_recv: int, out: _Out) -> None:
        first = self.next_valid_id is None
        self.next_valid_id = int(f[2])
        if first:
            if self._market_data_type != 1:
                self._outbox.append(_message("59", "1", str(self._market_data_type)))
            out.append(Authenticated(f"API session started (client id {self.client_id})"))

    def _managed_accounts(self, f: list[bytes], ts_recv: int, out: _Out) -> None:
        self.accounts = tuple(a for a in _text(f[2]).split(",") if a)

    def _current_time(self, f: list[bytes], ts_recv: int, out: _Out) -> None:
        out.append(HeartbeatReply(int(f[2]) * _NS))

    def _error(self, f: list[bytes], ts_recv: int, out: _Out) -> None:
        # 4, version 2, reqId, code, text, advancedOrderRejectJson (server >= 166)
        req_id = int(f[2])
        code = int(f[3])
        text = _text(f[4])
        request = self._requests.get(req_id)
        if code == _DUPLICATE_CLIENT_ID:
            refused = AuthenticationError(
                f"{text}: client id {self.client_id} is taken by another API client of this "
                "TWS/IB Gateway; pass a different client_id= (or set IB_CLIENT_ID), or close "
                "the other client",
                provider=PROVIDER,
                code=code,
            )
            out.append(ProviderFailure(refused))
        elif code in _LOST:
            self._lost = True
            out.append(ProviderNotice(code, text, stale=self._stale_change()))
        elif code in (_RESTORED_DATA_LOST, _RESTORED_DATA_KEPT):
            # 1101: TWS dropped every market data request; 1102: it says it kept
            # them. We resubscribe on both: a 1102 that does not bring the data
            # back is the "connected but silent" failure, and a fresh request
            # costs one message per subscription.
            if code == _RESTORED_DATA_LOST:
                for lost in list(self._requests.values()):
                    self._close(lost, cancel=False)
            self._lost = False
            out.append(ProviderNotice(code, text, stale=self._stale_change(), resubscribe=True))
        elif code in (_FARM_BROKEN, _FARM_OK):
            farm = text.rpartition(":")[2] or text
            if code == _FARM_BROKEN:
                self._broken_farms.add(farm)
            else:
                self._broken_farms.discard(farm)
            out.append(ProviderNotice(code, text, stale=self._stale_change()))
        elif code == _DEPTH_RESET and request is not None and request.kind == "depth":
            symbol, rows = self._depth[str(req_id).encode()]
            rows.reset()
            rows.live = True
            out.append(ProviderNotice(code, f"{symbol}: {text}"))
            out.append(_new_book(PROVIDER, symbol, ts_recv, ts_recv, (), (), True))
        elif request is not None and code not in NOTICES and not 2000 <= code < 3000:
            self._close(request, cancel=False)
            meaning = REQUEST_FAILURES.get(code, "TWS refused the request")
            error = SubscriptionError(
                f"{request.channel} {request.symbol}: {text}: {meaning}",
                provider=PROVIDER,
                code=code,
            )
            out.append(ProviderFailure(error, channel=request.channel, symbol=request.symbol))
        else:
            where = f"{request.channel} {request.symbol}: " if request is not None else ""
            note = NOTICES.get(code)
            detail = f"{where}{text}" + (f" ({note})" if note else "")
            out.append(ProviderNotice(code, detail))

    def _stale_change(self) -> bool | None:
        """The stale flag if it just changed, else None."""
        stale = self._lost or bool(self._broken_farms)
        if stale == self._stale:
            return None
        self._stale = stale
        return stale

    # -- market data (hot path)

    def _tick_price(self, f: list[bytes], ts_recv: int, out: _Out) -> None:
        # 1, v, reqId, tickType, price, size, attrMask
        l1 = self._l1.get(f[2])
        if l1 is None:
            return
        side = _PRICE_SIDE.get(f[3])
        if side is None or not f[4]:
            return
        price = float(f[4])
        size = float(f[5] or 0)
        if size <= 0 or price <= 0:  # -1 with size 0: that side is empty
            price = size = 0.0
        self._set_side(l1, side, price, size, ts_recv, out)

    def _tick_size(self, f: list[bytes], ts_recv: int, out: _Out) -> None:
        # 2, v, reqId, tickType, size
        l1 = self._l1.get(f[2])
        if l1 is None:
            return
        side = _SIZE_SIDE.get(f[3])
        if side is None:
            return
        size = float(f[4] or 0)
        if size <= 0:
            self._set_side(l1, side, 0.0, 0.0, ts_recv, out)
        elif side == 1:
            self._set_side(l1, side, l1.bid, size, ts_recv, out)
        else:
            self._set_side(l1, side, l1.ask, size, ts_recv, out)

    def _set_side(
        self, l1: _L1, side: int, price: float, size: float, ts_recv: int, out: _Out
    ) -> None:
        seen = l1.sides & side
        if side == 1:
            if seen and l1.bid == price and l1.bid_size == size:
                return
            l1.bid = price
            l1.bid_size = size
        else:
            if seen and l1.ask == price and l1.ask_size == size:
                return
            l1.ask = price
            l1.ask_size = size
        l1.sides |= side
        if l1.sides == 3:
            out.append(
                _new_quote(
                    PROVIDER, l1.symbol, ts_recv, ts_recv, l1.bid, l1.ask, l1.bid_size, l1.ask_size
                )
            )

    def _tick_by_tick(self, f: list[bytes], ts_recv: int, out: _Out) -> None:
        # 99, reqId, tickType, time, ... (no version)
        symbol = self._ticks.get(f[1])
        if symbol is None:
            return
        kind = f[2]
        if kind == b"1" or kind == b"2":
            # price, size, mask, exchange, specialConditions
            conditions = f[8]
            out.append(
                _new_trade(
                    PROVIDER,
                    symbol,
                    int(f[3]) * _NS,
                    ts_recv,
                    float(f[4]),
                    float(f[5]),
                    _text(f[7]),
                    tuple(_text(conditions).split()) if conditions else (),
                )
            )
        elif kind == b"3":
            # bidPrice, askPrice, bidSize, askSize, mask
            out.append(
                _new_quote(
                    PROVIDER,
                    symbol,
                    int(f[3]) * _NS,
                    ts_recv,
                    max(float(f[4]), 0.0),
                    max(float(f[5]), 0.0),
                    float(f[6]),
                    float(f[7]),
                )
            )

    def _depth_update(self, f: list[bytes], ts_recv: int, out: _Out) -> None:
        # 12, v, reqId, position, operation, side, price, size
        entry = self._depth.get(f[2])
        if entry is not None:
            self._apply_depth(
                entry, int(f[3]), int(f[4]), int(f[5]), float(f[6]), float(f[7]), ts_recv, out
            )

    def _depth_update_l2(self, f: list[bytes], ts_recv: int, out: _Out) -> None:
        # 13, v, reqId, position, marketMaker, operation, side, price, size, isSmartDepth
        entry = self._depth.get(f[2])
        if entry is not None:
            self._apply_depth(
                entry, int(f[3]), int(f[5]), int(f[6]), float(f[7]), float(f[8]), ts_recv, out
            )

    def _apply_depth(
        self,
        entry: tuple[str, DepthRows],
        position: int,
        operation: int,
        side: int,
        price: float,
        size: float,
        ts_recv: int,
        out: _Out,
    ) -> None:
        symbol, rows = entry
        changes = rows.apply(position, operation, side, price, size)
        if not rows.live:
            rows.live = True
            bids, asks = rows.levels()
            out.append(_new_book(PROVIDER, symbol, ts_recv, ts_recv, bids, asks, True))
        elif changes:
            if side == 1:
                out.append(_new_book(PROVIDER, symbol, ts_recv, ts_recv, changes, (), False))
            else:
                out.append(_new_book(PROVIDER, symbol, ts_recv, ts_recv, (), changes, False))

    def _real_time_bar(self, f: list[bytes], ts_recv: int, out: _Out) -> None:
        # 50, v, reqId, time, open, high, low, close, volume, wap, count
        symbol = self._bars.get(f[2])
        if symbol is None:
            return
        out.append(
            Bar(
                provider=PROVIDER,
                symbol=symbol,
                ts_event=int(f[3]) * _NS,
                ts_recv=ts_recv,
                open=float(f[4]),
                high=float(f[5]),
                low=float(f[6]),
                close=float(f[7]),
                volume=float(f[8]),
                vwap=float(f[9]),
                trade_count=int(f[10]),
                interval_s=BAR_SECONDS,
            )
        )


def _ignore(fields: list[bytes], ts_recv: int, out: _Out) -> None:
    """A message we understand and have no use for."""


def _sample(frame: bytes) -> str:
    return truncate_sample(frame.replace(b"\0", b","))


def _normalize(topics: Topics) -> dict[str, frozenset[str]]:
    """Validate ``topics`` for IB: the generic channels, symbols that fit in a wire field."""
    clean = normalize_topics(topics, allowed=GENERIC_CHANNELS, provider=PROVIDER)
    for channel, symbols in clean.items():
        for symbol in symbols:
            if not symbol.isascii() or not symbol.isprintable():
                raise ConfigurationError(
                    f"{PROVIDER}: bad symbol {symbol!r} in {channel}=; TWS symbols are printable "
                    "ASCII (map other names to an IBContract with contracts=)"
                )
    return clean


# --------------------------------------------------------------------------- provider


def _seconds(name: str, value: object, *, allow_inf: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigurationError(f"{PROVIDER}: {name} must be a positive number of seconds")
    if math.isinf(value) and not allow_inf:
        raise ConfigurationError(f"{PROVIDER}: {name} must be finite, not {value!r}")
    return float(value)


def _integer(name: str, value: object, low: int, high: int) -> int:
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            raise ConfigurationError(
                f"{PROVIDER}: {name} must be an integer, not {value!r}"
            ) from None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigurationError(
            f"{PROVIDER}: {name} must be an integer from {low} to {high}, not {value!r}"
        )
    return value


@attrs.frozen(init=False)
class IBProvider(Provider):
    """Interactive Brokers market data through TWS or IB Gateway, ready for ``sup.add``.

    * ``host`` / ``port`` / ``client_id``: where TWS listens and which API
      client we are. Defaults: ``$IB_HOST`` or ``127.0.0.1``; ``$IB_PORT`` or
      7497. Ports as installed: 7496 TWS live, 7497 TWS paper, 4001 IB Gateway
      live, 4002 Gateway paper (see :data:`PORTS`). ``client_id``:
      ``$IB_CLIENT_ID`` or 1 (ib_async's default, so pick another if an
      ib_async program runs alongside): each API client of one TWS needs its
      own, and a taken one is refused with error 326, which is fatal here.
      The TWS API is plain TCP without encryption or login (TWS is already
      logged in and only accepts its trusted IPs): keep it on the same host
      or a trusted LAN.
    * Channels ``trades``, ``quotes``, ``books``, ``bars`` (see
      ``docs/guide/ib.rst`` for the request behind each), tuned by ``trade_ticks``
      (``"AllLast"``/``"Last"``), ``quotes_via`` (``"mktdata"``/
      ``"tick_by_tick"``) and ``depth_rows`` (10).
    * ``contracts``: symbol -> :class:`IBContract` for symbols that are not
      plain SMART-routed US stocks in USD, or to pin ``con_id`` /
      ``primary_exchange``. Other symbols are sent as ``IBContract(symbol)``.
    * ``market_data_type``: 1 live (default), 2 frozen, 3 delayed, 4 delayed
      frozen (``reqMarketDataType``; 3 gives paper accounts without market
      data subscriptions delayed quotes).

    Timing knobs (seconds), see :class:`~puffin_trio.providers._base.Provider`:

    * ``ping_interval=10``, ``ping_timeout=10``: TWS sends nothing on an idle
      connection, so ``reqCurrentTime`` is the heartbeat. TWS answers from its
      own clock within milliseconds, but it is a Java desktop application
      whose garbage-collection and UI pauses run to seconds; 10 s rides those
      out and still finds a dead TWS within 20 s (ib_async's Watchdog
      ``appTimeout`` is also 20 s).
    * ``stale_after=120``: SMART-routed US stock data is consolidated across
      venues, so a listed stock quotes many times a minute; 120 s spares thin
      names while finding a silent subscription within four minutes.
    * ``limit_cooldown=60``: used only after a
      :class:`~puffin_trio.errors.ConnectionLimitError`; TWS sends no such
      error (a taken client id is fatal instead), so it is here for the
      common provider interface.
    * ``connect_timeout=10``: see :mod:`puffin_trio.transports.tcp`.

    Limits: ``max_messages_per_second=45`` paces every outgoing message in
    the transport (TWS allows 50; see
    :data:`DEFAULT_MAX_MESSAGES_PER_SECOND`), so subscribing 300 topics
    takes about 7 s; ``max_frame_size`` bounds one incoming message
    (0xFFFFFF, ibapi's own limit). ``name`` is the session's name (events
    always say ``provider="ib"``).
    """

    name: ClassVar[str] = PROVIDER
    transport: ClassVar[Literal["ws", "tcp"]] = "tcp"

    host: str
    port: int
    client_id: int
    trade_ticks: Literal["AllLast", "Last"]
    quotes_via: Literal["mktdata", "tick_by_tick"]
    depth_rows: int
    market_data_type: int
    contracts: Mapping[str, IBContract] = attrs.field(hash=False)
    ping_interval: float
    ping_timeout: float
    stale_after: float
    limit_cooldown: float
    connect_timeout: float
    max_frame_size: int
    max_messages_per_second: int
    session_name: str
    #: Request ids, shared by every connection of this provider: ids are never
    #: reused, so a reconnect's requests are told apart from the last one's.
    _request_ids: Iterator[int] = attrs.field(repr=False, eq=False)

    def __init__(
        self,
        host: str | None = None,
        port: int | None = None,
        client_id: int | None = None,
        *,
        trade_ticks: Literal["AllLast", "Last"] = "AllLast",
        quotes_via: Literal["mktdata", "tick_by_tick"] = "mktdata",
        depth_rows: int = DEFAULT_DEPTH_ROWS,
        market_data_type: int = 1,
        contracts: Mapping[str, IBContract] | None = None,
        ping_interval: float = 10.0,
        ping_timeout: float = 10.0,
        stale_after: float = 120.0,
        limit_cooldown: float = 60.0,
        connect_timeout: float = 10.0,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        max_messages_per_second: int = DEFAULT_MAX_MESSAGES_PER_SECOND,
        name: str = PROVIDER,
    ) -> None:
        """Validate everything (IB needs no credentials); raises ConfigurationError."""
        if host is None:
            host = os.environ.get(_ENV_HOST) or DEFAULT_HOST
        if not isinstance(host, str) or not host or host != host.strip():
            raise ConfigurationError(f"{PROVIDER}: host must be a host name or address")
        port_value: object = port if port is not None else os.environ.get(_ENV_PORT) or DEFAULT_PORT
        client_value: object = (
            client_id if client_id is not None else os.environ.get(_ENV_CLIENT_ID) or 1
        )
        if trade_ticks not in ("AllLast", "Last"):
            raise ConfigurationError(
                f"{PROVIDER}: trade_ticks must be 'AllLast' or 'Last', not {trade_ticks!r}"
            )
        if quotes_via not in ("mktdata", "tick_by_tick"):
            raise ConfigurationError(
                f"{PROVIDER}: quotes_via must be 'mktdata' or 'tick_by_tick', not {quotes_via!r}"
            )
        checked: dict[str, IBContract] = {}
        for symbol, contract in (contracts or {}).items():
            if not isinstance(contract, IBContract):
                raise ConfigurationError(
                    f"{PROVIDER}: contracts[{symbol!r}] must be an IBContract, not {contract!r}"
                )
            _normalize({"trades": [symbol]})
            checked[symbol] = contract
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"{PROVIDER}: name must be a non-empty string")
        self.__attrs_init__(
            host=host,
            port=_integer("port (or $IB_PORT)", port_value, 1, 65535),
            client_id=_integer("client_id (or $IB_CLIENT_ID)", client_value, 0, _MAX_INT),
            trade_ticks=trade_ticks,
            quotes_via=quotes_via,
            depth_rows=_integer("depth_rows", depth_rows, 1, 1000),
            market_data_type=_integer("market_data_type", market_data_type, 1, 4),
            contracts=checked,
            ping_interval=_seconds("ping_interval", ping_interval),
            ping_timeout=_seconds("ping_timeout", ping_timeout),
            stale_after=_seconds("stale_after", stale_after, allow_inf=True),
            limit_cooldown=_seconds("limit_cooldown", limit_cooldown),
            connect_timeout=_seconds("connect_timeout", connect_timeout),
            max_frame_size=_integer("max_frame_size", max_frame_size, 1024, 0xFFFFFFFF),
            max_messages_per_second=_integer(
                "max_messages_per_second", max_messages_per_second, 1, _MAX_MESSAGES_PER_SECOND
            ),
            session_name=name,
            request_ids=itertools.count(1),
        )

    @property
    def channels(self) -> frozenset[str]:
        """``trades``, ``quotes``, ``books``, ``bars``."""
        return GENERIC_CHANNELS

    @property
    def calendar(self) -> TradingCalendar:
        """US equity hours (with pre/post-market): the instruments this provider subscribes."""
        from puffin_trio.market_hours import calendar_for

        return calendar_for("us_equity")

    def normalize(self, topics: Topics) -> dict[str, frozenset[str]]:
        """Validate ``topics``: generic channels, printable ASCII symbols."""
        return _normalize(topics)

    def check(self) -> None:
        """Nothing left to check: IB needs no credentials, and the rest was checked
        when the provider was made."""

    def protocol(self) -> IBProtocol:
        """A fresh :class:`IBProtocol` for a new connection (request ids carry on)."""
        return IBProtocol(
            client_id=self.client_id,
            contracts=self.contracts,
            trade_ticks=self.trade_ticks,
            quotes_via=self.quotes_via,
            depth_rows=self.depth_rows,
            market_data_type=self.market_data_type,
            request_ids=self._request_ids,
        )

    def open_transport(self) -> AbstractAsyncContextManager[Transport]:
        """A framed, paced TCP connection to TWS (see :mod:`puffin_trio.transports.tcp`)."""
        return open_tcp_transport(
            self.host,
            self.port,
            connect_timeout=self.connect_timeout,
            max_frame_size=self.max_frame_size,
            max_messages_per_second=self.max_messages_per_second,
            connect_hint=_CONNECT_HINT,
        )
