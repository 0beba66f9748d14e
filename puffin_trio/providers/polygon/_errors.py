"""What Polygon's error statuses mean: the typed exception for each, fatal or transient.

This module owns the status table and :func:`error_for`. It must not act on
an error: the protocol turns it into a control item, the session acts.
"""

from __future__ import annotations

from collections.abc import Mapping

from puffin_trio.errors import (
    AuthenticationError,
    ConnectionLimitError,
    ProviderError,
    SubscriptionError,
    TransientProviderError,
)
from puffin_trio.providers.polygon._wire import PROVIDER

__all__ = ["error_for"]

_KEY_HINT = "check the API key (key=, or $MASSIVE_API_KEY / $POLYGON_API_KEY)"

#: Status -> (exception type, what it means for the user). The server's own
#: ``message`` leads the exception message; ``status`` is its ``code``.
#:
#: * ``auth_failed``: the key is refused; fatal.
#: * ``auth_timeout``: no auth arrived in time. We send it right after
#:   ``connected``, so this is a stall on the path; a reconnect can help.
#: * ``max_connections``: one connection per cluster per account; transient,
#:   with the supervisor's long ``limit_cooldown``.
#: * ``slow_consumer``, ``force_disconnect``: the server is about to close us;
#:   reconnecting is the answer.
#: * ``error`` is classified by its text in :func:`error_for`.
_STATUS_ERRORS: Mapping[str, tuple[type[ProviderError], str]] = {
    "auth_failed": (AuthenticationError, _KEY_HINT),
    "auth_timeout": (TransientProviderError, "authentication did not complete in time"),
    "max_connections": (
        ConnectionLimitError,
        "another connection uses this key on this cluster (one per cluster per account "
        "unless more are bought); close it, or wait for the server to drop it",
    ),
    "slow_consumer": (
        TransientProviderError,
        "the client fell behind and the server is disconnecting it",
    ),
    "force_disconnect": (TransientProviderError, "the server is disconnecting this connection"),
}


def error_for(status: str, message: str) -> ProviderError | None:
    """The typed exception for a failure status, or ``None`` if ``status`` is not one.

    ``error`` statuses are classified by their text: ``not authorized`` (a
    topic or cluster the plan lacks) and ``Subscription limit reached`` fail
    the same way after a reconnect, so they are fatal
    (:class:`SubscriptionError`); any other error text is transient.
    """
    if status == "error":
        lowered = message.lower()
        if "not authorized" in lowered:
            return SubscriptionError(
                f"{message}: the plan does not include a requested topic or this cluster",
                provider=PROVIDER,
                code=status,
            )
        if "subscription limit" in lowered:
            return SubscriptionError(
                f"{message}: subscribe to fewer topics on this connection",
                provider=PROVIDER,
                code=status,
            )
        return TransientProviderError(
            f"{message} (unclassified server error)", provider=PROVIDER, code=status
        )
    known = _STATUS_ERRORS.get(status)
    if known is None:
        return None
    cls, meaning = known
    return cls(f"{message}: {meaning}", provider=PROVIDER, code=status)
