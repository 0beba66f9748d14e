"""HTTP on a WebSocket simulator's port: telling the two apart, and serving historical requests.

This module owns what :class:`~puffin_trio.sim._common.WsSimServer` needs to
answer plain HTTP requests (the providers' historical REST endpoints) on the
port where it accepts WebSocket upgrades: :func:`read_head` and
:func:`wants_websocket` (look at a connection's first request), and
:func:`serve_rest`, an HTTP/1.1 keep-alive loop (h11) that hands each request
to a provider's :class:`RestEndpoint` and applies the server's
historical-endpoint faults (:class:`~puffin_trio.sim.faults.HistoryFaults`)
and optional rate limit on the way. It must not know any provider's paths or
documents: the endpoint does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlsplit

import attrs
import h11
import orjson
import trio

from puffin_trio.sim.faults import FaultKind, HistoryFaults

__all__ = [
    "IDLE_TIMEOUT",
    "MAX_HEAD",
    "RateWindow",
    "RestEndpoint",
    "RestRequest",
    "RestResponse",
    "json_response",
    "read_head",
    "serve_rest",
    "wants_websocket",
]

#: Largest request head accepted (request line and headers): h11's default
#: (16 KiB), far above what an HTTP client or a WebSocket upgrade sends.
MAX_HEAD = 16 * 1024
#: Seconds a kept-alive HTTP connection may stay idle before the server closes
#: it: httpx keeps pooled connections 5 s, so a client never finds one closed
#: under it, and an abandoned one does not hold a task for long.
IDLE_TIMEOUT = 30.0
_NS = 1_000_000_000


@attrs.frozen
class RestRequest:
    """One HTTP request: method, path (no query), query parameters (the last of a repeated
    name wins), headers (names in lower case) and the ``Host`` it was sent to."""

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    host: str
    target: str


@attrs.frozen
class RestResponse:
    """What to answer: a status, a body and extra headers."""

    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


def json_response(
    status: int, document: Any, headers: tuple[tuple[str, str], ...] = ()
) -> RestResponse:
    """A JSON answer."""
    return RestResponse(status, orjson.dumps(document), headers)


class RestEndpoint(Protocol):
    """A provider's historical endpoints as the simulator serves them."""

    def answer(self, request: RestRequest) -> RestResponse:
        """The answer to ``request`` (a page, or the provider's error document)."""

    def rate_limited(self, reset_at_ns: int, wall_ns: int) -> RestResponse:
        """The provider's 429, saying the limit resets at ``reset_at_ns`` (wall clock)."""

    def error(self, status: int) -> RestResponse:
        """The provider's error document for ``status`` (401, 403, 500, ...)."""

    def limit_headers(self, limit: int, remaining: int, reset_at_ns: int) -> list[tuple[str, str]]:
        """Rate-limit headers the provider puts on every answer (none: ``[]``)."""


@attrs.define
class RateWindow:
    """A fixed-window rate limit: ``limit`` requests per ``period`` seconds of wall clock
    (windows aligned to the epoch, as Alpaca's per-minute limit resets on the minute)."""

    limit: int
    period: float = 60.0
    _window: int = -1
    _count: int = 0

    def take(self, wall_ns: int) -> tuple[bool, int, int]:
        """Count one request at ``wall_ns``: (allowed, remaining, window end in ns)."""
        period_ns = int(self.period * _NS)
        window = wall_ns // period_ns
        if window != self._window:
            self._window, self._count = window, 0
        self._count += 1
        return self._count <= self.limit, max(0, self.limit - self._count), (window + 1) * period_ns


async def read_head(stream: trio.abc.ReceiveStream) -> bytes:
    """The bytes of a connection's first request head (and whatever came with it).

    Returns ``b""`` if the peer closed first, or sent more than :data:`MAX_HEAD`
    bytes without ending the head (then the caller drops it). A checkpoint.
    """
    data = bytearray()
    while b"\r\n\r\n" not in data:
        if len(data) > MAX_HEAD:
            return b""
        chunk = await stream.receive_some(MAX_HEAD)
        if not chunk:
            return b""
        data += chunk
    return bytes(data)


def wants_websocket(data: bytes) -> bool:
    """Whether the request head in ``data`` asks for a WebSocket upgrade."""
    head = data.split(b"\r\n\r\n", 1)[0].lower()
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip() == b"upgrade" and b"websocket" in value:
            return True
    return False


