"""A protocol-faithful local Alpaca market-data v2 WebSocket server.

This module owns the *server* side of the Alpaca stream protocol (as Alpaca
documents it, https://docs.alpaca.markets/docs/streaming-market-data),
written independently of the client protocol in
:mod:`puffin_trio.providers.alpaca` (which it must not import) so the two
cross-check each other; alpaca-py itself is also tested against it. It must
not listen on anything but loopback, log per message, or log secrets. Every
connection runs in its own tasks (a reader for client messages, a data pump,
an auth deadline); timing uses trio's clock, message timestamps come from
``wall_clock``. What it speaks (JSON or msgpack, auth, subscriptions, trades,
quotes, bars, crypto books), and how each fault of a
:class:`~puffin_trio.sim.faults.FaultPlan` looks on the Alpaca wire, is in
``docs/guide/simulators.rst``.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, NoReturn

import attrs
import msgpack
import orjson
import trio
from trio_websocket import WebSocketConnection, WebSocketRequest

from puffin_trio.errors import ConfigurationError
from puffin_trio.sim._alpaca_rest import AlpacaRest
from puffin_trio.sim._common import (
    WsSimConnection,
    WsSimServer,
    check_settings,
    same_secret,
)
from puffin_trio.sim._rest import RestEndpoint
from puffin_trio.sim._server import SimRecorder, market
from puffin_trio.sim._tape import Printed
from puffin_trio.sim.faults import FaultKind, FaultPlan, PausableStream
from puffin_trio.sim.market import ROUND_LOT, MarketModel, SimBook, SimQuote, SimTrade, fold_trade

__all__ = [
    "AUTH_TIMEOUT",
    "CRYPTO_CHANNELS",
    "DEFAULT_KEY",
    "DEFAULT_RATE",
    "DEFAULT_SECRET",
    "ERROR_MESSAGES",
    "STOCK_CHANNELS",
    "AlpacaConnectionRecord",
    "AlpacaSimRecorder",
    "crypto_quote",
    "crypto_trade",
    "crypto_trade_row",
    "rfc3339_ns",
    "serve_alpaca",
    "stock_quote",
    "stock_trade",
    "stock_trade_row",
    "wire_time",
]

logger = logging.getLogger(__name__)

#: Credentials the simulator accepts unless told otherwise.
DEFAULT_KEY = "sim-key"
DEFAULT_SECRET = "sim-secret"
#: Messages per second by default: about what one active stock produces on
#: IEX, lively enough for a demo and easy on a laptop.
DEFAULT_RATE = 50.0
#: Seconds a client has to authenticate; Alpaca documents "10 seconds".
AUTH_TIMEOUT = 10.0

#: Channels a client may subscribe to, in the order of the ``subscription``
#: reply (which also lists the implicit ``corrections``/``cancelErrors``).
STOCK_CHANNELS = ("trades", "quotes", "bars", "updatedBars", "dailyBars", "statuses", "lulds")
CRYPTO_CHANNELS = ("trades", "quotes", "orderbooks", "bars", "updatedBars", "dailyBars")
_IMPLICIT = ("corrections", "cancelErrors")
#: Channels that exist on some Alpaca stream: subscribing on the wrong stream is 410.
_OTHER_STREAM_CHANNELS = frozenset({"orderbooks", "statuses", "lulds", "news", "imbalances"})
_STOCK_SYMBOL = re.compile(r"[A-Z0-9][A-Z0-9.\-]{0,15}")
_CRYPTO_SYMBOL = re.compile(r"[A-Z0-9]{1,15}/[A-Z0-9]{1,15}")

#: ``msg`` text of each error code, as the real server words them.
ERROR_MESSAGES: dict[int, str] = {
    400: "invalid syntax",
    401: "not authenticated",
    402: "auth failed",
    403: "already authenticated",
    404: "auth timeout",
    405: "symbol limit exceeded",
    406: "connection limit exceeded",
    407: "slow client",
    409: "insufficient subscription",
    410: "invalid subscribe action for this feed",
    500: "internal error",
}

#: Header values never kept in a recorder (header auth would carry secrets).
_SECRET_HEADERS = frozenset({"authorization", "apca-api-secret-key"})
#: Peer-went-away exceptions: logged at debug, never fatal to the server.
#: (LocalProtocolError: sending a frame while wsproto is already handling the
#: peer's close frame, before trio-websocket marks the connection closed.)
_NS_PER_MINUTE = 60_000_000_000


def rfc3339_ns(ts_ns: int) -> str:
    """``2021-02-22T19:15:00.12Z``: UTC, up to 9 fractional digits, trailing zeros trimmed."""
    seconds, nanos = divmod(ts_ns, 1_000_000_000)
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    if not nanos:
        return base + "Z"
    return f"{base}.{nanos:09d}".rstrip("0") + "Z"


def wire_time(ts_ns: int, *, msgpack_encoding: bool) -> msgpack.Timestamp | str:
    """A data message's ``t``: a msgpack Timestamp (ns exact), or RFC 3339 text for JSON."""
    if msgpack_encoding:
        return msgpack.Timestamp.from_unix_nano(ts_ns)
    return rfc3339_ns(ts_ns)


