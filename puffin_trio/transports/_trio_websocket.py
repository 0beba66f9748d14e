"""The WebSocket transport on trio-websocket (``transport="trio-websocket"``).

This module owns :class:`TrioWebsocketTransport` and
:func:`open_trio_websocket_transport`: one connection on trio-websocket
(wsproto underneath), the design's original choice, kept for users who pin
it. It must not parse messages: the provider protocols do that.

trio-websocket leaves three things to us, which this module adds:

* TCP and TLS are set up here, so a certificate that fails verification is
  reported as such at once (trio-websocket turns it into a 10 s
  ``ConnectionTimeout`` that hides the cause, python-trio/trio-websocket#199).
* The upgrade is raced against the stream ending: trio-websocket waits for
  the server's reply until the connect timeout even after the connection was
  reset, so a reset during the upgrade fails at once, with its cause.
* The socket is closed when the connection ends: a trio-websocket client
  never closes the stream after a peer's close frame or FIN (``aclose`` is a
  no-op once it has recorded a close). A thin stream wrapper closes the
  socket as soon as the peer's FIN or an error reaches it, ``receive``
  closes it when it reports the end, and leaving the block closes it.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import trio
import trio_websocket

from puffin_trio.errors import ConnectionLost
from puffin_trio.transports._sockets import close_socket_now
from puffin_trio.transports._wscommon import (
    DEFAULT_CLOSE_TIMEOUT,
    DEFAULT_RECEIVE_BUFFER_SIZE,
    Endpoint,
    connect_failed,
    connection_ended,
    tls_context,
)

__all__ = ["TrioWebsocketTransport", "open_trio_websocket_transport"]


class _WatchedStream(trio.abc.Stream):
    """The connection's stream, closed as soon as the connection ends (FIN, reset, error).

    ``ended`` is set when that happens, with ``cause`` the error (``None`` for
    a FIN or a close of ours). ``close_sent`` is the code of the first close
    frame we sent (trio-websocket does not report the code of a close it
    sends for a peer's protocol error), read from the outgoing bytes.
    """

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.transport_stream = stream
        self.ended = trio.Event()
        self.cause: BaseException | None = None
        self.close_sent: int | None = None

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        try:
            data = bytes(await self.transport_stream.receive_some(max_bytes))
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self.end(exc)
            raise
        if not data:
            self.end(None)
        return data

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self.close_sent is None and data[:1] == _CLOSE_FRAME:
            self.close_sent = _close_code(bytes(data))
        try:
            await self.transport_stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self.end(exc)
            raise

    async def wait_send_all_might_not_block(self) -> None:
        await self.transport_stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        self.end(None)
        await self.transport_stream.aclose()

    def end(self, cause: BaseException | None) -> None:
        """The connection is over: note why (first call only), close the socket now."""
        if not self.ended.is_set():
            self.cause = cause
            self.ended.set()
        close_socket_now(self.transport_stream)


#: First byte of an unfragmented close frame (FIN + opcode 8).
_CLOSE_FRAME = b"\x88"


def _close_code(frame: bytes) -> int:
    """The status code of a client close frame (masked, payload <= 125 bytes); 1005 if none."""
    length = frame[1] & 0x7F
    if length < 2 or len(frame) < 8:
        return 1005
    mask = frame[2:6] if frame[1] & 0x80 else b"\0\0\0\0"
    start = 6 if frame[1] & 0x80 else 2
    return ((frame[start] ^ mask[0]) << 8) | (frame[start + 1] ^ mask[1])


class TrioWebsocketTransport:
    """One open WebSocket connection on trio-websocket. Frames are ``str`` or ``bytes``.

    ``frames_received`` and ``bytes_received`` count the messages handed out
    and their lengths.
    """

    def __init__(self, ws: trio_websocket.WebSocketConnection, stream: _WatchedStream) -> None:
        self._ws = ws
        self._stream = stream
        self._aborted = False
        self.frames_received = 0
        self.bytes_received = 0

    async def send(self, frame: str | bytes) -> None:
        """Send one message. A checkpoint. Raises ConnectionLost if the connection has ended."""
        try:
            await self._ws.send_message(frame)
        except trio_websocket.ConnectionClosed as exc:
            raise self._ended(exc.reason) from None

    async def send_all(self, frames: Sequence[str | bytes]) -> None:
        """Send frames in order."""
        for frame in frames:
            await self.send(frame)

    async def receive(self) -> str | bytes:
        """The next message. A checkpoint (cancelled, it takes nothing).

        Raises :class:`ConnectionLost` once the connection has ended and every
        message that arrived before the end was returned; the socket is closed
        by then.
        """
        try:
            frame = await self._ws.get_message()
        except trio_websocket.ConnectionClosed as exc:
            self._stream.end(None)
            raise self._ended(exc.reason) from None
        self.frames_received += 1
        self.bytes_received += len(frame)
        return frame

    def receive_nowait(self) -> str | bytes | None:
        """A message trio-websocket has already queued, or ``None``. Not a checkpoint.

        trio-websocket has no public non-blocking get; its queue is a trio
        memory channel (the private ``_recv_channel``), which has one. Should
        that internal change, this returns ``None`` and the reader waits for
        each message; ``tests/test_transport_contract.py`` pins the internal
        so such a change fails the suite instead.
        """
        channel = getattr(self._ws, "_recv_channel", None)
        try:
            frame: str | bytes = channel.receive_nowait()  # type: ignore[union-attr]
        except (AttributeError, trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
            return None
        self.frames_received += 1
        self.bytes_received += len(frame)
        return frame

    def _backlogged(self) -> bool:
        """trio-websocket's message queue is full (the private ``_recv_channel``, as in
        :meth:`receive_nowait`)."""
        channel = getattr(self._ws, "_recv_channel", None)
        if not isinstance(channel, trio.MemoryReceiveChannel):
            return False
        stats = channel.statistics()
        return bool(stats.current_buffer_used >= stats.max_buffer_size)

    async def ping(self) -> None:
        """Send a WebSocket ping and wait for its pong (no deadline: the caller sets one).

        Raises :class:`ConnectionLost` if the connection ends first.
        """
        async with trio.open_nursery() as nursery:
            # trio-websocket does not wake a ping waiting for its pong when the
            # connection ends; the watcher does.
            nursery.start_soon(self._cancel_when_ended, nursery.cancel_scope)
            try:
                await self._ws.ping()
            except trio_websocket.ConnectionClosed as exc:
                raise self._ended(exc.reason) from None
            nursery.cancel_scope.cancel()
        if self._stream.ended.is_set() or self._ws.closed is not None:
            raise self._ended(self._ws.closed)

    async def _cancel_when_ended(self, scope: trio.CancelScope) -> None:
        await self._stream.ended.wait()
        scope.cancel()

    def abort(self) -> None:
        """The link is declared dead: leaving the block closes the socket at once, with
        no closing handshake. Not a checkpoint. What has already arrived stays readable
        until then (the session drains it)."""
        self._aborted = True

    async def aclose(self) -> None:
        """Close: cleanly (close frame, the peer's reply, TCP; bounded by
        ``DEFAULT_CLOSE_TIMEOUT``) while the connection is open and flowing; at
        once if it has ended already (a close frame either way, a failure, an
        abort) or if trio-websocket's queue is full (its reader waits for room,
        so the peer's reply would never be read)."""
        if (
            not self._aborted
            and not self._stream.ended.is_set()
            and self._ws.closed is None
            and not self._backlogged()
        ):
            with trio.move_on_after(DEFAULT_CLOSE_TIMEOUT):
                await self._ws.aclose()
        self.close_now()

    def close_now(self) -> None:
        """Close the socket at once (shutdown under cancellation: nothing to wait for)."""
        self._stream.end(None)

    def _ended(self, reason: trio_websocket.CloseReason | None) -> ConnectionLost:
        """The typed error for this connection's end, with its close code."""
        sent = self._stream.close_sent
        if reason is None and sent is not None:
            # trio-websocket failed the connection (wsproto found a protocol error)
            # and recorded no reason; the close frame it sent says which.
            return connection_ended(sent, "", by="us")
        if reason is None or reason.code == 1006:
            return connection_ended(None, "", by="peer", cause=self._stream.cause)
        return connection_ended(reason.code, reason.reason or "", by=None)


