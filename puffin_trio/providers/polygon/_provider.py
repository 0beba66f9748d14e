"""Which Polygon/Massive cluster to reach, and how: :class:`PolygonProvider`.

This module owns the Polygon provider's configuration (cluster, real-time or
delayed host, URL, key, sequence mode, timing knobs and sizes), checked when
it is made, and makes a :class:`~puffin_trio.providers.polygon.PolygonProtocol`
for every connection. It must not do I/O, and keeps the key out of every
``repr``, log line and exception.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, ClassVar, Literal

import attrs

from puffin_trio.errors import ConfigurationError
from puffin_trio.providers import _config
from puffin_trio.providers._base import Topics, WebSocketProvider
from puffin_trio.providers.polygon._history import API_URL, PolygonHistory
from puffin_trio.providers.polygon._protocol import PolygonProtocol, StrictPolygonProtocol
from puffin_trio.providers.polygon._wire import (
    CRYPTO_CHANNELS,
    DEFAULT_MAX_FRAME_BYTES,
    DEFAULT_MAX_MESSAGE_SIZE,
    KEY_ENVS,
    MARKETS,
    MIN_FRAME_BYTES,
    PROVIDER,
    STOCK_CHANNELS,
    check_topics,
)

if TYPE_CHECKING:
    from puffin_trio.market_hours import TradingCalendar

__all__ = ["HOSTS", "PolygonProvider"]

#: Real-time and 15-minute-delayed hosts (``socket.polygon.io`` and
#: ``delayed.polygon.io`` before the rebrand; pass ``url=`` to use those).
HOSTS: Mapping[str, str] = {"realtime": "socket.massive.com", "delayed": "delayed.massive.com"}

#: Smallest accepted ``max_message_size``: a status burst confirming a few
#: hundred topics must fit.
_MIN_MESSAGE_SIZE = 64 * 1024

#: What Polygon accepts as a symbol; anything else would be subscribed, never
#: confirmed, and fail the session's subscription deadline after connecting.
#: Stock tickers are case-sensitive (Polygon's own words): upper case, with
#: lower-case CQS suffixes for preferreds and warrants (``"BACpL"``), so their
#: case is kept and a ticker must start upper case or with a digit; at most 16
#: characters (real ones have at most 10). Crypto pairs are ``FROM-TO`` in upper
#: case (``"BTC-USD"``), so they are upper-cased. Any valid topic fits the
#: smallest subscribe frame (``MIN_FRAME_BYTES``).
_STOCK_SYMBOLS = _config.SymbolRule(
    re.compile(r"[A-Z0-9][A-Za-z0-9.\-]{0,15}"),
    "Polygon stock tickers are 1 to 16 letters, digits, '.' or '-', starting with an "
    "upper-case letter or a digit (e.g. 'BRK.A')",
    hints=(
        (re.compile("^[a-z]"), "tickers are case-sensitive: did you mean {upper!r}?"),
        (re.compile("[/:]"), "crypto pairs are on PolygonProvider(market='crypto')"),
    ),
)
_CRYPTO_SYMBOLS = _config.SymbolRule(
    re.compile(r"[A-Z0-9]{1,15}-[A-Z0-9]{1,15}"),
    "Polygon crypto symbols are pairs FROM-TO of up to 15 letters or digits each "
    "(e.g. 'BTC-USD')",
    upper=True,
    hints=((re.compile("^[XxCc]:"), "the crypto cluster's symbols have no 'X:' prefix"),),
)


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

    Backfill (``docs/guide/backfill.rst``): ``backfill="trades"`` recovers a
    reconnect's missing trades from ``/v3/trades`` at ``rest_url``
    (``https://api.massive.com``; ``http://`` only to loopback), matched with
    the stream by ``sequence_number`` (crypto: trade id), holding the live
    trades of those symbols back for at most ``backfill_timeout`` (10 s).

    Sizes: ``max_message_size`` (16 MiB) bounds one incoming message and
    ``max_frame_bytes`` (4 KiB) one outgoing subscribe frame; the module
    constants ``DEFAULT_MAX_MESSAGE_SIZE``/``DEFAULT_MAX_FRAME_BYTES`` say why.
    ``allow_insecure=True`` permits a plain ``ws://`` URL to a host that is
    not loopback (the key then travels in clear). ``name`` is the session's
    name (events always say ``provider="polygon"``).

    Symbols: stock tickers keep their case (they are case-sensitive) and are 1
    to 16 letters, digits, ``.`` or ``-`` starting upper case or with a digit;
    crypto pairs are upper-cased and must read ``FROM-TO``; ``"*"`` is every
    symbol. Anything else is a ConfigurationError at ``sup.add``.
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
    allow_insecure: bool
    session_name: str
    backfill: Literal["trades"] | None
    backfill_timeout: float
    rest_url: str
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
        allow_insecure: bool = False,
        name: str = PROVIDER,
        backfill: Literal["trades"] | None = None,
        backfill_timeout: float = 10.0,
        rest_url: str = API_URL,
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
        allow_insecure = _config.flag(PROVIDER, "allow_insecure", allow_insecure)
        if url is None:
            url = f"wss://{HOSTS['delayed' if delayed else 'realtime']}/{market}"
        self.__attrs_init__(
            market=market,
            delayed=delayed,
            url=_config.websocket_url(PROVIDER, url, allow_insecure=allow_insecure),
            sequence=sequence,
            **_config.timing(
                PROVIDER,
                ping_interval=ping_interval,
                ping_timeout=ping_timeout,
                stale_after=stale_after,
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
            rest_url=_config.rest_url(PROVIDER, rest_url, allow_insecure=allow_insecure),
            key=_config.credential(PROVIDER, key, KEY_ENVS, "key"),
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
        """Validate ``topics`` for this cluster (``books`` on crypto, ``lulds`` on stocks)
        and its symbols (see the class docstring)."""
        rule = _CRYPTO_SYMBOLS if self.is_crypto else _STOCK_SYMBOLS
        return _config.check_symbols(PROVIDER, check_topics(topics, crypto=self.is_crypto), rule)

    def check(self) -> None:
        """Raise :class:`ConfigurationError` if no API key was given or found."""
        if self._key is None:
            raise ConfigurationError(
                f"{PROVIDER}: missing API key: pass key= or set $MASSIVE_API_KEY or "
                "$POLYGON_API_KEY; your key is on the Massive (Polygon.io) dashboard"
            )

    def history(self) -> PolygonHistory:
        """``/v3/trades`` at ``rest_url`` for this cluster (backfills)."""
        self.check()
        assert self._key is not None
        return PolygonHistory(
            key=self._key,
            base_url=self.rest_url,
            market=self.market,
            contiguous=self.sequence == "strict",
        )

    def protocol(self) -> PolygonProtocol:
        """A fresh protocol (strict or monotonic per ``sequence``); raises without a key."""
        self.check()
        assert self._key is not None
        cls = StrictPolygonProtocol if self.sequence == "strict" else PolygonProtocol
        return cls(key=self._key, market=self.market, max_frame_bytes=self.max_frame_bytes)
