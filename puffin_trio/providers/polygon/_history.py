"""Polygon/Massive's historical trades API, sans-IO: :class:`PolygonHistory`.

This module owns the requests of ``GET /v3/trades/{ticker}``
(https://massive.com/docs/rest/stocks/trades-quotes/trades: ``timestamp.gte``
and ``timestamp.lte`` in ns, ``order=asc`` (the default is newest first),
``sort=timestamp``, ``limit`` up to 50 000, and ``next_url`` to follow), the
parse of its pages (``{"results": [rows], "next_url": ...}``; stock rows carry
``sip_timestamp``, ``participant_timestamp``, ``sequence_number``, ``id``,
``price``, ``size``, ``exchange``, ``conditions``, ``tape``; crypto rows
``participant_timestamp``, ``id``, ``price``, ``size``, ``exchange``,
``conditions``), and how trades meet the stream's: by ``sequence_number``
per ticker for stocks, by trade id for crypto. It must not do I/O or read a
clock, and keeps the key in the ``Authorization`` header only.
"""

from __future__ import annotations

from typing import ClassVar
from urllib.parse import parse_qsl, quote, urlsplit

import orjson

from puffin_trio.events import Trade
from puffin_trio.providers._history import (
    BY_TRADE_ID,
    HistoryQuery,
    HttpRequest,
    RestHistory,
    SeamRule,
    TradePage,
)
from puffin_trio.providers._values import SANE_TS_NS, price, size
from puffin_trio.providers.polygon._fields import code, codes, crypto_sides, seq_number, tape
from puffin_trio.providers.polygon._wire import PROVIDER

__all__ = ["API_URL", "MAX_PAGE_LIMIT", "PolygonHistory"]

#: The REST host (``https://api.polygon.io`` before the rebrand; both answer).
API_URL = "https://api.massive.com"
#: ``limit`` of a page: the API's maximum (its default is 1 000).
MAX_PAGE_LIMIT = 50_000
_TRADES_PATH = "/v3/trades/"
#: ``status`` values of a good page (``DELAYED``: a plan with delayed data).
_GOOD_STATUS = frozenset({"OK", "DELAYED"})
_TS_LOW, _TS_HIGH = SANE_TS_NS


def _sequence(trade: Trade) -> int | None:
    return trade.seq


class PolygonHistory(RestHistory):
    """Polygon's historical trades of one cluster; made by ``PolygonProvider.history()``.

    Stocks are matched with the stream by ``sequence_number`` (the stream's
    ``q``: increasing per ticker, and with ``contiguous=True``, as in the
    simulator's default numbering, without holes); crypto by trade id.
    """

    provider: ClassVar[str] = PROVIDER

    def __init__(
        self,
        *,
        key: str,
        base_url: str = API_URL,
        market: str = "stocks",
        contiguous: bool = False,
        page_limit: int = MAX_PAGE_LIMIT,
    ) -> None:
        self._key = key
        self.base_url = base_url.rstrip("/")
        self.page_limit = page_limit
        self._crypto = market == "crypto"
        self.seam: SeamRule = (
            BY_TRADE_ID
            if self._crypto
            else SeamRule(key=_sequence, ordered=True, contiguous=contiguous)
        )

    def __repr__(self) -> str:
        return f"PolygonHistory(base_url={self.base_url!r}, crypto={self._crypto})"

    def headers(self) -> list[tuple[str, str]]:
        """The key as a bearer token (the massive SDK's way; never in the URL)."""
        return [("Authorization", f"Bearer {self._key}")]

    def ticker(self, symbol: str) -> str:
        """The REST ticker of a stream symbol: ``AAPL``; crypto ``BTC-USD`` -> ``X:BTCUSD``."""
        return "X:" + symbol.replace("-", "") if self._crypto else symbol

    def requests(self, query: HistoryQuery) -> list[HttpRequest]:
        """One request per ticker (the endpoint takes one), oldest first."""
        out = []
        for symbol in sorted(query.symbols):
            ticker = self.ticker(symbol)
            out.append(
                HttpRequest(
                    _TRADES_PATH + quote(ticker, safe=":"),
                    (
                        ("timestamp.gte", str(query.start_ns)),
                        ("timestamp.lte", str(query.end_ns)),
                        ("order", "asc"),
                        ("sort", "timestamp"),
                        ("limit", str(self.page_limit)),
                    ),
                    (symbol,),
                )
            )
        return out

    def parse(self, request: HttpRequest, body: bytes, ts_recv: int) -> TradePage:
        """A page of one ticker; ``next_url`` becomes the next request on our own host."""
        document = orjson.loads(body)
        if type(document) is not dict:
            raise ValueError("not a trades page: not a JSON object")
        status = document.get("status")
        if status not in _GOOD_STATUS:
            raise ValueError(f"page status is {status!r}, not OK")
        rows = document.get("results", [])
        if type(rows) is not list:
            raise ValueError("'results' is not a list")
        if len(request.symbols) != 1:
            raise ValueError(f"a page for a request of no one ticker: {request.path!r}")
        symbol = request.symbols[0]
        following = self._next(request, document.get("next_url"))
        del document
        trades: list[Trade] = []
        malformed = 0
        # Oldest first, each parsed row freed as its trade is made: the peak is about
        # the larger of the two, not their sum (a 50 000-row page is ~60 MB of dicts).
        rows.reverse()
        while rows:
            try:
                trades.append(self._trade(symbol, rows.pop(), ts_recv))
            except (KeyError, TypeError, ValueError, OverflowError):
                malformed += 1
        return TradePage(tuple(trades), following, ((symbol, malformed),) if malformed else ())

    @staticmethod
    def _next(request: HttpRequest, next_url: object) -> HttpRequest | None:
        """The path and query of ``next_url`` (the host is ours: the key goes nowhere else)."""
        if next_url is None:
            return None
        if type(next_url) is not str:
            raise ValueError("'next_url' is not a string")
        parts = urlsplit(next_url)
        if parts.path != request.path:
            raise ValueError(f"'next_url' leads to another path: {parts.path!r}")
        params = tuple(parse_qsl(parts.query, keep_blank_values=True))
        return HttpRequest(parts.path, params, request.symbols)

    def _trade(self, symbol: str, row: object, ts_recv: int) -> Trade:
        if type(row) is not dict:
            raise TypeError("a row is not a map")
        trade_id = row["id"]
        if type(trade_id) is not str:
            raise TypeError("trade 'id' is not a string")
        if self._crypto:
            stamp = row["participant_timestamp"]
            conditions = crypto_sides(row.get("conditions"))
            seq = None
        else:
            stamp = row["sip_timestamp"]
            conditions = codes(row.get("conditions"))
            seq = seq_number(row["sequence_number"])
            if seq is None:
                raise TypeError("'sequence_number' is null")
        if type(stamp) is not int or not _TS_LOW <= stamp < _TS_HIGH:
            raise ValueError(f"timestamp {stamp!r} is not integer ns from 1990 to 2200")
        return Trade(
            provider=PROVIDER,
            symbol=symbol,
            ts_event=stamp,
            ts_recv=ts_recv,
            price=price(row["price"]),
            size=size(row["size"]),
            exchange=code(row.get("exchange")),
            trade_id=trade_id,
            conditions=conditions,
            tape="" if self._crypto else tape(row.get("tape")),
            seq=seq,
            backfilled=True,
        )
