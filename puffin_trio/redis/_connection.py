"""Opening a coredis client on trio, with typed errors and no secret in any message.

This module owns the one place where a Redis URL becomes a connected
:class:`coredis.Redis` client: the URL is checked before anything is
attempted (a typo is a :class:`~puffin_trio.errors.ConfigurationError`, not a
DNS lookup), the first ``PING`` proves the server answers and accepts the
credentials (:class:`~puffin_trio.errors.RedisConnectionError`,
:class:`~puffin_trio.errors.RedisAuthenticationError`), and coredis's own
errors are translated. coredis runs on trio through anyio; its connection
pool is a task group, so an error leaving the client's block arrives wrapped
in an exception group, which is unwrapped here.

It must not know stream keys or events.
"""

from __future__ import annotations

import os
import socket
import ssl
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

import coredis
import coredis.exceptions as redis_errors
from coredis.retry import NoRetryPolicy

from puffin_trio.errors import (
    ConfigurationError,
    RedisAuthenticationError,
    RedisConnectionError,
    RedisError,
)

__all__ = [
    "CONNECTION_ERRORS",
    "check_url",
    "default_client_name",
    "open_client",
    "redact",
    "tls_context",
    "translate",
    "unwrap_group",
]

_SCHEMES: Final = ("redis", "rediss", "unix")
#: Errors that mean "the server is not reachable right now" (retrying may help).
#: ``BusyLoadingError`` (the server is loading its data after a restart) is a
#: coredis ``ConnectionError``.
CONNECTION_ERRORS: Final = (redis_errors.ConnectionError, TimeoutError)


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***`` (safe to log)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def check_url(url: object) -> str:
    """Validate a Redis URL's shape; ConfigurationError saying what is wrong."""
    if not isinstance(url, str) or not url:
        raise ConfigurationError(f"a Redis URL must be a non-empty string, got {url!r}")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigurationError(f"not a valid Redis URL {redact(url)!r}: {exc}") from None
    if parts.scheme not in _SCHEMES:
        raise ConfigurationError(
            f"a Redis URL starts with redis://, rediss:// or unix://, got {redact(url)!r} "
            f"(for example redis://127.0.0.1:6379/0)"
        )
    if parts.scheme == "unix":
        if not parts.path:
            raise ConfigurationError(f"a unix:// Redis URL needs a socket path: {redact(url)!r}")
    elif not parts.hostname:
        raise ConfigurationError(f"a Redis URL needs a host: {redact(url)!r}")
    if port is not None and not 0 < port < 65536:
        raise ConfigurationError(f"Redis port out of range in {redact(url)!r}")
    database = parts.path.lstrip("/")
    if parts.scheme != "unix" and database and not database.isdigit():
        raise ConfigurationError(
            f"the path of a Redis URL is a database number, got {database!r} in {redact(url)!r}"
        )
    return url


def translate(exc: BaseException, url: str) -> RedisError | None:
    """Our typed error for a coredis/OS error, or None if it is not one of those."""
    where = redact(url)
    if isinstance(exc, redis_errors.AuthenticationError | redis_errors.AuthorizationError):
        return RedisAuthenticationError(
            f"Redis at {where} refused the credentials: {exc}; "
            f"put the password in the URL (redis://:PASSWORD@host:port/db)"
        )
    if isinstance(exc, CONNECTION_ERRORS):
        return RedisConnectionError(f"cannot reach Redis at {where}: {exc}")
    if isinstance(exc, redis_errors.RedisError):
        return RedisError(f"Redis at {where} answered with an error: {exc}")
    return None


def _single(group: BaseExceptionGroup[Any]) -> BaseException | None:
    """The one leaf exception of a (nested) group, or None if there are several."""
    leaves: list[BaseException] = []
    stack: list[BaseException] = [group]
    while stack:
        item = stack.pop()
        if isinstance(item, BaseExceptionGroup):
            stack.extend(item.exceptions)
        else:
            leaves.append(item)
    return leaves[0] if len(leaves) == 1 else None


@contextmanager
def unwrap_group() -> Iterator[None]:
    """Re-raise an exception group holding a single exception as that exception.

    Our blocks run tasks in nurseries (and coredis's pool is one); an error
    from one task should reach the user as itself, as trio's own APIs do.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        leaf = _single(group)
        if leaf is None:
            raise
        raise leaf from leaf.__cause__


@asynccontextmanager
async def open_client(
    url: str,
    *,
    connect_timeout: float,
    stream_timeout: float | None,
    client_name: str,
) -> AsyncIterator[coredis.Redis[bytes]]:
    """A connected client for the duration of the block; raises typed errors at open.

    No automatic retries (the callers decide when and how to retry, with
    backoff); responses stay bytes. Errors raised by the block itself come
    out as they were raised, not wrapped in the pool's exception group.
    """
    check_url(url)
    try:
        client: coredis.Redis[bytes] = coredis.Redis.from_url(
            url,
            connect_timeout=connect_timeout,
            stream_timeout=stream_timeout,
            retry_policy=NoRetryPolicy(),
            client_name=client_name,
        )
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(f"not a usable Redis URL {redact(url)!r}: {exc}") from None
    try:
        async with client:
            try:
                await client.ping()
            except Exception as exc:
                typed = translate(exc, url)
                if typed is None:
                    raise
                raise typed from None
            yield client
    except BaseExceptionGroup as group:
        leaf = _single(group)
        if leaf is None:
            raise
        typed = translate(leaf, url) if isinstance(leaf, redis_errors.RedisError) else None
        if typed is not None:
            raise typed from None
        raise leaf from leaf.__cause__


def tls_context(client: coredis.Redis[bytes]) -> ssl.SSLContext | None:
    """The TLS context coredis built from a rediss:// URL (None for redis:// and unix://)."""
    context = client.connection_pool.connection_kwargs.get("ssl_context")
    return context if isinstance(context, ssl.SSLContext) else None


def default_client_name(role: str) -> str:
    """``puffin-{role}-{host}-{pid}``: what ``CLIENT LIST`` shows for us."""
    return f"puffin-{role}-{socket.gethostname()}-{os.getpid()}"
