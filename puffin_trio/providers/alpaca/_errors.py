"""What Alpaca's error codes mean: the typed exception for each, fatal or transient.

This module owns the error table and :func:`error_for`. It must not act on
an error: the protocol turns it into a control item, the session acts.
"""

from __future__ import annotations

from collections.abc import Mapping

from puffin_trio.errors import (
    AuthenticationError,
    ConnectionLimitError,
    ProtocolError,
    ProviderError,
    SubscriptionError,
    TransientProviderError,
)
from puffin_trio.providers.alpaca._wire import KEY_ENV, PROVIDER, SECRET_ENV

__all__ = ["ALREADY_AUTHENTICATED", "error_for"]

#: Alpaca error code -> (exception type, what it means for the user). The
#: server's own ``msg`` text always leads the exception message.
#:
#: * 400 invalid syntax, 405 symbol limit, 409 insufficient subscription (the
#:   plan lacks the feed), 410 channel not on this feed: the same request
#:   fails the same way after a reconnect, so they are fatal.
#: * 402 auth failed, 411 insufficient scope: the credentials are refused.
#: * 401 not authenticated: a request overtook the handshake. This client
#:   sends nothing before ``authenticated``, so it can only be a server-side
#:   race; a reconnect redoes the handshake in order, hence transient
#:   (:class:`ProtocolError`) rather than fatal.
#: * 404 auth timeout, 407 slow client, 500 internal error: a reconnect can help.
#: * 406 connection limit: transient, with the supervisor's long cool-down.
#: * 403 already authenticated is harmless (the docs say so) and becomes a
#:   :class:`ProviderNotice`, not a failure; it is not in this table.
_ERRORS: Mapping[int, tuple[type[ProviderError], str]] = {
    400: (SubscriptionError, "the server rejected a request as malformed (bad message or symbol)"),
    401: (ProtocolError, "a request arrived before authentication finished"),
    402: (
        AuthenticationError,
        f"check the key and secret (key=/secret= or {KEY_ENV}/{SECRET_ENV})",
    ),
    404: (TransientProviderError, "authentication did not complete in time"),
    405: (SubscriptionError, "the plan's symbol limit is exceeded; subscribe to fewer symbols"),
    406: (
        ConnectionLimitError,
        "another connection uses this key; close it, or wait ~90 s for the server to drop it",
    ),
    407: (TransientProviderError, "the client fell behind and the server's buffer filled up"),
    409: (SubscriptionError, "the plan does not include this feed (the free plan has feed='iex')"),
    410: (SubscriptionError, "a requested channel is not available on this feed"),
    411: (AuthenticationError, "the credentials lack the market data scope"),
    500: (TransientProviderError, "server error"),
}
ALREADY_AUTHENTICATED = 403


def error_for(code: object, message: str) -> ProviderError | None:
    """The typed exception for an Alpaca ``error`` message (``None`` for the harmless 403).

    Unknown codes (and a missing or non-integer code) give a
    :class:`TransientProviderError`: the server said something failed, and a
    reconnect is the safe answer to what we cannot classify.
    """
    if type(code) is not int:
        return TransientProviderError(f"{message} (no numeric error code)", provider=PROVIDER)
    if code == ALREADY_AUTHENTICATED:
        return None
    known = _ERRORS.get(code)
    if known is None:
        return TransientProviderError(f"{message} (unknown code)", provider=PROVIDER, code=code)
    cls, meaning = known
    return cls(f"{message}: {meaning}", provider=PROVIDER, code=code)