@attrs.define(eq=False)
class AlpacaConnectionRecord:
    """What happened on one connection, for tests to inspect.

    * ``received``: every decodable client message, in order (auth included;
      the simulator never logs them).
    * ``sent``: every frame sent, as the list of message dicts before
      encoding (``t`` is a ``msgpack.Timestamp`` or an RFC 3339 string), up to
      the recorder's ``max_frames``; ``frames_not_kept`` counts the rest.
      Undecodable fault frames are not in here; ``faults`` lists every fault
      that fired, in order.
    * ``subscriptions``: the current subscription, as in the last reply.
    * ``ended``: set once the server is done with the connection (its
      connection-limit slot is free again).
    """

    number: int
    path: str
    msgpack: bool
    headers: dict[str, str]
    received: list[dict[str, Any]] = attrs.Factory(list)
    sent: list[list[dict[str, Any]]] = attrs.Factory(list)
    frames_not_kept: int = 0
    subscriptions: dict[str, list[str]] = attrs.Factory(dict)
    authenticated: bool = False
    faults: list[FaultKind] = attrs.Factory(list)
    ended: trio.Event = attrs.Factory(trio.Event)

    def actions(self, action: str) -> list[dict[str, Any]]:
        """The received client messages with this ``action``."""
        return [m for m in self.received if m.get("action") == action]

    def data_messages(self) -> list[dict[str, Any]]:
        """Every kept market-data message sent (not control messages), in order."""
        return [
            m
            for frame in self.sent
            for m in frame
            if m.get("T") not in ("success", "error", "subscription")
        ]


class AlpacaSimRecorder(SimRecorder[AlpacaConnectionRecord]):
    """Records every connection a :func:`serve_alpaca` server accepts.

    ``max_frames`` bounds the frames kept per connection (100 000: minutes of
    a test's traffic at the default rate; pass no recorder to benchmarks).
    """


def _decode_client(frame: str | bytes) -> dict[str, Any] | None:
    """A client message (JSON text, JSON or msgpack binary) as a dict, or ``None`` if invalid."""
    try:
        if isinstance(frame, str) or frame[:1] == b"{":
            # A top-level msgpack 0x7b is the integer 123, never a message.
            obj = orjson.loads(frame)
        else:
            obj = msgpack.unpackb(frame)
    except (ValueError, TypeError, msgpack.UnpackException):
        return None
    return obj if isinstance(obj, dict) else None


@attrs.define(eq=False, kw_only=True)
class _Server(WsSimServer[AlpacaConnectionRecord]):
    """Shared state of one :func:`serve_alpaca` server (configuration, counters)."""

    logger: ClassVar[logging.Logger] = logger
    log_prefix: ClassVar[str] = "alpaca sim"

    secret: str
    crypto: bool
    #: Wire channel names of this stream, and those a ``subscription`` reply lists.
    channels: tuple[str, ...] = attrs.field(init=False)
    reply_keys: tuple[str, ...] = attrs.field(init=False)
    symbol_pattern: re.Pattern[str] = attrs.field(init=False)
    #: Authenticated connections per key.
    active: dict[str, int] = attrs.field(init=False, factory=dict)
    _rest: AlpacaRest = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self._rest = AlpacaRest(
            self.tape,
            key=self.key,
            secret=self.secret,
            crypto=self.crypto,
            row=crypto_trade_row if self.crypto else stock_trade_row,
            page_size=self.history_page_size,
        )
        crypto = self.crypto
        self.channels = CRYPTO_CHANNELS if crypto else STOCK_CHANNELS
        self.reply_keys = CRYPTO_CHANNELS if crypto else STOCK_CHANNELS + _IMPLICIT
        self.symbol_pattern = _CRYPTO_SYMBOL if crypto else _STOCK_SYMBOL

    async def _accept(self, request: WebSocketRequest) -> WebSocketConnection:
        ws: WebSocketConnection = await request.accept()
        return ws

    def _history_endpoint(self) -> RestEndpoint:
        return self._rest

    def _record(self, number: int, request: WebSocketRequest) -> AlpacaConnectionRecord:
        msgpack_mode, headers = _read_headers(request.headers)
        return AlpacaConnectionRecord(number, request.path, msgpack_mode, headers)

    def _connection(
        self, ws: WebSocketConnection, transport: PausableStream, record: AlpacaConnectionRecord
    ) -> _Connection:
        return _Connection(self, ws, transport, record)


