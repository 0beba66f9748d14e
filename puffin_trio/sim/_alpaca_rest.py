"""Alpaca's historical trades endpoints, as :func:`~puffin_trio.sim.serve_alpaca` serves them.

This module owns :class:`AlpacaRest`: ``GET /v2/stocks/trades`` (stock
servers) and ``GET /v1beta3/crypto/{loc}/trades`` (crypto servers), answered
from the simulator's trade tape as Alpaca answers them
(https://docs.alpaca.markets/reference/stocktrades): key headers checked,
``symbols``, ``start``/``end`` (RFC 3339, inclusive), ``limit`` (1-10 000,
counted across symbols), ``sort=asc``, pages sorted by symbol then time with
an opaque ``next_page_token``; errors as ``{"message": ...}``; 429s with
``X-RateLimit-Limit``/``-Remaining``/``-Reset`` (Unix seconds). It must not
do I/O; the row format is the caller's (``row``).
"""

from __future__ import annotations

import base64
import binascii
import calendar
import math
from collections.abc import Callable
from datetime import datetime
from typing import Any

from puffin_trio.sim._common import same_secret
from puffin_trio.sim._rest import RestRequest, RestResponse, json_response
from puffin_trio.sim._tape import Printed, TradeTape

__all__ = ["MAX_LIMIT", "AlpacaRest", "parse_rfc3339"]

#: Largest ``limit`` Alpaca accepts (a larger one is a 422).
MAX_LIMIT = 10_000
#: Rows per page when the request gives no ``limit`` (Alpaca's default).
_DEFAULT_LIMIT = 1000
_NS = 1_000_000_000
_MESSAGES = {
    400: "invalid request",
    401: "request is not authorized",
    403: "forbidden: your subscription does not permit this data",
    404: "endpoint not found",
    405: "method not allowed",
    422: "unprocessable request",
    429: "too many requests",
    500: "internal server error",
}


def parse_rfc3339(text: str) -> int:
    """RFC 3339 UTC (``Z`` or ``+00:00``, up to 9 fractional digits), or a ``YYYY-MM-DD``
    date (its midnight), -> ns since the epoch. ``ValueError`` for anything else."""
    if len(text) == 10:
        return calendar.timegm(datetime.fromisoformat(text).timetuple()) * _NS
    if text.endswith("Z"):
        body = text[:-1]
    elif text.endswith("+00:00"):
        body = text[:-6]
    else:
        raise ValueError(f"not a UTC time: {text!r}")
    head, dot, fraction = body.partition(".")
    if len(head) != 19 or "T" not in head:
        raise ValueError(f"not an RFC 3339 time: {text!r}")
    if dot and not (fraction.isdigit() and fraction.isascii() and len(fraction) <= 9):
        raise ValueError(f"bad fraction of a second in {text!r}")
    nanos = int(fraction.ljust(9, "0")) if dot else 0
    return calendar.timegm(datetime.fromisoformat(head).timetuple()) * _NS + nanos


def _token(index: int, ordinal: int) -> str:
    return base64.urlsafe_b64encode(f"{index}:{ordinal}".encode()).decode()


def _untoken(token: str) -> tuple[int, int]:
    try:
        index, _, ordinal = base64.urlsafe_b64decode(token.encode()).decode().partition(":")
        return int(index), int(ordinal)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ValueError("bad page token") from None


class AlpacaRest:
    """The historical trades endpoint of one Alpaca simulator.

    ``row`` turns a tape entry into the API's row (stock or crypto layout);
    ``page_size`` caps a page below the request's ``limit`` (to make a test
    paginate); ``crypto`` picks the path.
    """

    def __init__(
        self,
        tape: TradeTape,
        *,
        key: str,
        secret: str,
        crypto: bool,
        row: Callable[[Printed], dict[str, Any]],
        page_size: int | None = None,
    ) -> None:
        self._tape = tape
        self._key = key
        self._secret = secret
        self._crypto = crypto
        self._row = row
        self._page_size = page_size

    def _path_ok(self, path: str) -> bool:
        if self._crypto:
            parts = path.split("/")  # "", "v1beta3", "crypto", location, "trades"
            return len(parts) == 5 and parts[1:3] == ["v1beta3", "crypto"] and (
                bool(parts[3]) and parts[4] == "trades"
            )
        return path == "/v2/stocks/trades"

    def answer(self, request: RestRequest) -> RestResponse:
        """A page of trades, or Alpaca's error document."""
        if not self._path_ok(request.path):
            return self.error(404)
        headers = request.headers
        key = headers.get("apca-api-key-id", "")
        secret = headers.get("apca-api-secret-key", "")
        if not (same_secret(key, self._key) & same_secret(secret, self._secret)):
            return self.error(401)
        query = request.query
        symbols = sorted({s for s in query.get("symbols", "").split(",") if s})
        if not symbols:
            return self.error(400, "symbols is required")
        try:
            start = parse_rfc3339(query["start"]) if "start" in query else 0
            end = parse_rfc3339(query["end"]) if "end" in query else 2**63 - 1
            limit = int(query.get("limit", _DEFAULT_LIMIT))
            index, after = _untoken(query["page_token"]) if "page_token" in query else (0, -1)
        except ValueError as exc:
            return self.error(400, str(exc))
        if not 1 <= limit <= MAX_LIMIT or query.get("sort", "asc") != "asc":
            return self.error(422, f"limit must be 1-{MAX_LIMIT} and sort asc")
        if self._page_size is not None:
            limit = min(limit, self._page_size)
        trades: dict[str, list[dict[str, Any]]] = {}
        token = None
        room = limit
        for i in range(index, len(symbols)):
            symbol = symbols[i]
            rows = self._tape.page(symbol, start, end, after if i == index else None, room + 1)
            taken = rows[:room]
            if taken:
                trades[symbol] = [self._row(p) for p in taken]
                room -= len(taken)
            if len(rows) > len(taken):
                last = taken[-1].ordinal if taken else (after if i == index else -1)
                token = _token(i, last)
                break
            if room == 0:
                if i + 1 < len(symbols):
                    token = _token(i + 1, -1)
                break
        return json_response(200, {"trades": trades, "next_page_token": token})

    def rate_limited(self, reset_at_ns: int, wall_ns: int) -> RestResponse:
        """429 with Alpaca's rate-limit headers (the reset as Unix seconds, rounded up)."""
        reset = str(math.ceil(reset_at_ns / _NS))
        return json_response(
            429,
            {"message": _MESSAGES[429]},
            (("X-RateLimit-Limit", "200"), ("X-RateLimit-Remaining", "0"),
             ("X-RateLimit-Reset", reset)),
        )  # fmt: skip

    def error(self, status: int, message: str | None = None) -> RestResponse:
        """Alpaca's error document."""
        return json_response(status, {"message": message or _MESSAGES.get(status, "error")})

    def limit_headers(self, limit: int, remaining: int, reset_at_ns: int) -> list[tuple[str, str]]:
        """The rate-limit headers Alpaca puts on every answer."""
        return [
            ("X-RateLimit-Limit", str(limit)),
            ("X-RateLimit-Remaining", str(remaining)),
            ("X-RateLimit-Reset", str(math.ceil(reset_at_ns / _NS))),
        ]
