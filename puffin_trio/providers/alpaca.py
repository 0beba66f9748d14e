"""Alpaca market data stream v2: provider configuration and the sans-IO protocol.

This module owns :class:`AlpacaProvider` (feeds, URLs, credentials, timing
knobs, channel names) and :class:`AlpacaProtocol` (one connection's wire
protocol: the ``connected``/``auth`` handshake, subscribe frames split under a
size limit, and decoding JSON text or msgpack binary frames into normalised
events and control items). The wire protocol is Alpaca's, as its market data
stream documentation describes it
(https://docs.alpaca.markets/docs/streaming-market-data).

It must not do I/O, read a clock (``ts_recv`` is passed in), log per message,
or put a credential anywhere but the auth frame: keys are left out of every
``repr``, log line and exception.

Decoding is the hot path: one dict of ``T`` -> bound method per connection,
no per-message string formatting, timestamps parsed without ``datetime`` (see
:func:`rfc3339_to_ns`), and events built straight into their slots (see
:func:`~puffin_trio._event_builder.event_builder`). Required fields are
checked by the conversions themselves (``float()`` of a missing or
non-numeric price raises); a message that fails becomes
:class:`~puffin_trio.providers._base.Malformed` and the rest of its frame
still decodes. Optional text fields (exchange, tape,
indicator) are passed through as sent.
"""

from __future__ import annotations

import calendar as _calendar
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import attrs
import msgpack
import orjson

from puffin_trio._event_builder import event_builder
from puffin_trio.errors import (
    AuthenticationError,
    ConfigurationError,
    ConnectionLimitError,
    ProtocolError,
    ProviderError,
    SubscriptionError,
    TransientProviderError,
)
from puffin_trio.events import (
    Bar,
    Event,
    LimitBands,
    OrderBookUpdate,
    Quote,
    Trade,
    TradeCancel,
    TradeCorrection,
    TradingStatus,
)
from puffin_trio.guard import GuardMode
from puffin_trio.providers import _config
from puffin_trio.providers._base import (
    Authenticated,
    Connected,
    Control,
    Frame,
    Malformed,
    ProviderFailure,
    ProviderNotice,
    ProviderProtocol,
    SubscriptionAck,
    Topics,
    WebSocketProvider,
    malformed_message,
    normalize_topics,
    truncate_sample,
    unhandled_message,
)

if TYPE_CHECKING:
    from puffin_trio.market_hours import TradingCalendar

__all__ = [
    "CRYPTO_CHANNELS",
    "CRYPTO_LOCATIONS",
    "DEFAULT_MAX_FRAME_BYTES",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "FEEDS",
    "STOCK_CHANNELS",
    "AlpacaProtocol",
    "AlpacaProvider",
    "error_for",
    "rfc3339_to_ns",
]

PROVIDER = "alpaca"

#: Feed name -> URL path. Stock feeds are ``/v2/{feed}``; ``crypto`` adds the location.
FEEDS: Mapping[str, str] = {
    "iex": "/v2/iex",
    "sip": "/v2/sip",
    "delayed_sip": "/v2/delayed_sip",
    "test": "/v2/test",
    "crypto": "/v1beta3/crypto/",
}
#: ``crypto_location`` values: Alpaca's own venue, Kraken US, Kraken EU.
CRYPTO_LOCATIONS: frozenset[str] = frozenset({"us", "us-1", "eu-1"})
_HOST = "stream.data.alpaca.markets"
_SANDBOX_HOST = "stream.data.sandbox.alpaca.markets"

#: Our channel name -> Alpaca's wire key, for stock feeds.
STOCK_CHANNELS: Mapping[str, str] = {
    "trades": "trades",
    "quotes": "quotes",
    "bars": "bars",
    "updated_bars": "updatedBars",
    "daily_bars": "dailyBars",
    "statuses": "statuses",
    "lulds": "lulds",
}
#: Our channel name -> Alpaca's wire key, for the crypto feed.
CRYPTO_CHANNELS: Mapping[str, str] = {
    "trades": "trades",
    "quotes": "quotes",
    "bars": "bars",
    "updated_bars": "updatedBars",
    "daily_bars": "dailyBars",
    "books": "orderbooks",
}
#: Wire keys the server adds by itself (with ``trades``); never sent by us.
_IMPLICIT_CHANNELS = frozenset({"corrections", "cancelErrors", "cancel_errors"})

_KEY_ENV = "APCA_API_KEY_ID"
_SECRET_ENV = "APCA_API_SECRET_KEY"