def _read_headers(raw: list[tuple[bytes, bytes]]) -> tuple[bool, dict[str, str]]:
    """(msgpack wanted?, headers with secrets redacted) from the upgrade request."""
    headers = {}
    for name, value in raw:
        key = name.decode("latin-1").lower()
        headers[key] = "<redacted>" if key in _SECRET_HEADERS else value.decode("latin-1")
    content_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    return content_type == "application/msgpack", headers


class _Connection(WsSimConnection[AlpacaConnectionRecord]):
    """One authenticated-or-not client session: the Alpaca protocol on :class:`WsSimConnection`."""

    def __init__(
        self,
        server: _Server,
        ws: WebSocketConnection,
        transport: PausableStream,
        record: AlpacaConnectionRecord,
    ) -> None:
        super().__init__(server, ws, transport, record)
        msgpack_mode = record.msgpack
        self._server = server
        self._model = server.model
        self._crypto = server.crypto
        self._packer = msgpack.Packer() if msgpack_mode else None
        self._key: str | None = None
        self._subs: dict[str, dict[str, None]] = {ch: {} for ch in server.reply_keys}
        # Derived from the subscription (see _recompute); read on the hot path.
        self._trade_from: tuple[str, ...] = ()
        self._quote_from: tuple[str, ...] = ()
        self._book_from: tuple[str, ...] = ()
        self._trade_to: frozenset[str] = frozenset()
        self._bar_symbols: frozenset[str] = frozenset()
        self._book_seq: dict[str, int] = {}
        self._bars: dict[str, list[float]] = {}
        self._bar_minute: int | None = None
        self._pending_bars: list[dict[str, Any]] = []

    # -- WsSimConnection hooks ---------------------------------------------

    def _hello(self) -> dict[str, Any]:
        return {"T": "success", "msg": "connected"}

    def _encode(self, frame: list[dict[str, Any]]) -> str | bytes:
        """msgpack binary if the upgrade request asked for it, else JSON text."""
        if self._packer is not None:
            packed: bytes = self._packer.pack(frame)
            return packed
        return orjson.dumps(frame).decode()

    async def _on_auth_timeout(self) -> None:
        await self._send_error(404)
        self._end(None, 1008, ERROR_MESSAGES[404])

    def _unknown_message(self) -> dict[str, Any]:
        return {"T": "zz", "msg": "simulated unknown message type"}

    def _malformed_default(self) -> str | bytes:
        """``\\x00garbage`` in the connection's frame type (binary for msgpack clients)."""
        return b"\x00garbage" if self._packer is not None else "\x00garbage"

    def _release(self) -> None:
        if self._key is not None:
            self._server.active[self._key] -= 1

    # -- sending -----------------------------------------------------------

    async def _send_error(self, code: int) -> None:
        await self._send_control({"T": "error", "code": code, "msg": ERROR_MESSAGES[code]})

    def _stamp(self, ts_ns: int) -> msgpack.Timestamp | str:
        return wire_time(ts_ns, msgpack_encoding=self._packer is not None)

    # -- client messages ---------------------------------------------------

    async def _on_message(self, frame: str | bytes) -> None:
        message = _decode_client(frame)
        if message is None:
            await self._send_error(400)
            return
        self._record.received.append(message)
        action = message.get("action")
        if action == "auth":
            await self._on_auth(message)
        elif action in ("subscribe", "unsubscribe"):
            if self._authenticated.is_set():
                await self._on_subscription(message, add=action == "subscribe")
            else:
                await self._send_error(401)
        else:
            await self._send_error(400)

    async def _on_auth(self, message: dict[str, Any]) -> None:
        if self._authenticated.is_set():
            await self._send_error(403)
            return
        key, secret = message.get("key"), message.get("secret")
        if not isinstance(key, str) or not isinstance(secret, str):
            await self._send_error(400)
            return
        fault = self._faults.take_auth_fault()
        if fault is not None:
            self._record.faults.append(fault.kind)
            code = 406 if fault.kind is FaultKind.CONNECTION_LIMIT else fault.code or 402
            await self._send_control(
                {"T": "error", "code": code, "msg": ERROR_MESSAGES.get(code, "auth failed")}
            )
            return
        server = self._server
        valid = same_secret(key, server.key) & same_secret(secret, server.secret)
        if not valid:
            await self._send_error(402)
            return
        if server.active.get(key, 0) >= server.max_connections_per_key:
            await self._send_error(406)
            return
        server.active[key] = server.active.get(key, 0) + 1
        self._key = key
        self._record.authenticated = True
        self._authenticated.set()
        await self._send_control({"T": "success", "msg": "authenticated"})

    async def _on_subscription(self, message: dict[str, Any], *, add: bool) -> None:
        server = self._server
        changes: list[tuple[str, list[str]]] = []
        for channel, symbols in message.items():
            if channel == "action":
                continue
            if channel not in server.channels:
                await self._send_error(410 if channel in _OTHER_STREAM_CHANNELS else 400)
                return
            if not isinstance(symbols, list) or not all(
                isinstance(s, str) and (s == "*" or server.symbol_pattern.fullmatch(s))
                for s in symbols
            ):
                await self._send_error(400)
                return
            changes.append((channel, symbols))
        async with self._lock:
            for channel, symbols in changes:
                targets = (
                    [channel, *_IMPLICIT] if channel == "trades" and not self._crypto else [channel]
                )
                for target in targets:
                    subscribed = self._subs[target]
                    for symbol in symbols:
                        if add:
                            subscribed[symbol] = None
                        else:
                            subscribed.pop(symbol, None)
                if add:
                    self._model.add_symbols(s for s in symbols if s != "*")
                elif channel == "orderbooks":
                    for symbol in symbols:
                        self._book_seq.pop(symbol, None)
            self._recompute()
            reply = {"T": "subscription", **{ch: list(s) for ch, s in self._subs.items()}}
            self._record.subscriptions = {ch: list(s) for ch, s in self._subs.items()}
            await self._send([reply])

    def _recompute(self) -> None:
        """Derive the hot-path views of the subscription and wake the pump."""

        def expand(channel: str) -> tuple[str, ...]:
            subscribed = self._subs.get(channel, {})
            return self._model.symbols if "*" in subscribed else tuple(subscribed)

        trades, bars = expand("trades"), expand("bars")
        self._trade_to = frozenset(trades)
        self._bar_symbols = frozenset(bars)
        self._trade_from = tuple(dict.fromkeys(trades + bars))
        self._quote_from = expand("quotes")
        self._book_from = expand("orderbooks")
        self._bars = {s: agg for s, agg in self._bars.items() if s in self._bar_symbols}
        self._pending_bars = [b for b in self._pending_bars if b["S"] in self._bar_symbols]
        self._streaming = bool(self._trade_from or self._quote_from or self._book_from)
        if self._streaming:
            self._server.off_air.draws = (self._trade_from, self._quote_from, self._book_from)
        self._changed.set()
        self._changed = trio.Event()

    # -- data --------------------------------------------------------------

    def _data_frame(self, count: int) -> list[dict[str, Any]]:
        """Up to ``count`` data messages for the subscribed symbols (fewer if some ticks
        only fed a bar). Hot path: no logging, one dict per message."""
        now = self._server.wall_clock()
        stamp = self._stamp(now)
        frame: list[dict[str, Any]] = []
        bar_symbols = self._bar_symbols
        if bar_symbols:
            self._roll_bars(now)
            if self._pending_bars:
                frame = self._pending_bars[:count]
                del self._pending_bars[:count]
        next_tick = self._model.next_tick
        print_trade = self._server.print_trade
        trade_from, quote_from, book_from = self._trade_from, self._quote_from, self._book_from
        trade_to = self._trade_to
        crypto = self._crypto
        append = frame.append
        for _ in range(count - len(frame)):
            tick = next_tick(now, trades=trade_from, quotes=quote_from, books=book_from)
            if type(tick) is SimTrade:
                print_trade(tick)
                if tick.symbol in bar_symbols:
                    fold_trade(self._bars, tick)
                if tick.symbol in trade_to:
                    append(crypto_trade(tick, stamp) if crypto else stock_trade(tick, stamp))
            elif type(tick) is SimQuote:
                append(crypto_quote(tick, stamp) if crypto else stock_quote(tick, stamp))
            else:
                assert type(tick) is SimBook
                append(self._book_message(tick, stamp))
        return frame

    def _book_message(self, book: SimBook, stamp: msgpack.Timestamp | str) -> dict[str, Any]:
        """An ``o`` message; a full ``r:true`` book first and whenever deltas were missed."""
        symbol = book.symbol
        last = self._book_seq.get(symbol)
        reset = book.snapshot or last is None or book.seq != last + 1
        if reset and not book.snapshot:
            book = self._model.book_snapshot(symbol, book.ts_ns)
        self._book_seq[symbol] = book.seq
        message = {
            "T": "o",
            "S": symbol,
            "t": stamp,
            "b": [{"p": p, "s": s} for p, s in book.bids],
            "a": [{"p": p, "s": s} for p, s in book.asks],
        }
        if reset:
            message["r"] = True
        return message

    def _roll_bars(self, now: int) -> None:
        """At a new wall-clock minute, queue the previous minute's bars."""
        minute = now // _NS_PER_MINUTE
        if minute == self._bar_minute:
            return
        if self._bar_minute is not None and self._bars:
            stamp = self._stamp(self._bar_minute * _NS_PER_MINUTE)
            for symbol, (o, h, low, c, v, n, pv) in self._bars.items():
                volume = v if self._crypto else int(v)
                self._pending_bars.append(
                    {
                        "T": "b", "S": symbol, "o": o, "h": h, "l": low, "c": c, "v": volume,
                        "t": stamp, "n": int(n), "vw": pv / v,
                    }
                )  # fmt: skip
        self._bars = {}
        self._bar_minute = minute


