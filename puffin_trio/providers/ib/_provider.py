"""How to reach TWS and what to ask it for: :class:`IBProvider`.

This module owns the IB provider's configuration (host, port, client id,
channel tuning, contracts, timing knobs and limits), checked when it is made,
and makes an :class:`~puffin_trio.providers.ib.IBProtocol` for every
connection. It must not do I/O: the transport is imported only when a
connection is opened.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, ClassVar, Literal

import attrs

from puffin_trio.errors import ConfigurationError
from puffin_trio.providers import _config
from puffin_trio.providers._base import GENERIC_CHANNELS, Provider, Topics
from puffin_trio.providers.ib._framing import DEFAULT_MAX_FRAME_SIZE
from puffin_trio.providers.ib._protocol import IBProtocol, check_topics
from puffin_trio.providers.ib._wire import (
    DEFAULT_CLIENT_ID,
    DEFAULT_DEPTH_ROWS,
    MAX_INT,
    PROVIDER,
    IBContract,
)

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager

    from puffin_trio.market_hours import TradingCalendar
    from puffin_trio.transports import Transport

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_MAX_MESSAGES_PER_SECOND",
    "DEFAULT_PORT",
    "PORTS",
    "IBProvider",
]

#: TWS and IB Gateway API ports, as installed.
PORTS: Mapping[str, int] = {
    "tws_live": 7496,
    "tws_paper": 7497,
    "gateway_live": 4001,
    "gateway_paper": 4002,
}
DEFAULT_HOST = "127.0.0.1"
#: TWS paper trading: the safe default (a mistake there costs nothing).
DEFAULT_PORT = PORTS["tws_paper"]
#: Outgoing messages per second. TWS allows 50 (counting every message type)
#: and answers more with error 100, possibly followed by a disconnect;
#: ib_async throttles at 45, leaving 10 % for timing jitter between our count
#: and TWS's (it counts on arrival, and the network can bunch messages).
DEFAULT_MAX_MESSAGES_PER_SECOND = 45
_MAX_MESSAGES_PER_SECOND = 50
_ENV_HOST = "IB_HOST"
_ENV_PORT = "IB_PORT"
_ENV_CLIENT_ID = "IB_CLIENT_ID"

#: What IB accepts as a symbol: printable ASCII without spaces or commas, at
#: most 32 characters, case kept (a ``contracts=`` key is your own name for a
#: contract; TWS itself matches plain stock symbols). TWS's longest symbols,
#: OCC option local symbols, have 21 characters. There is no wildcard: every
#: IB subscription is one contract's request.
_SYMBOLS = _config.SymbolRule(
    re.compile(r"[!-~]{1,32}"),
    "IB symbols are 1 to 32 printable ASCII characters without spaces or commas "
    "(map longer or other names to an IBContract with contracts=)",
    wildcard=False,
)

_CONNECT_HINT = (
    "is TWS or IB Gateway running, with the API enabled (Global Configuration > API > "
    "Settings) on this port? Defaults: 7496/7497 TWS live/paper, 4001/4002 Gateway live/paper"
)


@attrs.frozen(init=False)
class IBProvider(Provider):
    """Interactive Brokers market data through TWS or IB Gateway, ready for ``sup.add``.

    * ``host`` / ``port`` / ``client_id``: where TWS listens and which API
      client we are. Defaults: ``$IB_HOST`` or ``127.0.0.1``; ``$IB_PORT`` or
      7497. Ports as installed: 7496 TWS live, 7497 TWS paper, 4001 IB Gateway
      live, 4002 Gateway paper (see :data:`PORTS`). ``client_id``:
      ``$IB_CLIENT_ID`` or 1 (ib_async's default, so pick another if an
      ib_async program runs alongside): each API client of one TWS needs its
      own, and a taken one is refused with error 326, which is fatal here.
      The TWS API is plain TCP without encryption or login (TWS is already
      logged in and only accepts its trusted IPs): keep it on the same host
      or a trusted LAN.
    * Channels ``trades``, ``quotes``, ``books``, ``bars`` (see
      ``docs/guide/ib.rst`` for the request behind each), tuned by ``trade_ticks``
      (``"AllLast"``/``"Last"``), ``quotes_via`` (``"mktdata"``/
      ``"tick_by_tick"``) and ``depth_rows`` (10).
    * ``contracts``: symbol -> :class:`IBContract` for symbols that are not
      plain SMART-routed US stocks in USD, or to pin ``con_id`` /
      ``primary_exchange``. Other symbols are sent as ``IBContract(symbol)``.
      Symbols (and ``contracts`` keys) are 1 to 32 printable ASCII characters
      without spaces or commas, kept as given; there is no ``"*"``.
    * ``market_data_type``: 1 live (default), 2 frozen, 3 delayed, 4 delayed
      frozen (``reqMarketDataType``; 3 gives paper accounts without market
      data subscriptions delayed quotes).

    Timing knobs (seconds), see :class:`~puffin_trio.providers._base.Provider`:

    * ``ping_interval=10``, ``ping_timeout=10``: TWS sends nothing on an idle
      connection, so ``reqCurrentTime`` is the heartbeat. TWS answers from its
      own clock within milliseconds, but it is a Java desktop application
      whose garbage-collection and UI pauses run to seconds; 10 s rides those
      out and still finds a dead TWS within 20 s (ib_async's Watchdog
      ``appTimeout`` is also 20 s).
    * ``stale_after=120``: SMART-routed US stock data is consolidated across
      venues, so a listed stock quotes many times a minute; 120 s spares thin
      names while finding a silent subscription within four minutes.
    * ``limit_cooldown=60``: used only after a
      :class:`~puffin_trio.errors.ConnectionLimitError`; TWS sends no such
      error (a taken client id is fatal instead), so it is here for the
      common provider interface.
    * ``connect_timeout=10``: see ``DEFAULT_CONNECT_TIMEOUT`` in
      :mod:`puffin_trio.transports.tcp`.

    Backfill (``docs/guide/backfill.rst``): ``backfill="trades"`` recovers a
    reconnect's missing trades with ``reqHistoricalTicks`` over the same
    connection (1 000 per request, paced as IB requires), matched with the
    live ones by time, price and size, holding the live trades of those
    symbols back for at most ``backfill_timeout`` (10 s).

    Limits: ``max_messages_per_second=45`` paces every outgoing message in
    the transport (TWS allows 50; see
    :data:`DEFAULT_MAX_MESSAGES_PER_SECOND`), so subscribing 300 topics
    takes about 7 s; ``max_frame_size`` bounds one incoming message
    (0xFFFFFF, ibapi's own limit). ``name`` is the session's name (events
    always say ``provider="ib"``).
    """

    name: ClassVar[str] = PROVIDER

    host: str
    port: int
    client_id: int
    trade_ticks: Literal["AllLast", "Last"]
    quotes_via: Literal["mktdata", "tick_by_tick"]
    depth_rows: int
    market_data_type: int
    contracts: Mapping[str, IBContract] = attrs.field(hash=False)
    ping_interval: float
    ping_timeout: float
    stale_after: float
    limit_cooldown: float
    connect_timeout: float
    max_frame_size: int
    max_messages_per_second: int
    session_name: str
    backfill: Literal["trades"] | None
    backfill_timeout: float

    def __init__(
        self,
        host: str | None = None,
        port: int | None = None,
        client_id: int | None = None,
        *,
        trade_ticks: Literal["AllLast", "Last"] = "AllLast",
        quotes_via: Literal["mktdata", "tick_by_tick"] = "mktdata",
        depth_rows: int = DEFAULT_DEPTH_ROWS,
        market_data_type: int = 1,
        contracts: Mapping[str, IBContract] | None = None,
        ping_interval: float = 10.0,
        ping_timeout: float = 10.0,
        stale_after: float = 120.0,
        limit_cooldown: float = 60.0,
        connect_timeout: float = 10.0,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        max_messages_per_second: int = DEFAULT_MAX_MESSAGES_PER_SECOND,
        name: str = PROVIDER,
        backfill: Literal["trades"] | None = None,
        backfill_timeout: float = 10.0,
    ) -> None:
        """Validate everything (IB needs no credentials); raises ConfigurationError."""
        if host is None:
            host = os.environ.get(_ENV_HOST) or DEFAULT_HOST
        if not isinstance(host, str) or not host or host != host.strip():
            raise ConfigurationError(f"{PROVIDER}: host must be a host name or address")
        port_value: object = port if port is not None else os.environ.get(_ENV_PORT) or DEFAULT_PORT
        client_value: object = client_id
        if client_id is None:
            client_value = os.environ.get(_ENV_CLIENT_ID) or DEFAULT_CLIENT_ID
        if trade_ticks not in ("AllLast", "Last"):
            raise ConfigurationError(
                f"{PROVIDER}: trade_ticks must be 'AllLast' or 'Last', not {trade_ticks!r}"
            )
        if quotes_via not in ("mktdata", "tick_by_tick"):
            raise ConfigurationError(
                f"{PROVIDER}: quotes_via must be 'mktdata' or 'tick_by_tick', not {quotes_via!r}"
            )
        checked: dict[str, IBContract] = {}
        for symbol, contract in (contracts or {}).items():
            if not isinstance(contract, IBContract):
                raise ConfigurationError(
                    f"{PROVIDER}: contracts[{symbol!r}] must be an IBContract, not {contract!r}"
                )
            check_topics({"trades": [symbol]})
            checked[_SYMBOLS.check(PROVIDER, "contracts", symbol)] = contract
        self.__attrs_init__(
            host=host,
            port=_config.integer(PROVIDER, "port (or $IB_PORT)", port_value, 1, 65535),
            client_id=_config.integer(
                PROVIDER, "client_id (or $IB_CLIENT_ID)", client_value, 0, MAX_INT
            ),
            trade_ticks=trade_ticks,
            quotes_via=quotes_via,
            depth_rows=_config.integer(PROVIDER, "depth_rows", depth_rows, 1, 1000),
            market_data_type=_config.integer(PROVIDER, "market_data_type", market_data_type, 1, 4),
            contracts=checked,
            **_config.timing(
                PROVIDER,
                ping_interval=ping_interval,
                ping_timeout=ping_timeout,
                stale_after=stale_after,
                limit_cooldown=limit_cooldown,
            ),
            connect_timeout=_config.seconds(PROVIDER, "connect_timeout", connect_timeout),
            max_frame_size=_config.integer(
                PROVIDER, "max_frame_size", max_frame_size, 1024, 0xFFFFFFFF
            ),
            max_messages_per_second=_config.integer(
                PROVIDER,
                "max_messages_per_second",
                max_messages_per_second,
                1,
                _MAX_MESSAGES_PER_SECOND,
            ),
            session_name=_config.session_name(PROVIDER, name),
            **_config.backfill(PROVIDER, backfill=backfill, backfill_timeout=backfill_timeout),
        )

    @property
    def channels(self) -> frozenset[str]:
        """``trades``, ``quotes``, ``books``, ``bars``."""
        return GENERIC_CHANNELS

    @property
    def calendar(self) -> TradingCalendar:
        """US equity hours (with pre/post-market): the instruments this provider subscribes."""
        from puffin_trio.market_hours import calendar_for

        return calendar_for("us_equity")

    def normalize(self, topics: Topics) -> dict[str, frozenset[str]]:
        """Validate ``topics``: generic channels; symbols of 1 to 32 printable ASCII
        characters without spaces or commas, kept as given (no wildcard)."""
        return _config.check_symbols(PROVIDER, check_topics(topics), _SYMBOLS)

    def check(self) -> None:
        """Nothing left to check: IB needs no credentials, and the rest was checked
        when the provider was made."""

    def protocol(self) -> IBProtocol:
        """A fresh :class:`IBProtocol` for a new connection (its request ids start at 1)."""
        return IBProtocol(
            client_id=self.client_id,
            contracts=self.contracts,
            trade_ticks=self.trade_ticks,
            quotes_via=self.quotes_via,
            depth_rows=self.depth_rows,
            market_data_type=self.market_data_type,
        )

    def open_transport(self) -> AbstractAsyncContextManager[Transport]:
        """A framed, paced TCP connection to TWS (see :mod:`puffin_trio.transports.tcp`)."""
        from puffin_trio.transports.tcp import open_tcp_transport

        return open_tcp_transport(
            self.host,
            self.port,
            connect_timeout=self.connect_timeout,
            max_frame_size=self.max_frame_size,
            max_messages_per_second=self.max_messages_per_second,
            connect_hint=_CONNECT_HINT,
        )