#: Default ``max_message_size``: 16 MiB. alpaca-py runs with websockets' 1 MiB
#: and works in production, but the server *batches* when the client falls
#: behind, so the frames we most need to accept are the big catch-up ones
#: (a JSON trade is ~130 bytes: 1 MiB is only ~8 000 messages). A frame over
#: the limit closes the connection (1009), and the reconnect loses far more
#: than the frame, so the limit is 16 times alpaca-py's while one frame still
#: cannot take unbounded memory.
DEFAULT_MAX_MESSAGE_SIZE = 16 * 1024 * 1024
#: Default ``max_frame_bytes`` (outgoing subscribe/unsubscribe): 4 KiB. The
#: server's limit is undocumented; a 700-symbol subscribe (~8 KiB of JSON) once
#: drew close code 1009 from Alpaca's older stream (alpaca-trade-api-python#319),
#: so a limit below that has existed. 4 KiB is half of it and still holds ~500
#: stock symbols per frame, so even 10 000 symbols take only ~20 frames (each
#: one additive and confirmed by its own ``subscription`` message).
DEFAULT_MAX_FRAME_BYTES = 4 * 1024
#: Smallest accepted ``max_frame_bytes``: room for the frame's own overhead
#: plus a few symbols.
_MIN_FRAME_BYTES = 128
#: Bytes a channel adds to a subscribe frame besides its encoded name: JSON
#: ``,"":[]`` is 4; msgpack's array header is at most 5.
_CHANNEL_OVERHEAD = 5


# --------------------------------------------------------------------------- timestamps

#: ``10 ** (9 - n)`` for a fraction of ``n`` digits (index 0 unused).
_FRACTION_SCALE: tuple[int, ...] = tuple(10 ** (9 - n) for n in range(10))
#: Seconds part (``"2023-04-06T11:54:26"``) -> ns since the epoch, and the same
#: with the fraction's dot (``"2023-04-06T11:54:26."``), the fast path's key.
#: Consecutive messages share their second, so a hit is the common case.
#: Bounded at 4096 entries (~0.5 MB; half an hour of distinct live seconds) and
#: cleared wholesale when full: O(1), and a miss costs only ~1 µs.
_SECONDS_CACHE: dict[str, int] = {}
_SECONDS_CACHE_SIZE = 4096


def _seconds_to_ns(head: str) -> int:
    """``"2023-04-06T11:54:26"`` -> ns since the epoch, remembered in the cache."""
    if len(head) != 19 or head[10] != "T" or head[4] + head[7] + head[13] + head[16] != "--::":
        raise ValueError(f"not an RFC 3339 UTC timestamp: {head!r}")
    try:
        moment = datetime.fromisoformat(head)
    except ValueError:
        raise ValueError(f"not an RFC 3339 UTC timestamp: {head!r}") from None
    value = _calendar.timegm(moment.timetuple()) * 1_000_000_000
    if len(_SECONDS_CACHE) >= _SECONDS_CACHE_SIZE:
        _SECONDS_CACHE.clear()
    _SECONDS_CACHE[head] = value
    _SECONDS_CACHE[head + "."] = value
    return value


def rfc3339_to_ns(text: str) -> int:
    """Alpaca's JSON timestamp -> integer nanoseconds since the epoch, exactly.

    Accepts UTC with a ``Z`` suffix and 0 to 9 fractional digits (Go's
    ``RFC3339Nano``: ``"2023-04-06T11:54:26.83915973Z"``,
    ``"2021-02-22T19:15:00Z"``). The fraction is read as digits, not through
    ``datetime`` (which keeps only microseconds). Raises ``ValueError`` for
    any other string and ``TypeError`` for a non-string.
    """
    # Fast path (~0.35 µs): a known second with its dot, then 1-9 ASCII digits
    # and "Z". isascii(): isdigit() also accepts other scripts' digits, which
    # int() would read. Everything else takes the checked path below.
    base = _SECONDS_CACHE.get(text[:20])
    if base is not None:
        fraction = text[20:-1]
        if fraction.isdigit() and fraction.isascii() and text[-1] == "Z":
            digits = len(fraction)
            if digits == 9:
                return base + int(fraction)
            if digits < 9:
                return base + int(fraction) * _FRACTION_SCALE[digits]
    return _rfc3339_checked(text)


def _rfc3339_checked(text: str) -> int:
    """:func:`rfc3339_to_ns` for whatever its fast path did not take."""
    base = _SECONDS_CACHE.get(text[:19])
    if base is None:
        base = _seconds_to_ns(text[:19])
    fraction = text[20:-1]
    if (
        text[19:20] == "."
        and text[-1] == "Z"
        and fraction.isdigit()
        and fraction.isascii()
        and len(fraction) <= 9
    ):
        return base + int(fraction) * _FRACTION_SCALE[len(fraction)]
    if text[19:] == "Z":
        return base
    raise ValueError(f"not an RFC 3339 UTC timestamp: {text[:40]!r}")


