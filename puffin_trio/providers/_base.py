"""What every provider gives the session: configuration plus a sans-IO protocol.

This module owns the contract between a provider (Alpaca, Polygon, IB) and
the generic :mod:`puffin_trio.session`:

* :class:`Provider` is the user-facing configuration object
  (``AlpacaProvider(feed="iex")``): credentials, URL, timing knobs, which
  channels exist. It validates itself before any connection is attempted and
  makes a fresh :class:`ProviderProtocol` for every connection.
* :class:`ProviderProtocol` is the per-connection sans-IO state machine, in
  the manner of h11/wsproto: frames in, events and control items out, frames
  to send queued in an outbox. It never touches a socket or a clock.
* The control items (:class:`Connected`, :class:`Authenticated`, ...) tell
  the session where the handshake stands and what went wrong.

It must not do I/O.

The session drives a protocol like this::

    proto = provider.protocol()
    send(proto.data_to_send())              # e.g. IB's API prologue; Alpaca: nothing
    for frame in frames:                    # from the transport
        for item in proto.receive(frame, ts_recv):
            ...                             # events -> guard -> fan-out; controls -> session
        send(proto.data_to_send())          # e.g. the auth message after "connected"
    proto.subscribe({"trades": ["AAPL"]})   # queues subscribe frames, split under the size limit
"""

from __future__ import annotations

import abc
import reprlib
from collections.abc import Callable, Collection, Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import attrs

from puffin_trio.errors import ConfigurationError, ProviderError
from puffin_trio.events import Event, Trade
from puffin_trio.guard import GuardMode
from puffin_trio.providers._history import RestHistory, SeamRule
from puffin_trio.transports._base import Frame, WsTransportName

if TYPE_CHECKING:
    from puffin_trio.market_hours import TradingCalendar
    from puffin_trio.transports import Transport

__all__ = [
    "GENERIC_CHANNELS",
    "MESSAGE_ERRORS",
    "Authenticated",
    "Connected",
    "Control",
    "Frame",
    "HeartbeatReply",
    "HistoryReply",
    "Malformed",
    "Message",
    "MessageHandler",
    "Provider",
    "ProviderFailure",
    "ProviderNotice",
    "ProviderProtocol",
    "SubscriptionAck",
    "Topics",
    "UnknownMessage",
    "WebSocketProvider",
    "decode_messages",
    "malformed_message",
    "normalize_topics",
    "notice_text",
    "sample_of",
    "truncate_sample",
    "unhandled_message",
]

#: A message of a JSON/msgpack array frame, and what decodes one of a given type.
Message = dict[str, Any]
MessageHandler = Callable[[Message, int], "Event | Control"]
#: What a handler raises on a missing or wrong-typed field (``int(inf)`` is an
#: OverflowError; a book level of the wrong length a ValueError). RecursionError
#: too: a message can nest as deep as the parsers allow (about 1000 levels for
#: orjson and msgpack), deeper than the interpreter can walk at its default
#: recursion limit, and such a message is malformed, not a reason to drop the
#: connection.
MESSAGE_ERRORS = (
    KeyError,
    TypeError,
    ValueError,
    OverflowError,
    AttributeError,
    IndexError,
    RecursionError,
)

#: Subscriptions: channel name -> symbols (``{"trades": {"AAPL"}, "quotes": {"AAPL", "MSFT"}}``).
Topics = Mapping[str, Collection[str]]

#: The channel names every provider understands (``sup.add(p, trades=..., quotes=...)``).
GENERIC_CHANNELS: frozenset[str] = frozenset({"trades", "quotes", "books", "bars"})

#: Longest sample of a bad frame kept for logs and statistics (bytes/characters).
SAMPLE_LIMIT = 200


def truncate_sample(frame: Frame, limit: int = SAMPLE_LIMIT) -> str:
    """A printable, bounded sample of a frame for logs (never the whole thing)."""
    text = frame if isinstance(frame, str) else repr(frame)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


