"""What Polygon's stream calls things: clusters' channels, the key's variables, frame limits.

This module owns the names and sizes both the protocol and the provider
configuration need: our channel names and Polygon's event prefixes, per
cluster; the key's environment variables; the frame-size limits (with why);
and :func:`check_topics`, the channel rules of each cluster. It must not
encode, decode or do I/O.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from puffin_trio.errors import ConfigurationError
from puffin_trio.providers._base import Topics, normalize_topics

__all__ = [
    "CRYPTO_CHANNELS",
    "DEFAULT_MAX_FRAME_BYTES",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "KEY_ENVS",
    "MARKETS",
    "MIN_FRAME_BYTES",
    "NS_PER_MS",
    "PROVIDER",
    "STOCK_CHANNELS",
    "check_topics",
]

PROVIDER = "polygon"

#: Clusters this provider speaks (URL path ``/stocks``, ``/crypto``).
MARKETS: tuple[str, ...] = ("stocks", "crypto")

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
KEY_ENVS = ("MASSIVE_API_KEY", "POLYGON_API_KEY")

#: Default ``max_message_size``: 16 MiB. The massive SDK runs with websockets'
#: 1 MiB, but Polygon batches events into arrays and there is no documented
#: maximum batch: the frames we most need to accept are the
#: catch-up frames of a ``T.*`` subscription after a stall (a trade is ~150
#: bytes of JSON, so 1 MiB is only ~7 000 events). A frame over the limit closes
#: the connection (1009) and the reconnect loses far more than the frame, so
#: the limit is 16 times the SDK's while one frame still cannot take unbounded
#: memory. The same reasoning and value as the Alpaca provider.
DEFAULT_MAX_MESSAGE_SIZE = 16 * 1024 * 1024
#: Default ``max_frame_bytes`` (outgoing subscribe/unsubscribe): 4 KiB. Polygon documents no limit
#: on the topics of one subscribe for stocks, but a stream server with a small read limit has
#: existed (a ~8 KiB Alpaca subscribe drew close code 1009), and the options cluster refuses a whole
#: frame past its subscription limit. 4 KiB holds ~500 stock topics, so 10 000 symbols take ~20
#: frames; splitting costs nothing, because Polygon confirms every topic with its own status message
#: anyway.
DEFAULT_MAX_FRAME_BYTES = 4 * 1024
#: Smallest accepted ``max_frame_bytes``: the frame's own overhead (36 bytes for
#: an unsubscribe) plus the longest topic a provider accepts (``XAS.`` and a
#: 31-character pair), with room for a few more.
MIN_FRAME_BYTES = 128
NS_PER_MS = 1_000_000


def check_topics(topics: Topics, *, crypto: bool) -> dict[str, frozenset[str]]:
    """Validate ``topics`` for a cluster, with a hint for the usual mistakes."""
    for channel, symbols in topics.items():
        if channel == "books" and not crypto:
            raise ConfigurationError(
                f"{PROVIDER}: books= (XL2 order books) exist only on the crypto cluster "
                "(PolygonProvider(market='crypto')); stocks have quotes="
            )
        if channel == "lulds" and crypto:
            raise ConfigurationError(f"{PROVIDER}: lulds= exists only on the stocks cluster")
        if crypto and isinstance(symbols, Collection) and not isinstance(symbols, str | bytes):
            for symbol in symbols:
                if isinstance(symbol, str) and "/" in symbol:
                    raise ConfigurationError(
                        f"{PROVIDER}: crypto pairs are written FROM-TO on Polygon "
                        f"({symbol.replace('/', '-')!r}), not {symbol!r}"
                    )
    allowed = CRYPTO_CHANNELS if crypto else STOCK_CHANNELS
    return normalize_topics(topics, allowed=allowed, provider=PROVIDER)
