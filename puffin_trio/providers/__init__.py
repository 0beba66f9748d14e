"""Provider configurations: ``AlpacaProvider``, ``PolygonProvider``, ``IBProvider``.

Each is a sans-IO codec plus configuration (credentials, URL, timing knobs);
the session does the I/O. See :mod:`puffin_trio.providers._base` for the
contract a provider implements.
"""

from puffin_trio.providers._base import Provider, ProviderProtocol, WebSocketProvider
from puffin_trio.providers.alpaca import AlpacaProvider
from puffin_trio.providers.ib import IBContract, IBProvider
from puffin_trio.providers.polygon import PolygonProvider

__all__ = [
    "AlpacaProvider",
    "IBContract",
    "IBProvider",
    "PolygonProvider",
    "Provider",
    "ProviderProtocol",
    "WebSocketProvider",
]
