"""Polygon.io / Massive WebSocket: provider configuration and the sans-IO codec.

This module owns :class:`PolygonProvider` (cluster, real-time or delayed
host, credentials, timing knobs, channel names) and :class:`PolygonProtocol`
(one connection's wire protocol: the ``connected``/``auth`` handshake, topic
subscriptions split under a size limit, per-topic confirmations folded into
subscription acks, and decoding JSON frames into normalised events and
control items). Polygon rebranded as Massive, and the protocol did not change.

It must not do I/O, read a clock (``ts_recv`` is passed in), log per message,
or put the API key anywhere but the auth frame: the key is left out of every
``repr``, log line and exception.

How Polygon's wire values are normalised into events (codes, tapes, lot
sizes, ``q`` as ``seq``, ``XL2`` as snapshots, LULD timestamps) is in
``docs/guide/providers.rst``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import attrs
import orjson

from puffin_trio.errors import (
    AuthenticationError,
    ConfigurationError,
    ConnectionLimitError,
    ProviderError,
    SubscriptionError,
    TransientProviderError,
)
from puffin_trio.events import Bar, Event, LimitBands, OrderBookUpdate, Quote, Trade
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
    event_builder,
    malformed_message,
    normalize_topics,
    truncate_sample,
    unhandled_message,
)
from puffin_trio.transports.ws import check_ws_url

if TYPE_CHECKING:
    from puffin_trio.market_hours import TradingCalendar

__all__ = [
    "CRYPTO_CHANNELS",
    "DEFAULT_MAX_FRAME_BYTES",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "HOSTS",
    "MARKETS",
    "STOCK_CHANNELS",
    "PolygonProtocol",
    "PolygonProvider",
    "StrictPolygonProtocol",
    "error_for",
]

PROVIDER = "polygon"

#: Clusters this provider speaks (URL path ``/stocks``, ``/crypto``).
MARKETS: tuple[str, ...] = ("stocks", "crypto")
#: Real-time and 15-minute-delayed hosts (``socket.polygon.io`` and
#: ``delayed.polygon.io`` before the rebrand; pass ``url=`` to use those).
HOSTS: Mapping[str, str] = {"realtime": "socket.massive.com", "delayed": "delayed.massive.com"}

#: Our channel name -> Polygon's event prefix, for the stocks cluster.
STOCK_CHANNELS: Mapping[str, str] = {
    "trades": "T",
    "quotes": "Q",
    "bars": "AM",
    "second_bars": "A",
    "lulds": "LULD",
}
#: Our channel name -> Polygon's event prefix, for the crypto cluster.
CRYPTO_CHANNELS: Mapping[str, str] = {
    "trades": "XT",
    "quotes": "XQ",
    "books": "XL2",
    "bars": "XA",
    "second_bars": "XAS",
}

#: Environment variables holding the key, in the order they are read: the
#: current name (what the massive SDK reads) first, the pre-rebrand one second.
_KEY_ENVS = ("MASSIVE_API_KEY", "POLYGON_API_KEY")

#: Default ``max_message_size``: 16 MiB. The massive SDK runs with websockets'
#: 1 MiB, but Polygon batches events into arrays and there is no documented
#: maximum batch (protocols.md 2.6): the frames we most need to accept are the
#: catch-up frames of a ``T.*`` subscription after a stall (a trade is ~150
#: bytes of JSON, so 1 MiB is only ~7 000 events). A frame over the limit closes
#: the connection (1009) and the reconnect loses far more than the frame, so
#: the limit is 16 times the SDK's while one frame still cannot take unbounded
#: memory. The same reasoning and value as the Alpaca provider.
DEFAULT_MAX_MESSAGE_SIZE = 16 * 1024 * 1024
#: Default ``max_frame_bytes`` (outgoing subscribe/unsubscribe): 4 KiB. Polygon
#: documents no limit on the topics of one subscribe for stocks (protocols.md,
#: "Uncertain" 18), but a stream server with a small read limit has existed (a
#: ~8 KiB Alpaca subscribe drew close code 1009), and the options cluster
#: refuses a whole frame past its subscription limit. 4 KiB holds ~500 stock
#: topics, so 10 000 symbols take ~20 frames; splitting costs nothing, because
#: Polygon confirms every topic with its own status message anyway.
DEFAULT_MAX_FRAME_BYTES = 4 * 1024
#: Smallest accepted ``max_frame_bytes``: the frame's own overhead plus a few topics.
_MIN_FRAME_BYTES = 64
#: Smallest accepted ``max_message_size``: a status burst confirming a few
#: hundred topics must fit.
_MIN_MESSAGE_SIZE = 64 * 1024

_NS_PER_MS = 1_000_000

# --------------------------------------------------------------------------- event builders

#: Trade(provider, symbol, ts_event, ts_recv, price, size, exchange, trade_id,
#: conditions, tape, seq)
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
    "seq",
)
#: Quote(provider, symbol, ts_event, ts_recv, bid, ask, bid_size, ask_size,
#: bid_exchange, ask_exchange, conditions, tape, seq)
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
    "seq",
)
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

# --------------------------------------------------------------------------- field conversions

#: Text of the small integer codes (exchanges, conditions), made once.
_CODE_TEXT: tuple[str, ...] = tuple(str(i) for i in range(1024))
#: Polygon tape number -> the SIP's tape letter.
_TAPES: Mapping[int, str] = {1: "A", 2: "B", 3: "C"}
#: Crypto trade condition -> taker side (0: no side).
_CRYPTO_SIDES: Mapping[int, str] = {1: "S", 2: "B"}


def _code(value: object) -> str:
    """An integer code (exchange, condition) as text; ``None`` (absent) is ``""``."""
    if type(value) is int and 0 <= value < 1024:
        return _CODE_TEXT[value]
    if value is None:
        return ""
    if type(value) is int or type(value) is str:
        return str(value)
    raise TypeError(f"a code must be an integer, got {type(value).__name__}")


def _codes(value: object) -> tuple[str, ...]:
    """A list of integer codes (``c`` of a trade, ``i`` of LULD) as a tuple of text."""
    if value is None:
        return ()
    if type(value) is not list:
        raise TypeError(f"codes must be a list, got {type(value).__name__}")
    return tuple([_code(v) for v in value])


def _tape(value: object) -> str:
    if value is None:
        return ""
    letter = _TAPES.get(value)  # type: ignore[call-overload]
    return letter if letter is not None else _code(value)


def _seq(value: object) -> int | None:
    if value is None or type(value) is int:
        return value
    raise TypeError(f"sequence number 'q' must be an integer, got {type(value).__name__}")


def _ms(value: object) -> int:
    """Unix milliseconds -> ns. Only integers: a float or text timestamp is malformed."""
    if type(value) is not int:
        raise TypeError(f"timestamp must be integer milliseconds, got {type(value).__name__}")
    return value * _NS_PER_MS


def _any_unit_ns(value: object) -> int:
    """A timestamp whose unit is uncertain (LULD ``t``), read from its magnitude.

    Below 10**14 it is ms (ms timestamps stay below that until the year 5138),
    below 10**17 µs, else ns (ns timestamps passed 10**17 in 1973).
    """
    if type(value) is not int:
        raise TypeError(f"timestamp must be an integer, got {type(value).__name__}")
    if value < 10**14:
        return value * _NS_PER_MS
    if value < 10**17:
        return value * 1_000
    return value


def _text(value: object, field: str) -> str:
    if type(value) is not str:
        raise TypeError(f"{field!r} must be a string, got {type(value).__name__}")
    return value


def _levels(value: object) -> tuple[tuple[float, float], ...]:
    """An XL2 side, ``[[price, size], ...]`` (absent: empty)."""
    if type(value) is not list:
        raise TypeError(f"book side must be a list of [price, size], got {type(value).__name__}")
    return tuple([(float(price), float(size)) for price, size in value])


def _crypto_sides(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if type(value) is not list:
        raise TypeError(f"conditions must be a list, got {type(value).__name__}")
    sides = []
    for condition in value:
        side = _CRYPTO_SIDES.get(condition)
        if side is not None:
            sides.append(side)
        elif condition != 0:
            sides.append(_code(condition))
    return tuple(sides)


# --------------------------------------------------------------------------- errors

_KEY_HINT = "check the API key (key=, or $MASSIVE_API_KEY / $POLYGON_API_KEY)"

#: Status -> (exception type, what it means for the user). The server's own
#: ``message`` leads the exception message; ``status`` is its ``code``.
#:
#: * ``auth_failed``: the key is refused; fatal.
#: * ``auth_timeout``: no auth arrived in time. We send it right after
#:   ``connected``, so this is a stall on the path; a reconnect can help.
#: * ``max_connections``: one connection per cluster per account; transient,
#:   with the supervisor's long ``limit_cooldown``.
#: * ``slow_consumer``, ``force_disconnect``: the server is about to close us;
#:   reconnecting is the answer.
#: * ``error`` is classified by its text in :func:`error_for`.
_STATUS_ERRORS: Mapping[str, tuple[type[ProviderError], str]] = {
    "auth_failed": (AuthenticationError, _KEY_HINT),
    "auth_timeout": (TransientProviderError, "authentication did not complete in time"),
    "max_connections": (
        ConnectionLimitError,
        "another connection uses this key on this cluster (one per cluster per account "
        "unless more are bought); close it, or wait for the server to drop it",
    ),
    "slow_consumer": (
        TransientProviderError,
        "the client fell behind and the server is disconnecting it",
    ),
    "force_disconnect": (TransientProviderError, "the server is disconnecting this connection"),
}


def error_for(status: str, message: str) -> ProviderError | None:
    """The typed exception for a failure status, or ``None`` if ``status`` is not one.

    ``error`` statuses are classified by their text: ``not authorized`` (a
    topic or cluster the plan lacks) and ``Subscription limit reached`` fail
    the same way after a reconnect, so they are fatal
    (:class:`SubscriptionError`); any other error text is transient.
    """
    if status == "error":
        lowered = message.lower()
        if "not authorized" in lowered:
            return SubscriptionError(
                f"{message}: the plan does not include a requested topic or this cluster",
                provider=PROVIDER,
                code=status,
            )
        if "subscription limit" in lowered:
            return SubscriptionError(
                f"{message}: subscribe to fewer topics on this connection",
                provider=PROVIDER,
                code=status,
            )
        return TransientProviderError(
            f"{message} (unclassified server error)", provider=PROVIDER, code=status
        )
    known = _STATUS_ERRORS.get(status)
    if known is None:
        return None
    cls, meaning = known
    return cls(f"{message}: {meaning}", provider=PROVIDER, code=status)


# --------------------------------------------------------------------------- protocol

_Message = dict[str, Any]
_Handler = Callable[[_Message, int], "Event | Control"]
#: What a handler raises on a missing or wrong-typed field (``int(inf)`` is an
#: OverflowError; a book level of the wrong length a ValueError).
_MESSAGE_ERRORS = (KeyError, TypeError, ValueError, OverflowError, AttributeError, IndexError)
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

    guard_mode: ClassVar[Literal["strict", "monotonic", "none"]] = "monotonic"
    __slots__ = (
        "_channels",
        "_confirmed",
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
        self._confirmed: dict[str, set[str]] = {}
        self._outbox: list[Frame] = []
        self._keys: dict[str, dict[str, str]] = {}
        handlers: dict[str, _Handler]
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
        clean = _normalize(topics, crypto=self._crypto)
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
        """
        try:
            messages = orjson.loads(frame)
        except orjson.JSONDecodeError as exc:
            return [Malformed(f"undecodable JSON frame: {exc}", truncate_sample(frame))]
        if type(messages) is not list:
            return [Malformed("frame is not an array of messages", truncate_sample(frame))]
        out: list[Event | Control] = []
        append = out.append
        handlers = self._handlers
        for message in messages:
            try:
                handler = handlers[message["ev"]]
            except (KeyError, TypeError):
                append(unhandled_message(message, "ev", "event type"))
                continue
            try:
                append(handler(message, ts_recv))
            except _MESSAGE_ERRORS as exc:
                append(malformed_message(message, exc, "ev"))
        return out

    # ------------------------------------------------------------------ statuses

    def _status(self, m: _Message, ts_recv: int) -> Control:
        status = _text(m["status"], "status")
        text = m.get("message", "")
        if type(text) is not str:
            text = str(text)
        if status == "success":
            return self._success(text)
        if status == "connected":
            self._outbox.append(orjson.dumps({"action": "auth", "params": self._key}).decode())
            return Connected(text)
        if status == "auth_success":
            return Authenticated(text)
        error = error_for(status, text)
        if error is not None:
            return ProviderFailure(error)
        return ProviderNotice(status, text)

    def _success(self, text: str) -> Control:
        """``subscribed to: T.AAPL`` / ``unsubscribed to: T.AAPL`` -> an ack; else a notice."""
        if text.startswith(_SUBSCRIBED):
            adding, listed = True, text[len(_SUBSCRIBED) :]
        elif text.startswith(_UNSUBSCRIBED):
            adding, listed = False, text[len(_UNSUBSCRIBED) :]
        else:
            return ProviderNotice("success", text)
        changed: dict[str, set[str]] = {}
        for topic in listed.split(","):
            prefix, _, symbol = topic.strip().partition(".")
            channel = self._event_channels.get(prefix)
            if channel is not None and symbol:
                changed.setdefault(channel, set()).add(symbol)
        if not changed:
            return ProviderNotice("success", text)
        confirmed = self._confirmed
        for channel, symbols in changed.items():
            if adding:
                confirmed.setdefault(channel, set()).update(symbols)
            else:
                confirmed.get(channel, set()).difference_update(symbols)
        if adding:
            return SubscriptionAck({c: frozenset(s) for c, s in changed.items()}, complete=False)
        return SubscriptionAck({c: frozenset(s) for c, s in confirmed.items() if s}, complete=True)

    # ------------------------------------------------------------------ stocks

    def _trade(self, m: _Message, ts_recv: int) -> Trade:
        decimal_size = m.get("ds")
        return _new_trade(
            PROVIDER,
            _text(m["sym"], "sym"),
            _ms(m["t"]),
            ts_recv,
            float(m["p"]),
            float(m["s"] if decimal_size is None else decimal_size),
            _code(m.get("x")),
            _code(m.get("i")),
            _codes(m.get("c")),
            _tape(m.get("z")),
            _seq(m.get("q")),
        )

    def _quote(self, m: _Message, ts_recv: int) -> Quote:
        condition = m.get("c")
        return _new_quote(
            PROVIDER,
            _text(m["sym"], "sym"),
            _ms(m["t"]),
            ts_recv,
            float(m["bp"]),
            float(m["ap"]),
            float(m["bs"]),
            float(m["as"]),
            _code(m.get("bx")),
            _code(m.get("ax")),
            () if condition is None else (_code(condition),),
            _tape(m.get("z")),
            _seq(m.get("q")),
        )

    def _bar(self, m: _Message, ts_recv: int, symbol: str, interval_s: int) -> Bar:
        decimal_volume = m.get("dv")
        return _new_bar(
            PROVIDER,
            symbol,
            _ms(m["s"]),
            ts_recv,
            float(m["o"]),
            float(m["h"]),
            float(m["l"]),
            float(m["c"]),
            float(m["v"] if decimal_volume is None else decimal_volume),
            interval_s,
            float(m.get("vw") or 0.0),
        )

    def _minute_bar(self, m: _Message, ts_recv: int) -> Bar:
        return self._bar(m, ts_recv, _text(m["sym"], "sym"), 60)

    def _second_bar(self, m: _Message, ts_recv: int) -> Bar:
        return self._bar(m, ts_recv, _text(m["sym"], "sym"), 1)

    def _luld(self, m: _Message, ts_recv: int) -> LimitBands:
        return LimitBands(
            provider=PROVIDER,
            symbol=_text(m["T"], "T"),
            ts_event=_any_unit_ns(m["t"]),
            ts_recv=ts_recv,
            limit_up=float(m["h"]),
            limit_down=float(m["l"]),
            indicator=",".join(_codes(m.get("i"))),
            tape=_tape(m.get("z")),
            seq=_seq(m.get("q")),
        )

    # ------------------------------------------------------------------ crypto

    def _crypto_trade(self, m: _Message, ts_recv: int) -> Trade:
        return _new_trade(
            PROVIDER,
            _text(m["pair"], "pair"),
            _ms(m["t"]),
            ts_recv,
            float(m["p"]),
            float(m["s"]),
            _code(m.get("x")),
            _code(m.get("i")),
            _crypto_sides(m.get("c")),
            "",
            None,
        )

    def _crypto_quote(self, m: _Message, ts_recv: int) -> Quote:
        exchange = _code(m.get("x"))
        return _new_quote(
            PROVIDER,
            _text(m["pair"], "pair"),
            _ms(m["t"]),
            ts_recv,
            float(m["bp"]),
            float(m["ap"]),
            float(m["bs"]),
            float(m["as"]),
            exchange,
            exchange,
            (),
            "",
            None,
        )

    def _crypto_book(self, m: _Message, ts_recv: int) -> OrderBookUpdate:
        return _new_book(
            PROVIDER,
            _text(m["pair"], "pair"),
            _ms(m["t"]),
            ts_recv,
            _levels(m.get("b", [])),
            _levels(m.get("a", [])),
            True,
        )

    def _crypto_minute_bar(self, m: _Message, ts_recv: int) -> Bar:
        return self._bar(m, ts_recv, _text(m["pair"], "pair"), 60)

    def _crypto_second_bar(self, m: _Message, ts_recv: int) -> Bar:
        return self._bar(m, ts_recv, _text(m["pair"], "pair"), 1)


