"""Polygon.io / Massive WebSocket: provider configuration and the sans-IO protocol.

This package owns :class:`PolygonProvider` (cluster, real-time or delayed
host, credentials, timing knobs, channel names) and :class:`PolygonProtocol`
(one connection's wire protocol: the ``connected``/``auth`` handshake, topic
subscriptions split under a size limit, per-topic confirmations folded into
subscription acks, and decoding JSON frames into normalised events and
control items). The wire protocol is Polygon's, as its WebSocket
documentation describes it (https://polygon.io/docs/stocks/ws_getting-started);
Polygon rebranded as Massive, and the protocol did not change.

It must not do I/O, read a clock (``ts_recv`` is passed in), log per message,
or put the API key anywhere but the auth frame: the key is left out of every
``repr``, log line and exception.

Its modules, by concern: ``_wire`` (channel names, limits), ``_fields`` (wire
values -> event values), ``_errors`` (what each error status means),
``_protocol`` (the state machine) and ``_provider`` (configuration). How
Polygon's wire values are normalised into events (codes, tapes, lot sizes,
``q`` as ``seq``, ``XL2`` as snapshots, LULD timestamps) is in
``docs/guide/providers.rst``.
"""


from puffin_trio.providers.polygon._errors import error_for
from puffin_trio.providers.polygon._protocol import PolygonProtocol, StrictPolygonProtocol
from puffin_trio.providers.polygon._provider import HOSTS, PolygonProvider
from puffin_trio.providers.polygon._wire import (
    CRYPTO_CHANNELS,
    DEFAULT_MAX_FRAME_BYTES,
    DEFAULT_MAX_MESSAGE_SIZE,
    MARKETS,
    STOCK_CHANNELS,
)

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
