"""What a provider's historical trades API looks like to a backfill: requests, pages, seams.

This module owns the sans-IO contract between a provider and
:mod:`puffin_trio.history` (which does the HTTP and the session glue):

* :class:`HistoryQuery`: which trades a backfill asks for (symbols and an
  inclusive window in provider time).
* :class:`RestHistory`: a provider's REST historical API as a sans-IO object,
  like a protocol: the first requests of a query (:class:`HttpRequest`), the
  parse of one response body into a :class:`TradePage` (its trades, flagged
  ``backfilled``, and the request of the next page), the authentication
  headers, and how long the provider's rate-limit headers say to wait.
* :class:`SeamRule`: how the trades a backfill recovers are told apart from
  the live ones at the window's two edges (a trade id, Polygon's
  ``sequence_number``, IB's time, price and size).

It must not do I/O: it imports no HTTP library and reads no clock.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Hashable, Mapping
from typing import ClassVar

import attrs

from puffin_trio.events import Trade

__all__ = [
    "BY_TRADE_ID",
    "HistoryQuery",
    "HttpRequest",
    "RestHistory",
    "SeamRule",
    "TradePage",
]


@attrs.frozen
class HistoryQuery:
    """Trades of ``symbols`` from ``start_ns`` to ``end_ns`` (both inclusive, provider time)."""

    symbols: tuple[str, ...]
    start_ns: int
    end_ns: int


@attrs.frozen
class HttpRequest:
    """One GET of a historical API: a path on the REST host and its query parameters,
    and the symbols whose trades its pages hold (in the order the pages give them).

    Credentials are not part of it (they travel in :meth:`RestHistory.headers`),
    so a request can be logged and compared.
    """

    path: str
    params: tuple[tuple[str, str], ...] = ()
    symbols: tuple[str, ...] = ()

    def with_param(self, name: str, value: str) -> HttpRequest:
        """The same request with ``name`` set to ``value`` (replacing any earlier value)."""
        kept = tuple((k, v) for k, v in self.params if k != name)
        return attrs.evolve(self, params=(*kept, (name, value)))


@attrs.frozen
class TradePage:
    """One parsed response: its trades in the API's order (by symbol, then time), the
    request of the next page (``None``: the last one), and the rows dropped as malformed
    (a price that is not a finite positive number, a missing field, ...): ``(symbol,
    rows)`` for each symbol that had any, so that its window is not called complete."""

    trades: tuple[Trade, ...]
    next: HttpRequest | None
    dropped: tuple[tuple[str, int], ...] = ()

    @property
    def malformed(self) -> int:
        """Rows dropped from this page, all symbols together."""
        return sum(rows for _, rows in self.dropped)


def _trade_id(trade: Trade) -> Hashable:
    return trade.trade_id


@attrs.frozen
class SeamRule:
    """How backfilled trades are matched with live ones at a window's edges.

    * ``key``: what identifies one trade of a symbol (a trade id; Polygon's
      sequence number; for IB, which has neither, the time, price and size).
    * ``unique``: no two trades of a symbol share a key. Without it (IB: two
      trades of 100 shares at one price in one second are common) a key does
      not say whether a live trade is one a backfill recovered or its twin, so
      the end of the window is matched by position: the recovered trades end
      where the live ones begin, within what the requests' send and answer
      times allow.
    * ``ordered``: keys increase with time within a symbol, so every key up to
      the last one received live was received (Polygon's ``sequence_number``).
    * ``contiguous``: ordered keys that skip no number, so the distance between
      two tells how many trades are missing (our simulator's numbering, not
      Polygon's: its numbers skip).
    """

    key: Callable[[Trade], Hashable] = _trade_id
    unique: bool = True
    ordered: bool = False
    contiguous: bool = False


#: Alpaca (and Polygon crypto): each trade carries a unique id ``i``.
BY_TRADE_ID = SeamRule()


class RestHistory(abc.ABC):
    """A provider's REST historical trades API, sans-IO. Made by ``provider.history()``.

    :mod:`puffin_trio.history` drives it: it GETs each of :meth:`requests`
    from ``base_url`` with :meth:`headers`, parses each body with
    :meth:`parse`, follows ``TradePage.next`` until it is ``None``, and waits
    :meth:`rate_limit_wait` seconds when the provider's headers say so.
    """

    #: Provider name, as in events.
    provider: ClassVar[str]
    #: The scheme and host of the REST API (``https://data.alpaca.markets``).
    base_url: str
    #: Rows per page asked for: the API's maximum, so a window costs as few
    #: requests (and as little of the rate limit) as possible.
    page_limit: int
    #: How backfilled trades meet live ones.
    seam: SeamRule

    @abc.abstractmethod
    def headers(self) -> list[tuple[str, str]]:
        """The request headers, credentials included (never log them)."""

    @abc.abstractmethod
    def requests(self, query: HistoryQuery) -> list[HttpRequest]:
        """The first request of each independent page sequence that covers ``query``."""

    @abc.abstractmethod
    def parse(self, request: HttpRequest, body: bytes, ts_recv: int) -> TradePage:
        """One response body of ``request`` -> its page. Raises ``ValueError`` for a body
        that is not the API's document (a truncated one included); bad rows are counted."""

    def rate_limit_wait(
        self, status: int, headers: Mapping[str, str], wall_ns: int
    ) -> float | None:
        """Seconds the provider's headers say to wait before the next request, or ``None``
        if they say nothing (then the caller backs off on its own after a 429).

        ``Retry-After`` in seconds is honoured by default; ``wall_ns`` is the
        caller's wall clock, for headers that name an epoch time.
        """
        value = headers.get("retry-after")
        if value is None:
            return None
        try:
            seconds = float(value)
        except ValueError:
            return None
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
