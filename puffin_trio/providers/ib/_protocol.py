"""One TWS API connection as a sans-IO state machine: :class:`IBProtocol`.

This module owns the client side of the TWS conversation: the handshake and
``startApi``, one request per subscribed channel and symbol (and its cancel),
and decoding TWS messages into normalised events and control items. It must
not do I/O, read a clock (``ts_recv`` is passed in) or log per message. The
channels and what each request yields, and how decoding (the hot path) is
kept fast, are described in ``docs/guide/ib.rst``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping
from typing import ClassVar, Literal

import attrs

from puffin_trio._event_builder import event_builder
from puffin_trio.errors import (
    AuthenticationError,
    BackfillError,
    ConfigurationError,
    FatalProviderError,
    ProtocolError,
    SubscriptionError,
)
from puffin_trio.events import Bar, Event, OrderBookUpdate, Quote, Trade
from puffin_trio.guard import GuardMode
from puffin_trio.providers._base import (
    GENERIC_CHANNELS,
    Authenticated,
    Connected,
    Control,
    Frame,
    HeartbeatReply,
    HistoryReply,
    Malformed,
    ProviderFailure,
    ProviderNotice,
    ProviderProtocol,
    Topics,
    UnknownMessage,
    normalize_topics,
    truncate_sample,
)
from puffin_trio.providers._history import SeamRule
from puffin_trio.providers.ib._depth import DepthRows
from puffin_trio.providers.ib._errors import (
    BARS_BUSTED,
    DEPTH_RESET,
    DUPLICATE_CLIENT_ID,
    FARM_BROKEN,
    FARM_OK,
    LOST,
    NOTICES,
    REQUEST_FAILURES,
    RESTORED_DATA_KEPT,
    RESTORED_DATA_LOST,
)
from puffin_trio.providers.ib._fields import amount, number, seconds_to_ns, whole
from puffin_trio.providers.ib._history import (
    MAX_TICKS,
    SEAM,
    historical_trades,
    history_error,
    req_historical_ticks,
)
from puffin_trio.providers.ib._wire import (
    BAR_SECONDS,
    DEFAULT_CLIENT_ID,
    DEFAULT_DEPTH_ROWS,
    MAX_CLIENT_VERSION,
    MAX_INT,
    MIN_SERVER_VERSION,
    PROLOGUE,
    PROVIDER,
    REQ_CURRENT_TIME,
    IBContract,
    message,
    req_mkt_data,
    req_mkt_depth,
    req_real_time_bars,
    req_tick_by_tick,
)

__all__ = ["IBProtocol", "check_topics"]

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
#: TWS's market data types (``reqMarketDataType``, message 58), by number.
_MARKET_DATA_TYPES: Mapping[int, str] = {
    1: "real-time",
    2: "frozen",
    3: "delayed",
    4: "delayed frozen",
}

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
    ``request_ids`` (default: 1, 2, 3, ... for this connection, as ib_async
    numbers them; the protocol owns its counter, the frozen provider holds
    none); subscribing a topic that is already open cancels the old request
    and opens a new one (that is what a resubscription is).
    :meth:`heartbeat` queues ``reqCurrentTime`` (49), answered by
    :class:`HeartbeatReply`.

    Frames in are de-framed payloads (``bytes``); frames out are wire-ready
    ``bytes`` including their length prefixes.
    """

    confirms_subscriptions: ClassVar[bool] = False
    guard_mode: ClassVar[GuardMode] = "none"
    history_limit: ClassVar[int] = MAX_TICKS
    history_seam: ClassVar[SeamRule] = SEAM

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
        #: Open historical trades requests (``reqHistoricalTicks``): wire id -> symbol.
        self._history: dict[bytes, str] = {}
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
            b"58": self._market_data_type_of,
            b"81": _ignore,  # tickReqParams: min tick, BBO exchange (answers every reqMktData)
            b"98": self._historical_ticks_last,
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
        self._outbox.append(REQ_CURRENT_TIME)
        return True

    def subscribe(self, topics: Topics) -> None:
        """Queue one request per (channel, symbol), replacing any open one for it.

        Raises :class:`ConfigurationError` for an unknown channel or a symbol
        that cannot travel on the wire.
        """
        clean = check_topics(topics)
        for channel in sorted(clean):
            for symbol in sorted(clean[channel]):
                old = self._by_topic.get((channel, symbol))
                if old is not None:
                    self._close(old)
                self._open(channel, symbol)  # type: ignore[arg-type]

    def unsubscribe(self, topics: Topics) -> None:
        """Queue the cancel of every open request among ``topics`` (others are ignored)."""
        clean = check_topics(topics)
        for channel in sorted(clean):
            for symbol in sorted(clean[channel]):
                request = self._by_topic.get((channel, symbol))
                if request is not None:
                    self._close(request)

    def request_history(self, symbol: str, start_ns: int) -> int:
        """Queue ``reqHistoricalTicks`` for up to 1 000 trades of ``symbol`` from
        ``start_ns`` on; returns its request id (answered by :class:`HistoryReply`)."""
        req_id = next(self._ids)
        if not 0 < req_id <= MAX_INT:
            raise ProtocolError(f"request id {req_id} is outside TWS's range", provider=PROVIDER)
        self._outbox.append(
            req_historical_ticks(req_id, self._contract(symbol), start_ns, self.history_limit)
        )
        self._history[str(req_id).encode()] = symbol
        return req_id

    def _contract(self, symbol: str) -> str:
        contract = self._contracts.get(symbol)
        return (contract or IBContract(symbol)).wire()

    def _open(self, channel: _Channel, symbol: str) -> None:
        req_id = next(self._ids)
        if not 0 < req_id <= MAX_INT:
            raise ProtocolError(f"request id {req_id} is outside TWS's range", provider=PROVIDER)
        contract = self._contract(symbol)
        wire_id = str(req_id).encode()
        if channel == "trades":
            kind: Literal["mktdata", "tick_by_tick", "depth", "bars"] = "tick_by_tick"
            self._outbox.append(req_tick_by_tick(req_id, contract, self._trade_ticks))
            self._ticks[wire_id] = symbol
        elif channel == "quotes" and self._quotes_via == "tick_by_tick":
            kind = "tick_by_tick"
            self._outbox.append(req_tick_by_tick(req_id, contract, "BidAsk"))
            self._ticks[wire_id] = symbol
        elif channel == "quotes":
            kind = "mktdata"
            self._outbox.append(req_mkt_data(req_id, contract))
            self._l1[wire_id] = _L1(symbol)
        elif channel == "books":
            kind = "depth"
            self._outbox.append(req_mkt_depth(req_id, contract, self._depth_rows))
            self._depth[wire_id] = (symbol, DepthRows())
        else:
            kind = "bars"
            self._outbox.append(req_real_time_bars(req_id, contract))
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
            self._outbox.append(message("2", "2", req_id))
        elif request.kind == "tick_by_tick":
            self._outbox.append(message("98", req_id))
        elif request.kind == "depth":
            self._outbox.append(message("11", "1", req_id, "1"))
        else:
            self._outbox.append(message("51", "1", req_id))

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
        if not fields:  # the framer never delivers one, but a sans-IO caller can
            out.append(Malformed("empty TWS message", _sample(frame)))
            return out
        handler = self._handlers.get(fields[0])
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
        self._outbox.append(message("71", "2", str(self.client_id), ""))
        out.append(Connected(f"server version {version}, connected at {_text(fields[1])}"))

    # -- session messages

    def _next_valid_id(self, f: list[bytes], ts_recv: int, out: _Out) -> None:
        first = self.next_valid_id is None
        self.next_valid_id = int(f[2])
        if first:
            if self._market_data_type != 1:
                self._outbox.append(message("59", "1", str(self._market_data_type)))
            out.append(Authenticated(f"API session started (client id {self.client_id})"))

    def _managed_accounts(self, f: list[bytes], ts_recv: int, out: _Out) -> None:
        self.accounts = tuple(a for a in _text(f[2]).split(",") if a)

    def _current_time(self, f: list[bytes], ts_recv: int, out: _Out) -> None:
        out.append(HeartbeatReply(int(f[2]) * _NS))

    def _error(self, f: list[bytes], ts_recv: int, out: _Out) -> None:
        # 4, version 2, reqId, code, text, advancedOrderRejectJson (server >= 166)
        req_id = int(f[2])
        code = int(f[3])
        text = truncate_sample(_text(f[4]))
        request = self._requests.get(req_id)
        history = self._history.pop(f[2], None)
        if history is not None:
            out.append(HistoryReply(req_id, error=history_error(code, text, history)))
        elif code == DUPLICATE_CLIENT_ID:
            refused = AuthenticationError(
                f"{text}: client id {self.client_id} is taken by another API client of this "
                "TWS/IB Gateway; pass a different client_id= (or set IB_CLIENT_ID), or close "
                "the other client",
                provider=PROVIDER,
                code=code,
            )
            out.append(ProviderFailure(refused))
        elif code in LOST:
            self._lost = True
            out.append(ProviderNotice(code, text, stale=self._stale_change()))
        elif code in (RESTORED_DATA_LOST, RESTORED_DATA_KEPT):
            # 1101: TWS dropped every market data request; 1102: it says it kept
            # them. We resubscribe on both: a 1102 that does not bring the data
            # back is the "connected but silent" failure, and a fresh request
            # costs one message per subscription.
            if code == RESTORED_DATA_LOST:
                for lost in list(self._requests.values()):
                    self._close(lost, cancel=False)
            self._lost = False
            out.append(ProviderNotice(code, text, stale=self._stale_change(), resubscribe=True))
        elif code in (FARM_BROKEN, FARM_OK):
            farm = text.rpartition(":")[2] or text
            if code == FARM_BROKEN:
                self._broken_farms.add(farm)
            else:
                self._broken_farms.discard(farm)
            out.append(ProviderNotice(code, text, stale=self._stale_change()))
        elif code == DEPTH_RESET and request is not None and request.kind == "depth":
            symbol, rows = self._depth[str(req_id).encode()]
            rows.reset()
            rows.live = True
            out.append(ProviderNotice(code, f"{symbol}: {text}"))
            out.append(_new_book(PROVIDER, symbol, ts_recv, ts_recv, (), (), True))
        elif code == BARS_BUSTED and request is not None:
            # TWS deactivated the request and asks for it again: a new request
            # for the same topic (a new id; the old one is over, so no cancel).
            self._close(request, cancel=False)
            self._open(request.channel, request.symbol)
            where = f"{request.channel} {request.symbol}"
            out.append(ProviderNotice(code, f"{where}: {text} (requested again)"))
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

    def _market_data_type_of(self, f: list[bytes], ts_recv: int, out: _Out) -> None:
        # 58, v, reqId, marketDataType: what TWS sends for this reqMktData (1
        # real-time, 2 frozen, 3 delayed, 4 delayed frozen). Told only when it is
        # not what was asked for (market_data_type=).
        kind = whole(f[3])
        request = self._requests.get(int(f[2]))
        if request is not None and kind != self._market_data_type:
            out.append(
                ProviderNotice(
                    "marketDataType",
                    f"{request.channel} {request.symbol}: TWS sends "
                    f"{_MARKET_DATA_TYPES.get(kind, f'type {kind}')} data "
                    f"(market_data_type={self._market_data_type} was asked for)",
                )
            )

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
        price = number(f[4])
        size = number(f[5]) if f[5] else 0.0
        if size <= 0:  # -1 (or 0) with size 0: that side is empty, as IB documents
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
        size = number(f[4]) if f[4] else 0.0
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
                    seconds_to_ns(f[3]),
                    ts_recv,
                    number(f[4]),
                    amount(f[5]),
                    _text(f[7]),
                    tuple(_text(conditions).split()) if conditions else (),
                )
            )
        elif kind == b"3":
            # bidPrice, askPrice, bidSize, askSize, mask; a side <= 0 is empty (as
            # ib_async reads it), so it becomes 0
            out.append(
                _new_quote(
                    PROVIDER,
                    symbol,
                    seconds_to_ns(f[3]),
                    ts_recv,
                    max(number(f[4]), 0.0),
                    max(number(f[5]), 0.0),
                    max(number(f[6]), 0.0),
                    max(number(f[7]), 0.0),
                )
            )

    def _historical_ticks_last(self, f: list[bytes], ts_recv: int, out: _Out) -> None:
        # 98, reqId, count, count x (time, mask, price, size, exchange, conditions), done
        symbol = self._history.get(f[1])
        if symbol is None:
            return
        try:
            trades, done, malformed = historical_trades(f, symbol, ts_recv)
        except (ValueError, IndexError) as exc:
            # Broken framing: the request is over (its answer is lost); the backfill retries.
            del self._history[f[1]]
            broken = BackfillError(f"malformed historicalTicksLast: {exc}", provider=PROVIDER)
            out.append(Malformed(f"message 98 {exc}", _sample(b"\0".join(f))))
            out.append(HistoryReply(int(f[1]), error=broken))
            return
        if done:
            del self._history[f[1]]
        out.append(HistoryReply(int(f[1]), trades, done, malformed=malformed))

    def _depth_update(self, f: list[bytes], ts_recv: int, out: _Out) -> None:
        # 12, v, reqId, position, operation, side, price, size
        entry = self._depth.get(f[2])
        if entry is not None:
            self._apply_depth(
                entry,
                whole(f[3]),
                whole(f[4]),
                whole(f[5]),
                number(f[6]),
                amount(f[7]),
                ts_recv,
                out,
            )

    def _depth_update_l2(self, f: list[bytes], ts_recv: int, out: _Out) -> None:
        # 13, v, reqId, position, marketMaker, operation, side, price, size, isSmartDepth
        entry = self._depth.get(f[2])
        if entry is not None:
            self._apply_depth(
                entry,
                whole(f[3]),
                whole(f[5]),
                whole(f[6]),
                number(f[7]),
                amount(f[8]),
                ts_recv,
                out,
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
                ts_event=seconds_to_ns(f[3]),
                ts_recv=ts_recv,
                open=number(f[4]),
                high=number(f[5]),
                low=number(f[6]),
                close=number(f[7]),
                volume=amount(f[8]),
                vwap=number(f[9]),
                trade_count=whole(f[10]),
                interval_s=BAR_SECONDS,
            )
        )


def _ignore(fields: list[bytes], ts_recv: int, out: _Out) -> None:
    """A message we understand and have no use for."""


def _sample(frame: bytes) -> str:
    return truncate_sample(frame.replace(b"\0", b","))


def check_topics(topics: Topics) -> dict[str, frozenset[str]]:
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
