"""WebSocket transport over trio-websocket, tuned for market data.

This module owns opening, reading, writing, pinging and closing one WebSocket
connection, and turning trio-websocket's exceptions into our typed
:class:`~puffin_trio.errors.ConnectionLost`. It must not parse frames: the
provider codecs do that.

Why these defaults (trio-websocket's own are tuned for chat, not feeds):

* ``receive_buffer_size`` 64 KiB (library default 4 KiB): a batched market
  data frame is often 2-20 KiB; reading 4 KiB at a time costs several trips
  through the event loop per frame. 64 KiB matches a typical TCP receive
  window chunk and cut reads per frame to one in our benchmarks.
* ``message_queue_size`` 256 (library default 1): trio-websocket's reader
  task stops reading the socket -- and so stops answering the server's pings
  -- while its queue is full. With a queue of 1, any pause of our reader
  (a GC pause, a burst) stalls the socket. 256 frames of slack absorb bursts;
  our own bounded fan-out with a declared overflow policy sits after it.
* ``max_message_size`` is per provider (trio-websocket closes with 1009 when a
  frame is larger); see each provider.
* ``connect_timeout`` 10 s: TCP + TLS + HTTP upgrade to a distant data centre
  takes well under a second; 10 s catches a black-holed connect without
  tripping on a slow TLS handshake.

TLS is verified (the system's default context) for ``wss://``. Plain
``ws://`` is accepted only for loopback hosts (the simulators, local
gateways) unless ``allow_insecure=True``: a plain-text connection to a real
provider would send the API key in clear.
"""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import trio
import trio_websocket

from puffin_trio.errors import ConfigurationError, ConnectionLost

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_MESSAGE_QUEUE_SIZE",
    "DEFAULT_RECEIVE_BUFFER_SIZE",
    "WebSocketTransport",
    "check_ws_url",
    "open_ws_transport",
]

DEFAULT_RECEIVE_BUFFER_SIZE = 64 * 1024
DEFAULT_MESSAGE_QUEUE_SIZE = 256
DEFAULT_CONNECT_TIMEOUT = 10.0
#: How long a clean close (close frame + TCP shutdown) may take before we just drop it.
DEFAULT_DISCONNECT_TIMEOUT = 2.0


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_ws_url(url: str, *, allow_insecure: bool = False) -> None:
    """Raise :class:`ConfigurationError` unless ``url`` is a usable WebSocket URL.

    ``wss://`` anywhere; ``ws://`` only to a loopback host unless ``allow_insecure``.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ConfigurationError(
            f"bad WebSocket URL {url!r}: expected wss://host/path (or ws://127.0.0.1:PORT)"
        )
    if parts.scheme == "ws" and not allow_insecure and not _is_loopback(parts.hostname):
        raise ConfigurationError(
            f"refusing plain ws:// to non-loopback host {parts.hostname!r}: credentials would "
            "travel in clear; use wss:// or pass allow_insecure=True"
        )


class WebSocketTransport:
    """One open WebSocket connection. Frames are ``str`` (text) or ``bytes`` (binary).

    Counters ``frames_received`` and ``bytes_received`` are updated on every receive.
    """

    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self._ws = ws
        self.frames_received = 0
        self.bytes_received = 0

    async def send(self, frame: str | bytes) -> None:
        """Send one message. A checkpoint. Raises ConnectionLost if the connection is closed."""
        try:
            await self._ws.send_message(frame)
        except trio_websocket.ConnectionClosed as exc:
            raise ConnectionLost(f"connection closed while sending: {exc.reason}") from None

    async def send_all(self, frames: Sequence[str | bytes]) -> None:
        """Send frames in order."""
        for frame in frames:
            await self.send(frame)

    async def receive(self) -> str | bytes:
        """Wait for the next message. A checkpoint.

        Raises ConnectionLost when the peer closed (after every message it
        sent before closing has been received) or the connection broke.
        """
        try:
            frame = await self._ws.get_message()
        except trio_websocket.ConnectionClosed as exc:
            reason = exc.reason
            code = reason.code if reason is not None else None
            text = f"{reason.name} {reason.reason or ''}".strip() if reason is not None else ""
            raise ConnectionLost(f"connection closed by peer: {text}", code=code) from None
        self.frames_received += 1
        self.bytes_received += len(frame)
        return frame

    async def ping(self) -> None:
        """Send a WebSocket ping and wait for its pong (no deadline: the caller sets one)."""
        try:
            await self._ws.ping()
        except trio_websocket.ConnectionClosed as exc:
            raise ConnectionLost(f"connection closed while pinging: {exc.reason}") from None

    @property
    def closed(self) -> bool:
        return self._ws.closed is not None

    async def aclose(self, code: int = 1000, reason: str | None = None) -> None:
        """Close cleanly (close handshake), bounded by the disconnect timeout."""
        with trio.move_on_after(DEFAULT_DISCONNECT_TIMEOUT):
            await self._ws.aclose(code, reason)


@asynccontextmanager
async def open_ws_transport(
    url: str,
    *,
    headers: Sequence[tuple[str, str]] = (),
    max_message_size: int = 1 << 20,
    message_queue_size: int = DEFAULT_MESSAGE_QUEUE_SIZE,
    receive_buffer_size: int = DEFAULT_RECEIVE_BUFFER_SIZE,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    allow_insecure: bool = False,
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[WebSocketTransport]:
    """Open a WebSocket connection for the duration of the block.

    Raises :class:`ConfigurationError` for a bad URL (before connecting) and
    :class:`ConnectionLost` if the connection cannot be opened (refused,
    timed out, rejected by the server's HTTP reply). Closing is bounded by
    :data:`DEFAULT_DISCONNECT_TIMEOUT`.
    """
    check_ws_url(url, allow_insecure=allow_insecure)
    extra = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
    cm = trio_websocket.open_websocket_url(
        url,
        ssl_context=ssl_context,
        extra_headers=extra,
        message_queue_size=message_queue_size,
        max_message_size=max_message_size,
        receive_buffer_size=receive_buffer_size,
        connect_timeout=connect_timeout,
        disconnect_timeout=DEFAULT_DISCONNECT_TIMEOUT,
    )
    try:
        async with cm as ws:
            yield WebSocketTransport(ws)
    except trio_websocket.DisconnectionTimeout:
        pass  # we were closing anyway; the reader task has been cancelled
    except trio_websocket.ConnectionRejected as exc:
        raise ConnectionLost(
            f"server rejected the WebSocket upgrade: HTTP {exc.status_code}"
        ) from None
    except trio_websocket.HandshakeError as exc:
        cause = exc.__cause__ or exc
        raise ConnectionLost(f"could not connect to {urlsplit(url).netloc}: {cause!r}") from None