#: ``repr`` with every dimension bounded, for samples of parsed messages: a
#: message from the wire may be nested ~1000 deep (where the builtin ``repr``
#: raises RecursionError) or hold megabytes; four levels and a few items of
#: each container say what it was.
_SAMPLE_REPR = reprlib.Repr()
_SAMPLE_REPR.maxlevel = 4
_SAMPLE_REPR.maxdict = _SAMPLE_REPR.maxlist = _SAMPLE_REPR.maxtuple = 12
_SAMPLE_REPR.maxstring = _SAMPLE_REPR.maxother = _SAMPLE_REPR.maxlong = 80


def sample_of(value: object) -> str:
    """A bounded, printable sample of a parsed wire value, whatever its shape or depth."""
    return truncate_sample(_SAMPLE_REPR.repr(value))


def notice_text(value: object) -> str:
    """A wire value shown in a notice or an error (a status text, an error message), bounded.

    A string is kept (truncated past :data:`SAMPLE_LIMIT`); ``None`` is ``""``;
    anything else is shown as :func:`sample_of` shows it.
    """
    if type(value) is str:
        return truncate_sample(value)
    if value is None:
        return ""
    return sample_of(value)


def unhandled_message(message: object, type_field: str, what: str) -> Malformed | UnknownMessage:
    """What to report for a message no handler takes: not a map, no usable type, or unknown.

    ``type_field`` is the key holding the message type (Alpaca ``"T"``,
    Polygon ``"ev"``); ``what`` names it in the reason (``"type"``).
    """
    sample = sample_of(message)
    if type(message) is not dict:
        return Malformed("message is not a map", sample)
    kind = message.get(type_field)
    if kind is None:
        return Malformed(f"message has no {type_field!r} ({what}) field", sample)
    if type(kind) is not str:
        return Malformed(f"{what} {type_field!r} is not a string", sample)
    return UnknownMessage(truncate_sample(kind))


def decode_messages(
    messages: object,
    frame: Frame,
    handlers: Mapping[str, MessageHandler],
    type_field: str,
    what: str,
    ts_recv: int,
) -> list[Event | Control]:
    """Decode a frame's parsed array, each message by the handler of its type, in wire order.

    The shape Alpaca's and Polygon's streams share: a frame is an array of
    maps whose ``type_field`` (``"T"``, ``"ev"``) says what each is. A frame
    that is not an array gives one :class:`Malformed`; within it, a message no
    handler takes gives :class:`Malformed` or :class:`UnknownMessage`
    (:func:`unhandled_message`), one whose fields do not parse
    :class:`Malformed` (:func:`malformed_message`), and the others still
    decode. Never raises on bad input. Hot path: one call per frame.
    """
    if type(messages) is not list:
        return [Malformed("frame is not an array of messages", truncate_sample(frame))]
    out: list[Event | Control] = []
    append = out.append
    for message in messages:
        try:
            handler = handlers[message[type_field]]
        except (KeyError, TypeError):
            append(unhandled_message(message, type_field, what))
            continue
        try:
            append(handler(message, ts_recv))
        except MESSAGE_ERRORS as exc:
            append(malformed_message(message, exc, type_field))
    return out


def malformed_message(message: Mapping[str, object], exc: Exception, type_field: str) -> Malformed:
    """A data message whose fields did not parse (``exc`` from the handler)."""
    kind = message[type_field]
    if isinstance(exc, KeyError):
        reason = f"{kind!r} message lacks field {exc}"
    elif isinstance(exc, RecursionError):
        reason = f"{kind!r} message is nested too deep"
    else:
        reason = f"{kind!r} message has a bad field: {exc}"
    return Malformed(truncate_sample(reason), sample_of(message))


# --------------------------------------------------------------------------- control items