async def serve_rest(
    stream: trio.abc.Stream,
    data: bytes,
    endpoint: RestEndpoint,
    *,
    faults: HistoryFaults,
    wall_clock: Callable[[], int],
    rate: RateWindow | None = None,
    log: list[tuple[str, int]] | None = None,
    logger: logging.Logger,
) -> None:
    """Answer HTTP/1.1 requests on ``stream`` (``data``: bytes already read) until the
    client closes, breaks the protocol or stays idle :data:`IDLE_TIMEOUT` seconds.

    Each request is counted in ``faults`` (which may make it a 429, an error
    status, a slow or a truncated answer) and in ``rate``; ``log`` gets its
    target and status. Never raises on a disconnect.
    """
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
    conn.receive_data(data)
    request: h11.Request | None = None
    try:
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError:
                if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    await _send(stream, conn, RestResponse(400, b"bad request"))
                return
            if event is h11.NEED_DATA:
                chunk: bytes | bytearray = b""
                with trio.move_on_after(IDLE_TIMEOUT):
                    chunk = await stream.receive_some(MAX_HEAD)
                conn.receive_data(bytes(chunk))
                if not chunk:
                    return
            elif isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.EndOfMessage) and request is not None:
                parsed = _parse(request)
                response, delay, truncate = _answer(endpoint, parsed, faults, rate, wall_clock)
                if log is not None:
                    log.append((parsed.target, response.status))
                if delay:
                    await trio.sleep(delay)
                await _send(stream, conn, response, truncate=truncate)
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()
                request = None
            elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                return
    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        logger.debug("history endpoint: connection lost: %r", exc)


def _parse(request: h11.Request) -> RestRequest:
    target = request.target.decode("latin-1")
    parts = urlsplit(target)
    headers = {name.decode("latin-1").lower(): value.decode("latin-1")
               for name, value in request.headers}  # fmt: skip
    return RestRequest(
        method=request.method.decode("latin-1"),
        path=parts.path,
        query=dict(parse_qsl(parts.query, keep_blank_values=True)),
        headers=headers,
        host=headers.get("host", ""),
        target=_without_secrets(target),
    )


def _without_secrets(target: str) -> str:
    """The target as logged: an ``apiKey`` query parameter is redacted."""
    parts = urlsplit(target)
    if "apikey=" not in parts.query.lower():
        return target
    kept = [(k, "<redacted>" if k.lower() == "apikey" else v)
            for k, v in parse_qsl(parts.query, keep_blank_values=True)]  # fmt: skip
    return parts.path + "?" + "&".join(f"{k}={v}" for k, v in kept)


def _answer(
    endpoint: RestEndpoint,
    request: RestRequest,
    faults: HistoryFaults,
    rate: RateWindow | None,
    wall_clock: Callable[[], int],
) -> tuple[RestResponse, float, bool]:
    """(answer, seconds to wait before sending it, cut it in the middle?)."""
    now = wall_clock()
    delay, truncate = 0.0, False
    for fault in faults.next_request():
        kind = fault.kind
        if kind is FaultKind.RATE_LIMITED:
            reset = fault.duration if fault.duration is not None else 1.0
            return endpoint.rate_limited(now + int(reset * _NS), now), 0.0, False
        if kind is FaultKind.HTTP_ERROR:
            return endpoint.error(fault.code or 500), 0.0, False
        if kind is FaultKind.SLOW_PAGE:
            delay += fault.delay
        elif kind is FaultKind.TRUNCATED_PAGE:
            truncate = True
    limits: list[tuple[str, str]] = []
    if rate is not None:
        allowed, remaining, reset_at = rate.take(now)
        if not allowed:
            return endpoint.rate_limited(reset_at, now), 0.0, False
        limits = endpoint.limit_headers(rate.limit, remaining, reset_at)
    response = endpoint.answer(request) if request.method == "GET" else endpoint.error(405)
    if limits:
        response = attrs.evolve(response, headers=(*response.headers, *limits))
    return response, delay, truncate


async def _send(
    stream: trio.abc.SendStream,
    conn: h11.Connection,
    response: RestResponse,
    *,
    truncate: bool = False,
) -> None:
    body = response.body[: len(response.body) // 2] if truncate else response.body
    headers = [
        ("content-type", "application/json"),
        ("content-length", str(len(body))),
        *response.headers,
    ]
    out = conn.send(h11.Response(status_code=response.status, headers=headers))
    out = (out or b"") + (conn.send(h11.Data(data=body)) or b"")
    out += conn.send(h11.EndOfMessage()) or b""
    await stream.send_all(out)
