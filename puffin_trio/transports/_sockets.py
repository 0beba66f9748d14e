"""Ending a connection now: closing the OS socket under a trio stream, synchronously.

This module owns :func:`close_socket_now`, what every transport's ``abort``
does. It must not wait: an abort happens where waiting is the problem (a
link declared dead), and possibly in a cancelled scope.
"""

from __future__ import annotations

import trio

__all__ = ["close_socket_now"]


def close_socket_now(stream: trio.abc.Stream) -> bool:
    """Close the OS socket under ``stream`` at once; False if it has none (a memory stream).

    Unwraps TLS (the socket under a :class:`trio.SSLStream`) and any wrapper
    that names its inner stream ``transport_stream``, as :class:`trio.SSLStream`
    does. A task blocked reading or writing the socket wakes with
    :exc:`trio.ClosedResourceError`; closing twice is harmless.
    """
    inner: object = stream
    while not isinstance(inner, trio.SocketStream):
        inner = getattr(inner, "transport_stream", None)
        if inner is None:
            return False
    inner.socket.close()
    return True
