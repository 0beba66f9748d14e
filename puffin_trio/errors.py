"""Typed errors: what went wrong, and whether retrying can help.

This module owns the exception hierarchy. Everything the package raises on
purpose derives from :class:`PuffinError`. Provider failures are split into
:class:`FatalProviderError` (retrying cannot help: bad credentials, a feed the
plan does not include, a malformed request) and
:class:`TransientProviderError` (a reconnect may help). The supervisor uses
that split to decide between restarting and failing.

Messages never contain secrets: providers pass only codes and server text.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "BackfillError",
    "BackfillRefused",
    "CodecError",
    "ConfigurationError",
    "ConnectionLimitError",
    "ConnectionLost",
    "FatalProviderError",
    "HeartbeatTimeout",
    "ProtocolError",
    "ProviderError",
    "PuffinError",
    "RecordingError",
    "RedisAuthenticationError",
    "RedisConnectionError",
    "RedisError",
    "ReplayError",
    "RestartBudgetExceeded",
    "SchemaVersionError",
    "StaleFeedError",
    "SubscriptionError",
    "TransientProviderError",
]


class PuffinError(Exception):
    """Base class of every error puffin_trio raises on purpose."""


class ConfigurationError(PuffinError, ValueError):
    """Bad input from the user: unknown provider, bad symbol, missing credentials.

    Raised before any connection is attempted; the message says what to do.
    """


class CodecError(PuffinError, ValueError):
    """Bytes that are not a valid serialised event (see :mod:`puffin_trio.codec`)."""


class RecordingError(PuffinError):
    """A recording could not be written: disk full, read-only or vanished directory, ...

    ``path`` names the file or directory that failed; ``errno`` is the
    operating system's error number when there is one (``__cause__`` holds
    the original :exc:`OSError`). Files closed before the failure are intact.
    """

    def __init__(self, message: str, *, path: str, errno: int | None = None):
        super().__init__(message)
        self.path = path
        self.errno = errno


class ReplayError(PuffinError):
    """A recording could not be read: not a recording, a damaged file, an unknown schema.

    ``path`` names the file or directory at fault.
    """

    def __init__(self, message: str, *, path: str):
        super().__init__(message)
        self.path = path


class SchemaVersionError(ReplayError):
    """A recording file was written by a newer, incompatible version (a newer major schema)."""


class ProviderError(PuffinError):
    """The provider (or the connection to it) failed.

    ``provider`` names the provider, ``code`` is the provider's error code
    when it sent one (e.g. Alpaca ``402``, IB ``326``), ``None`` otherwise.
    """

    fatal: bool = False

    def __init__(self, message: str, *, provider: str = "", code: int | str | None = None):
        super().__init__(message)
        self.provider = provider
        self.code = code

    def __str__(self) -> str:
        text = super().__str__()
        prefix = f"[{self.provider}] " if self.provider else ""
        suffix = f" (code {self.code})" if self.code is not None else ""
        return f"{prefix}{text}{suffix}"


class FatalProviderError(ProviderError):
    """Retrying cannot help; the supervisor does not restart the session."""

    fatal = True


class TransientProviderError(ProviderError):
    """A reconnect may help; the supervisor restarts the session with backoff."""


class AuthenticationError(FatalProviderError):
    """The provider refused the credentials (Alpaca 401/402, Polygon auth_failed)."""


class SubscriptionError(FatalProviderError):
    """The provider refused the request: feed not in the plan, invalid syntax, bad symbol."""


class ConnectionLimitError(TransientProviderError):
    """Too many connections for this key (Alpaca 406, Polygon max_connections).

    Reconnecting at once loops forever (the server reaps a dead session only
    after ~90 s), so the supervisor waits ``limit_cooldown`` seconds first.
    """


class ConnectionLost(TransientProviderError):
    """The connection could not be opened, or closed under us."""


class ProtocolError(TransientProviderError):
    """The peer broke the protocol (unexpected handshake reply, bad framing)."""


class HeartbeatTimeout(TransientProviderError):
    """No pong (or IB ``currentTime`` reply) within the deadline."""


class StaleFeedError(TransientProviderError):
    """Subscriptions stayed silent during market hours even after a resubscribe."""


class BackfillError(ProviderError):
    """A backfill could not recover (all of) its window; the live stream is not affected.

    Never raised out of a session: it ends the backfill, and its type and
    message become the ``detail`` of the announcing ``Gap`` and ``Status``.
    ``code`` is the HTTP status (or the IB error code) when there was one.
    """


class BackfillRefused(BackfillError):
    """The historical API refused the request (HTTP 401/403, IB 162 without permissions):
    the key lacks the data, so retrying cannot help."""


class RestartBudgetExceeded(PuffinError):
    """A session failed more often than its restart intensity allows.

    The supervisor escalates this rather than ending silently; ``__cause__``
    is the last failure.
    """


class RedisError(PuffinError):
    """The Redis distribution layer failed (:mod:`puffin_trio.redis`).

    Messages name the server without its password.
    """


class RedisConnectionError(RedisError):
    """Redis cannot be reached (refused, timed out, closed), at open or for good."""


class RedisAuthenticationError(RedisError):
    """Redis refused the credentials (wrong password or user, or none given)."""
