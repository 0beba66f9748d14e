"""puffin_trio: trio-native streaming of real-time market data.

Public re-exports only; import from here, never from a private module.
Recording (pyarrow, numpy), Redis distribution (coredis) and the metrics
server (prometheus_client) are imported on first use of one of their names
(PEP 562 ``__getattr__``), so a process that only streams never loads them:
together they are most of the package's import time and memory, and every
full garbage collection walks their objects.
"""

import importlib
from typing import TYPE_CHECKING

from puffin_trio import codec, market_hours
from puffin_trio.bars import BarAggregator, BarAggregatorStatistics
from puffin_trio.book import BookState, OrderBook, OrderBooks, OrderBookStatistics
from puffin_trio.channels import (
    ConsumerStatistics,
    EventReceiver,
    FanOut,
    FanOutStatistics,
    Overflow,
    receive_events,
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
    RecordingError,
    RedisAuthenticationError,
    RedisConnectionError,
    RedisError,
    ReplayError,
    RestartBudgetExceeded,
    SchemaVersionError,
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
from puffin_trio.guard import GuardMode, GuardStream, SequenceGuard, SequenceGuardStatistics
from puffin_trio.histogram import HistogramSnapshot
from puffin_trio.history import BackfillStatistics
from puffin_trio.market_hours import MarketSession
from puffin_trio.session import ProviderSession, SessionStatistics, SessionTimeouts
from puffin_trio.supervisor import RestartPolicy, Supervisor, SupervisorStatistics, open_feed

if TYPE_CHECKING:
    from puffin_trio.metrics import serve_metrics
    from puffin_trio.recording import Recorder, RecorderStatistics, open_recorder, open_replay
    from puffin_trio.redis import (
        RedisFeed,
        RedisFeedStatistics,
        RedisPublisher,
        RedisPublisherStatistics,
        open_redis_feed,
        open_redis_publisher,
    )

#: Public name -> the subpackage that defines it, imported when the name is first used.
_LAZY = {
    "Recorder": "puffin_trio.recording",
    "RecorderStatistics": "puffin_trio.recording",
    "open_recorder": "puffin_trio.recording",
    "open_replay": "puffin_trio.recording",
    "RedisFeed": "puffin_trio.redis",
    "RedisFeedStatistics": "puffin_trio.redis",
    "RedisPublisher": "puffin_trio.redis",
    "RedisPublisherStatistics": "puffin_trio.redis",
    "open_redis_feed": "puffin_trio.redis",
    "open_redis_publisher": "puffin_trio.redis",
    "serve_metrics": "puffin_trio.metrics",
}

if not TYPE_CHECKING:
    # Hidden from type checkers, which read a module ``__getattr__`` as "any
    # name exists" and would stop catching misspelt imports from puffin_trio.

    def __getattr__(name: str) -> object:
        """Import the subpackage behind a lazy public name, and keep the name here."""
        module = _LAZY.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value
        return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


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
    "GuardStream",
    "HeartbeatTimeout",
    "HistogramSnapshot",
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
    "Recorder",
    "RecorderStatistics",
    "RecordingError",
    "RedisAuthenticationError",
    "RedisConnectionError",
    "RedisError",
    "RedisFeed",
    "RedisFeedStatistics",
    "RedisPublisher",
    "RedisPublisherStatistics",
    "ReplayError",
    "RestartBudgetExceeded",
    "RestartPolicy",
    "SchemaVersionError",
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
    "open_recorder",
    "open_redis_feed",
    "open_redis_publisher",
    "open_replay",
    "receive_events",
    "serve_metrics",
]