class StrictPolygonProtocol(PolygonProtocol):
    """:class:`PolygonProtocol` for servers whose ``q`` is contiguous per stream.

    Polygon's own ``q`` skips, so only the simulator (``sequence="contiguous"``)
    warrants this: with contiguous numbers the guard reports every hole
    exactly, as ``Gap(reason="sequence")``.
    """

    guard_mode: ClassVar[Literal["strict", "monotonic", "none"]] = "strict"


def _action_frame(action: str, topics: list[str]) -> str:
    return orjson.dumps({"action": action, "params": ",".join(topics)}).decode()


def _normalize(topics: Topics, *, crypto: bool) -> dict[str, frozenset[str]]:
    """Validate ``topics`` for a cluster, with a hint for the usual mistakes."""
    for channel, symbols in topics.items():
        if channel == "books" and not crypto:
            raise ConfigurationError(
                f"{PROVIDER}: books= (XL2 order books) exist only on the crypto cluster "
                "(PolygonProvider(market='crypto')); stocks have quotes="
            )
        if channel == "lulds" and crypto:
            raise ConfigurationError(f"{PROVIDER}: lulds= exists only on the stocks cluster")
        if crypto and not isinstance(symbols, str | bytes):
            for symbol in symbols:
                if isinstance(symbol, str) and "/" in symbol:
                    raise ConfigurationError(
                        f"{PROVIDER}: crypto pairs are written FROM-TO on Polygon "
                        f"({symbol.replace('/', '-')!r}), not {symbol!r}"
                    )
    allowed = CRYPTO_CHANNELS if crypto else STOCK_CHANNELS
    return normalize_topics(topics, allowed=allowed, provider=PROVIDER)


