"""Which Alpaca stream to reach, and how: :class:`AlpacaProvider`.

This module owns the Alpaca provider's configuration (feed, URL, encoding,
credentials, timing knobs and sizes), checked when it is made, and makes an
:class:`~puffin_trio.providers.alpaca.AlpacaProtocol` for every connection.
It must not do I/O, and keeps the credentials out of every ``repr``, log line
and exception.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, ClassVar, Literal

import attrs

from puffin_trio.errors import ConfigurationError
from puffin_trio.providers import _config
from puffin_trio.providers._base import Topics, WebSocketProvider
from puffin_trio.providers.alpaca._history import DATA_URL, SANDBOX_DATA_URL, AlpacaHistory
from puffin_trio.providers.alpaca._protocol import AlpacaProtocol
from puffin_trio.providers.alpaca._wire import (
    CRYPTO_CHANNELS,
    DEFAULT_MAX_FRAME_BYTES,
    DEFAULT_MAX_MESSAGE_SIZE,
    KEY_ENV,
    MIN_FRAME_BYTES,
    PROVIDER,
    SECRET_ENV,
    STOCK_CHANNELS,
    check_topics,
)

if TYPE_CHECKING:
    from puffin_trio.market_hours import TradingCalendar

__all__ = ["CRYPTO_LOCATIONS", "FEEDS", "AlpacaProvider"]

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

#: What Alpaca accepts as a symbol; its server answers anything else with 400
#: "invalid syntax", a fatal error found only after connecting. Alpaca's
#: symbols are all upper case, so a symbol is upper-cased first (``"brk.b"``
#: subscribes ``"BRK.B"``, and its events say ``"BRK.B"``). Stocks: a root of
#: at most 5 letters plus a class or warrant suffix (``"BRK.B"``); 16
#: characters leave room for any listed symbol, and any symbol fits the
#: smallest subscribe frame (``MIN_FRAME_BYTES``). Crypto: ``BASE/QUOTE``.
_STOCK_SYMBOLS = _config.SymbolRule(
    re.compile(r"[A-Z0-9][A-Z0-9.\-]{0,15}"),
    "Alpaca stock symbols are 1 to 16 letters, digits, '.' or '-' (e.g. 'BRK.B')",
    upper=True,
    hints=((re.compile("/"), "crypto pairs are on AlpacaProvider(feed='crypto')"),),
)
_CRYPTO_SYMBOLS = _config.SymbolRule(
    re.compile(r"[A-Z0-9]{1,15}/[A-Z0-9]{1,15}"),
    "Alpaca crypto symbols are pairs BASE/QUOTE of up to 15 letters or digits each "
    "(e.g. 'BTC/USD')",
    upper=True,
    hints=((re.compile("^[^/]+-[^/]+$"), "Alpaca writes pairs with a slash, not a dash"),),
)


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

    Backfill (``docs/guide/backfill.rst``): ``backfill="trades"`` recovers a
    reconnect's missing trades from Alpaca's historical API at ``rest_url``
    (``https://data.alpaca.markets``, the sandbox's with ``sandbox=True``;
    ``http://`` only to loopback, e.g. the simulator's port), holding the
    live trades of those symbols back for at most ``backfill_timeout`` (10 s).
    The test stream has no history.

    Sizes: ``max_message_size`` (16 MiB) bounds one incoming message and
    ``max_frame_bytes`` (4 KiB) one outgoing subscribe frame; the module
    constants ``DEFAULT_MAX_MESSAGE_SIZE``/``DEFAULT_MAX_FRAME_BYTES`` say why.
    ``allow_insecure=True`` permits a plain ``ws://`` URL to a host that is
    not loopback (the key then travels in clear). ``name`` is the session's
    name (events always say ``provider="alpaca"``).

    Symbols are upper-cased, then must be 1 to 16 letters, digits, ``.`` or
    ``-`` on stock feeds (``"BRK.B"``), or ``BASE/QUOTE`` on the crypto feed
    (``"BTC/USD"``); ``"*"`` is every symbol. Anything else is a
    ConfigurationError at ``sup.add``.
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
    allow_insecure: bool
    session_name: str
    backfill: Literal["trades"] | None
    backfill_timeout: float
    rest_url: str
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
        allow_insecure: bool = False,
        name: str = PROVIDER,
        backfill: Literal["trades"] | None = None,
        backfill_timeout: float = 10.0,
        rest_url: str | None = None,
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
        allow_insecure = _config.flag(PROVIDER, "allow_insecure", allow_insecure)
        if backfill is not None and feed == "test":
            raise ConfigurationError(
                f"{PROVIDER}: the test stream has no historical trades; use backfill=None"
            )
        default_rest = SANDBOX_DATA_URL if sandbox else DATA_URL
        if url is None:
            host = _SANDBOX_HOST if sandbox else _HOST
            path = FEEDS[feed] + (crypto_location if feed == "crypto" else "")
            url = f"wss://{host}{path}"
        self.__attrs_init__(
            feed=feed,
            url=_config.websocket_url(PROVIDER, url, allow_insecure=allow_insecure),
            encoding=encoding,
            crypto_location=crypto_location,
            sandbox=sandbox,
            **_config.timing(
                PROVIDER,
                ping_interval=ping_interval,
                ping_timeout=ping_timeout,
                stale_after=_STALE_AFTER[feed] if stale_after is None else stale_after,
                limit_cooldown=limit_cooldown,
            ),
            max_message_size=_config.byte_size(
                PROVIDER, "max_message_size", max_message_size, _MIN_MESSAGE_SIZE
            ),
            max_frame_bytes=_config.byte_size(
                PROVIDER, "max_frame_bytes", max_frame_bytes, MIN_FRAME_BYTES
            ),
            allow_insecure=allow_insecure,
            session_name=_config.session_name(PROVIDER, name),
            **_config.backfill(PROVIDER, backfill=backfill, backfill_timeout=backfill_timeout),
            rest_url=_config.rest_url(
                PROVIDER, rest_url or default_rest, allow_insecure=allow_insecure
            ),
            key=_config.credential(PROVIDER, key, (KEY_ENV,), "key"),
            secret=_config.credential(PROVIDER, secret, (SECRET_ENV,), "secret"),
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
        """Validate ``topics`` for this feed (``books`` on crypto, ``lulds`` on stocks only)
        and its symbols (upper-cased; see the class docstring)."""
        rule = _CRYPTO_SYMBOLS if self.is_crypto else _STOCK_SYMBOLS
        return _config.check_symbols(PROVIDER, check_topics(topics, crypto=self.is_crypto), rule)

    def check(self) -> None:
        """Raise :class:`ConfigurationError` if the key or secret is missing."""
        missing = [
            f"{argument}= (or ${env})"
            for argument, env, value in (
                ("key", KEY_ENV, self._key),
                ("secret", SECRET_ENV, self._secret),
            )
            if value is None
        ]
        if missing:
            raise ConfigurationError(
                f"{PROVIDER}: missing credentials: pass {' and '.join(missing)}; "
                "your API keys are on the Alpaca dashboard"
            )

    def history(self) -> AlpacaHistory:
        """Alpaca's historical trades at ``rest_url`` for this feed (backfills)."""
        self.check()
        assert self._key is not None and self._secret is not None
        return AlpacaHistory(
            key=self._key,
            secret=self._secret,
            base_url=self.rest_url,
            feed=self.feed,
            crypto_location=self.crypto_location if self.is_crypto else None,
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
