"""The WebSocket transport on the websockets library's native trio client (the default).

This module owns :class:`WebsocketsTransport` and
:func:`open_websockets_transport`: one connection opened with
``websockets.trio.client.connect`` (websockets >= 17, whose C speedups make it
twice as fast per frame as trio-websocket's pure-Python wsproto), read
through a message queue of our own. It must not parse messages: the provider
protocols do that.

Why a queue of our own: websockets hands messages out one ``recv()`` at a
time, and every call is a trip through trio's scheduler (a few µs, more than
decoding a small message), even when messages are waiting. The session's
reader drains what has arrived without waiting (``receive_nowait``), so a
connection subclass -- websockets' documented ``create_connection`` hook --
takes each message where the library's reader task assembles it
(``process_event``) and queues it for us. Flow control stays the library's:
above ``message_queue_size`` queued messages its reader task stops reading
the socket (``pause_reading``), and resumes at a quarter of it.

The library's reader task writes too (pongs, close replies), under the same
lock as our sends; it must never wait for that lock (see ``send_data``), or a
large subscription could deadlock against a server answering it.

Two more hooks make the socket end with the connection: once a close frame
is sent or received, or the library fails the connection (a protocol error
such as reserved bits or an oversized message), the queue ends and the peer
gets ``DEFAULT_CLOSE_TIMEOUT`` to close TCP before we drop the socket
ourselves (the library would wait for the peer indefinitely); and when the
library closes the stream, the queue ends.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final

import trio
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.frames import BINARY, CONT, TEXT, CloseCode, Frame
from websockets.protocol import CLOSED, CLOSING, OPEN
from websockets.trio.client import ClientConnection, connect

from puffin_trio.errors import ConnectionLost
from puffin_trio.transports._sockets import close_socket_now
from puffin_trio.transports._wscommon import (
    DEFAULT_CLOSE_TIMEOUT,
    Endpoint,
    connect_failed,
    connection_ended,
    tls_context,
)

__all__ = ["WebsocketsTransport", "open_websockets_transport"]

#: Most frames one fragmented message may have, as websockets' own assembler
#: bounds it: a peer sending endless empty continuation frames must not grow
#: our memory (the byte size is bounded by ``max_message_size`` already).
MAX_FRAGMENTS: Final = 4096

_DATA_OPCODES: Final = frozenset((TEXT, BINARY, CONT))


class _NoFrameLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """websockets' client logger, with its debug level off for our connections.

    At debug level websockets logs every frame with the start of its payload,
    and our first frame carries the credentials (Alpaca's ``auth`` message):
    a user turning on debug logging must not find the secret in the logs.
    Its other levels (connection errors) are kept.
    """

    def isEnabledFor(self, level: int) -> bool:
        return level > logging.DEBUG and self.logger.isEnabledFor(level)


_LOGGER: Final = _NoFrameLog(logging.getLogger("websockets.client"), {})


class _FeedConnection(ClientConnection):
    """websockets' client connection, its messages queued for :class:`WebsocketsTransport`.

    Runs in the library's reader task (``process_event``, ``send_data``,
    ``close_stream``); the transport takes from ``messages`` in the session's
    reader task. Both are trio tasks of one thread, so the queue needs no lock.
    """

    def __init__(
        self,
        nursery: trio.Nursery,
        stream: trio.abc.Stream,
        protocol: Any,
        *,
        ping_interval: float | None,
        ping_timeout: float | None,
        close_timeout: float | None,
        max_queue: int | tuple[int | None, int | None] | None,
    ) -> None:
        assert isinstance(max_queue, tuple)
        high, low = max_queue
        assert high is not None and low is not None
        self.messages: deque[str | bytes] = deque()
        #: Above ``high`` queued messages the library stops reading; at ``low`` it resumes.
        self.high: int = high
        self.low: int = low
        self.paused = False
        #: Tasks parked in ``WebsocketsTransport.receive``.
        self.readable = trio.lowlevel.ParkingLot()
        self.waiting = 0
        #: No message will be queued any more (a close frame, a failure, the socket closed).
        self.ended = False
        self._fragments: list[Frame] = []
        self._reaping = False
        self._flushing = False
        self._reader_task: trio.lowlevel.Task | None = None
        super().__init__(
            nursery,
            stream,
            protocol,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            close_timeout=close_timeout,
            max_queue=max_queue,
        )

    # -- hooks into the library's reader task

    def process_event(self, event: Any) -> None:
        """Queue data frames as messages; everything else (the handshake reply, pongs)
        goes to the library."""
        if self.response is None or event.opcode not in _DATA_OPCODES:
            super().process_event(event)
            return
        # Even after the end: the library runs ``send_data`` (which may end the
        # queue, see there) before it hands over the events of the same read,
        # and those messages preceded the close or failure on the wire.
        if not event.fin or self._fragments:
            self._fragments.append(event)
            if not event.fin:
                if len(self._fragments) > MAX_FRAGMENTS:
                    self._fail(CloseCode.MESSAGE_TOO_BIG, "too many fragments")
                return
            frames, self._fragments = self._fragments, []
            opcode = frames[0].opcode
            data: bytes = b"".join(frame.data for frame in frames)
        else:
            opcode = event.opcode
            data = event.data
        if opcode is TEXT:
            try:
                message: str | bytes = data.decode()
            except UnicodeDecodeError as exc:
                self._fail(CloseCode.INVALID_DATA, f"{exc.reason} at position {exc.start}")
                return
        else:
            message = data if type(data) is bytes else bytes(data)
        messages = self.messages
        messages.append(message)
        if self.waiting:
            self.readable.unpark()
        if not self.paused and len(messages) > self.high:
            self.paused = True
            self.pause_reading()

    async def recv_events(self) -> None:
        """The library's reader task, as it is; noted so that :meth:`send_data` knows it."""
        self._reader_task = trio.lowlevel.current_task()
        await super().recv_events()

    async def send_data(self) -> None:
        """The library's write step, which also runs after every read.

        With nothing to write (the protocol's outgoing buffer is empty after
        most reads) it skips the library's lock, and the trip through trio's
        scheduler that taking it costs, once per read. The reader task never
        waits for the send lock: while another task holds it (our subscribe
        frames, blocked because the server is busy writing to us and not
        reading), waiting would stop the reading, the server's writes would
        block in turn, and neither side would move again. Its write (a pong, a
        close reply) goes to a task of its own instead, in order. Once the
        protocol has left OPEN (a close frame either way, or a failure),
        closing starts.
        """
        if self.protocol.writes:  # empty after most reads: then no lock, no scheduler trip
            if self.send_lock.locked() and trio.lowlevel.current_task() is self._reader_task:
                if not self._flushing:
                    self._flushing = True
                    self.nursery.start_soon(self._flush)
            else:
                await super().send_data()
        if not self._reaping and self.protocol.state in (CLOSING, CLOSED):
            self._closing()

    async def close_stream(self) -> None:
        """The library closed the socket: no message will follow."""
        await super().close_stream()
        self._end()

    def release_reader(self) -> None:
        """Let the library's reader task run again if it is paused, so that it finds the
        socket closed and ends. (A paused reader waits for room in the queue, not on the
        socket: closing the socket alone would leave it, and the connection's nursery,
        waiting forever.)"""
        if self.paused:
            self.paused = False
            self.resume_reading()

    # -- ours

    def take(self) -> str | bytes:
        """The oldest queued message (there must be one); resumes reading at the low mark."""
        message = self.messages.popleft()
        if self.paused and len(self.messages) <= self.low:
            self.paused = False
            self.resume_reading()
        return message

    def _fail(self, code: int, reason: str) -> None:
        """Fail the connection from the reader task (a message we cannot accept)."""
        if self.protocol.state is OPEN:
            self.protocol.fail(code, reason)
            # The close frame goes out now, not after the next read.
            self.nursery.start_soon(self._flush)
        self._closing()

    async def _flush(self) -> None:
        """Write what the protocol has queued, in a task of its own."""
        try:
            await super().send_data()
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            # The socket was closed meanwhile (by us leaving, or the peer).
            self.set_connection_exc(exc)
        finally:
            self._flushing = False

    def _closing(self) -> None:
        """Leaving OPEN: end the queue, and drop the socket if the peer does not close it."""
        self._reaping = True
        self._end()
        self.nursery.start_soon(self._reap)

    async def _reap(self) -> None:
        timeout = self.close_timeout if self.close_timeout is not None else math.inf
        with trio.move_on_after(timeout):
            await self.stream_closed.wait()
        if not self.stream_closed.is_set():
            close_socket_now(self.stream)
            self.release_reader()

    def _end(self) -> None:
        if not self.ended:
            self.ended = True
            self.readable.unpark_all()


