"""What Alpaca's stream calls things: channels, environment variables, frame limits.

This module owns the names and sizes both the protocol and the provider
configuration need: our channel names and Alpaca's wire keys, per feed; the
credential variables; the frame-size limits (with why); and
:func:`check_topics`, the channel rules of each feed. It must not encode,
decode or do I/O.
"""

from __future__ import annotations

from collections.abc import Mapping

from puffin_trio.errors import ConfigurationError
from puffin_trio.providers._base import Topics, normalize_topics

__all__ = [
    "CHANNEL_OVERHEAD",
    "CRYPTO_CHANNELS",
    "DEFAULT_MAX_FRAME_BYTES",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "IMPLICIT_CHANNELS",
    "KEY_ENV",
    "MIN_FRAME_BYTES",
    "PROVIDER",
    "SECRET_ENV",
    "STOCK_CHANNELS",
    "check_topics",
]

PROVIDER = "alpaca"

#: Our channel name -> Alpaca's wire key, for stock feeds.
STOCK_CHANNELS: Mapping[str, str] = {
    "trades": "trades",
    "quotes": "quotes",
    "bars": "bars",
    "updated_bars": "updatedBars",
    "daily_bars": "dailyBars",
    "statuses": "statuses",
    "lulds": "lulds",
}
#: Our channel name -> Alpaca's wire key, for the crypto feed.
CRYPTO_CHANNELS: Mapping[str, str] = {
    "trades": "trades",
    "quotes": "quotes",
    "bars": "bars",
    "updated_bars": "updatedBars",
    "daily_bars": "dailyBars",
    "books": "orderbooks",
}
#: Wire keys the server adds by itself (with ``trades``); never sent by us.
IMPLICIT_CHANNELS = frozenset({"corrections", "cancelErrors", "cancel_errors"})

#: Where the credentials are read from when not passed.
KEY_ENV = "APCA_API_KEY_ID"
SECRET_ENV = "APCA_API_SECRET_KEY"

#: Default ``max_message_size``: 16 MiB. alpaca-py runs with websockets' 1 MiB
#: and works in production, but the server *batches* when the client falls
#: behind, so the frames we most need to accept are the big catch-up ones
#: (a JSON trade is ~130 bytes: 1 MiB is only ~8 000 messages). A frame over
#: the limit closes the connection (1009), and the reconnect loses far more
#: than the frame, so the limit is 16 times alpaca-py's while one frame still
#: cannot take unbounded memory.
DEFAULT_MAX_MESSAGE_SIZE = 16 * 1024 * 1024
#: Default ``max_frame_bytes`` (outgoing subscribe/unsubscribe): 4 KiB. The
#: server's limit is undocumented; a 700-symbol subscribe (~8 KiB of JSON) once
#: drew close code 1009 from Alpaca's older stream (alpaca-trade-api-python#319),
#: so a limit below that has existed. 4 KiB is half of it and still holds ~500
#: stock symbols per frame, so even 10 000 symbols take only ~20 frames (each
#: one additive and confirmed by its own ``subscription`` message).
DEFAULT_MAX_FRAME_BYTES = 4 * 1024
#: Smallest accepted ``max_frame_bytes``: room for the frame's own overhead
#: plus a few symbols.
MIN_FRAME_BYTES = 128
#: Bytes a channel adds to a subscribe frame besides its encoded name: JSON
#: ``,"":[]`` is 4; msgpack's array header is at most 5.
CHANNEL_OVERHEAD = 5


def check_topics(topics: Topics, *, crypto: bool) -> dict[str, frozenset[str]]:
    """Validate ``topics`` for a stock or crypto feed, with a hint for the usual mistakes."""
    for channel in topics:
        if channel in IMPLICIT_CHANNELS:
            raise ConfigurationError(
                f"{PROVIDER}: {channel} cannot be subscribed on its own; "
                "trade corrections and cancels come with trades="
            )
        if channel == "books" and not crypto:
            raise ConfigurationError(
                f"{PROVIDER}: books= (order books) exist only on the crypto feed "
                "(AlpacaProvider(feed='crypto')); stock feeds have quotes="
            )
        if channel in ("statuses", "lulds") and crypto:
            raise ConfigurationError(f"{PROVIDER}: {channel}= exists only on stock feeds")
    allowed = CRYPTO_CHANNELS if crypto else STOCK_CHANNELS
    return normalize_topics(topics, allowed=allowed, provider=PROVIDER)