@attrs.frozen
class Connected:
    """The server said hello (Alpaca ``success/connected``, IB handshake reply)."""

    detail: str = ""


@attrs.frozen
class Authenticated:
    """The server accepted the credentials (or, for IB, the API session started)."""

    detail: str = ""


@attrs.frozen
class SubscriptionAck:
    """The server confirmed subscriptions.

    ``topics`` is what the message says is subscribed. ``complete=True`` means it
    is the *entire* current set (Alpaca's ``subscription`` message); ``False``
    means it confirms only the topics listed (Polygon sends one per topic).
    ``removed=True`` (with ``complete=False``) confirms that the topics listed
    are no longer subscribed (Polygon's ``unsubscribed to: ...``).
    """

    topics: Mapping[str, frozenset[str]]
    complete: bool
    removed: bool = False


@attrs.frozen
class HeartbeatReply:
    """An application-level heartbeat answer (IB ``currentTime``)."""

    server_time_ns: int = 0


@attrs.frozen
class ProviderNotice:
    """Informational server message (IB farm status 2104, Alpaca unsubscribe notes, ...).

    ``stale``: ``True`` if the notice means data may have stopped (IB 1100,
    2103), ``False`` if it means data is flowing again, ``None`` if neither.
    ``resubscribe``: the session should re-send every subscription (IB 1101).
    """

    code: int | str
    message: str
    stale: bool | None = None
    resubscribe: bool = False


@attrs.frozen
class ProviderFailure:
    """The server reported an error. The session raises ``error`` (typed fatal/transient).

    ``symbol``/``channel`` are set when the error concerns one subscription only
    (IB 200 for one reqId): then the session drops that subscription instead of
    failing the connection.
    """

    error: ProviderError
    channel: str = ""
    symbol: str = ""


@attrs.frozen
class HistoryReply:
    """An in-band answer to :meth:`ProviderProtocol.request_history` (IB ``historicalTicksLast``).

    ``trades`` (flagged ``backfilled``) in time order; ``done`` is True on the
    request's last answer; ``error`` is set (and ``done``) if the provider
    refused or failed the request; ``malformed`` counts rows that did not parse.
    """

    request_id: int
    trades: tuple[Trade, ...] = ()
    done: bool = True
    error: ProviderError | None = None
    malformed: int = 0


@attrs.frozen
class Malformed:
    """A frame (or one message inside it) could not be parsed; counted and logged truncated."""

    reason: str
    sample: str


@attrs.frozen
class UnknownMessage:
    """A well-formed message of a type we do not know; ignored and counted."""

    kind: str


#: Every item a protocol's ``receive`` returns besides events: what the session acts on.
Control = (
    Connected
    | Authenticated
    | SubscriptionAck
    | HeartbeatReply
    | ProviderNotice
    | ProviderFailure
    | HistoryReply
    | Malformed
    | UnknownMessage
)


# --------------------------------------------------------------------------- protocol


