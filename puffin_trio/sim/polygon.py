"""A protocol-faithful local Polygon.io / Massive WebSocket server.

This module owns the *server* side of the Polygon/Massive stream protocol (as
Polygon's WebSocket documentation describes it,
https://polygon.io/docs/stocks/ws_getting-started; ``/stocks`` and
``/crypto`` clusters on one port), written independently of the client
protocol in :mod:`puffin_trio.providers.polygon` (which it must not import)
so the two cross-check each other; the official ``massive`` SDK is also
tested against it. It must not listen on anything but loopback, log per
message, or log keys. Every connection runs in its own tasks (a reader for
client messages, a data pump, an auth deadline); timing uses trio's clock,
message timestamps (Unix ms) come from ``wall_clock``. What it speaks
(auth, topics, the connection limit, stock and crypto events, ``q`` sequence
numbers, ``XL2`` as snapshots), and how each fault of a
:class:`~puffin_trio.sim.faults.FaultPlan` looks on the Polygon wire, is in
``docs/guide/simulators.rst``.
"""

from __future__ import annotations

import logging
import random
import time
from collections import deque
from collections.abc import Callable, Collection, Sequence
from typing import Any, ClassVar, Literal, NoReturn

import attrs
import orjson
import trio
from trio_websocket import WebSocketConnection, WebSocketRequest

from puffin_trio.errors import ConfigurationError
from puffin_trio.sim._common import (
    WsSimConnection,
    WsSimServer,
    check_settings,
    same_secret,
)
from puffin_trio.sim._polygon_rest import PolygonRest
from puffin_trio.sim._rest import RestEndpoint
from puffin_trio.sim._server import SimRecorder, market
from puffin_trio.sim._tape import Printed
from puffin_trio.sim.faults import Fault, FaultKind, FaultPlan, PausableStream
from puffin_trio.sim.market import (
    ROUND_LOT,
    MarketModel,
    SimBook,
    SimQuote,
    SimTrade,
    fold_trade,
    is_crypto_symbol,
)

__all__ = [
    "AUTH_TIMEOUT",
    "DEFAULT_KEY",
    "DEFAULT_RATE",
    "NOT_AUTHORIZED",
    "STATUS_MESSAGES",
    "PolygonConnectionRecord",
    "PolygonSimRecorder",
    "crypto_trade_row",
    "serve_polygon",
    "stock_quote",
    "stock_trade",
    "stock_trade_row",
]

logger = logging.getLogger(__name__)

#: The key the simulator accepts unless told otherwise.
DEFAULT_KEY = "sim-key"
#: Data messages per second per connection by default: about one active
#: stock's trades and quotes, lively enough for a demo and easy on a laptop.
DEFAULT_RATE = 50.0
#: Seconds a client has to authenticate. Polygon does not document its
#: ``auth_timeout``; 10 s is Alpaca's documented value, and the massive SDK
#: authenticates within milliseconds of ``connected``.
AUTH_TIMEOUT = 10.0

#: ``message`` text of each status the simulator sends, as the real server
#: words them.
STATUS_MESSAGES: dict[str, str] = {
    "connected": "Connected Successfully",
    "auth_success": "authenticated",
    "auth_failed": "authentication failed",
    "auth_timeout": "No authentication request received.",
    "max_connections": (
        "Maximum number of websocket connections exceeded. You have reached the connection "
        "limit for your account. Please contact support to increase your limit."
    ),
}
#: ``message`` of the ``error`` status for a topic the plan does not include.
NOT_AUTHORIZED = "not authorized"
#: Close code after ``max_connections`` and ``auth_timeout`` (policy violation;
#: the code reported for ``max_connections``).
_POLICY_CLOSE = 1008

