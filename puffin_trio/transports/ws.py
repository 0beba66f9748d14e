"""WebSocket transport over trio-websocket, tuned for market data.

This module owns opening, reading, writing, pinging and closing one WebSocket
connection, and turning trio-websocket's exceptions into our typed
:class:`~puffin_trio.errors.ConnectionLost`. It must not parse frames: the
provider protocols do that.

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

import math
import ssl
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import trio
import trio_websocket

from puffin_trio.errors import ConnectionLost
from puffin_trio.providers._config import check_ws_url

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

    def receive_nowait(self) -> str | bytes | None:
        """A message trio-websocket has already queued, or ``None``. Not a checkpoint.

        trio-websocket has no public non-blocking get; its queue is a trio
        memory channel (the private ``_recv_channel``), which has one. Should
        that internal change, this returns ``None`` and the reader waits for
        each message; ``tests/test_transport_ws.py`` pins the internal so such
        a change fails the suite instead.
        """
        channel = getattr(self._ws, "_recv_channel", None)
        try:
            frame: str | bytes = channel.receive_nowait()  # type: ignore[union-attr]
        except (AttributeError, trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
            return None
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


def _describe_connect_error(exc: BaseException) -> str:
    cause = exc.__cause__ if isinstance(exc, trio.BrokenResourceError) else exc
    if isinstance(cause, ssl.SSLCertVerificationError):
        return f"TLS certificate verification failed: {cause.verify_message} ({cause.reason})"
    if isinstance(cause, ssl.SSLError):
        return f"TLS handshake failed: {cause.reason or cause}"
    return repr(cause)


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
    :class:`ConnectionLost` if the connection cannot be opened: refused,
    timed out, TLS verification failed, or the server's HTTP reply rejected
    the upgrade. Closing is bounded by :data:`DEFAULT_DISCONNECT_TIMEOUT`.

    TCP and TLS are set up here rather than by trio-websocket, which turns a
    failed certificate check into a 10 s ``ConnectionTimeout`` that hides the
    cause (python-trio/trio-websocket#199).
    """
    check_ws_url(url, allow_insecure=allow_insecure)
    parts = urlsplit(url)
    host = parts.hostname or ""
    secure = parts.scheme == "wss"
    port = parts.port or (443 if secure else 80)
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host_header = host if port in (80, 443) else f"{host}:{port}"
    extra = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
    # Errors are raised after the nursery has closed, so they are not wrapped in a group.
    failure: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:  # hosts trio-websocket's reader task
            try:
                with trio.fail_after(connect_timeout):
                    stream: trio.SocketStream | trio.SSLStream[trio.SocketStream]
                    stream = await trio.open_tcp_stream(host, port)
                    if secure:
                        stream = trio.SSLStream(
                            stream,
                            ssl_context or ssl.create_default_context(),
                            server_hostname=host,
                            https_compatible=True,
                        )
                        await stream.do_handshake()
                    ws = await trio_websocket.wrap_client_stream(
                        nursery,
                        stream,
                        host_header,
                        resource,
                        extra_headers=extra,
                        message_queue_size=message_queue_size,
                        max_message_size=max_message_size,
                        receive_buffer_size=receive_buffer_size,
                    )
            except trio.TooSlowError:
                failure = ConnectionLost(
                    f"could not connect to {parts.netloc} within {connect_timeout} s"
                )
                nursery.cancel_scope.cancel()
            except (OSError, trio.BrokenResourceError) as exc:
                failure = ConnectionLost(
                    f"could not connect to {parts.netloc}: {_describe_connect_error(exc)}"
                )
                nursery.cancel_scope.cancel()
            else:
                try:
                    yield WebSocketTransport(ws)
                except BaseException as exc:
                    failure = exc
                finally:
                    if trio.current_effective_deadline() == -math.inf:
                        # We are being cancelled, and so is trio-websocket's reader
                        # task: nobody would read the server's close reply, and a
                        # close handshake would just sit out its timeout. Close TCP
                        # (a FIN, so the server frees our connection slot at once).
                        await trio.aclose_forcefully(stream)
                    else:
                        with (
                            trio.CancelScope(shield=True),
                            trio.move_on_after(DEFAULT_DISCONNECT_TIMEOUT),
                        ):
                            await ws.aclose()
                    nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        rejected = group.subgroup(trio_websocket.ConnectionRejected)
        if rejected is not None:
            first = rejected.exceptions[0]
            assert isinstance(first, trio_websocket.ConnectionRejected)
            raise ConnectionLost(
                f"server rejected the WebSocket upgrade: HTTP {first.status_code}"
            ) from None
        raise
    if failure is not None:
        raise failure
