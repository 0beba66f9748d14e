"""What every provider's blaster gives the benchmarks, and the machinery they share.

This module owns the :class:`Case` contract (one per provider, built in
``_blast_alpaca.py``, ``_blast_polygon.py`` and ``_blast_ib.py``) and the
provider-neutral pieces of a *blast server*: WebSocket framing, chunking, the
send loops, the tick stream the data is made from, and the bare clients'
shared parts. It must not time anything, print tables or know a wire format.

A blast server speaks just enough of a provider's protocol to get a client
streaming (hello, authentication, subscription) and then writes data that was
encoded once, up front, as fast as the socket accepts it: the server must
never be what limits a throughput measurement. The messages are real provider
messages, built from :class:`~puffin_trio.sim.MarketModel` ticks by the
simulators' own message builders, and already carry their transport framing
(a WebSocket frame header; IB's length prefix), so the send loop costs almost
no CPU:

* WebSocket cases (Alpaca, Polygon) send one ``send_all`` per ~64 KiB chunk of
  whole frames; "B" is messages per WebSocket frame.
* IB sends one ``send(2)`` per group of B length-prefixed messages ("B" is
  messages per TCP write: 1 is TWS writing each message as it comes, 20 a
  burst), straight on the socket without a trio checkpoint per write (see
  :func:`blast_socket`).
"""

from __future__ import annotations

import abc
import itertools
import os
import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar, Protocol, runtime_checkable

import trio
import trio_websocket

from puffin_trio._event_builder import event_builder
from puffin_trio.events import EVENT_TYPES, Gap, Quote, Status, Trade
from puffin_trio.providers._base import Frame, Provider, ProviderProtocol
from puffin_trio.providers.alpaca import DEFAULT_MAX_MESSAGE_SIZE
from puffin_trio.sim import MarketModel, SimQuote, SimTrade
from puffin_trio.transports.ws import DEFAULT_MESSAGE_QUEUE_SIZE, DEFAULT_RECEIVE_BUFFER_SIZE

__all__ = [
    "FLOOR_QUOTE",
    "FLOOR_TRADE",
    "HANDSHAKE_TIMEOUT",
    "SYMBOLS",
    "TOPICS",
    "WS_CEILING",
    "BareClient",
    "Case",
    "DecodeSample",
    "FloorClient",
    "StampingClient",
    "blast_socket",
    "data_events",
    "expect_action",
    "open_bare_ws",
    "run_sim",
    "serve_ws",
    "tick_stream",
    "ticks",
    "ws_pool",
]

#: Blast writes are grouped into chunks of at least this many bytes: one
#: ``send_all`` (one syscall when the socket has room) moves dozens of frames.
#: :func:`blast_socket` also lets other tasks run once per this many bytes.
CHUNK_BYTES = 64 * 1024
#: Seconds a client has to finish a blast server's handshake.
HANDSHAKE_TIMEOUT = 10.0
#: Ten liquid names, for every provider: enough distinct symbols that
#: per-symbol state (the session's liveness map, conflation slots, IB's L1
#: pairs, Polygon's guard streams) is exercised, few enough that the
#: subscription stays one small request (IB: 20 requests, well inside TWS's
#: 50 messages/s).
SYMBOLS = ("AAPL", "MSFT", "NVDA", "AMZN", "GOOG", "META", "TSLA", "AMD", "NFLX", "INTC")
#: Subscribed everywhere: every symbol's trades and quotes.
TOPICS: Mapping[str, Sequence[str]] = {"trades": SYMBOLS, "quotes": SYMBOLS}
#: The largest message a blast server accepts from its client (a subscribe).
_MAX_CLIENT_MESSAGE = 1 << 20
#: Market-data event classes (what a consumer counts; Status and Gap are not data).
_DATA_TYPES = frozenset(EVENT_TYPES) - {Status, Gap}

WS_CEILING = (
    "trio-websocket (receive_buffer_size 64 KiB, message_queue_size 256) + {parse} per frame, "
    "counting messages"
)


# --------------------------------------------------------------------------- the case contract