class WebsocketsTransport:
    """One open WebSocket connection on websockets' trio client (see the module docstring).

    Frames are ``str`` (text) or ``bytes`` (binary). ``frames_received`` and
    ``bytes_received`` count the messages handed out and their lengths.
    """

    def __init__(self, connection: _FeedConnection) -> None:
        self._conn = connection
        self._aborted = False
        self.frames_received = 0
        self.bytes_received = 0

    async def send(self, frame: str | bytes) -> None:
        """Send one message. A checkpoint. Raises ConnectionLost if the connection has ended."""
        try:
            await self._conn.send(frame)
        except ConnectionClosed:
            raise self._ended() from None

    async def send_all(self, frames: Sequence[str | bytes]) -> None:
        """Send frames in order."""
        for frame in frames:
            await self.send(frame)

    async def receive(self) -> str | bytes:
        """The next message. A checkpoint, also when a message is waiting (cancelled,
        it takes nothing).

        Raises :class:`ConnectionLost` once the connection has ended and every
        message that arrived before the end was returned.
        """
        conn = self._conn
        messages = conn.messages
        if messages:
            await trio.lowlevel.checkpoint_if_cancelled()
            message = self.receive_nowait()
            assert message is not None
            await trio.lowlevel.cancel_shielded_checkpoint()
            return message
        while not messages:
            if conn.ended:
                raise self._ended()
            conn.waiting += 1
            try:
                await conn.readable.park()
            finally:
                conn.waiting -= 1
        message = conn.take()
        self.frames_received += 1
        self.bytes_received += len(message)
        return message

    def receive_nowait(self) -> str | bytes | None:
        """A message that has already arrived, or ``None``. Not a checkpoint."""
        conn = self._conn
        if not conn.messages:
            return None
        message = conn.take()
        self.frames_received += 1
        self.bytes_received += len(message)
        return message

    async def ping(self) -> None:
        """Send a WebSocket ping and wait for its pong (no deadline: the caller sets one).

        Raises :class:`ConnectionLost` if the connection ends first.
        """
        conn = self._conn
        try:
            pong = await conn.ping(ack_on_close=True)
        except ConnectionClosed:
            raise self._ended() from None
        await pong.wait()
        if conn.protocol.state is not OPEN:
            raise self._ended()

    def abort(self) -> None:
        """The link is declared dead: leaving the block closes the socket at once, with
        no closing handshake. Not a checkpoint. What has already arrived stays readable
        until then (the session drains it)."""
        self._aborted = True

    async def aclose(self) -> None:
        """Close: cleanly (close frame, the peer's reply, TCP; bounded by
        ``DEFAULT_CLOSE_TIMEOUT``) while the connection is open and flowing; at
        once if it has ended already (a close frame either way, a failure, an
        abort) or if reading is paused behind a full queue (the peer's reply
        would wait behind everything unread)."""
        conn = self._conn
        if conn.protocol.state is OPEN and not self._aborted and not conn.paused:
            with trio.move_on_after(DEFAULT_CLOSE_TIMEOUT):
                await conn.aclose()
        self.close_now()

    def close_now(self) -> None:
        """Close the socket at once (shutdown under cancellation: nothing to wait for)."""
        close_socket_now(self._conn.stream)
        self._conn.release_reader()

    def _ended(self) -> ConnectionLost:
        """The typed error for this connection's end, with its close code."""
        protocol = self._conn.protocol
        received, sent = protocol.close_rcvd, protocol.close_sent
        if received is not None and (sent is None or protocol.close_rcvd_then_sent):
            return connection_ended(received.code, received.reason, by="peer")
        if sent is not None:
            return connection_ended(sent.code, sent.reason, by="us")
        return connection_ended(None, "", by="peer", cause=self._conn.connection_exc)


