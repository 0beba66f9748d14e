"""WebSocket connections to the providers, on websockets (the default) or trio-websocket.

This module owns :func:`open_ws_transport`, the one way the providers open a
WebSocket connection, and the choice of library behind it
(:data:`WS_TRANSPORTS`):

* ``"websockets"`` (the default): the websockets library's native trio client
  (websockets >= 17), see :mod:`puffin_trio.transports._websockets`. Its C
  speedups cost about half of trio-websocket's time per frame.
* ``"trio-websocket"``: trio-websocket on wsproto, the design's original
  choice, kept for users who pin it; see
  :mod:`puffin_trio.transports._trio_websocket`.

Both keep the same contract (:class:`~puffin_trio.transports.Transport`, and
``tests/test_transport_contract.py`` runs it against both): TLS verified with
the system's default context, and a certificate that fails verification
reported at once as such; plain ``ws://`` only to loopback hosts unless
``allow_insecure=True`` (a plain-text connection to a real provider would
send the API key in clear); ``max_message_size`` per provider; every way a
connection ends reported as :class:`~puffin_trio.errors.ConnectionLost`
with its close code; a reset during the upgrade reported at once with its
cause; the socket closed when the connection ends, for any reason; prompt
shutdown when cancelled; and the server's pings answered while a "block"
consumer is slow, until ``message_queue_size`` messages wait in the
transport. The limits and why they have their values are in
:mod:`puffin_trio.transports._wscommon`. It must not parse frames: the
provider protocols do that.

The session's heartbeat sends its own pings on either library rather than
using websockets' keepalive: one heartbeat for every transport (trio-websocket
and IB's TCP have no keepalive), one typed ``HeartbeatTimeout`` and RTT
statistic, and a deadline the session can reason about (counting inbound data
as liveness) instead of a library closing the connection with 1011 on its own.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Final

from puffin_trio.errors import ConfigurationError
from puffin_trio.providers._config import check_ws_url
from puffin_trio.transports._base import (
    DEFAULT_WS_TRANSPORT,
    WS_TRANSPORTS,
    Transport,
    WsTransportName,
)
from puffin_trio.transports._wscommon import (
    DEFAULT_CLOSE_TIMEOUT,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MESSAGE_QUEUE_SIZE,
    DEFAULT_RECEIVE_BUFFER_SIZE,
    Endpoint,
)

__all__ = [
    "DEFAULT_CLOSE_TIMEOUT",
    "DEFAULT_COMPRESSION",
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_MESSAGE_QUEUE_SIZE",
    "DEFAULT_RECEIVE_BUFFER_SIZE",
    "DEFAULT_WS_TRANSPORT",
    "WS_TRANSPORTS",
    "WsTransportName",
    "check_ws_url",
    "open_ws_transport",
]

#: permessage-deflate, offered by default where the library has it (websockets;
#: trio-websocket has none). It cuts a feed's bytes on the wire 4-8x for
#: 0.3-0.7 µs of inflating per message when frames are batched (1.5 µs at one
#: message per frame, when the feed is quiet anyway); the official SDKs offer it
#: too (websockets' default). ``benchmarks/bench_deflate.py`` measures it, and
#: ``docs/guide/providers.rst`` explains the choice.
DEFAULT_COMPRESSION: Final = True


def open_ws_transport(
    url: str,
    *,
    transport: WsTransportName = DEFAULT_WS_TRANSPORT,
    headers: Sequence[tuple[str, str]] = (),
    max_message_size: int = 1 << 20,
    message_queue_size: int = DEFAULT_MESSAGE_QUEUE_SIZE,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    allow_insecure: bool = False,
    ssl_context: ssl.SSLContext | None = None,
    compression: bool | None = None,
) -> AbstractAsyncContextManager[Transport]:
    """Open a WebSocket connection for the duration of an ``async with`` block.

    Raises :class:`~puffin_trio.errors.ConfigurationError` for a bad URL or
    ``transport`` (before connecting), and
    :class:`~puffin_trio.errors.ConnectionLost` if the connection cannot be
    opened: refused, reset, timed out after ``connect_timeout`` seconds, TLS
    verification failed, or the server's HTTP reply rejected the upgrade. The
    block's end closes the connection: cleanly (close frame), bounded by
    :data:`DEFAULT_CLOSE_TIMEOUT`, or at once if it was aborted, already
    ended, or the block is cancelled. ``compression`` offers
    permessage-deflate (the server decides whether it is used): ``None`` for
    :data:`DEFAULT_COMPRESSION` on websockets and none on trio-websocket,
    which has no compression (``True`` with it is a ConfigurationError).
    """
    endpoint = Endpoint.from_url(url, allow_insecure=allow_insecure)
    if transport == "websockets":
        from puffin_trio.transports._websockets import open_websockets_transport

        return open_websockets_transport(
            endpoint,
            headers=headers,
            max_message_size=max_message_size,
            message_queue_size=message_queue_size,
            connect_timeout=connect_timeout,
            ssl_context=ssl_context,
            compression=DEFAULT_COMPRESSION if compression is None else compression,
        )
    if transport == "trio-websocket":
        if compression:
            raise ConfigurationError("trio-websocket has no permessage-deflate; use websockets")
        from puffin_trio.transports._trio_websocket import open_trio_websocket_transport

        return open_trio_websocket_transport(
            endpoint,
            headers=headers,
            max_message_size=max_message_size,
            message_queue_size=message_queue_size,
            connect_timeout=connect_timeout,
            ssl_context=ssl_context,
        )
    raise ConfigurationError(
        f"transport must be one of {', '.join(map(repr, WS_TRANSPORTS))}, not {transport!r}"
    )
