"""Test helpers for users of puffin_trio: strategies, time helpers and a fault proxy.

* Event strategies: :func:`trades`, :func:`quotes`, :func:`book_updates`,
  :func:`bars`, ... and :func:`events` (any event).
* Sequence strategies: :func:`sequence_streams` (sequence numbers after
  drops, duplicates and bounded reordering, with a record of the damage) and
  :func:`bounded_reorderings`.
* :func:`mock_wall_clock`: a wall clock that follows trio's (mock) clock, so
  market-hours logic can be tested under ``MockClock``.
* :func:`serve_fault_proxy`: a WebSocket-aware TCP proxy that injects network
  faults (latency, throttling, a half-open stall, RST, FIN in mid-frame,
  damaged bytes, injected frames, RST during the upgrade) between your
  application and any server, and records what it forwarded intact
  (:class:`ProxyPlan`, :class:`ProxyControl`, :class:`ProxyConnection`).

Hypothesis is imported by this package, so install puffin_trio's ``test``
extra to use it.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from puffin_trio.testing._events import (
    bars,
    book_updates,
    events,
    gaps,
    limit_bands,
    quotes,
    statuses,
    trade_cancels,
    trade_corrections,
    trades,
    trading_statuses,
)
from puffin_trio.testing._proxy import (
    Direction,
    FiredFault,
    ForwardedFrame,
    ProxyConnection,
    ProxyControl,
    ProxyFault,
    ProxyFaultKind,
    ProxyPlan,
    serve_fault_proxy,
)
from puffin_trio.testing._sequences import SequenceStream, bounded_reorderings, sequence_streams

__all__ = [
    "Direction",
    "FiredFault",
    "ForwardedFrame",
    "ProxyConnection",
    "ProxyControl",
    "ProxyFault",
    "ProxyFaultKind",
    "ProxyPlan",
    "SequenceStream",
    "bars",
    "book_updates",
    "bounded_reorderings",
    "events",
    "gaps",
    "limit_bands",
    "mock_wall_clock",
    "quotes",
    "sequence_streams",
    "serve_fault_proxy",
    "statuses",
    "trade_cancels",
    "trade_corrections",
    "trades",
    "trading_statuses",
]


def mock_wall_clock(start_ns: int) -> Callable[[], int]:
    """A ``wall_clock`` for sessions and simulators that starts at ``start_ns`` and
    advances with ``trio.current_time()`` (so with ``MockClock`` it jumps too).

    Must be created and called inside ``trio.run``.
    """
    origin = trio.current_time()

    def now() -> int:
        return start_ns + int((trio.current_time() - origin) * 1e9)

    return now