def _msgpack_ts(value: object) -> int:
    """A msgpack frame's timestamp: ext -1, which the unpacker turns into int ns.

    A string is parsed as in JSON frames; anything else raises ``TypeError``.
    """
    if type(value) is int:
        return value
    if type(value) is not str:
        raise TypeError(f"timestamp must be a msgpack Timestamp, got {type(value).__name__}")
    return rfc3339_to_ns(value)


# --------------------------------------------------------------------------- event builders

#: Trade(provider, symbol, ts_event, ts_recv, price, size, exchange, trade_id, conditions, tape)
_new_trade = event_builder(
    Trade,
    "provider",
    "symbol",
    "ts_event",
    "ts_recv",
    "price",
    "size",
    "exchange",
    "trade_id",
    "conditions",
    "tape",
)
#: Quote(provider, symbol, ts_event, ts_recv, bid, ask, bid_size, ask_size,
#: bid_exchange, ask_exchange, conditions, tape)
_new_quote = event_builder(
    Quote,
    "provider",
    "symbol",
    "ts_event",
    "ts_recv",
    "bid",
    "ask",
    "bid_size",
    "ask_size",
    "bid_exchange",
    "ask_exchange",
    "conditions",
    "tape",
)
#: OrderBookUpdate(provider, symbol, ts_event, ts_recv, bids, asks, snapshot)
_new_book = event_builder(
    OrderBookUpdate, "provider", "symbol", "ts_event", "ts_recv", "bids", "asks", "snapshot"
)


# --------------------------------------------------------------------------- errors

#: Alpaca error code -> (exception type, what it means for the user). The
#: server's own ``msg`` text always leads the exception message.
#:
#: * 400 invalid syntax, 405 symbol limit, 409 insufficient subscription (the
#:   plan lacks the feed), 410 channel not on this feed: the same request
#:   fails the same way after a reconnect, so they are fatal.
#: * 402 auth failed, 411 insufficient scope: the credentials are refused.
#: * 401 not authenticated: a request overtook the handshake. This client
#:   sends nothing before ``authenticated``, so it can only be a server-side
#:   race; a reconnect redoes the handshake in order, hence transient
#:   (:class:`ProtocolError`) rather than fatal.
#: * 404 auth timeout, 407 slow client, 500 internal error: a reconnect can help.
#: * 406 connection limit: transient, with the supervisor's long cool-down.
#: * 403 already authenticated is harmless (the docs say so) and becomes a
#:   :class:`ProviderNotice`, not a failure; it is not in this table.
_ERRORS: Mapping[int, tuple[type[ProviderError], str]] = {
    400: (SubscriptionError, "the server rejected a request as malformed (bad message or symbol)"),
    401: (ProtocolError, "a request arrived before authentication finished"),
    402: (
        AuthenticationError,
        f"check the key and secret (key=/secret= or {_KEY_ENV}/{_SECRET_ENV})",
    ),
    404: (TransientProviderError, "authentication did not complete in time"),
    405: (SubscriptionError, "the plan's symbol limit is exceeded; subscribe to fewer symbols"),
    406: (
        ConnectionLimitError,
        "another connection uses this key; close it, or wait ~90 s for the server to drop it",
    ),
    407: (TransientProviderError, "the client fell behind and the server's buffer filled up"),
    409: (SubscriptionError, "the plan does not include this feed (the free plan has feed='iex')"),
    410: (SubscriptionError, "a requested channel is not available on this feed"),
    411: (AuthenticationError, "the credentials lack the market data scope"),
    500: (TransientProviderError, "server error"),
}
_ALREADY_AUTHENTICATED = 403


def error_for(code: object, message: str) -> ProviderError | None:
    """The typed exception for an Alpaca ``error`` message (``None`` for the harmless 403).

    Unknown codes (and a missing or non-integer code) give a
    :class:`TransientProviderError`: the server said something failed, and a
    reconnect is the safe answer to what we cannot classify.
    """
    if type(code) is not int:
        return TransientProviderError(f"{message} (no numeric error code)", provider=PROVIDER)
    if code == _ALREADY_AUTHENTICATED:
        return None
    known = _ERRORS.get(code)
    if known is None:
        return TransientProviderError(f"{message} (unknown code)", provider=PROVIDER, code=code)
    cls, meaning = known
    return cls(f"{message}: {meaning}", provider=PROVIDER, code=code)