class ProviderProtocol(abc.ABC):
    """Per-connection sans-IO protocol state. Make a new one for every connection.

    It declares no instance attributes (``__slots__ = ()``), so a subclass
    that lists its own ``__slots__`` gets instances without a ``__dict__``.
    """

    __slots__ = ()

    #: True if the server confirms subscriptions (Alpaca, Polygon); IB does not.
    confirms_subscriptions: ClassVar[bool] = True
    #: Sequence guard mode for this provider's streams (see :mod:`puffin_trio.guard`).
    guard_mode: ClassVar[GuardMode] = "none"

    @abc.abstractmethod
    def receive(self, frame: Frame, ts_recv: int) -> list[Event | Control]:
        """Decode one received frame into events and control items, in wire order.

        Never raises on bad input: a malformed frame becomes :class:`Malformed`,
        an unknown message type :class:`UnknownMessage`, a server error
        :class:`ProviderFailure`. May queue frames to send (e.g. the auth message
        after the server's hello); collect them with :meth:`data_to_send`.
        """

    @abc.abstractmethod
    def data_to_send(self) -> list[Frame]:
        """Frames queued for sending, in order; the queue is emptied."""

    @abc.abstractmethod
    def subscribe(self, topics: Topics) -> None:
        """Queue frames that add ``topics`` (split to stay under the provider's size limit)."""

    @abc.abstractmethod
    def unsubscribe(self, topics: Topics) -> None:
        """Queue frames that remove ``topics``."""

    def heartbeat(self) -> bool:
        """Queue an application-level heartbeat request; False if the provider has none.

        WebSocket providers return False: the session uses WebSocket ping/pong.
        """
        return False

    #: Most trades one in-band historical request returns (IB: 1 000); 0 when the
    #: protocol has none and backfills go through the provider's REST ``history()``.
    history_limit: ClassVar[int] = 0
    #: How in-band historical trades meet live ones (only with a ``history_limit``).
    history_seam: ClassVar[SeamRule] = SeamRule()

    def request_history(self, symbol: str, start_ns: int) -> int:
        """Queue an in-band request for up to :attr:`history_limit` trades of ``symbol``
        from ``start_ns`` (provider time) on; returns its request id, which the
        answers (:class:`HistoryReply`) carry. Only protocols with a ``history_limit``."""
        raise NotImplementedError(f"{type(self).__name__} has no in-band history")

    def stream_key(self, event: Event) -> str:
        """The sequence-guard key of an event (only used when ``guard_mode != "none"``).

        For trades, quotes and books it must depend on the event's class and
        symbol only: the session computes it once per (class, symbol) stream
        and keeps it with that stream's liveness (see ``_liveness.Stream``).
        """
        return f"{type(event).__name__}:{event.symbol}"


# --------------------------------------------------------------------------- provider


def normalize_topics(
    topics: Topics, *, allowed: Collection[str], provider: str
) -> dict[str, frozenset[str]]:
    """Validate channel names and symbols; return a clean ``channel -> frozenset`` mapping.

    Raises :class:`ConfigurationError` for an unknown channel, a symbol that is
    not a non-empty string without whitespace or commas, or anything but a
    collection of symbols where one was meant: a bare string
    (``trades="AAPL"`` would otherwise subscribe to ``A``, ``P`` and ``L``),
    ``None`` or a number.
    """
    clean: dict[str, frozenset[str]] = {}
    for channel, symbols in topics.items():
        if channel not in allowed:
            raise ConfigurationError(
                f"{provider}: unknown channel {channel!r}; "
                f"expected one of {', '.join(sorted(allowed))}"
            )
        if isinstance(symbols, str | bytes):
            raise ConfigurationError(
                f"{provider}: {channel}= takes a list of symbols, not the string {symbols!r}; "
                f"write {channel}=[{symbols!r}]"
            )
        if not isinstance(symbols, Iterable):
            raise ConfigurationError(
                f"{provider}: {channel}= takes a list of symbols, not {symbols!r}; "
                f"write {channel}=['AAPL', ...], or leave it out"
            )
        out = set()
        for symbol in symbols:
            if (
                not isinstance(symbol, str)
                or not symbol
                or symbol != symbol.strip()
                or any(c in symbol for c in ", \t\r\n")
            ):
                raise ConfigurationError(
                    f"{provider}: bad symbol {symbol!r} in {channel}=; "
                    "symbols are non-empty strings without spaces or commas"
                )
            out.add(symbol)
        if out:
            clean[channel] = frozenset(out)
    return clean


