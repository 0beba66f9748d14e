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
``_protocol`` (the state machine) and ``_provider`` (configuration).

Normalisation choices (Polygon's wire values -> the event model):

* Exchange, condition and indicator codes are integers on the wire and text
  in the events (``4`` -> ``"4"``); tapes 1/2/3 become ``"A"``/``"B"``/``"C"``,
  the letters Alpaca and the SIPs use.
* Stock quote sizes stay in round lots, as sent (Alpaca's are too); crypto
  sizes are units. A trade's ``ds`` (decimal size, fractional shares) wins
  over ``s`` when present, as do aggregates' ``dv`` over ``v``.
* Crypto trade conditions ``1``/``2`` (sell side / buy side) become the
  taker side ``"S"``/``"B"``, as Alpaca's ``tks`` does; ``0`` means none.
* ``q`` becomes ``seq``. It exists on stock trades, quotes and LULD and is
  per symbol and increasing but not contiguous, so the guard mode is
  ``"monotonic"`` (duplicates and reordering are caught, holes are normal);
  :class:`StrictPolygonProtocol` uses ``"strict"`` for servers whose numbers
  are contiguous per stream, like our simulator's ``sequence="contiguous"``.
* ``XL2`` (crypto L2) is decoded as a **snapshot** of the top levels
  (``OrderBookUpdate(snapshot=True)``). Polygon does not document whether a
  message is a snapshot or a diff, but its
  reference describes ``b``/``a`` as "an array of bid [ask] prices ... with a
  maximum depth of 100", which is a bounded top-of-book picture, not a list
  of changed levels. Reading a diff as a snapshot would drop levels until the
  next message; reading snapshots as diffs would keep dead levels for good,
  which is the worse failure. A level of size 0 in a snapshot is dropped.
* ``LULD``'s ``t`` is documented in ms but sampled in ns, so its unit is
  taken from its magnitude; every other ``t``, ``s``, ``e`` is ms.
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