# --------------------------------------------------------------------------- protocol

_Message = dict[str, Any]
_Handler = Callable[[_Message, int], "Event | Control"]
#: First bytes of a JSON document that arrived as a binary frame. None of them
#: starts a msgpack array, so valid frames are told apart exactly.
_JSON_FIRST_BYTES = frozenset(b"[{ \t\r\n")
_MSGPACK_ERRORS = (ValueError, TypeError, msgpack.UnpackException)
#: What a handler raises on a missing or wrong-typed field (``int(inf)`` is an
#: OverflowError).
_MESSAGE_ERRORS = (KeyError, TypeError, ValueError, OverflowError, AttributeError, IndexError)


def _conditions(value: object) -> tuple[str, ...]:
    """A ``c`` field: a list of strings, or (one JS mock, accepted by alpaca-py) a bare string."""
    if value is None:
        return ()
    if type(value) is str:
        return (value,)
    if type(value) is not list:
        raise TypeError(f"conditions must be a list, got {type(value).__name__}")
    return tuple(value)


def _text(value: object) -> str:
    if type(value) is not str:
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _levels(value: object) -> tuple[tuple[float, float], ...]:
    if type(value) is not list:
        raise TypeError(f"book side must be a list, got {type(value).__name__}")
    return tuple([(float(level["p"]), float(level["s"])) for level in value])


