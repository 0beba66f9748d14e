"""Connections to the providers: WebSocket (:mod:`.ws`) and length-prefixed TCP (:mod:`.tcp`).

This package owns the :class:`Transport` interface the session drives and its
implementations. The package itself imports no I/O library (only the
interface), so a provider can name :class:`Transport` without loading one.
"""

from puffin_trio.transports._base import Frame, Transport

__all__ = ["Frame", "Transport"]
