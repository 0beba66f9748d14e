"""Backfill: the trades of a reconnect's outage, recovered from the provider's historical API.

This package owns what ``backfill="trades"`` does after a reconnect
(``docs/guide/backfill.rst``): the session's :class:`Backfiller` (which holds
the live trades of the symbols being backfilled, fetches the window,
delivers the recovered trades in order with a ``Gap`` that accounts for
them, then releases the live ones), the REST client (httpx on trio) and the
in-band client (IB ``reqHistoricalTicks``) it fetches with, and the sans-IO
bookkeeping of the seams (:class:`TradeEdges`, :class:`Reconciler`). The
providers' request building and page parsing are sans-IO too and live with
the providers (``provider.history()``).
"""

from puffin_trio.history._backfill import END_MARGIN, MAX_HELD, Backfiller, BackfillStatistics
from puffin_trio.history._inband import REPLY_TIMEOUT, InbandHistory, Pacer
from puffin_trio.history._rest import MAX_PAGES, REQUEST_TIMEOUT, TIMEOUTS, fetch_rest
from puffin_trio.history._seams import Reconciler, TradeEdges, Window
from puffin_trio.history._sources import Finished, Progress, Recovered, Retries

__all__ = [
    "END_MARGIN",
    "MAX_HELD",
    "MAX_PAGES",
    "REPLY_TIMEOUT",
    "REQUEST_TIMEOUT",
    "TIMEOUTS",
    "BackfillStatistics",
    "Backfiller",
    "Finished",
    "InbandHistory",
    "Pacer",
    "Progress",
    "Reconciler",
    "Recovered",
    "Retries",
    "TradeEdges",
    "Window",
    "fetch_rest",
]
