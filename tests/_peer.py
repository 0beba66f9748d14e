"""A scripted WebSocket server for the transport contract: every way a connection can end.

:func:`serve_peer` accepts connections on a loopback port and runs a script
against each one through a :class:`Peer`: send messages, ping, close with a
code, end TCP with a FIN or a reset, or break the framing with raw bytes (a
reserved bit, invalid UTF-8) that no well-behaved library would send. The
upgrade itself can be accepted, refused with an HTTP status, or reset.
wsproto speaks the protocol; the faults are raw bytes.
"""

from __future__ import annotations

import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Literal

import attrs
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.extensions import PerMessageDeflate

#: Bytes of an upgrade request we read at most (a real one is a few hundred).
MAX_REQUEST = 16 * 1024
#: Seconds a peer waits for the client's reply to its close frame.
CLOSE_REPLY_TIMEOUT = 5.0

Upgrade = Literal["accept", "reset", "reject"]


@attrs.define(eq=False)
class Peer:
    """The server end of one accepted connection."""

    stream: trio.abc.Stream
    ws: WSConnection
    #: The upgrade request's headers, lower-cased names.
    headers: dict[str, str]
    #: Client messages received so far (``receive`` and ``drain`` append).
    received: list[str | bytes] = attrs.field(factory=list)
    #: The close code the client sent, once it did.
    client_close: int | None = None
    #: Pongs the client sent (answers to :meth:`ping`).
    pongs: int = 0
    #: Pings of the client this peer answered.
    pings: int = 0
    #: permessage-deflate was negotiated.
    deflate: bool = False

    async def send_text(self, text: str) -> None:
        await self.stream.send_all(self.ws.send(TextMessage(data=text)))

    async def send_bytes(self, data: bytes) -> None:
        await self.stream.send_all(self.ws.send(BytesMessage(data=data)))

    async def send_raw(self, data: bytes) -> None:
        """Bytes as they are: a frame wsproto would refuse to build."""
        await self.stream.send_all(data)

    async def close(self, code: int, reason: str = "", *, close_tcp: bool = True) -> None:
        """A close frame, the client's reply (bounded), then TCP unless ``close_tcp=False``
        (a server that never closes its side, which RFC 6455 asks it to do)."""
        await self.stream.send_all(self.ws.send(CloseConnection(code=code, reason=reason)))
        with trio.move_on_after(CLOSE_REPLY_TIMEOUT):
            while self.client_close is None and await self._read():
                pass
        if close_tcp:
            await self.stream.aclose()
        else:
            await trio.sleep_forever()

    async def fin(self) -> None:
        """End TCP without a close frame."""
        await self.stream.aclose()

    async def reset(self) -> None:
        """End TCP with a reset (RST): SO_LINGER 0, then close."""
        reset(self.stream)

    async def ping(self) -> None:
        await self.stream.send_all(self.ws.send(Ping(payload=b"peer")))

    async def wait_pong(self) -> None:
        """Read (answering pings, keeping messages) until the client's next pong."""
        count = self.pongs
        while self.pongs == count:
            if not await self._read():
                raise trio.EndOfChannel("the client closed")

    async def answer_ping(self) -> None:
        """Read until the client's next ping has been answered."""
        count = self.pings
        while self.pings == count:
            if not await self._read():
                raise trio.EndOfChannel("the client closed")

    async def receive(self) -> str | bytes:
        """The client's next message (pings are answered meanwhile)."""
        count = len(self.received)
        while len(self.received) == count:
            if not await self._read():
                raise trio.EndOfChannel("the client closed")
        return self.received[count]

    async def drain(self) -> None:
        """Read (answering pings) until the client closes TCP, or closes the connection
        (then, as RFC 6455 asks of a server, we close TCP after replying)."""
        while await self._read():
            pass

    async def _read(self) -> bool:
        """Read once and handle what arrived; False at the client's EOF or a broken stream."""
        try:
            data = await self.stream.receive_some(65536)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        if not data:
            return False
        self.ws.receive_data(data)
        for event in self.ws.events():
            if isinstance(event, TextMessage | BytesMessage):
                self.received.append(event.data)
            elif isinstance(event, Ping):
                await self.stream.send_all(self.ws.send(event.response()))
                self.pings += 1
            elif isinstance(event, Pong):
                self.pongs += 1
            elif isinstance(event, CloseConnection):
                self.client_close = event.code
                if self.ws.state.name == "REMOTE_CLOSING":
                    await self.stream.send_all(self.ws.send(event.response()))
                    await self.stream.aclose()
                    return False
        return True


