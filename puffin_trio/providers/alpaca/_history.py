"""Alpaca's historical trades API, sans-IO: :class:`AlpacaHistory`.

This module owns the requests of Alpaca's multi-symbol trades endpoints
(``GET /v2/stocks/trades`` for stock feeds, ``GET /v1beta3/crypto/{loc}/trades``
for crypto; https://docs.alpaca.markets/reference/stocktrades), the parse of
their pages (``{"trades": {symbol: [rows]}, "next_page_token": ...}``, rows as
on the stream: ``t``, ``x``, ``p``, ``s``, ``c``, ``i``, ``z``; crypto ``t``,
``p``, ``s``, ``tks``, ``i``) and the reading of Alpaca's rate-limit headers.
It must not do I/O or read a clock, and keeps the credentials in the headers
only.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import ClassVar

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
from puffin_trio.providers._values import price, size, text
from puffin_trio.providers._values import texts as texts_of
from puffin_trio.providers.alpaca._timestamps import json_event_ns
from puffin_trio.providers.alpaca._wire import PROVIDER

__all__ = [
    "DATA_URL",
    "MAX_PAGE_LIMIT",
    "MAX_SYMBOLS_PER_REQUEST",
    "SANDBOX_DATA_URL",
    "AlpacaHistory",
]

#: The market data REST hosts (live and sandbox keys).
DATA_URL = "https://data.alpaca.markets"
SANDBOX_DATA_URL = "https://data.sandbox.alpaca.markets"
#: ``limit`` of a page: Alpaca's maximum (1-10 000; the limit counts rows
#: across all the symbols of the request).
MAX_PAGE_LIMIT = 10_000
#: Symbols per multi-symbol request. Alpaca documents no maximum; 100 symbols
#: keep the URL under 1 KiB, and a session with more makes a page sequence per
#: hundred (each one request per page, so the rate limit is spent the same).
MAX_SYMBOLS_PER_REQUEST = 100
#: Stream feed -> the historical API's ``feed`` parameter.
_FEEDS: Mapping[str, str] = {"iex": "iex", "sip": "sip", "delayed_sip": "delayed_sip"}
_NS = 1_000_000_000


def _rfc3339_seconds(ts_ns: int, *, ceil: bool) -> str:
    """``ts_ns`` as RFC 3339 UTC to the second, rounded down (or up with ``ceil``).

    Whole seconds: older revisions of Alpaca's reference refused fractional
    seconds, and the backfill filters the rows to the exact window anyway.
    """
    seconds = -(-ts_ns // _NS) if ceil else ts_ns // _NS
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


class AlpacaHistory(RestHistory):
    """Alpaca's historical trades for one stock feed (``iex``, ``sip``, ``delayed_sip``)
    or a crypto location; made by ``AlpacaProvider.history()``.

    Trades are matched with live ones by their id ``i`` (:data:`BY_TRADE_ID`).
    """

    provider: ClassVar[str] = PROVIDER

    def __init__(
        self,
        *,
        key: str,
        secret: str,
        base_url: str = DATA_URL,
        feed: str = "iex",
        crypto_location: str | None = None,
        page_limit: int = MAX_PAGE_LIMIT,
    ) -> None:
        if crypto_location is None and feed not in _FEEDS:
            raise ValueError(f"no historical trades for feed {feed!r}")
        self._key = key
        self._secret = secret
        self.base_url = base_url.rstrip("/")
        self.page_limit = page_limit
        self.seam: SeamRule = BY_TRADE_ID
        self._crypto = crypto_location is not None
        if crypto_location is not None:
            self._path = f"/v1beta3/crypto/{crypto_location}/trades"
            self._extra: tuple[tuple[str, str], ...] = ()
        else:
            self._path = "/v2/stocks/trades"
            self._extra = (("feed", _FEEDS[feed]),)

    def __repr__(self) -> str:
        return f"AlpacaHistory(base_url={self.base_url!r}, path={self._path!r})"

    def headers(self) -> list[tuple[str, str]]:
        """Alpaca's key headers (crypto data needs none, but accepts them)."""
        return [("APCA-API-KEY-ID", self._key), ("APCA-API-SECRET-KEY", self._secret)]

    def requests(self, query: HistoryQuery) -> list[HttpRequest]:
        """One multi-symbol request per :data:`MAX_SYMBOLS_PER_REQUEST` symbols, sorted
        ascending in time, the window widened to whole seconds."""
        symbols = sorted(query.symbols)
        window = (
            ("start", _rfc3339_seconds(query.start_ns, ceil=False)),
            ("end", _rfc3339_seconds(query.end_ns, ceil=True)),
            ("limit", str(self.page_limit)),
            ("sort", "asc"),
        )
        groups = [
            symbols[i : i + MAX_SYMBOLS_PER_REQUEST]
            for i in range(0, len(symbols), MAX_SYMBOLS_PER_REQUEST)
        ]
        return [
            HttpRequest(
                self._path, (("symbols", ",".join(group)), *window, *self._extra), tuple(group)
            )
            for group in groups
        ]

    def parse(self, request: HttpRequest, body: bytes, ts_recv: int) -> TradePage:
        """A page: rows of every symbol (Alpaca sorts them by symbol, then time)."""
        document = orjson.loads(body)
        if type(document) is not dict or "trades" not in document:
            raise ValueError("not a trades page: no 'trades' map")
        by_symbol = document["trades"]
        if by_symbol is None:
            by_symbol = {}
        if type(by_symbol) is not dict:
            raise ValueError("'trades' is not a map of symbol -> rows")
        token = document.get("next_page_token")
        if token is not None and (type(token) is not str or not token):
            raise ValueError("'next_page_token' is not a non-empty string")
        trades: list[Trade] = []
        dropped: list[tuple[str, int]] = []
        for symbol, rows in by_symbol.items():
            if type(rows) is not list:
                raise ValueError(f"rows of {symbol!r} are not a list")
            malformed = 0
            # Each parsed row is freed as its trade is made (see PolygonHistory.parse).
            rows.reverse()
            while rows:
                try:
                    trades.append(self._trade(symbol, rows.pop(), ts_recv))
                except (KeyError, TypeError, ValueError, OverflowError):
                    malformed += 1
            if malformed:
                dropped.append((symbol, malformed))
        following = None if token is None else request.with_param("page_token", token)
        return TradePage(tuple(trades), following, tuple(dropped))

    def _trade(self, symbol: str, row: object, ts_recv: int) -> Trade:
        if type(row) is not dict:
            raise TypeError("a row is not a map")
        trade_id = row["i"]
        if type(trade_id) is not int:
            raise TypeError("trade id 'i' is not an integer")
        stamp = row["t"]
        if type(stamp) is not str:
            raise TypeError("timestamp 't' is not a string")
        if self._crypto:
            side = text(row.get("tks"))
            conditions: tuple[str, ...] = (side,) if side else ()
            exchange = tape = ""
        else:
            raw = row.get("c")
            if raw is not None and type(raw) is not list:
                raise TypeError("conditions 'c' are not a list of strings")
            conditions = texts_of(raw)
            exchange = text(row.get("x"))
            tape = text(row.get("z"))
        return Trade(
            provider=PROVIDER,
            symbol=symbol,
            ts_event=json_event_ns(stamp),
            ts_recv=ts_recv,
            price=price(row["p"]),
            size=size(row["s"]),
            exchange=exchange,
            trade_id=str(trade_id),
            conditions=conditions,
            tape=tape,
            backfilled=True,
        )

    def rate_limit_wait(
        self, status: int, headers: Mapping[str, str], wall_ns: int
    ) -> float | None:
        """Until ``X-RateLimit-Reset`` (Unix seconds) after a 429, or after any response
        that says ``X-RateLimit-Remaining: 0``; else ``Retry-After`` if sent."""
        remaining = headers.get("x-ratelimit-remaining")
        reset = headers.get("x-ratelimit-reset")
        if reset is not None and (status == 429 or remaining == "0"):
            try:
                at = float(reset)
            except ValueError:
                at = math.nan
            if math.isfinite(at):
                return max(0.0, at - wall_ns / _NS)
        if status == 429:
            return super().rate_limit_wait(status, headers, wall_ns)
        return None