class AlpacaProtocol(ProviderProtocol):
    """One Alpaca connection, sans-IO: frames in, events and control items out.

    After the server's ``connected`` hello it queues the auth frame; after
    ``authenticated`` the session may :meth:`subscribe`. Outgoing frames are
    msgpack ``bytes`` or JSON ``str`` per ``encoding``; incoming frames of
    either kind are accepted in either mode. ``crypto`` selects the channel
    set (crypto has ``books``, stocks have ``statuses``/``lulds``).

    Alpaca has no sequence numbers: ``seq`` is ``None`` and the guard mode is
    ``"none"``. Crypto trades carry the taker side (``tks``, ``"B"``/``"S"``)
    as their only condition, as Polygon does with its buy/sell-side codes.
    """

    guard_mode: ClassVar[GuardMode] = "none"
    __slots__ = (
        "_channels",
        "_encoding",
        "_handlers",
        "_key",
        "_max_frame_bytes",
        "_outbox",
        "_secret",
        "_ts",
        "_wire_to_channel",
    )

    def __init__(
        self,
        *,
        key: str,
        secret: str,
        crypto: bool = False,
        encoding: Literal["msgpack", "json"] = "msgpack",
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    ) -> None:
        self._key = key
        self._secret = secret
        self._encoding = encoding
        self._max_frame_bytes = max_frame_bytes
        self._channels: Mapping[str, str] = CRYPTO_CHANNELS if crypto else STOCK_CHANNELS
        self._wire_to_channel = {wire: ours for ours, wire in self._channels.items()}
        self._outbox: list[Frame] = []
        self._ts: Callable[[Any], int] = rfc3339_to_ns
        self._handlers: dict[str, _Handler] = {
            "t": self._trade,
            "q": self._quote,
            "b": self._minute_bar,
            "u": self._updated_bar,
            "d": self._daily_bar,
            "o": self._orderbook,
            "c": self._correction,
            "x": self._cancel,
            "s": self._status,
            "l": self._luld,
            "success": self._success,
            "error": self._error,
            "subscription": self._subscription,
        }

    def __repr__(self) -> str:
        crypto = self._channels is CRYPTO_CHANNELS
        return f"AlpacaProtocol(crypto={crypto}, encoding={self._encoding!r})"

    # ------------------------------------------------------------------ sending

    def _encode(self, message: Mapping[str, object]) -> Frame:
        if self._encoding == "msgpack":
            packed: bytes = msgpack.packb(message)
            return packed
        return orjson.dumps(message).decode()

    def data_to_send(self) -> list[Frame]:
        """Frames queued for sending, in order; the queue is emptied."""
        out, self._outbox = self._outbox, []
        return out

    def subscribe(self, topics: Topics) -> None:
        """Queue additive ``subscribe`` frames for ``topics`` (our channel names).

        Raises :class:`ConfigurationError` for a channel this feed lacks or a
        bad symbol. Frames are split so none exceeds ``max_frame_bytes``; each
        is a valid request on its own, and the server confirms each one.
        """
        self._queue_action("subscribe", topics)

    def unsubscribe(self, topics: Topics) -> None:
        """Queue ``unsubscribe`` frames for ``topics``, split like :meth:`subscribe`."""
        self._queue_action("unsubscribe", topics)

    def _encoded_len(self, value: object) -> int:
        if self._encoding == "msgpack":
            return len(msgpack.packb(value))
        return len(orjson.dumps(value))

    def _queue_action(self, action: str, topics: Topics) -> None:
        clean = _normalize(topics, crypto=self._channels is CRYPTO_CHANNELS)
        limit = self._max_frame_bytes
        base = self._encoded_len({"action": action})
        frame: dict[str, list[str]] = {}
        size = base
        for channel in sorted(clean):
            wire = self._channels[channel]
            channel_cost = self._encoded_len(wire) + _CHANNEL_OVERHEAD
            for symbol in sorted(clean[channel]):
                # +1: the separator (JSON comma) or slack (msgpack); an upper bound either way.
                cost = self._encoded_len(symbol) + 1
                need = cost if wire in frame else cost + channel_cost
                if size + need > limit and frame:
                    self._outbox.append(self._encode({"action": action, **frame}))
                    frame, size, need = {}, base, cost + channel_cost
                if size + need > limit:
                    raise ConfigurationError(
                        f"{PROVIDER}: symbol {symbol[:40]!r} does not fit in a "
                        f"{limit}-byte subscribe frame; raise max_frame_bytes"
                    )
                frame.setdefault(wire, []).append(symbol)
                size += need
        if frame:
            self._outbox.append(self._encode({"action": action, **frame}))

    # ------------------------------------------------------------------ receiving

    def receive(self, frame: Frame, ts_recv: int) -> list[Event | Control]:
        """Decode one frame (a JSON or msgpack array of messages), in wire order.

        Never raises on bad input: an undecodable frame or one that is not an
        array gives one :class:`Malformed`; within an array, each bad message
        gives its own :class:`Malformed` and the others still decode.
        """
        try:
            if isinstance(frame, str) or (frame and frame[0] in _JSON_FIRST_BYTES):
                self._ts = rfc3339_to_ns
                messages = orjson.loads(frame)
            else:
                self._ts = _msgpack_ts
                messages = msgpack.unpackb(frame, timestamp=2)
        except orjson.JSONDecodeError as exc:
            return [Malformed(f"undecodable JSON frame: {exc}", truncate_sample(frame))]
        except _MSGPACK_ERRORS as exc:
            return [Malformed(f"undecodable msgpack frame: {exc!r}", truncate_sample(frame))]
        if type(messages) is not list:
            return [Malformed("frame is not an array of messages", truncate_sample(frame))]
        out: list[Event | Control] = []
        append = out.append
        handlers = self._handlers
        for message in messages:
            try:
                handler = handlers[message["T"]]
            except (KeyError, TypeError):
                append(unhandled_message(message, "T", "type"))
                continue
            try:
                append(handler(message, ts_recv))
            except _MESSAGE_ERRORS as exc:
                append(malformed_message(message, exc, "T"))
        return out

    # ------------------------------------------------------------------ control messages

    def _success(self, message: _Message, ts_recv: int) -> Control:
        text = message.get("msg")
        if text == "connected":
            self._outbox.append(
                self._encode({"action": "auth", "key": self._key, "secret": self._secret})
            )
            return Connected("connected")
        if text == "authenticated":
            return Authenticated("authenticated")
        return ProviderNotice("success", str(text))

    def _error(self, message: _Message, ts_recv: int) -> Control:
        code = message.get("code")
        text = str(message.get("msg", ""))
        error = error_for(code, text)
        if error is None:
            return ProviderNotice(_ALREADY_AUTHENTICATED, text)
        return ProviderFailure(error)

    def _subscription(self, message: _Message, ts_recv: int) -> Control:
        topics: dict[str, frozenset[str]] = {}
        for wire, channel in self._wire_to_channel.items():
            symbols = message.get(wire)
            if symbols is None:
                continue
            if type(symbols) is not list or not all(type(s) is str for s in symbols):
                raise TypeError(f"{wire!r} must be a list of symbols")
            if symbols:
                topics[channel] = frozenset(symbols)
        return SubscriptionAck(topics=topics, complete=True)

    # ------------------------------------------------------------------ market data

    def _trade(self, m: _Message, ts_recv: int) -> Trade:
        symbol = m["S"]
        if type(symbol) is not str:
            raise TypeError("symbol 'S' must be a string")
        conditions = m.get("c")
        if type(conditions) is list:
            conditions = tuple(conditions)
        elif conditions is None:
            side = m.get("tks")
            conditions = () if side is None else (side,)
        else:
            conditions = _conditions(conditions)
        trade_id = m.get("i")
        return _new_trade(
            PROVIDER,
            symbol,
            self._ts(m["t"]),
            ts_recv,
            float(m["p"]),
            float(m["s"]),
            m.get("x", ""),
            "" if trade_id is None else str(trade_id),
            conditions,
            m.get("z", ""),
        )

    def _quote(self, m: _Message, ts_recv: int) -> Quote:
        symbol = m["S"]
        if type(symbol) is not str:
            raise TypeError("symbol 'S' must be a string")
        conditions = m.get("c")
        return _new_quote(
            PROVIDER,
            symbol,
            self._ts(m["t"]),
            ts_recv,
            float(m["bp"]),
            float(m["ap"]),
            float(m["bs"]),
            float(m["as"]),
            m.get("bx", ""),
            m.get("ax", ""),
            tuple(conditions) if type(conditions) is list else _conditions(conditions),
            m.get("z", ""),
        )

    def _bar(self, m: _Message, ts_recv: int, interval_s: int, updated: bool) -> Bar:
        return Bar(
            provider=PROVIDER,
            symbol=_text(m["S"]),
            ts_event=self._ts(m["t"]),
            ts_recv=ts_recv,
            open=float(m["o"]),
            high=float(m["h"]),
            low=float(m["l"]),
            close=float(m["c"]),
            volume=float(m["v"]),
            interval_s=interval_s,
            trade_count=int(m.get("n") or 0),
            vwap=float(m.get("vw") or 0.0),
            updated=updated,
        )

    def _minute_bar(self, m: _Message, ts_recv: int) -> Bar:
        return self._bar(m, ts_recv, 60, False)

    def _updated_bar(self, m: _Message, ts_recv: int) -> Bar:
        return self._bar(m, ts_recv, 60, True)

    def _daily_bar(self, m: _Message, ts_recv: int) -> Bar:
        return self._bar(m, ts_recv, 86_400, False)

    def _orderbook(self, m: _Message, ts_recv: int) -> OrderBookUpdate:
        return _new_book(
            PROVIDER,
            _text(m["S"]),
            self._ts(m["t"]),
            ts_recv,
            _levels(m.get("b", [])),
            _levels(m.get("a", [])),
            m.get("r") is True,
        )

    def _correction(self, m: _Message, ts_recv: int) -> TradeCorrection:
        return TradeCorrection(
            provider=PROVIDER,
            symbol=_text(m["S"]),
            ts_event=self._ts(m["t"]),
            ts_recv=ts_recv,
            original_id=str(m["oi"]),
            original_price=float(m["op"]),
            original_size=float(m["os"]),
            corrected_id=str(m["ci"]),
            corrected_price=float(m["cp"]),
            corrected_size=float(m["cs"]),
            original_conditions=_conditions(m.get("oc")),
            corrected_conditions=_conditions(m.get("cc")),
            exchange=m.get("x", ""),
            tape=m.get("z", ""),
        )

    def _cancel(self, m: _Message, ts_recv: int) -> TradeCancel:
        return TradeCancel(
            provider=PROVIDER,
            symbol=_text(m["S"]),
            ts_event=self._ts(m["t"]),
            ts_recv=ts_recv,
            trade_id=str(m["i"]),
            price=float(m["p"]),
            size=float(m["s"]),
            is_error=m.get("a") == "E",
            exchange=m.get("x", ""),
            tape=m.get("z", ""),
        )

    def _status(self, m: _Message, ts_recv: int) -> TradingStatus:
        return TradingStatus(
            provider=PROVIDER,
            symbol=_text(m["S"]),
            ts_event=self._ts(m["t"]),
            ts_recv=ts_recv,
            status_code=_text(m["sc"]),
            status_message=m.get("sm", ""),
            reason_code=m.get("rc", ""),
            reason_message=m.get("rm", ""),
            tape=m.get("z", ""),
        )

    def _luld(self, m: _Message, ts_recv: int) -> LimitBands:
        return LimitBands(
            provider=PROVIDER,
            symbol=_text(m["S"]),
            ts_event=self._ts(m["t"]),
            ts_recv=ts_recv,
            limit_up=float(m["u"]),
            limit_down=float(m["d"]),
            indicator=m.get("i", ""),
            tape=m.get("z", ""),
        )