def reset(stream: trio.abc.Stream) -> None:
    """Close the socket under ``stream`` with a reset rather than a FIN."""
    inner: object = stream
    while not isinstance(inner, trio.SocketStream):
        inner = getattr(inner, "transport_stream")  # noqa: B009
    inner.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    inner.socket.close()


def frame(opcode: int, payload: bytes, *, rsv1: bool = False) -> bytes:
    """An unmasked server frame (FIN set) with ``payload`` < 126 bytes."""
    assert len(payload) < 126
    first = 0x80 | (0x40 if rsv1 else 0) | opcode
    return bytes([first, len(payload)]) + payload


@attrs.define(eq=False)
class PeerServer:
    """Where the scripted peer listens, and what it saw."""

    port: int
    secure: bool
    #: Connections whose upgrade reached the script.
    peers: list[Peer] = attrs.field(factory=list)
    #: Each connection's script finished (set in order of acceptance).
    finished: list[trio.Event] = attrs.field(factory=list)

    @property
    def url(self) -> str:
        return f"{'wss' if self.secure else 'ws'}://127.0.0.1:{self.port}/feed"


Script = Callable[[Peer], Awaitable[None]]


@asynccontextmanager
async def serve_peer(
    script: Script,
    *,
    upgrade: Upgrade = "accept",
    ssl_context: ssl.SSLContext | None = None,
    deflate: bool = False,
) -> AsyncIterator[PeerServer]:
    """Run the peer on a loopback port for the block; each connection runs ``script``.

    ``deflate``: accept permessage-deflate when the client offers it.
    """
    async with trio.open_nursery() as nursery:
        server = PeerServer(port=0, secure=ssl_context is not None)
        listeners = await nursery.start(
            partial(
                trio.serve_tcp,
                partial(_handle, server, script, upgrade, ssl_context, deflate),
                0,
                host="127.0.0.1",
            )
        )
        server.port = listeners[0].socket.getsockname()[1]
        yield server
        nursery.cancel_scope.cancel()


async def _handle(
    server: PeerServer,
    script: Script,
    upgrade: Upgrade,
    ssl_context: ssl.SSLContext | None,
    deflate: bool,
    tcp: trio.SocketStream,
) -> None:
    stream: trio.abc.Stream = tcp
    done = trio.Event()
    server.finished.append(done)
    try:
        if ssl_context is not None:
            stream = trio.SSLStream(tcp, ssl_context, server_side=True)
            await stream.do_handshake()
        ws = WSConnection(ConnectionType.SERVER)
        request: Request | None = None
        received = 0
        while request is None:
            data = await stream.receive_some(4096)
            received += len(data)
            if not data or received > MAX_REQUEST:
                return
            ws.receive_data(data)
            request = next((e for e in ws.events() if isinstance(e, Request)), None)
        if upgrade == "reset":
            reset(stream)
            return
        if upgrade == "reject":
            await stream.send_all(
                ws.send(RejectConnection(status_code=403, headers=[(b"content-length", b"0")]))
            )
            await stream.aclose()
            return
        extensions = [PerMessageDeflate()] if deflate else []
        await stream.send_all(ws.send(AcceptConnection(extensions=extensions)))
        headers = {k.decode().lower(): v.decode() for k, v in request.extra_headers}
        peer = Peer(stream, ws, headers)
        offered = [e if isinstance(e, str) else e.name for e in request.extensions]
        peer.deflate = deflate and any(o.startswith("permessage-deflate") for o in offered)
        server.peers.append(peer)
        await script(peer)
    except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError):
        pass
    finally:
        done.set()
        await trio.aclose_forcefully(stream)