# --------------------------------------------------------------------------- provider


def _seconds(name: str, value: object, *, allow_inf: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(f"{PROVIDER}: {name} must be a number of seconds, not {value!r}")
    if not value > 0 or (math.isinf(value) and not allow_inf):
        limit = "a positive number" if allow_inf else "a positive, finite number"
        raise ConfigurationError(f"{PROVIDER}: {name} must be {limit} of seconds, not {value!r}")
    return float(value)


def _size(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigurationError(
            f"{PROVIDER}: {name} must be an integer number of bytes >= {minimum}, not {value!r}"
        )
    return value


def _api_key(value: object) -> str | None:
    if value is None:
        for env in _KEY_ENVS:
            value = os.environ.get(env) or None
            if value is not None:
                break
    if value is not None and (not isinstance(value, str) or not value):
        # Never echo the value: it may be a secret passed in the wrong place.
        raise ConfigurationError(f"{PROVIDER}: key= must be a non-empty string")
    return value


@attrs.frozen(init=False)
class PolygonProvider(WebSocketProvider):
    """Polygon.io / Massive real-time WebSocket (stocks or crypto), ready for ``sup.add``.

    * ``market``: ``"stocks"`` or ``"crypto"`` (the cluster, URL path
      ``/stocks`` or ``/crypto``).
    * ``delayed``: the 15-minute-delayed host (stocks only; crypto is
      real-time only). ``url=`` overrides the endpoint entirely (e.g. the
      legacy ``wss://socket.polygon.io/stocks``, or ``ws://127.0.0.1:PORT/stocks``
      for :func:`puffin_trio.sim.serve_polygon`; plain ``ws://`` only to loopback).
    * ``key``: defaults to ``$MASSIVE_API_KEY``, then ``$POLYGON_API_KEY``. It
      is never shown by ``repr`` and never put in logs or exceptions.
    * ``sequence``: ``"monotonic"`` (Polygon's ``q``: increasing, with holes;
      duplicates and reordering are detected) or ``"strict"`` (contiguous
      numbers, e.g. the simulator's ``sequence="contiguous"``: every hole is
      announced as a ``Gap``).
    * Channels: ``trades``, ``quotes``, ``bars`` (minute: ``AM``/``XA``),
      ``second_bars`` (``A``/``XAS``); stocks add ``lulds``, crypto adds
      ``books`` (``XL2``, decoded as snapshots: see ``docs/guide/providers.rst``).
      Symbols are Polygon's (``"AAPL"``, ``"BTC-USD"``); ``"*"`` subscribes to
      every symbol (``T.*``).

    Timing knobs (seconds), see :class:`~puffin_trio.providers._base.Provider`:

    * ``ping_interval=20``, ``ping_timeout=20``: the massive SDK's (websockets')
      defaults, which the server is used to. Pongs have been reported late
      under heavy server load, so a tighter deadline would tear down busy but
      healthy connections; a truly silent feed is caught by ``stale_after``.
    * ``stale_after=60``: Polygon's SIP feed carries every venue, so a
      subscribed symbol's quotes update many times a minute in market hours,
      and crypto trades around the clock; 60 s finds a silent connection
      within two minutes. ``math.inf`` turns the check off.
    * ``limit_cooldown=90``: after ``max_connections`` the other connection
      must go away first; servers reap a half-dead one only after ~90 s.

    Sizes: ``max_message_size`` (16 MiB) bounds one incoming message and
    ``max_frame_bytes`` (4 KiB) one outgoing subscribe frame; the module
    constants ``DEFAULT_MAX_MESSAGE_SIZE``/``DEFAULT_MAX_FRAME_BYTES`` say why.
    ``name`` is the session's name (events always say ``provider="polygon"``).
    """

    name: ClassVar[str] = PROVIDER

    market: str
    delayed: bool
    url: str
    sequence: Literal["monotonic", "strict"]
    ping_interval: float
    ping_timeout: float
    stale_after: float
    limit_cooldown: float
    max_message_size: int
    max_frame_bytes: int
    session_name: str
    _key: str | None = attrs.field(repr=False)

    def __init__(
        self,
        *,
        market: str = "stocks",
        key: str | None = None,
        delayed: bool = False,
        url: str | None = None,
        sequence: Literal["monotonic", "strict"] = "monotonic",
        ping_interval: float = 20.0,
        ping_timeout: float = 20.0,
        stale_after: float = 60.0,
        limit_cooldown: float = 90.0,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        name: str = PROVIDER,
    ) -> None:
        """Validate everything but the key (see :meth:`check`); raises ConfigurationError."""
        if market not in MARKETS:
            raise ConfigurationError(
                f"{PROVIDER}: unknown market {market!r}; expected one of {', '.join(MARKETS)}"
            )
        if not isinstance(delayed, bool):
            raise ConfigurationError(f"{PROVIDER}: delayed must be True or False")
        if delayed and market == "crypto":
            raise ConfigurationError(
                f"{PROVIDER}: crypto is real-time only; delayed=True exists for stocks"
            )
        if sequence not in ("monotonic", "strict"):
            raise ConfigurationError(
                f"{PROVIDER}: sequence must be 'monotonic' (Polygon's q) or 'strict' "
                f"(contiguous numbers, e.g. the simulator), not {sequence!r}"
            )
        if url is None:
            url = f"wss://{HOSTS['delayed' if delayed else 'realtime']}/{market}"
        elif isinstance(url, str):
            check_ws_url(url)
        else:
            raise ConfigurationError(f"{PROVIDER}: url must be a string, not {url!r}")
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"{PROVIDER}: name must be a non-empty string")
        self.__attrs_init__(
            market=market,
            delayed=delayed,
            url=url,
            sequence=sequence,
            ping_interval=_seconds("ping_interval", ping_interval),
            ping_timeout=_seconds("ping_timeout", ping_timeout),
            stale_after=_seconds("stale_after", stale_after, allow_inf=True),
            limit_cooldown=_seconds("limit_cooldown", limit_cooldown),
            max_message_size=_size("max_message_size", max_message_size, _MIN_MESSAGE_SIZE),
            max_frame_bytes=_size("max_frame_bytes", max_frame_bytes, _MIN_FRAME_BYTES),
            session_name=name,
            key=_api_key(key),
        )

    @property
    def is_crypto(self) -> bool:
        """True for the crypto cluster (order books, fractional sizes, always open)."""
        return self.market == "crypto"

    @property
    def channels(self) -> frozenset[str]:
        """Channel names this cluster accepts."""
        return frozenset(CRYPTO_CHANNELS if self.is_crypto else STOCK_CHANNELS)

    @property
    def calendar(self) -> TradingCalendar:
        """US equity hours (with pre/post-market) for stocks; always open for crypto."""
        from puffin_trio.market_hours import calendar_for

        return calendar_for("crypto" if self.is_crypto else "us_equity")

    def normalize(self, topics: Topics) -> dict[str, frozenset[str]]:
        """Validate ``topics`` for this cluster (``books`` on crypto, ``lulds`` on stocks)."""
        return _normalize(topics, crypto=self.is_crypto)

    def check(self) -> None:
        """Raise :class:`ConfigurationError` if no API key was given or found."""
        if self._key is None:
            raise ConfigurationError(
                f"{PROVIDER}: missing API key: pass key= or set $MASSIVE_API_KEY or "
                "$POLYGON_API_KEY; your key is on the Massive (Polygon.io) dashboard"
            )

    def protocol(self) -> PolygonProtocol:
        """A fresh protocol (strict or monotonic per ``sequence``); raises without a key."""
        self.check()
        assert self._key is not None
        cls = StrictPolygonProtocol if self.sequence == "strict" else PolygonProtocol
        return cls(key=self._key, market=self.market, max_frame_bytes=self.max_frame_bytes)