@asynccontextmanager
async def open_websockets_transport(
    endpoint: Endpoint,
    *,
    headers: Sequence[tuple[str, str]],
    max_message_size: int,
    message_queue_size: int,
    connect_timeout: float,
    ssl_context: Any,
    compression: bool,
) -> AsyncIterator[WebsocketsTransport]:
    """Connect to ``endpoint`` for the duration of the block (see ``open_ws_transport``).

    The library's own keepalive is off (``ping_interval=None``): the session's
    heartbeat pings, on either transport, with its typed ``HeartbeatTimeout``.
    No proxy is read from the environment, as with trio-websocket.
    """
    made: list[_FeedConnection] = []

    def create_connection(*args: Any, **kwargs: Any) -> _FeedConnection:
        connection = _FeedConnection(*args, **kwargs)
        made.append(connection)
        return connection

    connector = connect(
        endpoint.url,
        ssl=tls_context(ssl_context) if endpoint.secure else None,
        compression="deflate" if compression else None,
        additional_headers=list(headers),
        proxy=None,
        open_timeout=connect_timeout,
        ping_interval=None,
        ping_timeout=None,
        close_timeout=DEFAULT_CLOSE_TIMEOUT,
        max_size=max_message_size,
        max_queue=(message_queue_size, max(1, message_queue_size // 4)),
        create_connection=create_connection,  # type: ignore[arg-type]
        logger=_LOGGER,
    )
    opened = False
    try:
        async with connector as connection:
            opened = True
            assert isinstance(connection, _FeedConnection)
            transport = WebsocketsTransport(connection)
            try:
                yield transport
            finally:
                if trio.current_effective_deadline() == -math.inf:
                    # Cancelled: nobody would read the peer's close reply. A FIN
                    # now frees the server's connection slot at once.
                    transport.close_now()
                else:
                    with trio.CancelScope(shield=True):
                        await transport.aclose()
    except TimeoutError:
        if opened:
            raise
        raise connect_failed(endpoint, None, connect_timeout) from None
    except InvalidStatus as exc:
        if opened:
            raise
        raise ConnectionLost(
            f"server rejected the WebSocket upgrade: HTTP {exc.response.status_code}"
        ) from None
    except (OSError, trio.BrokenResourceError, InvalidHandshake) as exc:
        if opened:
            raise
        # The library reports a connection that broke during the upgrade as "no
        # valid HTTP response"; the reset that broke it is the real cause.
        cause = made[-1].connection_exc if made and made[-1].connection_exc else exc
        raise connect_failed(endpoint, cause, connect_timeout) from None