# --------------------------------------------------------------------------- data messages
# One message per model tick, as the real server spells it; ``stamp`` is from
# :func:`wire_time`. The benchmarks' blast servers build their data with these.


def stock_trade(t: SimTrade, stamp: msgpack.Timestamp | str) -> dict[str, Any]:
    """A stock trade ``t``."""
    return {
        "T": "t", "S": t.symbol, "i": t.trade_id, "x": t.exchange, "p": t.price, "s": t.size,
        "c": t.conditions, "t": stamp, "z": t.tape,
    }  # fmt: skip


def crypto_trade(t: SimTrade, stamp: msgpack.Timestamp | str) -> dict[str, Any]:
    """A crypto trade ``t`` (with the taker side)."""
    return {
        "T": "t", "S": t.symbol, "p": t.price, "s": t.size, "t": stamp, "i": t.trade_id,
        "tks": t.taker_side,
    }  # fmt: skip


def stock_trade_row(printed: Printed) -> dict[str, Any]:
    """A stock trade as the historical API's row (the stream's fields without ``T``/``S``)."""
    t = printed.trade
    return {
        "t": rfc3339_ns(t.ts_ns), "x": t.exchange, "p": t.price, "s": int(t.size),
        "c": list(t.conditions), "i": t.trade_id, "z": t.tape,
    }  # fmt: skip