class Provider(abc.ABC):
    """A provider's configuration. Subclasses: AlpacaProvider, PolygonProvider, IBProvider.

    Timing knobs (seconds) every provider takes as keyword arguments:

    * ``ping_interval``: time between heartbeats.
    * ``ping_timeout``: deadline for the heartbeat's answer (WebSocket pong, or
      IB's ``reqCurrentTime`` reply); missing it restarts the session, unless
      data kept arriving meanwhile (a slow link is not a dead one).
    * ``stale_after``: a subscription silent this long during its market
      session is resubscribed, and if it stays silent as long again, the
      session reconnects.
    * ``limit_cooldown``: wait before reconnecting after a connection-limit
      error (the servers reap a dead session only after ~90 s).

    And the backfill options (``docs/guide/backfill.rst``): ``backfill``
    (``None``, the default, or ``"trades"``: after a reconnect, the trades of
    the outage window are recovered from the provider's historical API and
    delivered in order before the live ones) and ``backfill_timeout`` (the
    longest the live trades of a backfilled symbol are held back).
    """

    #: Provider name used in events and ``sup.subscribe(name, ...)``.
    name: ClassVar[str]

    ping_interval: float
    ping_timeout: float
    stale_after: float
    limit_cooldown: float
    backfill: Literal["trades"] | None
    backfill_timeout: float

    @property
    @abc.abstractmethod
    def channels(self) -> frozenset[str]:
        """Channel names this provider accepts (the generic four plus its own)."""

    @property
    @abc.abstractmethod
    def calendar(self) -> TradingCalendar:
        """Market calendar used to decide whether silence is suspicious."""

    @property
    def session_name(self) -> str:
        """Default name of a session of this provider (``sup.add(..., name=...)`` overrides)."""
        return self.name

    @abc.abstractmethod
    def check(self) -> None:
        """Raise :class:`ConfigurationError` if the provider cannot connect as configured
        (missing credentials, bad URL). Called by ``sup.add`` before any connection."""

    @abc.abstractmethod
    def protocol(self) -> ProviderProtocol:
        """A fresh sans-IO protocol for a new connection."""

    @abc.abstractmethod
    def open_transport(self) -> AbstractAsyncContextManager[Transport]:
        """Open a connection to the provider for the duration of an ``async with`` block.

        Raises :class:`~puffin_trio.errors.ConnectionLost` if it cannot be opened.
        """

    def normalize(self, topics: Topics) -> dict[str, frozenset[str]]:
        """Validate ``topics`` against this provider's channels."""
        return normalize_topics(topics, allowed=self.channels, provider=self.name)

    def history(self) -> RestHistory | None:
        """The provider's REST historical trades API (sans-IO), for backfills; ``None``
        when they go in-band, through the stream's own protocol (IB). Raises
        ConfigurationError without credentials."""
        return None


class WebSocketProvider(Provider):
    """A provider reached over WebSocket (Alpaca, Polygon).

    ``url`` is the full endpoint (``wss://...`` for the real service; plain
    ``ws://`` is accepted for loopback and the simulators, and for any host
    with ``allow_insecure=True``). ``max_message_size`` bounds one incoming
    message: the connection is closed (1009) if the server sends more.
    ``transport`` names the WebSocket library: ``"websockets"`` (the
    default) or ``"trio-websocket"`` (see :mod:`puffin_trio.transports.ws`);
    ``compression`` offers permessage-deflate (``None``: the transport's
    default, on for websockets; trio-websocket has none).
    """

    url: str
    max_message_size: int
    transport: WsTransportName
    compression: bool | None
    allow_insecure: bool

    def headers(self) -> list[tuple[str, str]]:
        """Extra HTTP headers for the upgrade request (e.g. Alpaca's Content-Type)."""
        return []

    def open_transport(self) -> AbstractAsyncContextManager[Transport]:
        """A tuned WebSocket connection to ``url`` (see :mod:`puffin_trio.transports.ws`)."""
        from puffin_trio.transports.ws import open_ws_transport

        return open_ws_transport(
            self.url,
            transport=self.transport,
            headers=self.headers(),
            max_message_size=self.max_message_size,
            allow_insecure=self.allow_insecure,
            compression=self.compression,
        )
