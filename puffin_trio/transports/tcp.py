"""Length-prefixed TCP transport over trio (the framing of the IB TWS API).

This module owns one plain TCP connection whose incoming bytes are a stream
of messages, each a 4-byte big-endian length followed by that many bytes of
payload:

* :class:`FrameDecoder` is the sans-IO de-framer: bytes in (any chunking:
  split prefixes, many messages per read), payloads out. Hypothesis feeds it
  arbitrary chunkings in the tests. It, :func:`encode_frame` and
  ``DEFAULT_MAX_FRAME_SIZE`` (with the reason for its value) live with the IB
  protocol (:mod:`puffin_trio.providers.ib._framing`), which must not import
  trio; they are re-exported here.
* :class:`Pacer` is the sans-IO outbound rate limit: at most ``rate``
  messages in any window of ``period`` seconds.
* :class:`TcpTransport` satisfies :class:`~puffin_trio.transports.Transport`
  on top of a trio stream: ``receive`` returns one de-framed payload, ``send``
  writes bytes *exactly as given* (the IB protocol produces wire-ready messages
  with their own length prefixes, because the TWS ``API\\0`` prologue is not
  framed), paced by a :class:`Pacer` when one is configured.
* :func:`open_tcp_transport` connects and owns the socket for an
  ``async with`` block.

It must not parse payloads (the provider protocols do that) or log per message.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import trio

from puffin_trio.errors import ConfigurationError, ConnectionLost, ProtocolError
from puffin_trio.providers.ib._framing import (
    DEFAULT_MAX_FRAME_SIZE,
    FrameDecoder,
    check_frame_size,
    encode_frame,
)

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_MAX_FRAME_SIZE",
    "DEFAULT_RECEIVE_SIZE",
    "FrameDecoder",
    "Pacer",
    "TcpTransport",
    "encode_frame",
    "open_tcp_transport",
]

#: Bytes per socket read: a TWS burst (a depth book being rebuilt, many tickers)
#: is thousands of ~40-byte messages; one 64 KiB read then yields hundreds of
#: them for one trip through the event loop.
DEFAULT_RECEIVE_SIZE = 64 * 1024
#: Seconds: TWS and IB Gateway run on the same host or LAN and accept in
#: milliseconds; 10 s catches a black-holed address without tripping on a
#: loaded machine.
DEFAULT_CONNECT_TIMEOUT = 10.0

class Pacer:
    """At most ``rate`` sends in any window of ``period`` seconds (sans-IO).

    A sliding window over the times of the last ``rate`` sends, as ib_async's
    client throttle does: a send may go once the ``rate``-th previous one is
    ``period`` seconds old. Unlike a token bucket (which lets a full bucket
    plus its refill through within one period), no window of ``period``
    seconds ever holds more than ``rate`` sends, which is what a server
    counting "messages per second" enforces.

    Use: ``at = pacer.ready_at(now)``; sleep until ``at``; ``pacer.record(at)``.
    """

    __slots__ = ("_times", "period", "rate")

    def __init__(self, rate: int, period: float = 1.0) -> None:
        if isinstance(rate, bool) or not isinstance(rate, int) or rate < 1:
            raise ConfigurationError(f"rate must be an integer >= 1 per period, not {rate!r}")
        if (
            isinstance(period, bool)
            or not isinstance(period, int | float)
            or not (period > 0 and math.isfinite(period))
        ):
            raise ConfigurationError(f"period must be a positive number of seconds, not {period!r}")
        self.rate = rate
        self.period = float(period)
        self._times: deque[float] = deque(maxlen=rate)

    def ready_at(self, now: float) -> float:
        """The earliest time, not before ``now``, at which the next send may go."""
        times = self._times
        if len(times) < self.rate:
            return now
        return max(now, times[0] + self.period)

    def record(self, now: float) -> None:
        """Note a send at ``now`` (which must not be earlier than the previous one)."""
        self._times.append(now)


class TcpTransport:
    """One open, framed TCP connection (see the module docstring).

    ``frames_received`` counts de-framed messages handed out by
    :meth:`receive`; ``bytes_received`` counts bytes read from the socket
    (length prefixes included). ``messages_sent`` counts :meth:`send` calls
    that completed and ``paced_seconds`` the time sends waited for the
    :class:`Pacer`.

    Sends are serialised by a FIFO lock, so tasks may send concurrently (a
    trio stream refuses concurrent ``send_all`` calls): each frame goes out
    whole and in the order the senders arrived.
    """

    def __init__(
        self,
        stream: trio.abc.Stream,
        *,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        max_messages_per_second: int | None = None,
        receive_size: int = DEFAULT_RECEIVE_SIZE,
    ) -> None:
        self._stream = stream
        self._decoder = FrameDecoder(max_frame_size)
        self._ready: deque[bytes] = deque()
        self._receive_size = receive_size
        self._send_lock = trio.Lock()
        self._pacer = None if max_messages_per_second is None else Pacer(max_messages_per_second)
        self.frames_received = 0
        self.bytes_received = 0
        self.messages_sent = 0
        self.paced_seconds = 0.0

    async def send(self, frame: str | bytes) -> None:
        """Write ``frame`` exactly as given, after any wait the pacer imposes.

        Blocks while another task is sending and while the pacer holds the
        line back. Cancelled while it waits, it sends nothing; cancelled while
        writing, part of the frame may be out and the connection must be
        closed (trio's rule for ``send_all``), which the session does.
        Raises :class:`ConnectionLost` if the connection is closed and
        ``TypeError`` for ``str`` (this transport carries bytes only).
        """
        if not isinstance(frame, bytes | bytearray | memoryview):
            raise TypeError(f"a TCP frame must be bytes, not {type(frame).__name__}")
        async with self._send_lock:
            pacer = self._pacer
            if pacer is not None:
                now = trio.current_time()
                at = pacer.ready_at(now)
                if at > now:
                    await trio.sleep_until(at)
                    self.paced_seconds += at - now
                pacer.record(max(at, trio.current_time()))
            try:
                await self._stream.send_all(frame)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise ConnectionLost(f"connection closed while sending: {exc!r}") from None
            self.messages_sent += 1

    async def send_all(self, frames: Sequence[str | bytes]) -> None:
        """Send frames in order (each paced and locked on its own)."""
        for frame in frames:
            await self.send(frame)

    async def receive(self) -> bytes:
        """The next de-framed payload.

        A checkpoint whenever it reads from the socket; a payload already
        de-framed from an earlier read is returned after only checking for
        cancellation, so a burst costs one scheduler trip per read, not per
        message. Raises :class:`ConnectionLost` once the peer has closed and
        every complete message before the close was returned, and
        :class:`ProtocolError` for an impossible length prefix.
        """
        ready = self._ready
        if ready:
            await trio.lowlevel.checkpoint_if_cancelled()
        while not ready:
            try:
                data = await self._stream.receive_some(self._receive_size)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise ConnectionLost(f"connection broken: {exc!r}") from None
            if not data:
                pending = self._decoder.buffered
                tail = f" in the middle of a message ({pending} bytes of it)" if pending else ""
                raise ConnectionLost(f"connection closed by peer{tail}")
            self.bytes_received += len(data)
            ready.extend(self._decoder.feed(data))
        self.frames_received += 1
        return ready.popleft()

    def receive_nowait(self) -> bytes | None:
        """A payload already de-framed from an earlier read, or ``None``. Not a checkpoint."""
        if not self._ready:
            return None
        self.frames_received += 1
        return self._ready.popleft()

    async def ping(self) -> None:
        """Always raises :class:`ProtocolError`: plain TCP has no ping.

        Providers on this transport use an application-level heartbeat (IB:
        ``reqCurrentTime``), see :meth:`ProviderProtocol.heartbeat`.
        """
        await trio.lowlevel.checkpoint()
        raise ProtocolError(
            "a framed TCP connection has no transport-level ping; "
            "the provider must use an application-level heartbeat"
        )

    async def aclose(self) -> None:
        """Close the socket (immediately; TCP needs no closing handshake here)."""
        await trio.aclose_forcefully(self._stream)


@asynccontextmanager
async def open_tcp_transport(
    host: str,
    port: int,
    *,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
    max_messages_per_second: int | None = None,
    receive_size: int = DEFAULT_RECEIVE_SIZE,
    connect_hint: str = "",
) -> AsyncIterator[TcpTransport]:
    """Connect to ``host:port`` and yield a :class:`TcpTransport` for the block.

    Raises :class:`ConfigurationError` for bad arguments (before connecting)
    and :class:`ConnectionLost` if the connection is refused or not made
    within ``connect_timeout`` seconds; ``connect_hint`` is appended to that
    message (e.g. how to enable the TWS API). ``max_messages_per_second``
    paces outgoing messages (``None``: unpaced). The socket is closed when the
    block exits, however it exits.
    """
    check_frame_size(max_frame_size)
    if not isinstance(host, str) or not host:
        raise ConfigurationError(f"host must be a non-empty string, not {host!r}")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ConfigurationError(f"port must be an integer between 1 and 65535, not {port!r}")
    if not connect_timeout > 0:
        raise ConfigurationError(f"connect_timeout must be > 0 seconds, not {connect_timeout!r}")
    if isinstance(receive_size, bool) or not isinstance(receive_size, int) or receive_size < 1:
        raise ConfigurationError(f"receive_size must be an integer >= 1, not {receive_size!r}")
    hint = f"; {connect_hint}" if connect_hint else ""
    try:
        with trio.fail_after(connect_timeout):
            stream = await trio.open_tcp_stream(host, port)
    except trio.TooSlowError:
        raise ConnectionLost(
            f"could not connect to {host}:{port} within {connect_timeout} s{hint}"
        ) from None
    except OSError as exc:
        raise ConnectionLost(f"could not connect to {host}:{port}: {exc}{hint}") from None
    transport = TcpTransport(
        stream,
        max_frame_size=max_frame_size,
        max_messages_per_second=max_messages_per_second,
        receive_size=receive_size,
    )
    try:
        yield transport
    finally:
        await transport.aclose()