def crypto_trade_row(printed: Printed) -> dict[str, Any]:
    """A crypto trade as the historical API's row."""
    t = printed.trade
    return {"t": rfc3339_ns(t.ts_ns), "p": t.price, "s": t.size, "tks": t.taker_side,
            "i": t.trade_id}  # fmt: skip


def stock_quote(q: SimQuote, stamp: msgpack.Timestamp | str) -> dict[str, Any]:
    """A stock quote ``q`` (sizes in round lots, as Alpaca sends them)."""
    return {
        "T": "q", "S": q.symbol, "bx": q.bid_exchange, "bp": q.bid,
        "bs": int(q.bid_size) // ROUND_LOT, "ax": q.ask_exchange, "ap": q.ask,
        "as": int(q.ask_size) // ROUND_LOT, "c": q.conditions, "t": stamp, "z": q.tape,
    }  # fmt: skip


def crypto_quote(q: SimQuote, stamp: msgpack.Timestamp | str) -> dict[str, Any]:
    """A crypto quote ``q``."""
    return {
        "T": "q", "S": q.symbol, "bp": q.bid, "bs": q.bid_size, "ap": q.ask, "as": q.ask_size,
        "t": stamp,
    }  # fmt: skip


_DEFAULT_STOCKS = ("AAPL", "MSFT", "NVDA")
_DEFAULT_CRYPTO = ("BTC/USD", "ETH/USD")


