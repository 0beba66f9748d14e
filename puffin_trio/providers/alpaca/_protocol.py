"""One Alpaca stream connection as a sans-IO state machine: :class:`AlpacaProtocol`.

This module owns the wire protocol of one connection: the ``connected``/``auth``
handshake, subscribe frames split under a size limit, and decoding JSON text
or msgpack binary frames into normalised events and control items. It must
not do I/O, read a clock (``ts_recv`` is passed in), log per message, or put a
credential anywhere but the auth frame.

Decoding is the hot path: one dict of ``T`` -> bound method per connection,
no per-message string formatting, timestamps parsed without ``datetime`` (see
:func:`~puffin_trio.providers.alpaca._timestamps.rfc3339_to_ns`), and events
built straight into their slots (see
:func:`~puffin_trio._event_builder.event_builder`). Every value is checked
as it is copied (:mod:`puffin_trio.providers._values`: finite prices and
sizes >= 0, a timestamp in the sane range, a non-empty symbol, text fields
that are text); a message that fails becomes
:class:`~puffin_trio.providers._base.Malformed` and the rest of its frame
still decodes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Literal

import msgpack
import orjson

from puffin_trio._event_builder import event_builder
from puffin_trio.errors import ConfigurationError
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
from puffin_trio.providers._base import (
    Authenticated,
    Connected,
    Control,
    Frame,
    Malformed,
    Message,
    MessageHandler,
    ProviderFailure,
    ProviderNotice,
    ProviderProtocol,
    SubscriptionAck,
    Topics,
    decode_messages,
    notice_text,
    truncate_sample,
)
from puffin_trio.providers._values import count, ident, price, size, symbol_of, text, texts
from puffin_trio.providers.alpaca._builders import new_quote, new_trade
from puffin_trio.providers.alpaca._errors import ALREADY_AUTHENTICATED, error_for
from puffin_trio.providers.alpaca._timestamps import json_event_ns, msgpack_event_ns
from puffin_trio.providers.alpaca._typed import typed_json_stock_frame
from puffin_trio.providers.alpaca._wire import (
    CHANNEL_OVERHEAD,
    CRYPTO_CHANNELS,
    DEFAULT_MAX_FRAME_BYTES,
    PROVIDER,
    STOCK_CHANNELS,
    check_topics,
)

__all__ = ["AlpacaProtocol"]

#: OrderBookUpdate(provider, symbol, ts_event, ts_recv, bids, asks, snapshot)
_new_book = event_builder(
    OrderBookUpdate, "provider", "symbol", "ts_event", "ts_recv", "bids", "asks", "snapshot"
)


#: First bytes of a JSON document that arrived as a binary frame. None of them
#: starts a msgpack array, so valid frames are told apart exactly.
_JSON_FIRST_BYTES = frozenset(b"[{ \t\r\n")
_INF = math.inf
_MSGPACK_ERRORS = (ValueError, TypeError, msgpack.UnpackException)


def _required_text(value: object) -> str:
    if type(value) is not str:
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _optional_id(value: object) -> str:
    return "" if value is None else ident(value)


def _levels(value: object) -> tuple[tuple[float, float], ...]:
    if type(value) is not list:
        raise TypeError(f"book side must be a list, got {type(value).__name__}")
    return tuple([(price(level["p"]), size(level["s"])) for level in value])


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
        self._ts: Callable[[Any], int] = json_event_ns
        self._handlers: dict[str, MessageHandler] = {
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
        clean = check_topics(topics, crypto=self._channels is CRYPTO_CHANNELS)
        limit = self._max_frame_bytes
        base = self._encoded_len({"action": action})
        frame: dict[str, list[str]] = {}
        size = base
        for channel in sorted(clean):
            wire = self._channels[channel]
            channel_cost = self._encoded_len(wire) + CHANNEL_OVERHEAD
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
        A JSON stock frame of only trades and quotes takes the typed fast path
        (:func:`~puffin_trio.providers.alpaca._typed.typed_json_stock_frame`),
        which gives the same events or declines the frame to the path below.
        """
        if self._channels is STOCK_CHANNELS and (
            isinstance(frame, str) or (frame and frame[0] in _JSON_FIRST_BYTES)
        ):
            events = typed_json_stock_frame(frame, ts_recv)
            if events is not None:
                return events
        return self._receive_per_message(frame, ts_recv)

    def _receive_per_message(self, frame: Frame, ts_recv: int) -> list[Event | Control]:
        """:meth:`receive` without the typed fast path: each message by its own handler."""
        try:
            if isinstance(frame, str) or (frame and frame[0] in _JSON_FIRST_BYTES):
                self._ts = json_event_ns
                messages = orjson.loads(frame)
            else:
                self._ts = msgpack_event_ns
                messages = msgpack.unpackb(frame, timestamp=2)
        except orjson.JSONDecodeError as exc:
            return [Malformed(f"undecodable JSON frame: {exc}", truncate_sample(frame))]
        except _MSGPACK_ERRORS as exc:
            return [Malformed(f"undecodable msgpack frame: {exc!r}", truncate_sample(frame))]
        return decode_messages(messages, frame, self._handlers, "T", "type", ts_recv)

    # ------------------------------------------------------------------ control messages

    def _success(self, message: Message, ts_recv: int) -> Control:
        said = message.get("msg")
        if said == "connected":
            self._outbox.append(
                self._encode({"action": "auth", "key": self._key, "secret": self._secret})
            )
            return Connected("connected")
        if said == "authenticated":
            return Authenticated("authenticated")
        return ProviderNotice("success", notice_text(said))

    def _error(self, message: Message, ts_recv: int) -> Control:
        code = message.get("code")
        said = notice_text(message.get("msg"))
        error = error_for(code, said)
        if error is None:
            return ProviderNotice(ALREADY_AUTHENTICATED, said)
        return ProviderFailure(error)

    def _subscription(self, message: Message, ts_recv: int) -> Control:
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

    def _trade(self, m: Message, ts_recv: int) -> Trade:
        # Hot path: text fields are tested inline; the checks' functions run only
        # to refuse a value (or to turn an absent one into "").
        name = m["S"]
        exchange = m.get("x", "")
        tape = m.get("z", "")
        if type(name) is not str or not name or type(exchange) is not str or type(tape) is not str:
            name, exchange, tape = symbol_of(name), text(exchange), text(tape)
        trade_id = m.get("i")
        conditions = m.get("c")
        if conditions is None:
            side = m.get("tks")  # crypto: the taker side is the one condition
            conditions = () if side is None else (_required_text(side),)
        else:
            conditions = texts(conditions)
        # Numbers as for text: the common type and range tested inline, each check's
        # function only for anything else (the same value or error, in the same order).
        ts_event = self._ts(m["t"])
        trade_price = m["p"]
        if type(trade_price) is not float or not 0.0 <= trade_price < _INF:
            trade_price = price(trade_price)
        trade_size = m["s"]
        trade_size = (
            float(trade_size) if type(trade_size) is int and trade_size >= 0 else size(trade_size)
        )
        return new_trade(
            PROVIDER,
            name,
            ts_event,
            ts_recv,
            trade_price,
            trade_size,
            exchange,
            str(trade_id) if type(trade_id) is int else _optional_id(trade_id),
            conditions,
            tape,
        )

    def _quote(self, m: Message, ts_recv: int) -> Quote:
        name = m["S"]
        bid_exchange = m.get("bx", "")
        ask_exchange = m.get("ax", "")
        tape = m.get("z", "")
        if (
            type(name) is not str
            or not name
            or type(bid_exchange) is not str
            or type(ask_exchange) is not str
            or type(tape) is not str
        ):
            name, tape = symbol_of(name), text(tape)
            bid_exchange, ask_exchange = text(bid_exchange), text(ask_exchange)
        ts_event = self._ts(m["t"])  # numbers as in _trade
        bid = m["bp"]
        if type(bid) is not float or not 0.0 <= bid < _INF:
            bid = price(bid)
        ask = m["ap"]
        if type(ask) is not float or not 0.0 <= ask < _INF:
            ask = price(ask)
        bid_size = m["bs"]
        bid_size = float(bid_size) if type(bid_size) is int and bid_size >= 0 else size(bid_size)
        ask_size = m["as"]
        ask_size = float(ask_size) if type(ask_size) is int and ask_size >= 0 else size(ask_size)
        return new_quote(
            PROVIDER,
            name,
            ts_event,
            ts_recv,
            bid,
            ask,
            bid_size,
            ask_size,
            bid_exchange,
            ask_exchange,
            texts(m.get("c")),
            tape,
        )

    def _bar(self, m: Message, ts_recv: int, interval_s: int, updated: bool) -> Bar:
        trades = m.get("n")
        vwap = m.get("vw")
        return Bar(
            provider=PROVIDER,
            symbol=symbol_of(m["S"]),
            ts_event=self._ts(m["t"]),
            ts_recv=ts_recv,
            open=price(m["o"]),
            high=price(m["h"]),
            low=price(m["l"]),
            close=price(m["c"]),
            volume=size(m["v"]),
            interval_s=interval_s,
            trade_count=0 if trades is None else count(trades),
            vwap=0.0 if vwap is None else price(vwap),
            updated=updated,
        )

    def _minute_bar(self, m: Message, ts_recv: int) -> Bar:
        return self._bar(m, ts_recv, 60, False)

    def _updated_bar(self, m: Message, ts_recv: int) -> Bar:
        return self._bar(m, ts_recv, 60, True)

    def _daily_bar(self, m: Message, ts_recv: int) -> Bar:
        return self._bar(m, ts_recv, 86_400, False)

    def _orderbook(self, m: Message, ts_recv: int) -> OrderBookUpdate:
        return _new_book(
            PROVIDER,
            symbol_of(m["S"]),
            self._ts(m["t"]),
            ts_recv,
            _levels(m.get("b", [])),
            _levels(m.get("a", [])),
            m.get("r") is True,
        )

    def _correction(self, m: Message, ts_recv: int) -> TradeCorrection:
        return TradeCorrection(
            provider=PROVIDER,
            symbol=symbol_of(m["S"]),
            ts_event=self._ts(m["t"]),
            ts_recv=ts_recv,
            original_id=ident(m["oi"]),
            original_price=price(m["op"]),
            original_size=size(m["os"]),
            corrected_id=ident(m["ci"]),
            corrected_price=price(m["cp"]),
            corrected_size=size(m["cs"]),
            original_conditions=texts(m.get("oc")),
            corrected_conditions=texts(m.get("cc")),
            exchange=text(m.get("x")),
            tape=text(m.get("z")),
        )

    def _cancel(self, m: Message, ts_recv: int) -> TradeCancel:
        return TradeCancel(
            provider=PROVIDER,
            symbol=symbol_of(m["S"]),
            ts_event=self._ts(m["t"]),
            ts_recv=ts_recv,
            trade_id=ident(m["i"]),
            price=price(m["p"]),
            size=size(m["s"]),
            is_error=m.get("a") == "E",
            exchange=text(m.get("x")),
            tape=text(m.get("z")),
        )

    def _status(self, m: Message, ts_recv: int) -> TradingStatus:
        return TradingStatus(
            provider=PROVIDER,
            symbol=symbol_of(m["S"]),
            ts_event=self._ts(m["t"]),
            ts_recv=ts_recv,
            status_code=_required_text(m["sc"]),
            status_message=text(m.get("sm")),
            reason_code=text(m.get("rc")),
            reason_message=text(m.get("rm")),
            tape=text(m.get("z")),
        )

    def _luld(self, m: Message, ts_recv: int) -> LimitBands:
        return LimitBands(
            provider=PROVIDER,
            symbol=symbol_of(m["S"]),
            ts_event=self._ts(m["t"]),
            ts_recv=ts_recv,
            limit_up=price(m["u"]),
            limit_down=price(m["d"]),
            indicator=text(m.get("i")),
            tape=text(m.get("z")),
        )
