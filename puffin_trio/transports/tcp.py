"""Length-prefixed TCP transport over trio (the framing of the IB TWS API).

This module owns one plain TCP connection whose incoming bytes are a stream
of messages, each a 4-byte big-endian length followed by that many bytes of
payload:

* :class:`FrameDecoder` is the sans-IO de-framer: bytes in (any chunking:
  split prefixes, many messages per read), payloads out. Hypothesis feeds it
  arbitrary chunkings in the tests.
* :class:`Pacer` is the sans-IO outbound rate limit: at most ``rate``
  messages in any window of ``period`` seconds.
* :class:`TcpTransport` satisfies :class:`~puffin_trio.providers._base.Transport`
  on top of a trio stream: ``receive`` returns one de-framed payload, ``send``
  writes bytes *exactly as given* (the IB codec produces wire-ready messages
  with their own length prefixes, because the TWS ``API\\0`` prologue is not
  framed), paced by a :class:`Pacer` when one is configured.
* :func:`open_tcp_transport` connects and owns the socket for an
  ``async with`` block.

It must not parse payloads (the provider codecs do that) or log per message.
"""

from __future__ import annotations

import math
import struct
from collections import deque
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import trio

from puffin_trio.errors import ConfigurationError, ConnectionLost, ProtocolError

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

#: 0xFFFFFF (16 MiB - 1): the official ``ibapi`` client's ``MAX_MSG_LEN``, so we
#: accept every message TWS can legitimately send to its own client. Market data
#: messages are tens of bytes and contract details a few KiB; the cap exists so
#: that a corrupt or hostile length prefix (four bytes of text read as a length:
#: ``b"1\x002\x00"`` is 822 MiB) fails at once with :class:`ProtocolError`
#: instead of making us buffer gigabytes. A zero length is refused too: no TWS
#: message is empty (even ``102`` carries its id), so a zero means the stream is
#: out of step.
DEFAULT_MAX_FRAME_SIZE = 0xFFFFFF
#: Bytes per socket read: a TWS burst (a depth book being rebuilt, many tickers)
#: is thousands of ~40-byte messages; one 64 KiB read then yields hundreds of
#: them for one trip through the event loop.
DEFAULT_RECEIVE_SIZE = 64 * 1024
#: Seconds: TWS and IB Gateway run on the same host or LAN and accept in
#: milliseconds; 10 s catches a black-holed address without tripping on a
#: loaded machine.
DEFAULT_CONNECT_TIMEOUT = 10.0

_PREFIX = struct.Struct(">I")
_PREFIX_SIZE = _PREFIX.size


def encode_frame(payload: bytes) -> bytes:
    """``payload`` with its 4-byte big-endian length prefix."""
    return _PREFIX.pack(len(payload)) + payload


class FrameDecoder:
    """Sans-IO de-framer: feed it bytes as they arrive, get complete payloads back.

    Partial prefixes and payloads are kept in a ``bytearray`` until the rest
    arrives. A length of 0 or above ``max_frame_size`` raises
    :class:`ProtocolError` as soon as its 4 bytes are in (before any payload
    is buffered); the decoder is then unusable, as is the stream.

    Cost: when nothing is pending (the common case) payloads are sliced
    straight out of the chunk just read and only its incomplete tail is
    copied into the buffer; otherwise the chunk is appended and the consumed
    head dropped once per :meth:`feed`. Each payload is one ``bytes`` copy.
    """

    __slots__ = ("_buffer", "max_frame_size")

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        _check_size(max_frame_size)
        self.max_frame_size = max_frame_size
        self._buffer = bytearray()

    @property
    def buffered(self) -> int:
        """Bytes held back: the start of a message whose rest has not arrived."""
        return len(self._buffer)

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Every payload completed by ``data``, in order (possibly none)."""
        buffer = self._buffer
        if buffer:
            buffer += data
            frames, used = self._split(buffer)
            del buffer[:used]
            return frames
        frames, used = self._split(data)
        if used < len(data):
            buffer += memoryview(data)[used:]
        return frames

    def _split(self, source: bytes | bytearray | memoryview) -> tuple[list[bytes], int]:
        frames: list[bytes] = []
        limit = self.max_frame_size
        unpack = _PREFIX.unpack_from
        end = len(source)
        pos = 0
        with memoryview(source) as view:
            while end - pos >= _PREFIX_SIZE:
                (length,) = unpack(view, pos)
                if length == 0 or length > limit:
                    raise ProtocolError(_bad_length(length, limit))
                stop = pos + _PREFIX_SIZE + length
                if stop > end:
                    break
                frames.append(bytes(view[pos + _PREFIX_SIZE : stop]))
                pos = stop
        return frames, pos


def _bad_length(length: int, limit: int) -> str:
    if length == 0:
        return "received a zero-length message: the byte stream is out of step"
    return (
        f"received a message length of {length} bytes, over the {limit}-byte limit: "
        "the byte stream is corrupt or out of step"
    )


def _check_size(max_frame_size: object) -> None:
    if (
        isinstance(max_frame_size, bool)
        or not isinstance(max_frame_size, int)
        or not 1 <= max_frame_size <= 0xFFFFFFFF
    ):
        raise ConfigurationError(
            "max_frame_size must be an integer number of bytes between 1 and 2**32 - 1, "
            f"not {max_frame_size!r}"
        )


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
    _check_size(max_frame_size)
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
