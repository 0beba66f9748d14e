"""What the session needs from a connection: the :class:`Transport` protocol.

This module owns the interface every transport (the two WebSocket ones of
:mod:`puffin_trio.transports.ws`, and :mod:`puffin_trio.transports.tcp`)
implements and the session drives, and the contract they share. It is a
typing protocol only: it must not import an I/O library, so that the
providers can name it without pulling one in.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, Literal, Protocol, get_args

__all__ = ["DEFAULT_WS_TRANSPORT", "WS_TRANSPORTS", "Frame", "Transport", "WsTransportName"]

#: A WebSocket message (text or binary) or one length-prefixed TCP payload.
Frame = str | bytes

#: The WebSocket libraries a provider can use (its ``transport=``), see
#: :mod:`puffin_trio.transports.ws`. Named here, with no I/O import, so that
#: the providers can check the argument.
WsTransportName = Literal["websockets", "trio-websocket"]
WS_TRANSPORTS: Final[tuple[WsTransportName, ...]] = get_args(WsTransportName)
#: The default: websockets' native trio client, the faster of the two.
DEFAULT_WS_TRANSPORT: Final[WsTransportName] = "websockets"


class Transport(Protocol):
    """What the session needs from a connection (WebSocket or framed TCP).

    The contract every transport keeps (``tests/test_transport_contract.py``
    checks it for both WebSocket transports):

    * ``receive`` returns one message (a WebSocket message, or one de-framed
      TCP payload), in order, and raises
      :class:`~puffin_trio.errors.ConnectionLost` once the connection has
      ended and every message that arrived before the end was returned. The
      error carries the WebSocket close code (``code``) when there was one.
    * ``receive_nowait`` returns a message that has already arrived, or
      ``None``; it never blocks and is not a checkpoint.
    * ``send_all`` writes frames in order, each exactly as the protocol
      produced it.
    * ``ping`` sends a transport-level ping and returns when its pong
      arrives, with no deadline of its own (the caller sets one); it raises
      :class:`~puffin_trio.errors.ConnectionLost` if the connection ends
      first. Transports without one raise
      :class:`~puffin_trio.errors.ProtocolError` (their providers use an
      application-level heartbeat instead).
    * ``abort`` declares the link dead: leaving the ``async with`` block then
      closes the socket at once, without a closing handshake (waiting for a
      peer that stopped answering only wastes time). Until then, what has
      already arrived (in the transport's queue or the socket's buffer) can
      still be read, so that nothing that reached us is thrown away.
    * The socket is closed as soon as the connection ends, whoever ends it
      and however: a peer's close, a dropped link, a protocol error, an
      abort, or the end of the ``async with`` block that opened it. No socket
      outlives its connection.
    """

    frames_received: int
    bytes_received: int

    async def send_all(self, frames: Sequence[Frame]) -> None: ...

    async def receive(self) -> Frame: ...

    def receive_nowait(self) -> Frame | None: ...

    async def ping(self) -> None: ...

    def abort(self) -> None: ...
