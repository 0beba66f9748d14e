"""Providers: each is a configuration plus a sans-IO protocol.

This package owns the three providers (:class:`AlpacaProvider`,
:class:`PolygonProvider`, :class:`IBProvider`) and their wire protocols
(:class:`AlpacaProtocol`, :class:`PolygonProtocol`, :class:`IBProtocol`),
which are public the way h11's ``Connection`` is: bytes in, events and
control items out, no sockets. ``provider.protocol()`` makes a fresh one for
a connection; drive it with your own I/O, a fuzzer or a test::

    proto = AlpacaProvider(key="...", secret="...").protocol()
    for item in proto.receive(frame, ts_recv):   # events, Malformed, Connected, ...
        ...
    send(proto.data_to_send())                   # e.g. the auth frame after "connected"

What ``receive`` returns besides events: :class:`Connected`,
:class:`Authenticated`, :class:`SubscriptionAck`, :class:`HeartbeatReply`,
:class:`ProviderNotice`, :class:`ProviderFailure`, :class:`HistoryReply`,
:class:`Malformed` and :class:`UnknownMessage` (together, :data:`Control`).
``provider.history()`` is the provider's historical trades API, sans-IO too
(:class:`RestHistory`: requests and page parsing), which backfills use.

Every value a protocol copies into an event is checked first (finite prices,
finite sizes >= 0, timestamps inside :data:`SANE_TS_NS`, non-empty symbols):
an impossible value makes the message :class:`Malformed`, never an event.

Every module in this package is sans-IO in its imports too: none imports
trio or a websocket library (a test walks their imports). The session does
the I/O; see :mod:`puffin_trio.providers._base` for the contract.
"""

from puffin_trio.providers._base import (
    Authenticated,
    Connected,
    Control,
    HeartbeatReply,
    HistoryReply,
    Malformed,
    Provider,
    ProviderFailure,
    ProviderNotice,
    ProviderProtocol,
    SubscriptionAck,
    UnknownMessage,
    WebSocketProvider,
)
from puffin_trio.providers._history import (
    HistoryQuery,
    HttpRequest,
    RestHistory,
    SeamRule,
    TradePage,
)
from puffin_trio.providers._values import SANE_TS_NS
from puffin_trio.providers.alpaca import AlpacaProtocol, AlpacaProvider
from puffin_trio.providers.ib import IBContract, IBProtocol, IBProvider
from puffin_trio.providers.polygon import PolygonProtocol, PolygonProvider, StrictPolygonProtocol

__all__ = [
    "SANE_TS_NS",
    "AlpacaProtocol",
    "AlpacaProvider",
    "Authenticated",
    "Connected",
    "Control",
    "HeartbeatReply",
    "HistoryQuery",
    "HistoryReply",
    "HttpRequest",
    "IBContract",
    "IBProtocol",
    "IBProvider",
    "Malformed",
    "PolygonProtocol",
    "PolygonProvider",
    "Provider",
    "ProviderFailure",
    "ProviderNotice",
    "ProviderProtocol",
    "RestHistory",
    "SeamRule",
    "StrictPolygonProtocol",
    "SubscriptionAck",
    "TradePage",
    "UnknownMessage",
    "WebSocketProvider",
]
