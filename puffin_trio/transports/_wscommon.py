"""What the two WebSocket transports share: their limits, the endpoint, TLS, and how failures read.

This module owns the defaults both WebSocket transports apply (and why each
has its value), the parsing of a checked ``ws(s)://`` URL into an
:class:`Endpoint`, the TLS context, and the wording of our typed errors: a
connection that could not be opened, and a connection that ended (with its
close code), so that the same failure reads the same on either library. It
must not open connections or parse frames.
"""

from __future__ import annotations

import ssl
from typing import Final, Literal
from urllib.parse import urlsplit

import attrs
import trio

from puffin_trio.errors import ConnectionLost
from puffin_trio.providers._config import check_ws_url

__all__ = [
    "DEFAULT_CLOSE_TIMEOUT",
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_MESSAGE_QUEUE_SIZE",
    "DEFAULT_RECEIVE_BUFFER_SIZE",
    "Endpoint",
    "connect_failed",
    "connection_ended",
    "describe_cause",
    "tls_context",
]

#: Bytes per socket read. trio-websocket reads 4 KiB by default, tuned for
#: chat; a batched market-data frame is often 2-20 KiB, and 4 KiB reads cost
#: several trips through the event loop per frame. 64 KiB (trio's own default,
#: which the websockets library uses) cut reads per frame to one in our
#: benchmarks.
DEFAULT_RECEIVE_BUFFER_SIZE: Final = 64 * 1024
#: Messages a transport holds between its library's reader task and ours. The
#: library stops reading the socket while this many wait -- and so stops
#: answering the server's pings. trio-websocket's default queue is 1 message
#: (any pause of our reader, a garbage collection or a burst, stalls the
#: socket) and websockets' is 16 frames; 256 messages absorb bursts, and our
#: own bounded fan-out with a declared overflow policy sits after it. It is
#: also the documented bound on how long a slow "block" consumer may hold us
#: before pings go unanswered (see ``docs/guide/channels.rst``).
DEFAULT_MESSAGE_QUEUE_SIZE: Final = 256
#: Seconds to open a connection (TCP + TLS + HTTP upgrade). To a distant data
#: centre this takes well under a second; 10 s (also the websockets library's
#: ``open_timeout``) catches a black-holed connect without tripping on a slow
#: TLS handshake. A connection refused or reset fails at once, not after this.
DEFAULT_CONNECT_TIMEOUT: Final = 10.0
#: Seconds a clean close (our close frame, the peer's reply, the peer closing
#: TCP) may take before we drop the socket, and seconds a peer that sent or
#: answered a close frame gets to close TCP (RFC 6455 lets the server close
#: first). The round trip takes milliseconds; 2 s covers a loaded server, and
#: a link declared dead is aborted without waiting at all.
DEFAULT_CLOSE_TIMEOUT: Final = 2.0

#: RFC 6455 close codes a peer cannot send: they describe what happened locally.
_NO_STATUS = 1005
_ABNORMAL = 1006


@attrs.frozen
class Endpoint:
    """Where a checked ``ws://``/``wss://`` URL points (``from_url`` applies the URL rule)."""

    url: str
    host: str
    port: int
    secure: bool
    #: Path and query, the HTTP request target of the upgrade.
    resource: str

    @classmethod
    def from_url(cls, url: str, *, allow_insecure: bool = False) -> Endpoint:
        """Parse ``url`` after :func:`~puffin_trio.providers._config.check_ws_url`
        (raises :class:`~puffin_trio.errors.ConfigurationError` before any connection)."""
        check_ws_url(url, allow_insecure=allow_insecure)
        parts = urlsplit(url)
        secure = parts.scheme == "wss"
        return cls(
            url=url,
            host=parts.hostname or "",
            port=parts.port or (443 if secure else 80),
            secure=secure,
            resource=(parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
        )

    @property
    def netloc(self) -> str:
        """``host:port`` as errors name it."""
        return f"{self.host}:{self.port}"

    @property
    def host_header(self) -> str:
        """The ``Host`` header: the port only when it is not the scheme's default."""
        return self.host if self.port in (80, 443) else f"{self.host}:{self.port}"


def tls_context(ssl_context: ssl.SSLContext | None) -> ssl.SSLContext:
    """The given context, or the system's default: certificates and host name verified."""
    return ssl_context or ssl.create_default_context()


def connect_failed(
    endpoint: Endpoint, cause: BaseException | None, timeout: float
) -> ConnectionLost:
    """The error for a connection that could not be opened, naming its real cause.

    ``cause`` ``None`` means the attempt ran out of ``timeout``. A TLS failure
    says so (a certificate that does not verify is a configuration problem,
    not a flaky network); an HTTP status that refused the upgrade is quoted.
    """
    if cause is None:
        return ConnectionLost(f"could not connect to {endpoint.netloc} within {timeout} s")
    return ConnectionLost(f"could not connect to {endpoint.netloc}: {describe_cause(cause)}")


def describe_cause(exc: BaseException) -> str:
    """What went wrong, in words: TLS verification, a reset, a refusal, ..."""
    # trio wraps OS and TLS errors (BrokenResourceError from SSLError or from
    # ConnectionResetError; "all attempts to connect failed" from a group of
    # each address's error): the innermost cause is the one that explains.
    for _ in range(8):
        cause = exc.__cause__
        if isinstance(cause, BaseExceptionGroup) and cause.exceptions:
            cause = cause.exceptions[0]
        if cause is None or not isinstance(exc, trio.BrokenResourceError | OSError):
            break
        exc = cause
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate verification failed: {exc.verify_message} ({exc.reason})"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed: {exc.reason or exc}"
    if isinstance(exc, ConnectionResetError):
        return "connection reset by peer"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return repr(exc)


def connection_ended(
    code: int | None,
    reason: str,
    *,
    by: Literal["peer", "us"] | None,
    cause: BaseException | None = None,
) -> ConnectionLost:
    """The error ``receive`` raises once a connection has ended.

    ``code``/``reason`` come from the close frame that ended it, sent ``by``
    the peer, or by us (1002 after the peer broke the framing, 1007 for text
    that is not UTF-8, 1009 for a message over the size limit), or by either
    (``None``: the library does not say). ``None`` (or
    1006) means no close frame was exchanged: a dropped link, reported with
    code 1006 as RFC 6455 says, and its ``cause`` when known.
    """
    if code is None or code == _ABNORMAL:
        why = f": {describe_cause(cause)}" if cause is not None else ""
        return ConnectionLost(f"connection dropped without a close frame{why}", code=_ABNORMAL)
    who = f" by {by}" if by else ""
    if code == _NO_STATUS:
        return ConnectionLost(f"connection closed{who} without a status code", code=code)
    text = f": {reason}" if reason else ""
    return ConnectionLost(f"connection closed{who} with {code}{text}", code=code)