#: Event types the simulator generates, per cluster, and the bar interval of
#: the aggregates among them.
_STOCK_BARS: dict[str, int] = {"A": 1, "AM": 60}
_CRYPTO_BARS: dict[str, int] = {"XAS": 1, "XA": 60}
#: Polygon's exchange ids of the model's exchange letters (IEX 15, Nasdaq 12,
#: NYSE 10, NYSE Arca 11, Cboe EDGX 8, Cboe BZX 19), and tape letters -> ids.
_EXCHANGE_IDS: dict[str, int] = {"V": 15, "Q": 12, "N": 10, "P": 11, "K": 8, "Z": 19}
_TAPE_IDS: dict[str, int] = {"A": 1, "B": 2, "C": 3}
#: Trade condition letters -> Polygon condition codes (a regular sale has no
#: code and the field is omitted, as on the wire): odd lot 37.
_TRADE_CONDITIONS: dict[str, int] = {"I": 37}
#: Quote condition letter -> Polygon's single condition code.
_QUOTE_CONDITIONS: dict[str, int] = {"R": 1}
#: The crypto exchange every simulated crypto event comes from.
_CRYPTO_EXCHANGE = 1
#: ``sequence="polygon"``: the chance that a number is followed by a hole, and
#: the largest hole. Real ``q`` values skip often and by a few numbers.
_HOLE_CHANCE = 0.3
_MAX_HOLE = 8
#: Ticks a GAP or REORDER fault may draw while collecting its messages before
#: it settles for fewer (only trades feeding bars produce no message).
_MAX_DRAWS = 1000
_EVICTED = "evicted"
_NS_PER_MS = 1_000_000


@attrs.define(eq=False)
class PolygonConnectionRecord:
    """What happened on one connection, for tests to inspect.

    * ``received``: every decodable client message, in order (auth included;
      the simulator never logs them).
    * ``sent``: every frame sent, as the list of message dicts before encoding,
      up to the recorder's ``max_frames``; ``frames_not_kept`` counts the rest.
      Undecodable fault frames are not in here; ``faults`` lists every fault
      that fired, in order.
    * ``skipped``: data messages a ``GAP`` fault generated and never sent.
    * ``topics``: the current subscription, in subscription order.
    * ``close_code``: the close code the server sent (``None``: it did not
      send one, e.g. ``DROP`` or the client closed first).
    * ``ended``: set once the server is done with the connection (its
      connection-limit slot is free again).
    """

    number: int
    path: str
    market: str
    received: list[dict[str, Any]] = attrs.Factory(list)
    sent: list[list[dict[str, Any]]] = attrs.Factory(list)
    frames_not_kept: int = 0
    skipped: list[dict[str, Any]] = attrs.Factory(list)
    topics: list[str] = attrs.Factory(list)
    authenticated: bool = False
    faults: list[FaultKind] = attrs.Factory(list)
    close_code: int | None = None
    ended: trio.Event = attrs.Factory(trio.Event)

    def actions(self, action: str) -> list[dict[str, Any]]:
        """The received client messages with this ``action``."""
        return [m for m in self.received if m.get("action") == action]

    def statuses(self) -> list[dict[str, Any]]:
        """Every status message sent, in order."""
        return [m for frame in self.sent for m in frame if m.get("ev") == "status"]

    def data_messages(self) -> list[dict[str, Any]]:
        """Every kept market-data message sent (not statuses), in order."""
        return [m for frame in self.sent for m in frame if m.get("ev") != "status"]


class PolygonSimRecorder(SimRecorder[PolygonConnectionRecord]):
    """Records every connection a :func:`serve_polygon` server accepts.

    ``max_frames`` bounds the frames kept per connection (100 000: minutes of
    a test's traffic at the default rate; pass no recorder to benchmarks).
    """


def _status(status: str, message: str) -> dict[str, Any]:
    return {"ev": "status", "status": status, "message": message}


def _known_status(status: str) -> dict[str, Any]:
    return _status(status, STATUS_MESSAGES[status])


