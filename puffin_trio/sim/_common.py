"""What the WebSocket simulators (Alpaca, Polygon) share: limits, checks, disconnects.

This module owns the server-side constants and small helpers common to
:mod:`puffin_trio.sim.alpaca` and :mod:`puffin_trio.sim.polygon`. It must not
know either provider's protocol.
"""

from __future__ import annotations

import hmac
import ipaddress

import trio
import wsproto.utilities
from trio_websocket import ConnectionClosed

from puffin_trio.errors import ConfigurationError

__all__ = [
    "CLOSE_TIMEOUT",
    "DISCONNECTS",
    "HANDSHAKE_TIMEOUT",
    "MAX_CLIENT_MESSAGE",
    "MAX_PACING_LAG",
    "check_settings",
    "same_secret",
]

#: Seconds a TCP client has to complete the WebSocket upgrade: a peer that
#: connects and says nothing must not hold a task forever. 10 s is the
#: ``open_timeout`` default of the websockets library alpaca-py uses.
HANDSHAKE_TIMEOUT = 10.0
#: Seconds to wait for the client's reply to our close frame before dropping
#: TCP. Half of websockets' ``close_timeout``; no test peer needs longer.
CLOSE_TIMEOUT = 5.0
#: Largest client message accepted. trio-websocket's default (1 MiB) matches
#: the limit alpaca-py's websockets client applies in the other direction.
MAX_CLIENT_MESSAGE = 2**20

#: How far behind schedule a rate-paced sender may be before it stops catching
#: up (seconds). Timers wake late (epoll rounds waits up to the next
#: millisecond), so pacing from the *ideal* send time keeps the average rate
#: (5,000 msg/s, not the ~1,800 that "now + 1/rate" gives); the bound keeps a
#: sender that was stalled (silence fault, slow client) from bursting more
#: than 0.1 s of backlog at once.
MAX_PACING_LAG = 0.1

#: What a peer that went away looks like from the server side.
DISCONNECTS = (
    ConnectionClosed,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    wsproto.utilities.LocalProtocolError,
)


def same_secret(given: str, expected: str) -> bool:
    """Constant-time comparison of credentials, non-ASCII ones included."""
    return hmac.compare_digest(given.encode(), expected.encode())


def check_settings(
    *,
    host: str,
    rate: float | None,
    batch: int,
    auth_timeout: float,
    max_connections_per_key: int,
) -> None:
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ConfigurationError(
            f"the simulator only listens on loopback (127.0.0.1, ::1, localhost), not {host!r}"
        )
    if rate is not None and rate < 0:
        raise ConfigurationError(f"rate must be >= 0 messages/s (0 or None: unlimited), got {rate}")
    if batch < 1:
        raise ConfigurationError(f"batch must be at least 1 message per frame, got {batch}")
    if auth_timeout <= 0:
        raise ConfigurationError(f"auth_timeout must be > 0 seconds, got {auth_timeout}")
    if max_connections_per_key < 1:
        raise ConfigurationError(
            f"max_connections_per_key must be at least 1, got {max_connections_per_key}"
        )
