"""A lean Redis connection for the hot commands: a trio stream, hiredis's packer and reader.

This module owns :class:`Pipe`: one connection on which the publisher sends
its write script and a feed its reads, one command at a time. coredis (every
other command: connecting with typed errors, the layout, groups, claims)
costs ~0.3 ms of client CPU per command on trio, through anyio and its pool;
here a command is packed by ``hiredis.pack_command`` and its reply parsed by
``hiredis.Reader`` (both C) straight off a :class:`trio.SocketStream`, about
a tenth of that. Errors are coredis's own exception types (so callers handle
both connections alike): a reply error is what coredis would raise for it, a
broken, refused or timed-out connection a
:class:`coredis.exceptions.ConnectionError` or :class:`TimeoutError`. After
any failure, or a command cancelled mid-way, the socket is closed (its state
is unknown) and the next command opens a new one.

It must not know stream keys or events.
"""

from __future__ import annotations

import hashlib
import ssl
from typing import Any, Final
from urllib.parse import parse_qs, unquote, urlsplit

import coredis.exceptions as redis_errors
import hiredis
import trio
from coredis.parser import Parser

__all__ = ["Pipe", "script_sha"]

#: Bytes asked of the socket per read: a feed's biggest reply (a round of
#: 16,384 events) is ~1.2 MB, so a few reads; a small reply is one.
_CHUNK: Final = 256 * 1024
#: What ``hiredis.Reader.gets`` returns while a reply is incomplete (RESP2 has no
#: boolean, so ``False`` is never a reply).
_INCOMPLETE: Final = False
#: coredis's own mapping of a reply error's code to its exception class.
_ERRORS: Final = Parser()


def script_sha(source: str) -> str:
    """The SHA1 Redis names a script by (``EVALSHA``)."""
    return hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()


def _reply_error(message: str) -> redis_errors.RedisError:
    return _ERRORS.parse_error(message)


class Pipe:
    """One lazily (re)connected Redis connection, one command at a time.

    ``url`` has been checked (:func:`~._connection.check_url`) and the server
    proven reachable by coredis before a pipe is used: a failure here is an
    outage, handled by the caller's reconnect loop. One task uses a pipe.
    """

    def __init__(
        self,
        url: str,
        *,
        connect_timeout: float,
        reply_timeout: float,
        client_name: str,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        parts = urlsplit(url)
        query = parse_qs(parts.query)
        self._scheme = parts.scheme
        self._host = parts.hostname or ""
        self._port = parts.port or 6379
        self._path = unquote(parts.path)
        self._connect_timeout = connect_timeout
        self._reply_timeout = reply_timeout
        #: For rediss://: coredis's own context for the same URL (its certificate
        #: options), else the system's defaults.
        self._ssl = ssl_context
        # As coredis reads it: ?db= first, else the path (but a unix:// path is the socket).
        database = parts.path.lstrip("/") if parts.scheme != "unix" else ""
        database = query.get("db", [database])[0]
        #: Sent on each new connection, before any command (one round trip).
        hello: list[tuple[Any, ...]] = []
        if parts.password is not None:
            password = unquote(parts.password)
            if parts.username:
                hello.append((b"AUTH", unquote(parts.username), password))
            else:
                hello.append((b"AUTH", password))
        if database and database != "0":
            hello.append((b"SELECT", database))
        hello.append((b"CLIENT", b"SETNAME", client_name))
        self._hello = b"".join(hiredis.pack_command(command) for command in hello)
        self._hello_replies = len(hello)
        self._stream: trio.abc.Stream | None = None
        self._reader = hiredis.Reader(replyError=_reply_error, notEnoughData=_INCOMPLETE)
        #: Commands sent and connections opened (statistics, tests).
        self.commands = 0
        self.connects = 0

    async def call(self, *command: Any, blocking: float = 0.0) -> Any:
        """Send one command and return its reply (RESP2: lists, bytes, ints, None).

        The reply is awaited for ``reply_timeout`` seconds, plus ``blocking``
        for a command that waits on the server (``XREAD BLOCK``); connecting
        (when needed) has ``connect_timeout`` of its own.
        """
        request = hiredis.pack_command(command)
        stream = self._stream or await self._connect()
        timeout = self._reply_timeout + blocking
        try:
            with trio.fail_after(timeout):
                await stream.send_all(request)
                reply = await self._reply(stream)
        except trio.TooSlowError:
            self._drop()
            raise TimeoutError(f"no reply from Redis within {timeout} s") from None
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self._drop()
            raise redis_errors.ConnectionError(f"connection to Redis lost: {exc}") from None
        except hiredis.ProtocolError as exc:
            self._drop()
            raise redis_errors.ConnectionError(f"not a Redis reply ({exc})") from None
        except BaseException:
            # Cancelled (or a protocol error) mid-command: the connection's state is unknown.
            self._drop()
            raise
        self.commands += 1
        if isinstance(reply, redis_errors.RedisError):
            raise reply
        return reply

    async def script(self, sha: str, source: str, keys: list[Any], args: list[Any]) -> Any:
        """Run a script by its SHA, sending its source (``EVAL``) if the server lost it."""
        try:
            return await self.call(b"EVALSHA", sha, len(keys), *keys, *args)
        except redis_errors.NoScriptError:
            return await self.call(b"EVAL", source, len(keys), *keys, *args)

    def close(self) -> None:
        """Close the connection (the next command opens a new one)."""
        self._drop()

    async def _reply(self, stream: trio.abc.Stream) -> Any:
        reader = self._reader
        while True:
            reply = reader.gets()
            if reply is not _INCOMPLETE:
                return reply
            data = await stream.receive_some(_CHUNK)
            if not data:
                raise redis_errors.ConnectionError("Redis closed the connection")
            reader.feed(bytes(data))

    async def _connect(self) -> trio.abc.Stream:
        try:
            with trio.fail_after(self._connect_timeout):
                stream: trio.abc.Stream
                if self._scheme == "unix":
                    stream = await trio.open_unix_socket(self._path)
                else:
                    stream = await trio.open_tcp_stream(self._host, self._port)
                    if self._scheme == "rediss":
                        context = self._ssl or ssl.create_default_context()
                        stream = trio.SSLStream(stream, context, server_hostname=self._host)
                self._stream = stream
                self._reader = hiredis.Reader(replyError=_reply_error, notEnoughData=_INCOMPLETE)
                await stream.send_all(self._hello)
                for _ in range(self._hello_replies):
                    reply = await self._reply(stream)
                    if isinstance(reply, redis_errors.RedisError):
                        raise reply
        except trio.TooSlowError:
            self._drop()
            limit = self._connect_timeout
            raise TimeoutError(f"cannot connect to Redis within {limit} s") from None
        except (OSError, trio.BrokenResourceError, hiredis.ProtocolError) as exc:
            self._drop()
            raise redis_errors.ConnectionError(f"cannot connect to Redis: {exc}") from None
        except BaseException:
            self._drop()
            raise
        self.connects += 1
        return stream

    def _drop(self) -> None:
        stream, self._stream = self._stream, None
        if stream is None:
            return
        # Closing a socket does not block; SSLStream's close would (it says goodbye).
        while isinstance(stream, trio.SSLStream):
            stream = stream.transport_stream
        if isinstance(stream, trio.SocketStream):
            stream.socket.close()
