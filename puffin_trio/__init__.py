"""puffin_trio: trio-native streaming of real-time market data.

Public re-exports only; import from here, never from a private module.
"""

from puffin_trio import codec, market_hours
from puffin_trio.bars import BarAggregator, BarAggregatorStatistics
from puffin_trio.book import BookState, OrderBook, OrderBooks, OrderBookStatistics
from puffin_trio.channels import (
    ConsumerStatistics,
    EventReceiver,
    FanOut,
    FanOutStatistics,
    Overflow,
)
from puffin_trio.errors import (
    AuthenticationError,
    BackfillError,
    BackfillRefused,
    CodecError,
    ConfigurationError,
    ConnectionLimitError,
    ConnectionLost,
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
    LimitBands,
    MarketEvent,
    OrderBookUpdate,
    Quote,
    SessionState,
    Status,
    Trade,
    TradeCancel,
    TradeCorrection,
    TradingStatus,
)
from puffin_trio.guard import GuardMode, SequenceGuard, SequenceGuardStatistics
from puffin_trio.history import BackfillStatistics
from puffin_trio.market_hours import MarketSession
from puffin_trio.session import ProviderSession, SessionStatistics, SessionTimeouts
from puffin_trio.supervisor import RestartPolicy, Supervisor, SupervisorStatistics, open_feed

__all__ = [
    "AuthenticationError",
    "BackfillError",
    "BackfillRefused",
    "BackfillStatistics",
    "Bar",
    "BarAggregator",
    "BarAggregatorStatistics",
    "BookState",
    "CodecError",
    "ConfigurationError",
    "ConnectionLimitError",
    "ConnectionLost",
    "ConsumerStatistics",
    "Event",
    "EventReceiver",
    "FanOut",
    "FanOutStatistics",
    "FatalProviderError",
    "Gap",
    "GapReason",
    "GuardMode",
    "HeartbeatTimeout",
    "LimitBands",
    "MarketEvent",
    "MarketSession",
    "OrderBook",
    "OrderBookStatistics",
    "OrderBookUpdate",
    "OrderBooks",
    "Overflow",
    "ProtocolError",
    "ProviderError",
    "ProviderSession",
    "PuffinError",
    "Quote",
    "RestartBudgetExceeded",
    "RestartPolicy",
    "SequenceGuard",
    "SequenceGuardStatistics",
    "SessionState",
    "SessionStatistics",
    "SessionTimeouts",
    "StaleFeedError",
    "Status",
    "SubscriptionError",
    "Supervisor",
    "SupervisorStatistics",
    "Trade",
    "TradeCancel",
    "TradeCorrection",
    "TradingStatus",
    "TransientProviderError",
    "codec",
    "market_hours",
    "open_feed",
]
