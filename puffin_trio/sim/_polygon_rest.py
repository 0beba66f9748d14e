"""Polygon/Massive's historical trades endpoint, as :func:`~puffin_trio.sim.serve_polygon` has it.

This module owns :class:`PolygonRest`: ``GET /v3/trades/{ticker}`` answered
from the simulator's trade tape as Massive answers it
(https://massive.com/docs/rest/stocks/trades-quotes/trades): the key as a
bearer token or ``apiKey`` parameter; ``timestamp``, ``timestamp.gte``/
``.gt``/``.lte``/``.lt`` in ns (or a ``YYYY-MM-DD`` day); ``order`` (``asc``;
the API's default is ``desc``, newest first, which the simulator refuses
rather than fake); ``limit`` up to 50 000 (default 1 000); ``{"results",
"status", "request_id", "next_url"}`` pages whose ``next_url`` carries a
``cursor`` and everything else; errors as ``{"status": "ERROR", ...}``; 429s
with ``Retry-After``. Crypto tickers are ``X:BTCUSD``. It must not do I/O;
the row format is the caller's (``row``).
"""

from __future__ import annotations

import base64
import binascii
import calendar
import math
from collections.abc import Callable
from datetime import date
from typing import Any

import orjson

from puffin_trio.sim._common import same_secret
from puffin_trio.sim._rest import RestRequest, RestResponse, json_response
from puffin_trio.sim._tape import Printed, TradeTape

__all__ = ["MAX_LIMIT", "PolygonRest"]

#: Largest ``limit`` the endpoint accepts.
MAX_LIMIT = 50_000
_DEFAULT_LIMIT = 1000
_PATH = "/v3/trades/"
_NS = 1_000_000_000
_INT64_MAX = 2**63 - 1
_ERRORS = {
    400: ("ERROR", "bad request"),
    401: ("ERROR", "Unknown API Key"),
    403: ("NOT_AUTHORIZED", "You are not entitled to this data. Please upgrade your plan."),
    404: ("NOT_FOUND", "not found"),
    405: ("ERROR", "method not allowed"),
    429: ("ERROR", "You've exceeded the maximum requests per minute."),
    500: ("ERROR", "internal server error"),
}


def _ns(text: str) -> int:
    """A ``timestamp`` parameter: ns since the epoch, or a ``YYYY-MM-DD`` day (its midnight)."""
    if len(text) == 10 and text[4] == "-":
        return calendar.timegm(date.fromisoformat(text).timetuple()) * _NS
    return int(text)


class PolygonRest:
    """The historical trades endpoint of one Polygon simulator.

    ``symbol_of`` maps a REST ticker to the model's symbol (``None``: unknown,
    an empty page); ``row`` turns a tape entry into the API's row;
    ``page_size`` caps a page below the request's ``limit``.
    """

    def __init__(
        self,
        tape: TradeTape,
        *,
        key: str,
        symbol_of: Callable[[str], str | None],
        row: Callable[[Printed], dict[str, Any]],
        page_size: int | None = None,
    ) -> None:
        self._tape = tape
        self._key = key
        self._symbol_of = symbol_of
        self._row = row
        self._page_size = page_size
        self._answered = 0

    def answer(self, request: RestRequest) -> RestResponse:
        """A page of one ticker's trades, or Massive's error document."""
        if not request.path.startswith(_PATH) or len(request.path) == len(_PATH):
            return self.error(404)
        given = request.query.get("apiKey")
        if given is None:
            scheme, _, given = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer":
                given = ""
        if not same_secret(given, self._key):
            return self.error(401)
        ticker = request.path[len(_PATH) :]
        query = dict(request.query)
        query.pop("apiKey", None)
        try:
            if "cursor" in query:
                query = _uncursor(query["cursor"])
            window = _window(query)
            limit = int(query.get("limit", _DEFAULT_LIMIT))
            after = int(query.get("after", "-1"))
        except ValueError as exc:
            return self.error(400, str(exc))
        if not 1 <= limit <= MAX_LIMIT:
            return self.error(400, f"limit must be between 1 and {MAX_LIMIT}")
        if query.get("order", "desc") != "asc" or query.get("sort", "timestamp") != "timestamp":
            return self.error(400, "the simulator serves order=asc, sort=timestamp only")
        page = limit if self._page_size is None else min(limit, self._page_size)
        symbol = self._symbol_of(ticker)
        rows = [] if symbol is None else self._tape.page(symbol, *window, after, page + 1)
        self._answered += 1
        document: dict[str, Any] = {
            "results": [self._row(p) for p in rows[:page]],
            "status": "OK",
            "request_id": f"sim-{self._answered}",
        }
        if len(rows) > page:
            state = {**query, "after": str(rows[page - 1].ordinal)}
            cursor = base64.urlsafe_b64encode(orjson.dumps(state)).decode()
            document["next_url"] = f"http://{request.host}{request.path}?cursor={cursor}"
        return json_response(200, document)

    def rate_limited(self, reset_at_ns: int, wall_ns: int) -> RestResponse:
        """429 with ``Retry-After`` (whole seconds, rounded up)."""
        wait = max(0, math.ceil((reset_at_ns - wall_ns) / _NS))
        status, message = _ERRORS[429]
        return json_response(
            429, {"status": status, "error": message}, (("Retry-After", str(wait)),)
        )

    def error(self, status: int, message: str | None = None) -> RestResponse:
        """Massive's error document."""
        kind, text = _ERRORS.get(status, ("ERROR", "error"))
        document = {"status": kind, "request_id": "sim", "error": message or text}
        return json_response(status, document)

    def limit_headers(self, limit: int, remaining: int, reset_at_ns: int) -> list[tuple[str, str]]:
        """Massive documents no rate-limit headers on ordinary answers."""
        return []


def _uncursor(cursor: str) -> dict[str, str]:
    try:
        state = orjson.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (ValueError, binascii.Error):
        raise ValueError("bad cursor") from None
    if type(state) is not dict or not all(type(v) is str for v in state.values()):
        raise ValueError("bad cursor")
    return state


def _window(query: dict[str, str]) -> tuple[int, int]:
    """The inclusive ns window of the ``timestamp`` parameters."""
    start, end = 0, _INT64_MAX
    if "timestamp" in query:
        start = _ns(query["timestamp"])
        end = start + 86_400 * _NS - 1 if len(query["timestamp"]) == 10 else start
    if "timestamp.gte" in query:
        start = max(start, _ns(query["timestamp.gte"]))
    if "timestamp.gt" in query:
        start = max(start, _ns(query["timestamp.gt"]) + 1)
    if "timestamp.lte" in query:
        end = min(end, _ns(query["timestamp.lte"]))
    if "timestamp.lt" in query:
        end = min(end, _ns(query["timestamp.lt"]) - 1)
    return start, end