def _normalize(topics: Topics, *, crypto: bool) -> dict[str, frozenset[str]]:
    """Validate ``topics`` for a stock or crypto feed, with a hint for the usual mistakes."""
    for channel in topics:
        if channel in _IMPLICIT_CHANNELS:
            raise ConfigurationError(
                f"{PROVIDER}: {channel} cannot be subscribed on its own; "
                "trade corrections and cancels come with trades="
            )
        if channel == "books" and not crypto:
            raise ConfigurationError(
                f"{PROVIDER}: books= (order books) exist only on the crypto feed "
                "(AlpacaProvider(feed='crypto')); stock feeds have quotes="
            )
        if channel in ("statuses", "lulds") and crypto:
            raise ConfigurationError(f"{PROVIDER}: {channel}= exists only on stock feeds")
    allowed = CRYPTO_CHANNELS if crypto else STOCK_CHANNELS
    return normalize_topics(topics, allowed=allowed, provider=PROVIDER)


# --------------------------------------------------------------------------- provider

#: ``stale_after`` per feed when not given. IEX carries ~2-3 % of US volume, so
#: a mid-cap symbol can print on IEX only every minute or two: 300 s keeps it
#: from being flagged, and a dead feed is still noticed within 10 minutes
#: (silence, resubscribe, silence again). SIP, the test stream (FAKEPACA quotes
#: every few seconds) and crypto books/quotes update many times a minute:
#: 60 s finds a silent connection within two minutes.
_STALE_AFTER: Mapping[str, float] = {
    "iex": 300.0,
    "sip": 60.0,
    "delayed_sip": 60.0,
    "test": 60.0,
    "crypto": 60.0,
}
#: Smallest accepted ``max_message_size``: a full ``subscription`` confirmation
#: is itself kilobytes.
_MIN_MESSAGE_SIZE = 64 * 1024


