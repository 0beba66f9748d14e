"""One Polygon/Massive stream connection as a sans-IO state machine: :class:`PolygonProtocol`.

This module owns the wire protocol of one connection: the ``connected``/``auth``
handshake, topic subscriptions split under a size limit, per-topic
confirmations folded into subscription acks, and decoding JSON frames into
normalised events and control items (the normalisation choices, and how
decoding, the hot path, is kept fast, are in ``docs/guide/providers.rst``).
It must not do I/O, read a clock (``ts_recv`` is passed in), log per message,
or put the API key anywhere but the auth frame.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import ClassVar

import orjson

from puffin_trio._event_builder import event_builder
from puffin_trio.errors import ConfigurationError
from puffin_trio.events import Bar, Event, LimitBands, OrderBookUpdate, Quote, Trade
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
from puffin_trio.providers._values import price, size, symbol_of
from puffin_trio.providers.polygon._builders import new_quote, new_trade
from puffin_trio.providers.polygon._errors import error_for
from puffin_trio.providers.polygon._fields import (
    CODE_TEXT,
    CODE_TUPLES,
    SANE_TS_MS,
    TAPE_LETTERS,
    any_unit_to_ns,
    code,
    codes,
    crypto_sides,
    levels,
    ms_to_ns,
    seq_number,
    size_or_decimal,
    tape,
    text_field,
)
from puffin_trio.providers.polygon._typed import typed_stock_frame
from puffin_trio.providers.polygon._wire import (
    CRYPTO_CHANNELS,
    DEFAULT_MAX_FRAME_BYTES,
    MARKETS,
    NS_PER_MS,
    PROVIDER,
    STOCK_CHANNELS,
    check_topics,
)

__all__ = ["PolygonProtocol", "StrictPolygonProtocol"]

#: OrderBookUpdate(provider, symbol, ts_event, ts_recv, bids, asks, snapshot)
_new_book = event_builder(
    OrderBookUpdate, "provider", "symbol", "ts_event", "ts_recv", "bids", "asks", "snapshot"
)
#: Bar(provider, symbol, ts_event, ts_recv, open, high, low, close, volume,
#: interval_s, vwap)
_new_bar = event_builder(
    Bar,
    "provider",
    "symbol",
    "ts_event",
    "ts_recv",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "interval_s",
    "vwap",
)


_MS_LOW, _MS_HIGH = SANE_TS_MS
_INF = math.inf

_SUBSCRIBED = "subscribed to: "
_UNSUBSCRIBED = "unsubscribed to: "


class PolygonProtocol(ProviderProtocol):
    """One Polygon/Massive connection, sans-IO: frames in, events and control items out.

    After the server's ``connected`` status it queues the auth frame
    (``{"action":"auth","params":KEY}``); after ``auth_success`` the session
    may :meth:`subscribe`. ``market`` (``"stocks"`` or ``"crypto"``) selects
    the channel set and the event types decoded; events of the other cluster
    and types we do not model (``FMV``, ``NOI``, ...) are :class:`UnknownMessage`.

    Acks: Polygon confirms each topic with its own ``success`` status
    (``subscribed to: T.AAPL``). The protocol keeps the confirmed set of this
    connection: a subscription confirmation gives a ``SubscriptionAck`` with
    ``complete=False`` naming just that topic (constant cost per topic, so
    confirming 10 000 topics stays linear); an ``unsubscribed to:``
    confirmation gives ``complete=True`` with the whole remaining set, the only
    way an ack can express a removal.

    Guard mode ``"monotonic"``: ``q`` increases per symbol but skips. Stream
    keys are per event type and symbol (``"T:AAPL"``, ``"Q:AAPL"``,
    ``"LULD:AAPL"``), because trades and quotes are numbered separately.
    """

    guard_mode: ClassVar[GuardMode] = "monotonic"
    __slots__ = (
        "_channels",
        "_crypto",
        "_event_channels",
        "_handlers",
        "_key",
        "_keys",
        "_max_frame_bytes",
        "_outbox",
        "_prefixes",
    )

    def __init__(
        self,
        *,
        key: str,
        market: str = "stocks",
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    ) -> None:
        if market not in MARKETS:
            raise ConfigurationError(
                f"{PROVIDER}: unknown market {market!r}; expected one of {', '.join(MARKETS)}"
            )
        self._key = key
        self._crypto = market == "crypto"
        self._max_frame_bytes = max_frame_bytes
        self._channels: Mapping[str, str] = CRYPTO_CHANNELS if self._crypto else STOCK_CHANNELS
        self._event_channels = {ev: channel for channel, ev in self._channels.items()}
        self._outbox: list[Frame] = []
        self._keys: dict[str, dict[str, str]] = {}
        handlers: dict[str, MessageHandler]
        if self._crypto:
            handlers = {
                "XT": self._crypto_trade,
                "XQ": self._crypto_quote,
                "XL2": self._crypto_book,
                "XA": self._crypto_minute_bar,
                "XAS": self._crypto_second_bar,
            }
            self._prefixes: dict[type, str] = {
                Trade: "XT",
                Quote: "XQ",
                OrderBookUpdate: "XL2",
            }
        else:
            handlers = {
                "T": self._trade,
                "Q": self._quote,
                "AM": self._minute_bar,
                "A": self._second_bar,
                "LULD": self._luld,
            }
            self._prefixes = {Trade: "T", Quote: "Q", LimitBands: "LULD"}
        handlers["status"] = self._status
        self._handlers = handlers

    def __repr__(self) -> str:
        market = "crypto" if self._crypto else "stocks"
        return f"{type(self).__name__}(market={market!r})"

    def stream_key(self, event: Event) -> str:
        """``"<ev>:<symbol>"``: one sequence stream per event type and symbol."""
        cls = type(event)
        if cls is Bar:
            second = event.interval_s == 1  # type: ignore[union-attr]
            prefix = self._channels["second_bars" if second else "bars"]
        else:
            prefix = self._prefixes.get(cls, cls.__name__)
        keys = self._keys.get(prefix)
        if keys is None:
            keys = self._keys[prefix] = {}
        key = keys.get(event.symbol)
        if key is None:
            key = keys[event.symbol] = f"{prefix}:{event.symbol}"
        return key

    # ------------------------------------------------------------------ sending

    def data_to_send(self) -> list[Frame]:
        """Frames queued for sending, in order; the queue is emptied."""
        out, self._outbox = self._outbox, []
        return out

    def subscribe(self, topics: Topics) -> None:
        """Queue ``subscribe`` frames for ``topics`` (our channel names; ``"*"``: every symbol).

        Raises :class:`ConfigurationError` for a channel this cluster lacks or
        a bad symbol. Topics are ``<ev>.<symbol>`` (``T.AAPL``), comma-joined,
        split so that no frame exceeds ``max_frame_bytes``.
        """
        self._queue_action("subscribe", topics)

    def unsubscribe(self, topics: Topics) -> None:
        """Queue ``unsubscribe`` frames for ``topics``, split like :meth:`subscribe`."""
        self._queue_action("unsubscribe", topics)

    def _queue_action(self, action: str, topics: Topics) -> None:
        clean = check_topics(topics, crypto=self._crypto)
        limit = self._max_frame_bytes
        base = len(orjson.dumps({"action": action, "params": ""}))
        params: list[str] = []
        size = base
        for channel in sorted(clean):
            prefix = self._channels[channel]
            for symbol in sorted(clean[channel]):
                topic = f"{prefix}.{symbol}"
                cost = len(orjson.dumps(topic)) - 2 + 1  # encoded, plus the comma
                if size + cost > limit and params:
                    self._outbox.append(_action_frame(action, params))
                    params, size = [], base
                if size + cost > limit:
                    raise ConfigurationError(
                        f"{PROVIDER}: topic {topic[:40]!r} does not fit in a "
                        f"{limit}-byte subscribe frame; raise max_frame_bytes"
                    )
                params.append(topic)
                size += cost
        if params:
            self._outbox.append(_action_frame(action, params))

    # ------------------------------------------------------------------ receiving

    def receive(self, frame: Frame, ts_recv: int) -> list[Event | Control]:
        """Decode one frame (a JSON array of events and statuses), in wire order.

        Never raises on bad input: an undecodable frame or one that is not an
        array gives one :class:`Malformed`; within an array, each bad message
        gives its own :class:`Malformed` and the others still decode.
        A stock frame of only trades and quotes takes the typed fast path
        (:func:`~puffin_trio.providers.polygon._typed.typed_stock_frame`),
        which gives the same events or declines the frame to the path below.
        """
        if not self._crypto:
            events = typed_stock_frame(frame, ts_recv)
            if events is not None:
                return events
        return self._receive_per_message(frame, ts_recv)

    def _receive_per_message(self, frame: Frame, ts_recv: int) -> list[Event | Control]:
        """:meth:`receive` without the typed fast path: each message by its own handler."""
        try:
            messages = orjson.loads(frame)
        except orjson.JSONDecodeError as exc:
            return [Malformed(f"undecodable JSON frame: {exc}", truncate_sample(frame))]
        return decode_messages(messages, frame, self._handlers, "ev", "event type", ts_recv)

    # ------------------------------------------------------------------ statuses

    def _status(self, m: Message, ts_recv: int) -> Control:
        status = text_field(m["status"], "status")
        said = m.get("message", "")
        if type(said) is not str:
            said = notice_text(said)
        if status == "success":
            return self._success(said)
        said = truncate_sample(said)
        if status == "connected":
            self._outbox.append(orjson.dumps({"action": "auth", "params": self._key}).decode())
            return Connected(said)
        if status == "auth_success":
            return Authenticated(said)
        status = truncate_sample(status)
        error = error_for(status, said)
        if error is not None:
            return ProviderFailure(error)
        return ProviderNotice(status, said)

    def _success(self, text: str) -> Control:
        """``subscribed to: T.AAPL`` / ``unsubscribed to: T.AAPL`` -> an ack; else a notice."""
        if text.startswith(_SUBSCRIBED):
            adding, listed = True, text[len(_SUBSCRIBED) :]
        elif text.startswith(_UNSUBSCRIBED):
            adding, listed = False, text[len(_UNSUBSCRIBED) :]
        else:
            return ProviderNotice("success", truncate_sample(text))
        changed: dict[str, set[str]] = {}
        for topic in listed.split(","):
            prefix, _, symbol = topic.strip().partition(".")
            channel = self._event_channels.get(prefix)
            if channel is not None and symbol:
                changed.setdefault(channel, set()).add(symbol)
        if not changed:
            return ProviderNotice("success", truncate_sample(text))
        topics = {c: frozenset(s) for c, s in changed.items()}
        return SubscriptionAck(topics, complete=False, removed=not adding)

    # ------------------------------------------------------------------ stocks

    # The stock trade and quote, Polygon's firehose, are decoded in one pass:
    # the complete, common message (every field present, of its usual type, in
    # range) passes one chain of inline tests and builds its event directly.
    # The tests only accept: anything else (a missing field, an int price,
    # decimal sizes, a NaN) goes to the checked decoder below, which applies
    # the shared checks field by field, in wire order, and so converts it or
    # raises exactly the error it always did. Each inline test is the one its
    # check makes (``0.0 <= p < inf`` is price(): finite, not NaN, >= 0; an int
    # size needs only ``>= 0``, being below infinity, which spares a slow
    # int-to-float comparison).

    def _trade(self, m: Message, ts_recv: int) -> Trade:
        try:
            symbol, ms, trade_price, trade_size = m["sym"], m["t"], m["p"], m["s"]
            exchange, trade_id, tape_number, number = m["x"], m["i"], m["z"], m["q"]
        except KeyError:
            return self._checked_trade(m, ts_recv)
        conditions = m.get("c")
        if (
            type(symbol) is str
            and symbol
            and type(ms) is int
            and _MS_LOW <= ms < _MS_HIGH
            and type(trade_price) is float
            and 0.0 <= trade_price < _INF
            and (
                (type(trade_size) is int and trade_size >= 0)
                or (type(trade_size) is float and 0.0 <= trade_size < _INF)
            )
            and type(exchange) is int
            and 0 <= exchange < 1024
            and type(trade_id) is str
            and type(tape_number) is int
            and 1 <= tape_number <= 3
            and type(number) is int
            and "ds" not in m
        ):
            return new_trade(
                PROVIDER,
                symbol,
                ms * NS_PER_MS,
                ts_recv,
                trade_price,
                float(trade_size),
                CODE_TEXT[exchange],
                trade_id,
                () if conditions is None else codes(conditions),
                TAPE_LETTERS[tape_number],
                number,
            )
        return self._checked_trade(m, ts_recv)

    def _quote(self, m: Message, ts_recv: int) -> Quote:
        try:
            symbol, ms, bid, ask = m["sym"], m["t"], m["bp"], m["ap"]
            bid_size, ask_size, bid_exchange, ask_exchange = m["bs"], m["as"], m["bx"], m["ax"]
            tape_number, number = m["z"], m["q"]
        except KeyError:
            return self._checked_quote(m, ts_recv)
        condition = m.get("c")
        if (
            type(symbol) is str
            and symbol
            and type(ms) is int
            and _MS_LOW <= ms < _MS_HIGH
            and type(bid) is float
            and 0.0 <= bid < _INF
            and type(ask) is float
            and 0.0 <= ask < _INF
            and (
                (type(bid_size) is int and bid_size >= 0)
                or (type(bid_size) is float and 0.0 <= bid_size < _INF)
            )
            and (
                (type(ask_size) is int and ask_size >= 0)
                or (type(ask_size) is float and 0.0 <= ask_size < _INF)
            )
            and type(bid_exchange) is int
            and 0 <= bid_exchange < 1024
            and type(ask_exchange) is int
            and 0 <= ask_exchange < 1024
            and (condition is None or (type(condition) is int and 0 <= condition < 1024))
            and type(tape_number) is int
            and 1 <= tape_number <= 3
            and type(number) is int
        ):
            return new_quote(
                PROVIDER,
                symbol,
                ms * NS_PER_MS,
                ts_recv,
                bid,
                ask,
                float(bid_size),
                float(ask_size),
                CODE_TEXT[bid_exchange],
                CODE_TEXT[ask_exchange],
                () if condition is None else CODE_TUPLES[condition],
                TAPE_LETTERS[tape_number],
                number,
            )
        return self._checked_quote(m, ts_recv)

    def _checked_trade(self, m: Message, ts_recv: int) -> Trade:
        decimal = m.get("ds")
        return new_trade(
            PROVIDER,
            symbol_of(m["sym"]),
            ms_to_ns(m["t"]),
            ts_recv,
            price(m["p"]),
            size(m["s"]) if decimal is None else size_or_decimal(decimal),
            code(m.get("x")),
            code(m.get("i")),
            codes(m.get("c")),
            tape(m.get("z")),
            seq_number(m.get("q")),
        )

    def _checked_quote(self, m: Message, ts_recv: int) -> Quote:
        condition = m.get("c")
        return new_quote(
            PROVIDER,
            symbol_of(m["sym"]),
            ms_to_ns(m["t"]),
            ts_recv,
            price(m["bp"]),
            price(m["ap"]),
            size(m["bs"]),
            size(m["as"]),
            code(m.get("bx")),
            code(m.get("ax")),
            () if condition is None else (code(condition),),
            tape(m.get("z")),
            seq_number(m.get("q")),
        )

    def _bar(self, m: Message, ts_recv: int, name: object, interval_s: int) -> Bar:
        decimal = m.get("dv")
        vwap = m.get("vw")
        return _new_bar(
            PROVIDER,
            symbol_of(name),
            ms_to_ns(m["s"]),
            ts_recv,
            price(m["o"]),
            price(m["h"]),
            price(m["l"]),
            price(m["c"]),
            size(m["v"]) if decimal is None else size_or_decimal(decimal),
            interval_s,
            0.0 if vwap is None else price(vwap),
        )

    def _minute_bar(self, m: Message, ts_recv: int) -> Bar:
        return self._bar(m, ts_recv, m["sym"], 60)

    def _second_bar(self, m: Message, ts_recv: int) -> Bar:
        return self._bar(m, ts_recv, m["sym"], 1)

    def _luld(self, m: Message, ts_recv: int) -> LimitBands:
        return LimitBands(
            provider=PROVIDER,
            symbol=symbol_of(m["T"]),
            ts_event=any_unit_to_ns(m["t"]),
            ts_recv=ts_recv,
            limit_up=price(m["h"]),
            limit_down=price(m["l"]),
            indicator=",".join(codes(m.get("i"))),
            tape=tape(m.get("z")),
            seq=seq_number(m.get("q")),
        )

    # ------------------------------------------------------------------ crypto

    def _crypto_trade(self, m: Message, ts_recv: int) -> Trade:
        return new_trade(
            PROVIDER,
            symbol_of(m["pair"]),
            ms_to_ns(m["t"]),
            ts_recv,
            price(m["p"]),
            size(m["s"]),
            code(m.get("x")),
            code(m.get("i")),
            crypto_sides(m.get("c")),
            "",
            None,
        )

    def _crypto_quote(self, m: Message, ts_recv: int) -> Quote:
        exchange = code(m.get("x"))
        return new_quote(
            PROVIDER,
            symbol_of(m["pair"]),
            ms_to_ns(m["t"]),
            ts_recv,
            price(m["bp"]),
            price(m["ap"]),
            size(m["bs"]),
            size(m["as"]),
            exchange,
            exchange,
            (),
            "",
            None,
        )

    def _crypto_book(self, m: Message, ts_recv: int) -> OrderBookUpdate:
        return _new_book(
            PROVIDER,
            symbol_of(m["pair"]),
            ms_to_ns(m["t"]),
            ts_recv,
            levels(m.get("b", [])),
            levels(m.get("a", [])),
            True,
        )

    def _crypto_minute_bar(self, m: Message, ts_recv: int) -> Bar:
        return self._bar(m, ts_recv, m["pair"], 60)

    def _crypto_second_bar(self, m: Message, ts_recv: int) -> Bar:
        return self._bar(m, ts_recv, m["pair"], 1)


class StrictPolygonProtocol(PolygonProtocol):
    """:class:`PolygonProtocol` for servers whose ``q`` is contiguous per stream.

    Polygon's own ``q`` skips, so only the simulator (``sequence="contiguous"``)
    warrants this: with contiguous numbers the guard reports every hole
    exactly, as ``Gap(reason="sequence")``.
    """

    __slots__ = ()
    guard_mode: ClassVar[GuardMode] = "strict"


def _action_frame(action: str, topics: list[str]) -> str:
    return orjson.dumps({"action": action, "params": ",".join(topics)}).decode()