@attrs.define(eq=False, kw_only=True)
class _Server(WsSimServer[PolygonConnectionRecord]):
    """Shared state of one :func:`serve_polygon` server (configuration, connection slots)."""

    logger: ClassVar[logging.Logger] = logger
    log_prefix: ClassVar[str] = "polygon sim"

    sequence: Literal["contiguous", "polygon"]
    seed: int
    entitlements: frozenset[str] | None
    on_connection_limit: Literal["evict_oldest", "reject_new"]
    #: Authenticated connections per key, oldest first.
    active: dict[str, list[_Connection]] = attrs.field(init=False, factory=dict)
    #: The last ``q`` of each symbol's trades and quotes: server-wide, as on the real
    #: feed (a reconnect continues the numbering; the historical API's
    #: ``sequence_number`` is the same number).
    trade_seq: dict[str, int] = attrs.field(init=False, factory=dict)
    quote_seq: dict[str, int] = attrs.field(init=False, factory=dict)
    _holes: Callable[[], float] = attrs.field(init=False)
    _rest: PolygonRest = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self._holes = random.Random(f"{self.seed}:q").random
        self._rest = PolygonRest(
            self.tape,
            key=self.key,
            symbol_of=self._model_symbol_of,
            row=_rest_row,
            page_size=self.history_page_size,
        )

    def _history_endpoint(self) -> RestEndpoint:
        return self._rest

    def _model_symbol_of(self, ticker: str) -> str | None:
        """The model symbol of a REST ticker (``AAPL``; crypto ``X:BTCUSD``)."""
        if not ticker.startswith("X:"):
            return ticker if ticker in self.model.symbols else None
        pair = ticker[2:]
        return next((s for s in self.model.symbols if s.replace("/", "") == pair), None)

    def next_seq(self, counters: dict[str, int], symbol: str) -> int:
        """The next ``q`` of ``symbol`` in ``counters`` (with holes in ``polygon`` numbering)."""
        seq = counters.get(symbol, 0) + 1
        if self.sequence == "polygon" and self._holes() < _HOLE_CHANCE:
            seq += 1 + int(self._holes() * _MAX_HOLE)
        counters[symbol] = seq
        return seq

    def print_trade(self, trade: SimTrade) -> int:
        """Number a trade (stocks: its ``q``) and put it on the tape."""
        seq = trade.seq if is_crypto_symbol(trade.symbol) else self.next_seq(
            self.trade_seq, trade.symbol
        )
        return self.tape.record(trade, seq).seq

    async def _accept(self, request: WebSocketRequest) -> WebSocketConnection | None:
        if _market(request) in ("stocks", "crypto"):
            ws: WebSocketConnection = await request.accept()
            return ws
        await request.reject(404, body=b"unknown cluster: use /stocks or /crypto")
        return None

    def _record(self, number: int, request: WebSocketRequest) -> PolygonConnectionRecord:
        return PolygonConnectionRecord(number, request.path, _market(request))

    def _connection(
        self, ws: WebSocketConnection, transport: PausableStream, record: PolygonConnectionRecord
    ) -> _Connection:
        return _Connection(self, ws, transport, record)


def _market(request: WebSocketRequest) -> str:
    """The cluster a request asks for: its path without the query or slashes."""
    path: str = request.path
    return path.split("?", 1)[0].strip("/")


class _Bars:
    """Per-symbol OHLCV of the open window of one aggregate event type (``A``, ``XA``, ...)."""

    __slots__ = ("event", "interval_ns", "open", "symbols", "window")

    def __init__(self, event: str, interval_s: int) -> None:
        self.event = event
        self.interval_ns = interval_s * 1_000_000_000
        self.symbols: frozenset[str] = frozenset()  # model symbols subscribed
        #: symbol -> [open, high, low, close, volume, count, price * volume]
        self.open: dict[str, list[float]] = {}
        self.window: int | None = None


