"""puffin_trio: trio-native streaming of real-time market data.

Public re-exports only; import from here, never from a private module.
"""

from puffin_trio.errors import (
    AuthenticationError,
    CodecError,
    ConfigurationError,
    ConnectionLimitError,
    FatalProviderError,
    HeartbeatTimeout,
    ProtocolError,
    ProviderError,
    PuffinError,
    RestartBudgetExceeded,
    StaleFeedError,
    SubscriptionError,
    TransientProviderError,
)
from puffin_trio.events import (
    Bar,
    Event,
    Gap,
    GapReason,
    MarketEvent,
    OrderBookUpdate,
    Quote,
    SessionState,
    Status,
    Trade,
)

__all__ = [
    "AuthenticationError",
    "Bar",
    "CodecError",
    "ConfigurationError",
    "ConnectionLimitError",
    "Event",
    "FatalProviderError",
    "Gap",
    "GapReason",
    "HeartbeatTimeout",
    "MarketEvent",
    "OrderBookUpdate",
    "ProtocolError",
    "ProviderError",
    "PuffinError",
    "Quote",
    "RestartBudgetExceeded",
    "SessionState",
    "StaleFeedError",
    "Status",
    "SubscriptionError",
    "Trade",
    "TransientProviderError",
]
