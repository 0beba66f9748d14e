"""Alpaca market data stream v2: provider configuration and the sans-IO protocol.

This package owns :class:`AlpacaProvider` (feeds, URLs, credentials, timing
knobs, channel names) and :class:`AlpacaProtocol` (one connection's wire
protocol: the ``connected``/``auth`` handshake, subscribe frames split under a
size limit, and decoding JSON text or msgpack binary frames into normalised
events and control items). The wire protocol is Alpaca's, as its market data
stream documentation describes it
(https://docs.alpaca.markets/docs/streaming-market-data).

It must not do I/O, read a clock (``ts_recv`` is passed in), log per message,
or put a credential anywhere but the auth frame: keys are left out of every
``repr``, log line and exception.

Its modules, by concern: ``_wire`` (channel names, limits), ``_timestamps``,
``_errors`` (what each error code means), ``_protocol`` (the state machine)
and ``_provider`` (configuration).
"""

from puffin_trio.providers.alpaca._errors import error_for
from puffin_trio.providers.alpaca._protocol import AlpacaProtocol
from puffin_trio.providers.alpaca._provider import CRYPTO_LOCATIONS, FEEDS, AlpacaProvider
from puffin_trio.providers.alpaca._timestamps import rfc3339_to_ns
from puffin_trio.providers.alpaca._wire import (
    CRYPTO_CHANNELS,
    DEFAULT_MAX_FRAME_BYTES,
    DEFAULT_MAX_MESSAGE_SIZE,
    STOCK_CHANNELS,
)

__all__ = [
    "CRYPTO_CHANNELS",
    "CRYPTO_LOCATIONS",
    "DEFAULT_MAX_FRAME_BYTES",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "FEEDS",
    "STOCK_CHANNELS",
    "AlpacaProtocol",
    "AlpacaProvider",
    "error_for",
    "rfc3339_to_ns",
]