async def serve_alpaca(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    symbols: Sequence[str] | None = None,
    model: MarketModel | None = None,
    faults: FaultPlan | None = None,
    rate: float | None = DEFAULT_RATE,
    batch: int = 1,
    key: str = DEFAULT_KEY,
    secret: str = DEFAULT_SECRET,
    crypto: bool | None = None,
    seed: int = 0,
    wall_clock: Callable[[], int] = time.time_ns,
    recorder: AlpacaSimRecorder | None = None,
    auth_timeout: float = AUTH_TIMEOUT,
    max_connections_per_key: int = 1,
    history_rate_limit: int | None = None,
    history_page_size: int | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Serve the Alpaca market-data stream on ``host:port`` until cancelled.

    Start it with ``port = await nursery.start(partial(serve_alpaca, ...))``:
    the bound port (``port=0``: any free one) is reported through
    ``task_status``. Any request path is accepted (alpaca-py with
    ``url_override`` asks for ``/``, our client for ``/v2/iex``).

    * ``symbols`` / ``model``: the market. Without a model one is built from
      ``symbols`` and ``seed``; with one, ``symbols`` are added to it. The
      model is shared by all connections, so prices and trade ids carry on
      across reconnects. Symbols a client subscribes to explicitly are added
      on the fly.
    * ``crypto``: crypto stream (``orderbooks``, fractional sizes) or stocks;
      ``None`` decides from the symbols (crypto pairs contain ``/``).
    * ``rate``: data messages per second per connection, sent in frames of
      ``batch`` messages (``None`` or ``0``: as fast as possible, still a
      checkpoint per frame).
    * ``key`` / ``secret``: the accepted credentials;
      ``max_connections_per_key`` authenticated connections may share a key
      and the next gets ``406`` (default 1: Alpaca's limit on most plans).
    * ``faults``: what to break (see :class:`~puffin_trio.sim.faults.FaultPlan`).
    * ``wall_clock``: ns since the epoch for message timestamps and minute bars.
    * ``recorder``: an :class:`AlpacaSimRecorder` to inspect from tests.

    Plain HTTP requests on the same port get the historical trades API
    (``GET /v2/stocks/trades``, crypto ``GET /v1beta3/crypto/{loc}/trades``),
    answered from every trade the market printed, including those printed
    while no client was connected (the market goes on at ``rate``):
    ``history_page_size`` caps a page (to make a client paginate) and
    ``history_rate_limit`` answers requests beyond that many a minute with
    429 (Alpaca's free plan allows 200). The fault plan's historical faults
    (a 429, an error status, a slow or truncated page) apply there.

    Raises ``ConfigurationError`` for a non-loopback ``host`` or bad settings.
    Cancelling it stops the server and drops every connection (no close frames).
    """
    check_settings(host=host, rate=rate, batch=batch, auth_timeout=auth_timeout,
                   max_connections_per_key=max_connections_per_key,
                   history_rate_limit=history_rate_limit,
                   history_page_size=history_page_size)  # fmt: skip
    model = market(model, symbols, _DEFAULT_CRYPTO if crypto else _DEFAULT_STOCKS, seed)
    if crypto is None:
        kinds = {"/" in s for s in model.symbols}
        if len(kinds) > 1:
            raise ConfigurationError(
                "the symbols mix stocks and crypto pairs; an Alpaca stream carries one or the"
                " other: pass crypto=True or crypto=False, or separate symbol lists"
            )
        crypto = kinds == {True}
    server = _Server(
        model=model,
        faults=faults if faults is not None else FaultPlan(),
        rate=rate,
        batch=batch,
        key=key,
        secret=secret,
        crypto=crypto,
        wall_clock=wall_clock,
        recorder=recorder,
        auth_timeout=auth_timeout,
        max_connections_per_key=max_connections_per_key,
        history_rate_limit=history_rate_limit,
        history_page_size=history_page_size,
    )
    await server.serve(host=host, port=port, label="alpaca sim", task_status=task_status)