class _Connection(WsSimConnection[PolygonConnectionRecord]):
    """One client session on one cluster: the Polygon protocol on :class:`WsSimConnection`."""

    def __init__(
        self,
        server: _Server,
        ws: WebSocketConnection,
        transport: PausableStream,
        record: PolygonConnectionRecord,
    ) -> None:
        super().__init__(server, ws, transport, record)
        self._server = server
        self._model = server.model
        self._crypto = record.market == "crypto"
        duplicate = [
            f.count
            for f in server.faults
            if f.kind is FaultKind.DUPLICATE and f.applies_to(record.number)
        ]
        self._history: deque[dict[str, Any]] | None = (
            deque(maxlen=max(duplicate)) if duplicate else None
        )
        self._key: str | None = None
        self._topics: dict[str, dict[str, None]] = {}
        self._wire: dict[str, str] = {}  # model symbol -> wire spelling
        self._bars = [
            _Bars(event, interval)
            for event, interval in (_CRYPTO_BARS if self._crypto else _STOCK_BARS).items()
        ]
        #: symbol -> [day's open, volume, price * volume] (A/AM ``op``, ``av``, ``a``).
        self._day: dict[str, list[float]] = {}
        self._pending_bars: list[tuple[str, dict[str, Any]]] = []  # (model symbol, message)
        # Derived from the subscription (see _recompute); read on the hot path.
        self._emits_ticks = False
        self._trade_from: tuple[str, ...] = ()
        self._quote_from: tuple[str, ...] = ()
        self._book_from: tuple[str, ...] = ()
        self._trade_to: frozenset[str] = frozenset()
        self._bar_symbols: frozenset[str] = frozenset()

    # -- WsSimConnection hooks ---------------------------------------------

    def _hello(self) -> dict[str, Any]:
        return _known_status("connected")

    def _encode(self, frame: list[dict[str, Any]]) -> str | bytes:
        return orjson.dumps(frame).decode()

    async def _on_auth_timeout(self) -> None:
        await self._send_control(_known_status("auth_timeout"))
        self._end(None, _POLICY_CLOSE, "auth timeout")

    def _unknown_message(self) -> dict[str, Any]:
        return {"ev": "ZZ", "message": "simulated unknown message type"}

    def _malformed_default(self) -> str | bytes:
        return "\x00garbage"

    def _release(self) -> None:
        self._release_slot()

    async def _before_close(self, how: FaultKind | str | None, code: int) -> None:
        """An evicted connection gets ``max_connections`` first; record the close code sent."""
        if how == _EVICTED:
            await self._send_control(_known_status("max_connections"))
        if self._ws.closed is None:  # else the client closed first
            self._record.close_code = code

    async def _send_data(self, frame: list[dict[str, Any]]) -> None:
        """Send and count data messages (caller holds ``_lock``); keep them for DUPLICATE."""
        await super()._send_data(frame)
        if self._history is not None:
            self._history.extend(frame)

    async def _inject(self, fault: Fault) -> None:
        """GAP, DUPLICATE and REORDER here; the provider-neutral faults in the base class."""
        kind = fault.kind
        if kind is FaultKind.GAP:
            async with self._lock:
                self._record.skipped.extend(self._draw(fault.count))
        elif kind is FaultKind.DUPLICATE:
            async with self._lock:
                assert self._history is not None
                again = list(self._history)[-fault.count :]
                if again:
                    await self._send_data(again)
        elif kind is FaultKind.REORDER:
            async with self._lock:
                reordered = self._draw(fault.count)[::-1]
                if reordered:
                    await self._send_data(reordered)
        else:
            await super()._inject(fault)

    # -- lifecycle ---------------------------------------------------------

    def evict(self) -> None:
        """Another connection took this one's slot: ``max_connections``, then close 1008."""
        self._release_slot()
        self._end(_EVICTED, _POLICY_CLOSE, "max connections")

    def _release_slot(self) -> None:
        if self._key is not None:
            active = self._server.active.get(self._key, [])
            if self in active:
                active.remove(self)
            self._key = None

    # -- client messages ---------------------------------------------------

    async def _on_message(self, frame: str | bytes) -> None:
        try:
            message = orjson.loads(frame)
        except orjson.JSONDecodeError:
            message = None
        if not isinstance(message, dict):
            await self._send_control(_status("error", "invalid message"))
            return
        self._record.received.append(message)
        action = message.get("action")
        if action == "auth":
            await self._on_auth(message.get("params"))
        elif action in ("subscribe", "unsubscribe"):
            if self._authenticated.is_set():
                await self._on_topics(message.get("params"), add=action == "subscribe")
            else:
                await self._send_control(_status("error", "not authenticated"))
        else:
            await self._send_control(_status("error", f"unknown action: {action!r}"))

    async def _on_auth(self, key: object) -> None:
        if self._authenticated.is_set():
            await self._send_control(_known_status("auth_success"))
            return
        fault = self._faults.take_auth_fault()
        if fault is not None:
            self._record.faults.append(fault.kind)
            if fault.kind is FaultKind.CONNECTION_LIMIT:
                await self._reject_over_limit()
            else:
                await self._send_control(_known_status("auth_failed"))
            return
        server = self._server
        if not isinstance(key, str) or not same_secret(key, server.key):
            await self._send_control(_known_status("auth_failed"))
            return
        active = server.active.setdefault(key, [])
        if len(active) >= server.max_connections_per_key:
            if server.on_connection_limit == "reject_new":
                await self._reject_over_limit()
                return
            active[0].evict()
        active.append(self)
        self._key = key
        self._record.authenticated = True
        self._authenticated.set()
        await self._send_control(_known_status("auth_success"))

    async def _reject_over_limit(self) -> None:
        await self._send_control(_known_status("max_connections"))
        self._end(None, _POLICY_CLOSE, "max connections")

    async def _on_topics(self, params: object, *, add: bool) -> None:
        if not isinstance(params, str):
            await self._send_control(_status("error", "params must be a string of topics"))
            return
        topics = [t.strip() for t in params.split(",")]
        entitlements = self._server.entitlements
        verb = "subscribed to: " if add else "unsubscribed to: "
        statuses: list[dict[str, Any]] = []
        async with self._lock:
            for topic in topics:
                if not topic:
                    continue
                event, _, symbol = topic.partition(".")
                if add and entitlements is not None and event not in entitlements:
                    statuses.append(_status("error", NOT_AUTHORIZED))
                    continue
                subscribed = self._topics.setdefault(event, {})
                if add:
                    subscribed[symbol] = None
                    if symbol and symbol != "*":
                        self._model.add_symbols([self._model_symbol(symbol)])
                else:
                    subscribed.pop(symbol, None)
                statuses.append(_status("success", verb + topic))
            if statuses:
                await self._send(statuses)
            self._record.topics = [
                f"{e}.{s}" for e, symbols in self._topics.items() for s in symbols
            ]
            self._recompute()

    def _model_symbol(self, wire: str) -> str:
        return wire.replace("-", "/", 1) if self._crypto else wire

    def _wire_symbol(self, symbol: str) -> str:
        wire = self._wire.get(symbol)
        if wire is None:
            wire = self._wire[symbol] = symbol.replace("/", "-") if self._crypto else symbol
        return wire

    def _recompute(self) -> None:
        """Derive the hot-path views of the subscription and wake the pump."""
        crypto = self._crypto

        def expand(event: str) -> tuple[str, ...]:
            subscribed = self._topics.get(event, {})
            if "*" in subscribed:
                return tuple(s for s in self._model.symbols if is_crypto_symbol(s) == crypto)
            return tuple(self._model_symbol(s) for s in subscribed if s)

        trades = expand("XT" if crypto else "T")
        bar_symbols: tuple[str, ...] = ()
        for bars in self._bars:
            symbols = expand(bars.event)
            bars.symbols = frozenset(symbols)
            bars.open = {s: agg for s, agg in bars.open.items() if s in bars.symbols}
            bar_symbols += symbols
        self._trade_to = frozenset(trades)
        self._bar_symbols = frozenset(bar_symbols)
        self._trade_from = tuple(dict.fromkeys(trades + bar_symbols))
        self._quote_from = expand("XQ" if crypto else "Q")
        self._book_from = expand("XL2") if crypto else ()
        self._pending_bars = [b for b in self._pending_bars if b[0] in self._bar_symbols]
        self._emits_ticks = bool(self._trade_to or self._quote_from or self._book_from)
        self._streaming = bool(self._trade_from or self._quote_from or self._book_from)
        if self._streaming:
            self._server.off_air.draws = (self._trade_from, self._quote_from, self._book_from)
        self._changed.set()
        self._changed = trio.Event()

    # -- data --------------------------------------------------------------

    def _draw(self, count: int) -> list[dict[str, Any]]:
        """The next ``count`` tick messages (fewer only if the subscription yields none)."""
        messages: list[dict[str, Any]] = []
        draws = 0
        while self._emits_ticks and len(messages) < count and draws < _MAX_DRAWS:
            messages.extend(self._ticks(1))
            draws += 1
        return messages

    def _data_frame(self, count: int) -> list[dict[str, Any]]:
        """Up to ``count`` data messages: closed bars first, then ticks."""
        frame: list[dict[str, Any]] = []
        if self._bar_symbols:
            self._roll_bars(self._server.wall_clock())
            if self._pending_bars:
                frame = [message for _, message in self._pending_bars[:count]]
                del self._pending_bars[:count]
        if len(frame) < count:
            frame += self._ticks(count - len(frame))
        return frame

    def _ticks(self, count: int) -> list[dict[str, Any]]:
        """Step the market ``count`` times; the messages for subscribed symbols (fewer if
        some ticks only fed a bar). Hot path: no logging, one dict per message."""
        now = self._server.wall_clock()
        ms = now // _NS_PER_MS
        out: list[dict[str, Any]] = []
        if not self._streaming:
            return out
        next_tick = self._model.next_tick
        server = self._server
        print_trade, next_seq, quote_seq = server.print_trade, server.next_seq, server.quote_seq
        trade_from, quote_from, book_from = self._trade_from, self._quote_from, self._book_from
        trade_to, bar_symbols = self._trade_to, self._bar_symbols
        crypto = self._crypto
        append = out.append
        for _ in range(count):
            tick = next_tick(now, trades=trade_from, quotes=quote_from, books=book_from)
            if type(tick) is SimTrade:
                seq = print_trade(tick)
                if tick.symbol in bar_symbols:
                    self._add_to_bars(tick)
                if tick.symbol in trade_to:
                    append(self._crypto_trade(tick, ms) if crypto else stock_trade(tick, ms, seq))
            elif type(tick) is SimQuote:
                append(
                    self._crypto_quote(tick, ms)
                    if crypto
                    else stock_quote(tick, ms, next_seq(quote_seq, tick.symbol))
                )
            else:
                assert type(tick) is SimBook
                append(self._book(tick.symbol, now, ms))
        return out

    def _crypto_trade(self, t: SimTrade, ms: int) -> dict[str, Any]:
        return {
            "ev": "XT", "pair": self._wire_symbol(t.symbol), "p": t.price, "s": t.size, "t": ms,
            "c": [2 if t.taker_side == "B" else 1], "i": str(t.trade_id), "x": _CRYPTO_EXCHANGE,
            "r": ms,
        }  # fmt: skip

    def _crypto_quote(self, q: SimQuote, ms: int) -> dict[str, Any]:
        return {
            "ev": "XQ", "pair": self._wire_symbol(q.symbol), "bp": q.bid, "bs": q.bid_size,
            "ap": q.ask, "as": q.ask_size, "t": ms, "x": _CRYPTO_EXCHANGE, "r": ms,
        }  # fmt: skip

    def _book(self, symbol: str, now: int, ms: int) -> dict[str, Any]:
        """An ``XL2`` message: the whole book after the tick (every XL2 is a snapshot)."""
        book = self._model.book_snapshot(symbol, now)
        return {
            "ev": "XL2", "pair": self._wire_symbol(symbol),
            "b": [[p, s] for p, s in book.bids], "a": [[p, s] for p, s in book.asks],
            "t": ms, "x": _CRYPTO_EXCHANGE, "r": ms,
        }  # fmt: skip

    def _add_to_bars(self, trade: SimTrade) -> None:
        for bars in self._bars:
            if trade.symbol in bars.symbols:
                fold_trade(bars.open, trade)
        day = self._day.get(trade.symbol)
        if day is None:
            self._day[trade.symbol] = [trade.price, trade.size, trade.price * trade.size]
        else:
            day[1] += trade.size
            day[2] += trade.price * trade.size

    def _roll_bars(self, now: int) -> None:
        """When a wall-clock window closes, queue its bars."""
        for bars in self._bars:
            window = now // bars.interval_ns
            if window == bars.window:
                continue
            if bars.window is not None:
                start = bars.window * bars.interval_ns // _NS_PER_MS
                end = start + bars.interval_ns // _NS_PER_MS
                for symbol, agg in bars.open.items():
                    self._pending_bars.append(
                        (symbol, self._bar(bars.event, symbol, agg, start, end))
                    )
            bars.open = {}
            bars.window = window

    def _bar(
        self, event: str, symbol: str, agg: list[float], start: int, end: int
    ) -> dict[str, Any]:
        o, h, low, c, v, n, pv = agg
        if self._crypto:
            return {
                "ev": event, "pair": self._wire_symbol(symbol), "o": o, "c": c, "h": h, "l": low,
                "v": v, "vw": pv / v, "s": start, "e": end, "z": v / n,
            }  # fmt: skip
        day_open, day_volume, day_pv = self._day[symbol]
        return {
            "ev": event, "sym": symbol, "v": int(v), "av": int(day_volume), "op": day_open,
            "vw": round(pv / v, 4), "o": o, "c": c, "h": h, "l": low,
            "a": round(day_pv / day_volume, 4), "z": int(v // n), "s": start, "e": end,
        }  # fmt: skip


# --------------------------------------------------------------------------- data messages
# Stock trades and quotes as the real server spells them (Unix ms ``t``, the
# per-symbol ``q`` the caller numbers). The benchmarks' blast servers build
# their data with these.


def stock_trade(trade: SimTrade, ms: int, seq: int) -> dict[str, Any]:
    """A ``T`` message (an odd lot carries condition 37)."""
    message = {
        "ev": "T", "sym": trade.symbol, "i": str(trade.trade_id),
        "x": _EXCHANGE_IDS[trade.exchange], "p": trade.price, "s": int(trade.size), "t": ms,
        "q": seq, "z": _TAPE_IDS[trade.tape],
    }  # fmt: skip
    codes = [_TRADE_CONDITIONS[c] for c in trade.conditions if c in _TRADE_CONDITIONS]
    if codes:
        message["c"] = codes
    return message


def stock_trade_row(printed: Printed) -> dict[str, Any]:
    """A stock trade as ``/v3/trades`` returns it (ns timestamps, ``sequence_number`` = ``q``)."""
    trade = printed.trade
    row: dict[str, Any] = {
        "exchange": _EXCHANGE_IDS[trade.exchange], "id": str(trade.trade_id),
        "participant_timestamp": trade.ts_ns, "price": trade.price,
        "sequence_number": printed.seq, "sip_timestamp": trade.ts_ns, "size": int(trade.size),
        "tape": _TAPE_IDS[trade.tape],
    }  # fmt: skip
    codes = [_TRADE_CONDITIONS[c] for c in trade.conditions if c in _TRADE_CONDITIONS]
    if codes:
        row["conditions"] = codes
    return row


def crypto_trade_row(printed: Printed) -> dict[str, Any]:
    """A crypto trade as ``/v3/trades/X:...`` returns it."""
    trade = printed.trade
    return {
        "conditions": [2 if trade.taker_side == "B" else 1], "exchange": _CRYPTO_EXCHANGE,
        "id": str(trade.trade_id), "participant_timestamp": trade.ts_ns, "price": trade.price,
        "size": trade.size,
    }  # fmt: skip


def _rest_row(printed: Printed) -> dict[str, Any]:
    if is_crypto_symbol(printed.trade.symbol):
        return crypto_trade_row(printed)
    return stock_trade_row(printed)


def stock_quote(quote: SimQuote, ms: int, seq: int) -> dict[str, Any]:
    """A ``Q`` message (sizes in round lots, as Polygon sends them)."""
    return {
        "ev": "Q", "sym": quote.symbol, "bx": _EXCHANGE_IDS[quote.bid_exchange], "bp": quote.bid,
        "bs": int(quote.bid_size) // ROUND_LOT, "ax": _EXCHANGE_IDS[quote.ask_exchange],
        "ap": quote.ask, "as": int(quote.ask_size) // ROUND_LOT,
        "c": _QUOTE_CONDITIONS[quote.conditions[0]], "t": ms, "q": seq,
        "z": _TAPE_IDS[quote.tape],
    }  # fmt: skip


_DEFAULT_SYMBOLS = ("AAPL", "MSFT", "NVDA", "BTC-USD", "ETH-USD")


def _model_symbols(symbols: Sequence[str]) -> list[str]:
    """Wire spelling -> the model's: ``BTC-USD`` -> ``BTC/USD``; tickers unchanged."""
    return [s.replace("-", "/", 1) if isinstance(s, str) else s for s in symbols]


async def serve_polygon(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    symbols: Sequence[str] | None = None,
    model: MarketModel | None = None,
    faults: FaultPlan | None = None,
    rate: float | None = DEFAULT_RATE,
    batch: int = 1,
    key: str = DEFAULT_KEY,
    sequence: Literal["contiguous", "polygon"] = "contiguous",
    entitlements: Collection[str] | None = None,
    seed: int = 0,
    wall_clock: Callable[[], int] = time.time_ns,
    recorder: PolygonSimRecorder | None = None,
    auth_timeout: float = AUTH_TIMEOUT,
    max_connections_per_key: int = 1,
    on_connection_limit: Literal["evict_oldest", "reject_new"] = "evict_oldest",
    history_rate_limit: int | None = None,
    history_page_size: int | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Serve the Polygon/Massive stream (``/stocks`` and ``/crypto``) on ``host:port``.

    Start it with ``port = await nursery.start(partial(serve_polygon, ...))``:
    the bound port (``port=0``: any free one) is reported through
    ``task_status``. Runs until cancelled.

    * ``symbols`` / ``model``: the market. Without a model one is built from
      ``symbols`` (wire spelling: ``"AAPL"``, ``"BTC-USD"``; a symbol with
      ``-`` or ``/`` is a crypto pair) and ``seed``; with one, ``symbols`` are
      added to it. The model is shared by all connections, so prices and trade
      ids carry on across reconnects. Symbols a client subscribes to
      explicitly are added on the fly; ``T.*`` means every stock of the model.
    * ``rate``: data messages per second per connection, sent in frames of
      ``batch`` messages (``None`` or ``0``: as fast as possible, still a
      checkpoint per frame).
    * ``key``: the accepted API key. ``max_connections_per_key`` authenticated
      connections may share it (default 1: Massive's one per cluster per
      account); the next one evicts the oldest (``on_connection_limit=
      "evict_oldest"``) or is refused (``"reject_new"``), either way with a
      ``max_connections`` status and close 1008.
    * ``sequence``: ``"contiguous"`` or ``"polygon"`` (holes), see the module
      docstring.
    * ``entitlements``: the event types the key's plan includes (``None``:
      all); subscribing to another is answered ``error``/``not authorized``.
    * ``faults``: what to break (see :class:`~puffin_trio.sim.faults.FaultPlan`).
    * ``wall_clock``: ns since the epoch for message timestamps and bar windows.
    * ``recorder``: a :class:`PolygonSimRecorder` to inspect from tests.

    Plain HTTP requests on the same port get the historical trades API
    (``GET /v3/trades/{ticker}``; crypto tickers ``X:BTCUSD``), answered from
    every trade the market printed, including those printed while no client
    was connected (the market goes on at ``rate``), numbered as on the stream
    (``sequence_number`` = ``q``: the numbering is server-wide, so a
    reconnect continues it). ``history_page_size`` caps a page (to make a
    client follow ``next_url``) and ``history_rate_limit`` answers requests
    beyond that many a minute with 429 and ``Retry-After``. The fault plan's
    historical faults (a 429, an error status, a slow or truncated page)
    apply there.

    Raises ``ConfigurationError`` for a non-loopback ``host`` or bad settings.
    Cancelling it stops the server and drops every connection (no close frames).
    """
    check_settings(host=host, rate=rate, batch=batch, auth_timeout=auth_timeout,
                   max_connections_per_key=max_connections_per_key,
                   history_rate_limit=history_rate_limit,
                   history_page_size=history_page_size)  # fmt: skip
    if sequence not in ("contiguous", "polygon"):
        raise ConfigurationError(
            f"sequence must be 'contiguous' or 'polygon' (increasing with holes), not {sequence!r}"
        )
    if on_connection_limit not in ("evict_oldest", "reject_new"):
        raise ConfigurationError(
            "on_connection_limit must be 'evict_oldest' or 'reject_new', "
            f"not {on_connection_limit!r}"
        )
    if isinstance(entitlements, str):
        raise ConfigurationError(
            f"entitlements takes a collection of event types, not the string {entitlements!r}"
        )
    if isinstance(symbols, str):
        raise ConfigurationError(f"symbols takes a list of symbols, not the string {symbols!r}")
    model = market(
        model, None if symbols is None else _model_symbols(symbols),
        _model_symbols(_DEFAULT_SYMBOLS), seed,
    )  # fmt: skip
    server = _Server(
        model=model,
        faults=faults if faults is not None else FaultPlan(),
        rate=rate,
        batch=batch,
        key=key,
        sequence=sequence,
        seed=seed,
        entitlements=None if entitlements is None else frozenset(entitlements),
        wall_clock=wall_clock,
        recorder=recorder,
        auth_timeout=auth_timeout,
        max_connections_per_key=max_connections_per_key,
        on_connection_limit=on_connection_limit,
        history_rate_limit=history_rate_limit,
        history_page_size=history_page_size,
    )
    await server.serve(host=host, port=port, label="polygon sim", task_status=task_status)
