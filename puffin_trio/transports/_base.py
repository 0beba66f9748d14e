"""What the session needs from a connection: the :class:`Transport` protocol.

This module owns the interface every transport (:mod:`puffin_trio.transports.ws`,
:mod:`puffin_trio.transports.tcp`) implements and the session drives. It is a
typing protocol only: it must not import an I/O library, so that the
providers can name it without pulling one in.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

__all__ = ["Frame", "Transport"]

#: A WebSocket message (text or binary) or one length-prefixed TCP payload.
Frame = str | bytes


class Transport(Protocol):
    """What the session needs from a connection (WebSocket or framed TCP).

    ``receive`` returns one message (a WebSocket message, or one de-framed
    TCP payload) and raises :class:`~puffin_trio.errors.ConnectionLost` when
    the connection ends. ``send_all`` writes frames in order, each exactly as
    the protocol produced it. ``ping`` is a transport-level heartbeat
    (WebSocket ping/pong); transports without one raise
    :class:`~puffin_trio.errors.ProtocolError` (their providers use an
    application-level heartbeat instead).
    """

    frames_received: int
    bytes_received: int

    async def send_all(self, frames: Sequence[Frame]) -> None: ...

    async def receive(self) -> Frame: ...

    def receive_nowait(self) -> Frame | None:
        """A message that has already arrived, or ``None``; never blocks, not a checkpoint."""
        ...

    async def ping(self) -> None: ...