@asynccontextmanager
async def open_trio_websocket_transport(
    endpoint: Endpoint,
    *,
    headers: Sequence[tuple[str, str]],
    max_message_size: int,
    message_queue_size: int,
    connect_timeout: float,
    ssl_context: Any,
) -> AsyncIterator[TrioWebsocketTransport]:
    """Connect to ``endpoint`` for the duration of the block (see ``open_ws_transport``)."""
    extra = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
    # Errors are raised after the nursery has closed, so they are not wrapped in a group.
    failure: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:  # hosts trio-websocket's reader task
            stream: _WatchedStream | None = None
            try:
                with trio.fail_after(connect_timeout):
                    tcp: trio.abc.Stream = await trio.open_tcp_stream(endpoint.host, endpoint.port)
                    if endpoint.secure:
                        tcp = trio.SSLStream(
                            tcp,
                            tls_context(ssl_context),
                            server_hostname=endpoint.host,
                            https_compatible=True,
                        )
                        await tcp.do_handshake()
                    stream = _WatchedStream(tcp)
                    ws = await _upgrade(
                        nursery, stream, endpoint, extra, message_queue_size, max_message_size
                    )
            except trio.TooSlowError:
                failure = connect_failed(endpoint, None, connect_timeout)
            except (OSError, trio.BrokenResourceError) as exc:
                failure = connect_failed(endpoint, exc, connect_timeout)
            except _EndedDuringUpgrade:
                assert stream is not None
                failure = connect_failed(endpoint, stream.cause or EOFError(), connect_timeout)
            if failure is not None:
                if stream is not None:
                    stream.end(None)
                nursery.cancel_scope.cancel()
            else:
                assert stream is not None
                transport = TrioWebsocketTransport(ws, stream)
                try:
                    yield transport
                except BaseException as exc:
                    failure = exc
                finally:
                    if trio.current_effective_deadline() == -math.inf:
                        # We are being cancelled, and so is trio-websocket's reader
                        # task: nobody would read the server's close reply. A FIN
                        # now frees the server's connection slot at once.
                        transport.close_now()
                    else:
                        with trio.CancelScope(shield=True):
                            await transport.aclose()
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


class _EndedDuringUpgrade(Exception):
    """The stream ended before the server answered the upgrade."""


async def _upgrade(
    nursery: trio.Nursery,
    stream: _WatchedStream,
    endpoint: Endpoint,
    extra: list[tuple[bytes, bytes]],
    message_queue_size: int,
    max_message_size: int,
) -> trio_websocket.WebSocketConnection:
    """trio-websocket's client handshake, raced against the stream ending."""
    ws: trio_websocket.WebSocketConnection | None = None
    async with trio.open_nursery() as race:

        async def watch() -> None:
            await stream.ended.wait()
            race.cancel_scope.cancel()

        race.start_soon(watch)
        ws = await trio_websocket.wrap_client_stream(
            nursery,
            stream,  # type: ignore[arg-type]  # any trio Stream: it only reads, writes, closes
            endpoint.host_header,
            endpoint.resource,
            extra_headers=extra,
            message_queue_size=message_queue_size,
            max_message_size=max_message_size,
            receive_buffer_size=DEFAULT_RECEIVE_BUFFER_SIZE,
        )
        race.cancel_scope.cancel()
    if ws is None:
        raise _EndedDuringUpgrade
    return ws
