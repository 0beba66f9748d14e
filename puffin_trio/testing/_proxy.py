"""A fault-injecting WebSocket proxy: what a bad network does to a feed, on demand.

This module owns :func:`serve_fault_proxy`, a trio TCP proxy on loopback
that relays one upstream WebSocket server and injects the faults of a
:class:`~puffin_trio.testing._proxyplan.ProxyPlan`, its remote control
(:class:`ProxyControl`) and its record of every connection
(:class:`ProxyConnection`). It reads the HTTP upgrade with h11, then follows
RFC 6455 frames both ways (:mod:`puffin_trio.testing._wsframes`), so a fault
can hit one particular frame, and everything it forwards untouched is
recorded, in order, as *intact*: a test can then check that every message
that reached the client intact was delivered or announced as lost.

It must not interpret message payloads (JSON, msgpack: that is the tests'
business), listen on anything but loopback, or read any clock but trio's, so
it runs under ``MockClock`` and in real time alike.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import math
import os
import socket
import struct
from collections import deque
from collections.abc import Iterable
from typing import Literal, NoReturn

import attrs
import h11
import trio

from puffin_trio.errors import ConfigurationError
from puffin_trio.testing._proxyplan import (
    DEFAULT_XOR,
    FRAME_KINDS,
    STREAM_KINDS,
    Direction,
    ProxyFault,
    ProxyFaultKind,
    ProxyPlan,
)
from puffin_trio.testing._wsframes import (
    BINARY,
    DATA_OPCODES,
    TEXT,
    FrameHeader,
    encode_frame,
    mask_payload,
    parse_header,
)

__all__ = [
    "Direction",
    "FiredFault",
    "ForwardedFrame",
    "ProxyConnection",
    "ProxyControl",
    "ProxyFault",
    "ProxyFaultKind",
    "ProxyPlan",
    "serve_fault_proxy",
]

logger = logging.getLogger(__name__)


#: Bytes read from a socket at once: the client transport's receive buffer
#: (64 KiB), so a large batched frame still crosses the proxy in one read.
READ_SIZE = 64 * 1024
#: Bytes one direction may hold between reading and writing before it stops
#: reading, so that backpressure reaches the sender as it would through a
#: router's queue. 256 KiB is a few frames of a fast feed: it does not hide a
#: slow consumer, and under throttling it is the router queue a ping waits in.
PIPE_LIMIT = 256 * 1024
#: Seconds a client has to send its upgrade request, and the upstream server
#: to answer it: the websockets library's ``open_timeout``, as in the simulators.
HANDSHAKE_TIMEOUT = 10.0
#: Seconds the proxy keeps reading (and discarding) after it sent a FIN in
#: mid-frame, before closing: long enough for any client to notice the end of
#: the stream and close its side; a client that does not is leaking its socket,
#: which a test can observe meanwhile.
LINGER_AFTER_FIN = 60.0
#: A throttled direction writes pieces of 10 ms worth of its rate (at least one
#: byte), so a ping waits behind at most one piece once it is at the front.
THROTTLE_TICK = 0.01
#: ``SO_LINGER`` on with a zero timeout: ``close()`` sends RST instead of FIN.
_LINGER_RESET = struct.pack("ii", 1, 0)




@attrs.frozen
class ForwardedFrame:
    """One frame the proxy passed on (or made up, or cut short).

    ``payload`` is what the sender meant (unmasked, before any damage).
    ``intact``: forwarded byte for byte and whole. ``injected``: the proxy's
    own frame (:data:`ProxyFaultKind.INJECT_FRAME`). ``at``: trio time its
    last byte was handed to the receiving socket.
    """

    opcode: int
    fin: bool
    payload: bytes
    intact: bool
    injected: bool
    at: float


@attrs.frozen
class FiredFault:
    """A fault that took effect: when (trio time), and after how many data frames.

    ``frames_before`` counts the data frames forwarded in the fault's
    direction (towards the client for ``"both"`` and connection-wide faults)
    before it acted; for a frame fault it is the index of the frame it hit.
    """

    fault: ProxyFault
    at: float
    frames_before: int


@attrs.define(eq=False)
class ProxyConnection:
    """What happened on one proxied connection, for tests to inspect.

    * ``target``/``status``: the upgrade request's target and the upstream's
      HTTP status (101 when the WebSocket opened).
    * ``to_client``/``to_server``: every frame forwarded, in order, data and
      control, intact or not, up to the control's ``max_frames`` per
      direction (``frames_not_kept`` counts the rest).
    * ``faults``: every fault that took effect, in order.
    * ``end``: how the connection ended: ``"closed"`` (both peers closed),
      ``"reset"``, ``"fin"`` (a FIN in mid-frame), ``"error"``,
      ``"cancelled"`` (the proxy stopped) or ``""`` while it runs.
    """

    number: int
    accepted_at: float
    target: str = ""
    status: int | None = None
    upgraded_at: float | None = None
    ended_at: float | None = None
    end: str = ""
    to_client: list[ForwardedFrame] = attrs.Factory(list)
    to_server: list[ForwardedFrame] = attrs.Factory(list)
    frames_not_kept: int = 0
    faults: list[FiredFault] = attrs.Factory(list)
    upgraded: trio.Event = attrs.Factory(trio.Event)
    ended: trio.Event = attrs.Factory(trio.Event)

    def frames(
        self,
        direction: Literal["to_client", "to_server"] = "to_client",
        *,
        intact: bool | None = True,
        data: bool = True,
    ) -> list[ForwardedFrame]:
        """The recorded frames of ``direction``: by default the intact data frames, in order."""
        kept = self.to_client if direction == "to_client" else self.to_server
        return [
            f
            for f in kept
            if (intact is None or f.intact == intact) and (not data or f.opcode in DATA_OPCODES)
        ]

    def messages(
        self, direction: Literal["to_client", "to_server"] = "to_client"
    ) -> list[str | bytes]:
        """Every whole message forwarded intact, in order: text as ``str``, binary as ``bytes``.

        A message is intact when each of its frames is; injected frames are
        messages too (the peer received them).
        """
        out: list[str | bytes] = []
        opcode: int | None = None
        parts: list[bytes] = []
        whole = True
        for frame in self.frames(direction, intact=None):
            if frame.opcode != 0:
                opcode, parts, whole = frame.opcode, [], True
            if opcode is None:
                continue
            parts.append(frame.payload)
            whole = whole and frame.intact
            if frame.fin:
                if whole:
                    data = b"".join(parts)
                    try:
                        out.append(data.decode() if opcode == TEXT else data)
                    except UnicodeDecodeError:
                        out.append(data)
                opcode = None
        return out


class ProxyControl:
    """A running proxy's record and remote control; pass it to :func:`serve_fault_proxy`.

    ``connections`` lists every accepted connection in order (numbered from
    1). :meth:`trigger` injects a fault live. ``max_frames`` bounds the
    frames kept per connection and direction (100 000: minutes of a test's
    traffic, as in the simulators' recorders).
    """

    def __init__(self, *, max_frames: int = 100_000) -> None:
        self.max_frames = max_frames
        self.connections: list[ProxyConnection] = []
        self._links: dict[int, _Link] = {}
        self._accepted = trio.Event()

    @property
    def accepted(self) -> int:
        """How many TCP connections the proxy accepted so far."""
        return len(self.connections)

    def connection(self, number: int) -> ProxyConnection:
        """Connection ``number`` (1-based)."""
        return self.connections[number - 1]

    async def wait_accepted(self, count: int) -> None:
        """Block until ``count`` connections have been accepted. A checkpoint."""
        await trio.lowlevel.checkpoint()
        while self.accepted < count:
            await self._accepted.wait()

    def trigger(self, fault: ProxyFault, *, connection: int | None = None) -> None:
        """Inject ``fault`` now on a live connection (default: the newest that has not ended).

        ``fault``'s own schedule and connection are ignored: stream faults and
        RESET act at once, frame faults hit the next suitable frame, and an
        injected frame goes out at once unless a frame is half-forwarded
        (then right after it). Raises ConfigurationError if there is no such
        live connection. Not a checkpoint.
        """
        if fault.kind is ProxyFaultKind.RESET_DURING_UPGRADE:
            raise ConfigurationError("reset_during_upgrade can only be planned, not triggered")
        if connection is None:
            live = [n for n, link in self._links.items() if not link.record.ended.is_set()]
            if not live:
                raise ConfigurationError("no live proxy connection to trigger a fault on")
            connection = max(live)
        link = self._links.get(connection)
        if link is None or link.record.ended.is_set():
            raise ConfigurationError(f"proxy connection {connection} is not live")
        link.trigger(fault)

    def _register(self, link: _Link) -> None:
        self.connections.append(link.record)
        self._links[link.record.number] = link
        self._accepted.set()
        self._accepted = trio.Event()

    def _forget(self, number: int) -> None:
        self._links.pop(number, None)


# --------------------------------------------------------------------------- internals


@attrs.define
class _Note:
    """A frame whose last byte is in a segment; recorded when the segment is written."""

    opcode: int
    fin: bool
    payload: bytes
    intact: bool
    injected: bool = False


@attrs.define
class _Segment:
    data: bytes
    notes: list[_Note]
    arrived: float


@attrs.frozen
class _Marker:
    """An action the writer takes when it reaches this point of the stream."""

    action: Literal["eof", "fin", "fault"]
    fault: ProxyFault | None = None


_Item = _Segment | _Marker


class _Pipe:
    """Items between a direction's reader and writer; the reader waits while it is full."""

    def __init__(self, limit: int) -> None:
        self._items: deque[_Item] = deque()
        self._bytes = 0
        self._limit = limit
        self._readable = trio.Event()
        self._room = trio.Event()
        self._room.set()

    def put(self, item: _Item) -> None:
        self._items.append(item)
        if isinstance(item, _Segment):
            self._bytes += len(item.data)
            if self._bytes >= self._limit:
                self._room = trio.Event()
        self._readable.set()

    async def get(self) -> _Item:
        while not self._items:
            self._readable = trio.Event()
            await self._readable.wait()
        item = self._items.popleft()
        if isinstance(item, _Segment):
            self._bytes -= len(item.data)
            if self._bytes < self._limit:
                self._room.set()
        return item

    async def wait_room(self) -> None:
        await self._room.wait()


def _reset_socket(stream: trio.SocketStream) -> None:
    """Make the next close send an RST (``SO_LINGER`` with a zero timeout)."""
    try:
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    except OSError:
        logger.debug("fault proxy: could not set SO_LINGER (socket already closed)")


class _Direction:
    """One direction of a connection: a reader that follows frames and a shaping writer."""

    def __init__(
        self,
        link: _Link,
        name: Literal["to_client", "to_server"],
        src: trio.SocketStream,
        dst: trio.SocketStream,
        initial: bytes,
        framed: bool,
    ) -> None:
        self.link = link
        self.name = name
        self.src = src
        self.dst = dst
        self.framed = framed
        self.pipe = _Pipe(PIPE_LIMIT)
        self._buffer = bytearray(initial)
        self._kept = link.record.to_client if name == "to_client" else link.record.to_server
        # shaping, set by stream faults
        self.latency = 0.0
        self.latency_until = -math.inf
        self.rate = 0.0
        self.rate_until = -math.inf
        self.stalled_until = -math.inf
        self._stall_changed = trio.Event()
        self._next_send = -math.inf
        # frame tracking (reader side)
        self.frames_done = 0  # data frames whose last byte has been read
        self.frames_written = 0  # data frames whose last byte has been written
        self._started = 0  # data frames whose header has been read
        self._header: FrameHeader | None = None
        self._remaining = 0
        self._payload_pos = 0
        self._payload = bytearray()
        self._keep = False
        self._damage: list[ProxyFault] = []
        self._cut: int | None = None  # bytes of the current frame to forward before a FIN
        self._frame_pos = 0  # bytes of the current frame forwarded so far
        self.pending: list[ProxyFault] = []  # frame faults waiting for a frame
        self.scheduled: list[ProxyFault] = []  # after_frames faults, not yet due
        self.finished = False

    # -- shaping (called by link.trigger and the writer) ----------------------

    def shape(self, fault: ProxyFault) -> None:
        until = math.inf if fault.duration is None else trio.current_time() + fault.duration
        if fault.kind is ProxyFaultKind.LATENCY:
            self.latency, self.latency_until = fault.delay, until
        elif fault.kind is ProxyFaultKind.THROTTLE:
            self.rate, self.rate_until = fault.rate, until
        else:
            self.stalled_until = until
            self._stall_changed.set()
            self._stall_changed = trio.Event()

    async def _wait_unstalled(self) -> None:
        while True:
            until = self.stalled_until
            if trio.current_time() >= until:
                return
            if math.isinf(until):
                await self._stall_changed.wait()
            else:
                with trio.move_on_at(until):
                    await self._stall_changed.wait()

    # -- reader ----------------------------------------------------------------

    async def read(self) -> None:
        """Follow the stream, damaging and recording frames, until EOF, a cut or an error."""
        self._release_due()
        while True:
            self._process()
            if self._cut is not None and self._frame_pos >= self._cut:
                return
            await self.pipe.wait_room()
            await self._wait_unstalled()
            try:
                data = await self.src.receive_some(READ_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                # The peer reset its connection: pass the reset on.
                self.link.abort("reset")
                return
            if not data:
                self.pipe.put(_Marker("eof"))
                return
            self._buffer += data

    def _release_due(self) -> None:
        """Move the after_frames faults that are due (frames_done reached) on."""
        due = [f for f in self.scheduled if (f.after_frames or 0) <= self.frames_done]
        if not due:
            return
        self.scheduled = [f for f in self.scheduled if f not in due]
        for fault in due:
            self.apply(fault, in_band=True)

    def apply(self, fault: ProxyFault, *, in_band: bool) -> None:
        """Act on a due fault: frame faults wait for a frame, the others go into the stream.

        ``in_band``: the reader is at a frame boundary (scheduled faults), so
        markers keep their place in the stream; a live trigger of a stream
        fault or a reset acts at once instead.
        """
        kind = fault.kind
        if kind in FRAME_KINDS:
            self.pending.append(fault)
        elif kind is ProxyFaultKind.INJECT_FRAME:
            if in_band or self._header is None:
                self.pipe.put(self._injected(fault))
                self.link.fired(fault, self.frames_done)
            else:
                self.pending.append(fault)
        elif in_band:
            self.pipe.put(_Marker("fault", fault))
        else:
            self.link.act(fault, self)

    def _injected(self, fault: ProxyFault) -> _Segment:
        payload = fault.payload
        assert payload is not None
        data = payload.encode() if isinstance(payload, str) else payload
        opcode = fault.opcode
        if opcode is None:
            opcode = TEXT if isinstance(payload, str) else BINARY
        mask = os.urandom(4) if self.name == "to_server" else b""
        frame = encode_frame(opcode, data, mask=mask)
        note = _Note(opcode, True, data, intact=True, injected=True)
        return _Segment(frame, [note], trio.current_time())

    def _process(self) -> None:
        """Turn buffered bytes into segments (and markers) for the writer."""
        buffer = self._buffer
        if not self.framed:
            if buffer:
                self.pipe.put(_Segment(bytes(buffer), [], trio.current_time()))
                buffer.clear()
            return
        out = bytearray()
        notes: list[_Note] = []
        pos = 0
        now = trio.current_time()
        while True:
            if self._header is None:
                header = parse_header(buffer, pos)
                if header is None:
                    break
                raw = bytearray(buffer[pos : pos + header.header_length])
                self._begin(header, raw)
                pos += header.header_length
                if self._cut is not None and self._cut <= len(raw):
                    out += raw[: self._cut]
                    self._frame_pos = self._cut
                    self._finish_cut(out, notes, now)
                    buffer.clear()
                    return
                out += raw
                self._frame_pos = len(raw)
            header = self._header
            take = min(self._remaining, len(buffer) - pos)
            chunk = bytearray(buffer[pos : pos + take])
            assert header is not None
            if self._keep:
                self._payload += mask_payload(chunk, header.mask, self._payload_pos)
            self._damage_payload(chunk)
            if self._cut is not None and self._frame_pos + take >= self._cut:
                out += chunk[: self._cut - self._frame_pos]
                self._frame_pos = self._cut
                self._finish_cut(out, notes, now)
                buffer.clear()
                return
            out += chunk
            pos += take
            self._frame_pos += take
            self._remaining -= take
            self._payload_pos += take
            if self._remaining:
                break
            notes.append(self._note(intact=not self._damage))
            self._header = None
            if header.is_data:
                self.frames_done += 1
                if self.scheduled or self.pending:
                    # Faults due now take their place in the stream after this frame.
                    self.pipe.put(_Segment(bytes(out), notes, now))
                    out, notes = bytearray(), []
                    self._release_due()
                    self._inject_pending()
        del buffer[:pos]
        if out or notes:
            self.pipe.put(_Segment(bytes(out), notes, now))

    def _inject_pending(self) -> None:
        injections = [f for f in self.pending if f.kind is ProxyFaultKind.INJECT_FRAME]
        for fault in injections:
            self.pending.remove(fault)
            self.pipe.put(self._injected(fault))
            self.link.fired(fault, self.frames_done)

    def _begin(self, header: FrameHeader, raw: bytearray) -> None:
        """A frame starts: pick the pending faults that hit it, damage its header."""
        self._header = header
        self._remaining = header.payload_length
        self._payload_pos = 0
        self._payload = bytearray()
        self._damage = []
        self._cut = None
        self._keep = len(self._kept) < self.link.control.max_frames
        if not header.is_data:
            return
        index = self._started
        self._started += 1
        for fault in list(self.pending):
            if not self._hits(fault, header):
                continue
            self.pending.remove(fault)
            self._damage.append(fault)
            self.link.fired(fault, index)
            offset = fault.offset
            if fault.kind is ProxyFaultKind.CORRUPT_HEADER:
                raw[offset or 0] ^= fault.value or DEFAULT_XOR[fault.kind]
            elif fault.kind is ProxyFaultKind.FIN_MID_FRAME:
                if offset is None:
                    half = header.payload_length // 2
                    offset = header.header_length + half if half else 1
                self._cut = min(offset, header.frame_length - 1) if header.frame_length > 1 else 1

    @staticmethod
    def _hits(fault: ProxyFault, header: FrameHeader) -> bool:
        kind = fault.kind
        offset = fault.offset or 0
        if kind is ProxyFaultKind.CORRUPT_HEADER:
            return offset < header.header_length
        if kind is ProxyFaultKind.CORRUPT_PAYLOAD:
            return offset < header.payload_length
        if kind is ProxyFaultKind.INVALID_UTF8:
            return header.opcode == TEXT and offset < header.payload_length
        return kind is ProxyFaultKind.FIN_MID_FRAME

    def _damage_payload(self, chunk: bytearray) -> None:
        start = self._payload_pos
        end = start + len(chunk)
        header = self._header
        assert header is not None
        for fault in self._damage:
            offset = fault.offset or 0
            if not start <= offset < end:
                continue
            if fault.kind is ProxyFaultKind.CORRUPT_PAYLOAD:
                chunk[offset - start] ^= fault.value or DEFAULT_XOR[fault.kind]
            elif fault.kind is ProxyFaultKind.INVALID_UTF8:
                key = header.mask[offset % 4] if header.mask else 0
                chunk[offset - start] = 0xFF ^ key

    def _note(self, *, intact: bool) -> _Note:
        header = self._header
        assert header is not None
        return _Note(header.opcode, header.fin, bytes(self._payload), intact)

    def _finish_cut(self, out: bytearray, notes: list[_Note], now: float) -> None:
        notes.append(self._note(intact=False))
        self.pipe.put(_Segment(bytes(out), notes, now))
        self.pipe.put(_Marker("fin"))

    # -- writer ------------------------------------------------------------------

    async def write(self) -> None:
        """Forward segments, shaped; act on markers in stream order."""
        while True:
            item = await self.pipe.get()
            if isinstance(item, _Marker):
                if item.action == "eof":
                    try:
                        await self.dst.send_eof()
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        self.link.abort("error")
                    self.finished = True
                    self.link.direction_finished()
                    return
                if item.action == "fin":
                    self.link.abort("fin", self)
                    return
                assert item.fault is not None
                self.link.act(item.fault, self)
                continue
            await self._wait_unstalled()
            if self.latency and trio.current_time() < self.latency_until:
                await trio.sleep_until(item.arrived + self.latency)
            try:
                await self._send(item.data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self.link.abort("error")
                return
            now = trio.current_time()
            for note in item.notes:
                self._record(note, now)

    async def _send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            await self._wait_unstalled()
            now = trio.current_time()
            if not (self.rate and now < self.rate_until):
                await self.dst.send_all(view)
                return
            piece = view[: max(1, int(self.rate * THROTTLE_TICK))]
            self._next_send = max(self._next_send, now)
            await trio.sleep_until(self._next_send)
            await self.dst.send_all(piece)
            self._next_send += len(piece) / self.rate
            view = view[len(piece) :]

    def _record(self, note: _Note, now: float) -> None:
        if note.opcode in DATA_OPCODES and not note.injected:
            self.frames_written += 1
        if len(self._kept) < self.link.control.max_frames:
            self._kept.append(
                ForwardedFrame(note.opcode, note.fin, note.payload, note.intact, note.injected, now)
            )
        else:
            self.link.record.frames_not_kept += 1


class _Link:
    """One proxied connection: upgrade, two directions, faults, and how it ends."""

    def __init__(
        self,
        control: ProxyControl,
        record: ProxyConnection,
        client: trio.SocketStream,
        upstream_host: str,
        upstream_port: int,
        faults: list[ProxyFault],
    ) -> None:
        self.control = control
        self.record = record
        self.client = client
        self.upstream: trio.SocketStream | None = None
        self._upstream_address = (upstream_host, upstream_port)
        self._faults = faults
        self._scope = trio.CancelScope()
        self._end: tuple[str, _Direction | None] | None = None
        self.directions: dict[str, _Direction] = {}
        self._early: list[ProxyFault] = []

    # -- faults ------------------------------------------------------------------

    def fired(self, fault: ProxyFault, frames_before: int) -> None:
        self.record.faults.append(FiredFault(fault, trio.current_time(), frames_before))

    def _frames_before(self, direction: _Direction | None) -> int:
        chosen = direction or self.directions.get("to_client")
        return chosen.frames_written if chosen is not None else 0

    def act(self, fault: ProxyFault, direction: _Direction | None) -> None:
        """Stream faults and RESET, now."""
        self.fired(fault, self._frames_before(direction))
        if fault.kind is ProxyFaultKind.RESET:
            self.abort("reset")
            return
        for name in ("to_client", "to_server"):
            if fault.direction in (name, "both") and name in self.directions:
                self.directions[name].shape(fault)

    def trigger(self, fault: ProxyFault) -> None:
        """A live (or timed) fault: act now, or hand it to its direction."""
        if not self.directions:
            if fault.kind is ProxyFaultKind.RESET:
                self.act(fault, None)
            else:
                self._early.append(fault)
            return
        if fault.kind is ProxyFaultKind.RESET:
            self.act(fault, None)
        elif fault.kind in STREAM_KINDS:
            self.act(fault, self.directions.get("to_client"))
        else:
            self.directions[fault.direction].apply(fault, in_band=False)

    async def _timers(self) -> None:
        upgraded_at = self.record.upgraded_at
        assert upgraded_at is not None
        timed = sorted(
            (f.at if f.at is not None else upgraded_at + (f.after_seconds or 0.0), i, f)
            for i, f in enumerate(self._faults)
            if f.timed
        )
        for when, _, fault in timed:
            await trio.sleep_until(when)
            self.trigger(fault)

    # -- ending ------------------------------------------------------------------

    def abort(self, how: str, direction: _Direction | None = None) -> None:
        """End the connection: ``"reset"``, ``"fin"`` (in ``direction``) or ``"error"``."""
        if self._end is None:
            self._end = (how, direction)
        self._scope.cancel()

    def direction_finished(self) -> None:
        if self.directions and all(d.finished for d in self.directions.values()):
            if self._end is None:
                self._end = ("closed", None)
            self._scope.cancel()

    async def _close(self) -> None:
        self.record.end = self._end[0] if self._end is not None else "cancelled"
        how = self.record.end
        streams = [s for s in (self.client, self.upstream) if s is not None]
        if how == "reset":
            for stream in streams:
                _reset_socket(stream)
        for stream in streams:
            await trio.aclose_forcefully(stream)

    async def _fin(self, direction: _Direction) -> None:
        """A FIN to ``direction``'s receiver; the other peer is closed; drain until it closes."""
        await trio.aclose_forcefully(direction.src)
        receiver = direction.dst
        with trio.move_on_after(LINGER_AFTER_FIN):
            try:
                await receiver.send_eof()
                while await receiver.receive_some(READ_SIZE):
                    pass
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                logger.debug("fault proxy: peer reset while draining after a FIN")

    # -- running -------------------------------------------------------------------

    async def run(self) -> None:
        try:
            with self._scope:
                await self._serve()
            how, direction = self._end or ("cancelled", None)
            if how == "fin" and direction is not None:
                await self._fin(direction)
        finally:
            with trio.CancelScope(shield=True):
                await self._close()
            self.record.ended_at = trio.current_time()
            self.record.ended.set()
            self.control._forget(self.record.number)

    async def _serve(self) -> None:
        upgrade = await self._upgrade()
        if upgrade is None:
            if self._end is None:
                self._end = ("closed", None)  # the client left (or said nothing in time)
            return
        to_client, to_server, framed = upgrade
        assert self.upstream is not None
        if framed:
            self.record.upgraded_at = trio.current_time()
            self.record.upgraded.set()
        upstream, client = self.upstream, self.client
        self.directions = {
            "to_client": _Direction(self, "to_client", upstream, client, to_client, framed),
            "to_server": _Direction(self, "to_server", client, upstream, to_server, framed),
        }
        for fault in self._faults:
            if not fault.timed and fault.kind is not ProxyFaultKind.RESET_DURING_UPGRADE:
                name = "to_client" if fault.direction == "both" else fault.direction
                self.directions[name].scheduled.append(fault)
        async with trio.open_nursery() as nursery:
            for fault in self._early:
                self.trigger(fault)
            self._early.clear()
            if framed:
                nursery.start_soon(self._timers)
            for direction in self.directions.values():
                nursery.start_soon(direction.read)
                nursery.start_soon(direction.write)

    async def _upgrade(self) -> tuple[bytes, bytes, bool] | None:
        """Relay the HTTP upgrade: (upstream's bytes after it, the client's, framed?).

        ``None`` when the connection ended during the upgrade.
        """
        client = self.client
        request: h11.Request | None = None
        after: bytes | None = None
        raw = bytearray()
        reader = h11.Connection(h11.SERVER)
        with trio.move_on_after(HANDSHAKE_TIMEOUT) as scope:
            while True:
                data = await client.receive_some(READ_SIZE)
                if not data:
                    return None
                raw += data
                try:
                    request, after, done = _request_head(reader, data, request)
                except h11.RemoteProtocolError:
                    break  # not HTTP: relayed as it is
                if done:
                    break
        if scope.cancelled_caught:
            return None
        if request is not None:
            self.record.target = request.target.decode("latin-1")
        for fault in self._faults:
            if fault.kind is ProxyFaultKind.RESET_DURING_UPGRADE:
                self.fired(fault, 0)
                self.abort("reset")
                await trio.lowlevel.checkpoint()
                return None
        try:
            self.upstream = await trio.open_tcp_stream(*self._upstream_address)
        except OSError as exc:
            logger.debug("fault proxy: upstream refused: %r", exc)
            self.abort("reset")
            await trio.lowlevel.checkpoint()
            return None
        upstream = self.upstream
        await upstream.send_all(raw)
        if request is None or after is None:
            return b"", b"", False
        responder = h11.Connection(h11.CLIENT)
        responder.send(request)
        responder.send(h11.EndOfMessage())
        head = bytearray()
        with trio.move_on_after(HANDSHAKE_TIMEOUT):
            while True:
                data = await upstream.receive_some(READ_SIZE)
                if not data:
                    await client.send_all(head)
                    return None
                head += data
                try:
                    status, rest = _response_head(responder, data)
                except h11.RemoteProtocolError:
                    await client.send_all(head)
                    return b"", after, False
                if status is None:
                    continue
                self.record.status = status
                if status != 101:
                    await client.send_all(head)
                    return b"", after, False
                await client.send_all(head[: len(head) - len(rest)])
                return rest, after, True
        return None


def _request_head(
    reader: h11.Connection, data: bytes, request: h11.Request | None
) -> tuple[h11.Request | None, bytes | None, bool]:
    """Feed the client's bytes: (the request, the bytes after an upgrade request, done?).

    Done with ``None`` bytes: a request without an upgrade, relayed as plain bytes.
    """
    reader.receive_data(data)
    while True:
        event = reader.next_event()
        if isinstance(event, h11.Request):
            request = event
        elif event is h11.PAUSED:
            return request, reader.trailing_data[0], True
        elif event is h11.NEED_DATA:
            return request, None, False
        elif isinstance(event, h11.EndOfMessage) and reader.their_state is h11.DONE:
            return request, None, True


def _response_head(responder: h11.Connection, data: bytes) -> tuple[int | None, bytes]:
    """Feed upstream bytes: (status once the response head is in, the bytes after a 101)."""
    responder.receive_data(data)
    while True:
        event = responder.next_event()
        if isinstance(event, h11.InformationalResponse | h11.Response):
            if event.status_code == 101 and responder.next_event() is h11.PAUSED:
                return 101, responder.trailing_data[0]
            return event.status_code, b""
        if event is h11.NEED_DATA or event is h11.PAUSED:
            return None, b""


def _check_loopback(host: str) -> None:
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ConfigurationError(
            f"the fault proxy only listens on loopback (127.0.0.1, ::1, localhost), not {host!r}"
        )


async def serve_fault_proxy(
    upstream_host: str,
    upstream_port: int,
    *,
    plan: ProxyPlan | Iterable[ProxyFault] = (),
    control: ProxyControl | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Relay ``upstream_host:upstream_port`` on ``host:port``, injecting ``plan``, until cancelled.

    Start it with ``port = await nursery.start(partial(serve_fault_proxy,
    "127.0.0.1", upstream_port, plan=..., control=control))``: the bound port
    (``port=0``: any free one) is reported through ``task_status``. Each
    accepted connection gets its own upstream connection; the upgrade is
    relayed byte for byte, then frames are followed both ways (anything that
    is not a WebSocket upgrade is relayed as plain bytes). Pass a
    :class:`ProxyControl` to see what was forwarded and to trigger faults live.

    Ends of streams are passed on: a FIN as a FIN (half-close), an RST as an
    RST. Raises ``ConfigurationError`` for a non-loopback ``host``.
    Cancelling it drops every connection.
    """
    _check_loopback(host)
    faults = list(plan)
    ctl = control if control is not None else ProxyControl()

    async def handle(client: trio.SocketStream) -> None:
        number = ctl.accepted + 1
        record = ProxyConnection(number, trio.current_time())
        link = _Link(
            ctl,
            record,
            client,
            upstream_host,
            upstream_port,
            [f for f in faults if f.applies_to(number)],
        )
        ctl._register(link)
        await link.run()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(functools.partial(trio.serve_tcp, handle, port, host=host))
        bound: int = listeners[0].socket.getsockname()[1]
        logger.debug(
            "fault proxy: on %s:%d -> %s:%d", host, bound, upstream_host, upstream_port
        )
        task_status.started(bound)
        await trio.sleep_forever()