@dataclass(frozen=True)
class DecodeSample:
    """One decode-section sample: what the protocol gets per call, and the bare-parse baseline."""

    label: str
    #: Data messages per call (one 20-message frame; 20 IB messages).
    messages: int
    #: Decode the sample once: ``decode(ts_recv)`` -> everything the protocol returned.
    decode: Callable[[int], list[Any]]
    #: The protocol ``decode`` drives, ready (IB: handshake done, requests open).
    protocol: ProviderProtocol
    #: The bare parse of the same bytes (``orjson.loads``, a NUL split, ...).
    baseline: Callable[[], object]
    baseline_label: str
    #: The bare parse plus one event built per message, unchecked (see FloorClient).
    floor: Callable[[], object] | None = None


class Case(abc.ABC):
    """Everything the benchmark scripts need to benchmark one provider (one subclass each).

    * :meth:`provider`: the provider as a user would build it, pointed at
      ``127.0.0.1:port``; ``variant`` is one of :attr:`variants`, a wire
      encoding (``"json"``).
    * :attr:`topics`: the subscription (``sup.add(provider, **topics)``).
    * :meth:`wire`: the blast server's pool for one variant, built once in the
      server process; only :meth:`serve` reads it.
    * :attr:`cycles`: whether the pool may be sent round and round. Polygon's
      ``q`` must keep increasing on a connection (the sequence guard drops every
      message of a second lap as late), so its pool holds a whole run.
    * :meth:`serve`: one blast connection: handshake, then blast the pool of
      the variant the client asked for.
    * :meth:`bare`: a :class:`BareClient` that has done the handshake: the
      transport tuned as the package tunes it and a bare parse, nothing else
      (the throughput ceiling, and with :meth:`sim`, the latency floor);
      :attr:`ceiling` says how it works, for the table notes.
    * :meth:`sim`: the package's own simulator (latency and memory runs); a
      case without one says why in :attr:`no_sim`.
    * :attr:`stamp_resolution_ns`: the resolution of the wire's event time
      (``ts_event`` is truncated to it, which latency figures include).
    * :meth:`decode_samples`: samples for the decode script.
    """

    name: ClassVar[str]
    variants: ClassVar[tuple[str, ...]]
    ceiling: ClassVar[str]
    topics: ClassVar[Mapping[str, Sequence[str]]] = TOPICS
    cycles: ClassVar[bool] = True
    stamp_resolution_ns: ClassVar[int] = 1
    #: Whether the bare client is a :class:`FloorClient` (the throughput floor column).
    floor: ClassVar[bool] = False
    #: Why the case has no :meth:`sim` runs; empty when it has them.
    no_sim: ClassVar[str] = ""

    @abc.abstractmethod
    def provider(self, port: int, variant: str) -> Provider:
        """The provider, pointed at ``127.0.0.1:port``."""

    @abc.abstractmethod
    def wire(self, variant: str, batch: int, messages: int) -> Any:
        """The pool: ``messages`` data messages, ``batch`` per frame (IB: per write)."""

    @abc.abstractmethod
    async def serve(self, stream: trio.SocketStream, pools: Mapping[str, Any]) -> None:
        """One blast connection, on ``stream``, with the pool of each variant."""

    @abc.abstractmethod
    def bare(self, port: int, variant: str) -> AbstractAsyncContextManager[BareClient]:
        """A bare client connected to ``127.0.0.1:port``, past the handshake."""

    @abc.abstractmethod
    def decode_samples(self) -> list[DecodeSample]:
        """The decode script's samples."""

    @property
    def has_sim(self) -> bool:
        return not self.no_sim

    async def sim(
        self, rate: float, batch: int, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """The package's simulator on a free loopback port, reporting the port."""
        raise NotImplementedError(f"{self.name} has no simulator run: {self.no_sim}")


async def run_sim(
    serve: Callable[..., Awaitable[Any]],
    rate: float,
    batch: int,
    task_status: trio.TaskStatus[int],
    **settings: Any,
) -> None:
    """A package simulator for the latency and memory runs: :data:`SYMBOLS` at ``rate``
    messages/s, ``batch`` per frame, with spare connections per key (a "block"
    consumer may get its session reconnected, and the provider's connection-limit
    cool-down must stay out of a measurement)."""
    await serve(
        symbols=SYMBOLS,
        rate=rate,
        batch=batch,
        max_connections_per_key=4,
        task_status=task_status,
        **settings,
    )


class BareClient(Protocol):
    """A connected, subscribed client with no pipeline: data in, a bare parse, nothing built."""

    async def receive(self) -> Frame:
        """The next frame (IB: the next socket read). A checkpoint."""

    def count(self, frame: Frame) -> int:
        """Parse ``frame``; the number of data messages in it."""


@runtime_checkable
class FloorClient(BareClient, Protocol):
    """A bare client that can also build the events (the throughput floor)."""

    def build(self, frame: Frame) -> int:
        """Parse ``frame`` and build one event per data message, with no checks; the count."""


@runtime_checkable
class StampingClient(BareClient, Protocol):
    """A bare client that can also read each message's event time (latency floor)."""

    def stamps(self, frame: Frame) -> list[int]:
        """Parse ``frame``; the event time (ns since the epoch) of each data message."""


#: The events a floor client builds: every field positional, the way the decoders
#: build them (event_builder), values taken from the message as they are.
FLOOR_TRADE = event_builder(
    Trade, "provider", "symbol", "ts_event", "ts_recv", "price", "size", "conditions"
)
FLOOR_QUOTE = event_builder(
    Quote, "provider", "symbol", "ts_event", "ts_recv", "bid", "ask", "bid_size", "ask_size"
)


def data_events(items: Sequence[object]) -> list[object]:
    """The market-data events among a protocol's output (control items left out)."""
    return [item for item in items if type(item) in _DATA_TYPES]


# --------------------------------------------------------------------------- the data


def tick_stream(kind: str, seed: int) -> Iterator[tuple[int, SimTrade | SimQuote]]:
    """(ts_ns, tick) from a seeded market, without end: trades, quotes or both (1:3).

    Timestamps start now and advance 1 µs per tick, as in a busy second.
    """
    model = MarketModel(SYMBOLS, seed=seed)
    base = time.time_ns()
    for i in itertools.count():
        ts = base + i * 1000
        symbol = SYMBOLS[i % len(SYMBOLS)]
        if kind == "trades":
            yield ts, model.trade(symbol, ts)
        elif kind == "quotes":
            yield ts, model.quote(symbol, ts)
        else:
            tick = model.next_tick(ts, trades=SYMBOLS, quotes=SYMBOLS)
            assert type(tick) is SimTrade or type(tick) is SimQuote
            yield ts, tick


def ticks(count: int, kind: str, seed: int) -> list[tuple[int, SimTrade | SimQuote]]:
    """The first ``count`` ticks of :func:`tick_stream`."""
    return list(itertools.islice(tick_stream(kind, seed), count))


# --------------------------------------------------------------------------- WebSocket blasting


def ws_frame(payload: bytes, *, binary: bool) -> bytes:
    """One complete, unmasked server-to-client WebSocket frame (RFC 6455 section 5.2)."""
    first = 0x80 | (0x2 if binary else 0x1)  # FIN + opcode
    size = len(payload)
    if size < 126:
        header = bytes((first, size))
    elif size < 1 << 16:
        header = struct.pack("!BBH", first, 126, size)
    else:
        header = struct.pack("!BBQ", first, 127, size)
    return header + payload


def pack_chunks(units: Sequence[bytes], target: int = CHUNK_BYTES) -> list[bytes]:
    """Concatenate transport-framed units into chunks of at least ``target`` bytes.

    Chunks end on unit boundaries, so a control frame (a pong, a close reply)
    sent between two chunks never lands inside a data frame.
    """
    chunks: list[bytes] = []
    pending: list[bytes] = []
    size = 0
    for unit in units:
        pending.append(unit)
        size += len(unit)
        if size >= target:
            chunks.append(b"".join(pending))
            pending, size = [], 0
    if pending:
        chunks.append(b"".join(pending))
    return chunks


def ws_pool(
    messages: Sequence[object], batch: int, encode: Callable[[object], bytes], *, binary: bool
) -> list[bytes]:
    """A WebSocket blast pool: ``batch`` messages per frame (a trailing partial frame is
    left out), each frame ``encode``-d once, chunked for :func:`serve_ws`."""
    return pack_chunks(
        [
            ws_frame(encode(messages[i : i + batch]), binary=binary)
            for i in range(0, len(messages) - batch + 1, batch)
        ]
    )


class SharedSendStream(trio.abc.Stream):
    """A stream whose ``send_all`` callers take turns (a fair lock around the real one).

    The blast loop writes raw chunks while trio-websocket, on the same
    connection, answers pings and close frames; the lock keeps their writes
    from interleaving (and from raising ``BusyResourceError``).
    """

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream
        self._lock = trio.Lock()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        async with self._lock:
            await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self._stream.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self._stream.aclose()


async def serve_ws(
    stream: trio.SocketStream,
    handshake: Callable[[trio_websocket.WebSocketRequest], Awaitable[Sequence[bytes]]],
) -> None:
    """One WebSocket blast connection: ``handshake`` accepts the upgrade request, answers
    the client's way to streaming and returns the chunks to send round and round until
    the client goes away."""
    shared = SharedSendStream(stream)
    async with trio.open_nursery() as nursery:  # trio-websocket's reader task
        with trio.fail_after(HANDSHAKE_TIMEOUT):
            request = await trio_websocket.wrap_server_stream(
                nursery, shared, max_message_size=_MAX_CLIENT_MESSAGE
            )
            chunks = await handshake(request)
        await _blast(shared, chunks)
        nursery.cancel_scope.cancel()


async def _blast(stream: trio.abc.SendStream, chunks: Sequence[bytes]) -> None:
    """Send ``chunks`` round and round until the peer goes away. Never returns otherwise."""
    try:
        while True:
            for chunk in chunks:
                await stream.send_all(chunk)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return


def expect_action(message: Any, action: str) -> Any:
    """``message`` if it is a client request with this ``action``; else RuntimeError."""
    if not isinstance(message, dict) or message.get("action") != action:
        raise RuntimeError(f"blast server: expected {action}, got {message!r}")
    return message


@asynccontextmanager
async def open_bare_ws(
    url: str,
    *,
    headers: Sequence[tuple[str, str]],
    handshake: Callable[[trio_websocket.WebSocketConnection], Awaitable[None]],
) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    """trio-websocket tuned like :mod:`puffin_trio.transports.ws`, after ``handshake``."""
    async with trio_websocket.open_websocket_url(
        url,
        extra_headers=[(k.encode(), v.encode()) for k, v in headers],
        message_queue_size=DEFAULT_MESSAGE_QUEUE_SIZE,
        receive_buffer_size=DEFAULT_RECEIVE_BUFFER_SIZE,
        max_message_size=DEFAULT_MAX_MESSAGE_SIZE,
    ) as ws:
        with trio.fail_after(HANDSHAKE_TIMEOUT):
            await handshake(ws)
        yield ws


# --------------------------------------------------------------------------- TCP blasting


async def blast_socket(
    stream: trio.SocketStream, units: Sequence[bytes], replies: list[bytes]
) -> None:
    """Send ``units`` round and round, one ``send(2)`` each, until the peer goes away.

    ``trio.SocketStream.send_all`` costs a scheduler pass per call, which for
    one 40-byte message per write would make the server slower than the
    client it measures; this loop calls the socket's own non-blocking
    ``send`` and only waits (``wait_writable``) when the socket buffer is
    full; otherwise it checkpoints once per :data:`CHUNK_BYTES` so other
    tasks run. It is the connection's only writer: another task queues whole
    messages in ``replies``, sent at the next such checkpoint, between two
    units, never inside one. Never returns while the peer is there.
    """
    raw = socket.socket(fileno=os.dup(stream.socket.fileno()))
    raw.setblocking(False)
    send = raw.send
    wait_writable = partial(trio.lowlevel.wait_writable, stream.socket)
    since = 0
    with raw:
        try:
            while True:
                for unit in units:
                    view: bytes | memoryview = unit
                    while True:
                        try:
                            sent = send(view)
                        except BlockingIOError:
                            await wait_writable()
                            continue
                        if sent == len(view):
                            break
                        view = memoryview(view)[sent:]
                    since += len(unit)
                    if since >= CHUNK_BYTES:
                        since = 0
                        while replies:
                            await _send_whole(raw, stream, replies.pop(0))
                        await trio.lowlevel.checkpoint()
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            return


async def _send_whole(raw: socket.socket, stream: trio.SocketStream, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[raw.send(view) :]
        except BlockingIOError:
            await trio.lowlevel.wait_writable(stream.socket)