@attrs.frozen(init=False)
class AlpacaProvider(WebSocketProvider):
    """Alpaca's market data stream (stocks or crypto), ready for ``sup.add``.

    * ``feed``: ``"iex"`` (free plan), ``"sip"``, ``"delayed_sip"``, ``"test"``
      (always on, symbol ``FAKEPACA``) or ``"crypto"`` (with
      ``crypto_location`` ``"us"``, ``"us-1"`` or ``"eu-1"``). ``sandbox=True``
      uses Alpaca's sandbox host. ``url=`` overrides the endpoint entirely
      (plain ``ws://`` only to a loopback host, e.g. :mod:`puffin_trio.sim`).
    * ``key``/``secret``: default to ``$APCA_API_KEY_ID``/``$APCA_API_SECRET_KEY``.
      They are never shown by ``repr`` and never put in logs or exceptions.
    * ``encoding``: ``"msgpack"`` (what the official SDKs use, and the smaller
      and faster to decode) or ``"json"``. The server picks it from the
      upgrade request's ``Content-Type``, see :meth:`headers`.
    * Channels: ``trades`` (with their corrections and cancels), ``quotes``,
      ``bars`` (minute), ``updated_bars``, ``daily_bars``; stock feeds add
      ``statuses`` and ``lulds``, the crypto feed adds ``books``.

    Timing knobs (seconds), see :class:`~puffin_trio.providers._base.Provider`:

    * ``ping_interval=10``: what alpaca-py uses against the real server; a ping
      costs nothing and a dead TCP path is noticed within interval + timeout.
    * ``ping_timeout=10``: a round trip to Alpaca takes milliseconds and our
      reader never stops answering, so a pong 10 s late means the path or the
      server is stuck (alpaca-py's 180 s leaves a dead feed unnoticed for minutes).
    * ``stale_after``: per feed unless given: 300 s on IEX (a thin venue:
      quiet symbols print only every minute or two), 60 s elsewhere.
      ``math.inf`` turns the check off.
    * ``limit_cooldown=90``: Alpaca reaps a half-dead connection only after
      ~90 s (staff statement), and until then a new one gets 406.

    Sizes: ``max_message_size`` (16 MiB) bounds one incoming message and
    ``max_frame_bytes`` (4 KiB) one outgoing subscribe frame; the module
    constants ``DEFAULT_MAX_MESSAGE_SIZE``/``DEFAULT_MAX_FRAME_BYTES`` say why.
    ``name`` is the session's name (events always say ``provider="alpaca"``).
    """

    name: ClassVar[str] = PROVIDER

    feed: str
    url: str
    encoding: Literal["msgpack", "json"]
    crypto_location: str
    sandbox: bool
    ping_interval: float
    ping_timeout: float
    stale_after: float
    limit_cooldown: float
    max_message_size: int
    max_frame_bytes: int
    session_name: str
    _key: str | None = attrs.field(repr=False)
    _secret: str | None = attrs.field(repr=False)

    def __init__(
        self,
        *,
        feed: str = "iex",
        key: str | None = None,
        secret: str | None = None,
        url: str | None = None,
        encoding: Literal["msgpack", "json"] = "msgpack",
        crypto_location: str = "us",
        sandbox: bool = False,
        ping_interval: float = 10.0,
        ping_timeout: float = 10.0,
        stale_after: float | None = None,
        limit_cooldown: float = 90.0,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        name: str = PROVIDER,
    ) -> None:
        """Validate everything but credentials (see :meth:`check`); raises ConfigurationError."""
        if feed not in FEEDS:
            raise ConfigurationError(
                f"{PROVIDER}: unknown feed {feed!r}; expected one of {', '.join(FEEDS)}"
            )
        if crypto_location not in CRYPTO_LOCATIONS:
            raise ConfigurationError(
                f"{PROVIDER}: unknown crypto_location {crypto_location!r}; "
                f"expected one of {', '.join(sorted(CRYPTO_LOCATIONS))}"
            )
        if encoding not in ("msgpack", "json"):
            raise ConfigurationError(
                f"{PROVIDER}: encoding must be 'msgpack' or 'json', not {encoding!r}"
            )
        if not isinstance(sandbox, bool):
            raise ConfigurationError(f"{PROVIDER}: sandbox must be True or False")
        if url is None:
            host = _SANDBOX_HOST if sandbox else _HOST
            path = FEEDS[feed] + (crypto_location if feed == "crypto" else "")
            url = f"wss://{host}{path}"
        self.__attrs_init__(
            feed=feed,
            url=_config.websocket_url(PROVIDER, url),
            encoding=encoding,
            crypto_location=crypto_location,
            sandbox=sandbox,
            ping_interval=_config.seconds(PROVIDER, "ping_interval", ping_interval),
            ping_timeout=_config.seconds(PROVIDER, "ping_timeout", ping_timeout),
            stale_after=_config.seconds(
                PROVIDER,
                "stale_after",
                _STALE_AFTER[feed] if stale_after is None else stale_after,
                allow_inf=True,
            ),
            limit_cooldown=_config.seconds(PROVIDER, "limit_cooldown", limit_cooldown),
            max_message_size=_config.byte_size(
                PROVIDER, "max_message_size", max_message_size, _MIN_MESSAGE_SIZE
            ),
            max_frame_bytes=_config.byte_size(
                PROVIDER, "max_frame_bytes", max_frame_bytes, _MIN_FRAME_BYTES
            ),
            session_name=_config.session_name(PROVIDER, name),
            key=_config.credential(PROVIDER, key, (_KEY_ENV,), "key"),
            secret=_config.credential(PROVIDER, secret, (_SECRET_ENV,), "secret"),
        )

    @property
    def is_crypto(self) -> bool:
        """True for the crypto feed (order books, fractional sizes, always open)."""
        return self.feed == "crypto"

    @property
    def channels(self) -> frozenset[str]:
        """Channel names this feed accepts."""
        return frozenset(CRYPTO_CHANNELS if self.is_crypto else STOCK_CHANNELS)

    @property
    def calendar(self) -> TradingCalendar:
        """US equity hours (with pre/post-market) for stock feeds; always open for crypto
        and the test stream. The shared calendars, so the holiday tables load once."""
        from puffin_trio.market_hours import calendar_for

        return calendar_for("crypto" if self.is_crypto or self.feed == "test" else "us_equity")

    def headers(self) -> list[tuple[str, str]]:
        """``Content-Type`` on the upgrade request: how Alpaca picks JSON or msgpack."""
        return [("Content-Type", f"application/{self.encoding}")]

    def normalize(self, topics: Topics) -> dict[str, frozenset[str]]:
        """Validate ``topics`` for this feed (``books`` on crypto, ``lulds`` on stocks only)."""
        return _normalize(topics, crypto=self.is_crypto)

    def check(self) -> None:
        """Raise :class:`ConfigurationError` if the key or secret is missing."""
        missing = [
            f"{argument}= (or ${env})"
            for argument, env, value in (
                ("key", _KEY_ENV, self._key),
                ("secret", _SECRET_ENV, self._secret),
            )
            if value is None
        ]
        if missing:
            raise ConfigurationError(
                f"{PROVIDER}: missing credentials: pass {' and '.join(missing)}; "
                "your API keys are on the Alpaca dashboard"
            )

    def protocol(self) -> AlpacaProtocol:
        """A fresh :class:`AlpacaProtocol`; raises ConfigurationError without credentials."""
        self.check()
        assert self._key is not None and self._secret is not None
        return AlpacaProtocol(
            key=self._key,
            secret=self._secret,
            crypto=self.is_crypto,
            encoding=self.encoding,
            max_frame_bytes=self.max_frame_bytes,
        )
