"""What the WebSocket simulators (Alpaca, Polygon) share: limits, checks, the server and
connection skeletons.

This module owns the server-side constants and small helpers common to
:mod:`puffin_trio.sim.alpaca` and :mod:`puffin_trio.sim.polygon`,
:class:`WsSimServer`, the base of their servers (the WebSocket upgrade under
a deadline, numbering and recording connections, ending them; plain HTTP
requests on the same port go to the provider's historical endpoints; the
trade tape those serve, and the market that goes on while no client is
connected), and
:class:`WsSimConnection`, the base of their per-connection classes: the task
layout of a session (reader, auth deadline, data pump), how it ends (TCP
abort or close frame), framing with the ``SLOW`` delay and the recorder, rate
pacing, and the provider-neutral faults. It must not know either provider's
protocol: hello, replies, encodings, data messages and the provider-specific
faults are the subclasses' hooks.
"""

from __future__ import annotations

import abc
import hmac
import logging
import math
from collections.abc import Callable
from typing import Any, ClassVar, Generic, NoReturn, Protocol, TypeVar

import attrs
import trio
import wsproto.utilities
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    wrap_server_stream,
)

from puffin_trio.errors import ConfigurationError
from puffin_trio.sim._offair import MAX_PACING_LAG, OffAirMarket
from puffin_trio.sim._rest import RateWindow, RestEndpoint, read_head, serve_rest, wants_websocket
from puffin_trio.sim._server import SimRecorder, check_host, listen
from puffin_trio.sim._tape import TradeTape
from puffin_trio.sim.faults import Fault, FaultKind, FaultPlan, HistoryFaults, PausableStream
from puffin_trio.sim.market import MarketModel, SimTrade

__all__ = [
    "CLOSE_TIMEOUT",
    "DISCONNECTS",
    "HANDSHAKE_TIMEOUT",
    "MAX_CLIENT_MESSAGE",
    "MAX_PACING_LAG",
    "SimRecord",
    "WsSimConnection",
    "WsSimServer",
    "check_settings",
    "same_secret",
]

#: Seconds a TCP client has to complete the WebSocket upgrade: a peer that
#: connects and says nothing must not hold a task forever. 10 s is the
#: ``open_timeout`` default of the websockets library alpaca-py uses.
HANDSHAKE_TIMEOUT = 10.0
#: Seconds to wait for the client's reply to our close frame before dropping
#: TCP. Half of websockets' ``close_timeout``; no test peer needs longer.
CLOSE_TIMEOUT = 5.0
#: Largest client message accepted. trio-websocket's default (1 MiB) matches
#: the limit alpaca-py's websockets client applies in the other direction.
MAX_CLIENT_MESSAGE = 2**20

#: What a peer that went away looks like from the server side.
DISCONNECTS = (
    ConnectionClosed,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    wsproto.utilities.LocalProtocolError,
)


def same_secret(given: str, expected: str) -> bool:
    """Constant-time comparison of credentials, non-ASCII ones included."""
    return hmac.compare_digest(given.encode(), expected.encode())


def check_settings(
    *,
    host: str,
    rate: float | None,
    batch: int,
    auth_timeout: float,
    max_connections_per_key: int,
    history_rate_limit: int | None = None,
    history_page_size: int | None = None,
) -> None:
    """Raise :class:`ConfigurationError` for a setting no WebSocket simulator can serve."""
    check_host(host)
    if rate is not None and rate < 0:
        raise ConfigurationError(f"rate must be >= 0 messages/s (0 or None: unlimited), got {rate}")
    if batch < 1:
        raise ConfigurationError(f"batch must be at least 1 message per frame, got {batch}")
    if auth_timeout <= 0:
        raise ConfigurationError(f"auth_timeout must be > 0 seconds, got {auth_timeout}")
    if max_connections_per_key < 1:
        raise ConfigurationError(
            f"max_connections_per_key must be at least 1, got {max_connections_per_key}"
        )
    for name, value in (
        ("history_rate_limit", history_rate_limit),
        ("history_page_size", history_page_size),
    ):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigurationError(f"{name} must be None or an integer >= 1, got {value!r}")


class SimRecord(Protocol):
    """The part of a simulator's connection record that :class:`WsSimConnection` fills in."""

    number: int
    sent: list[list[dict[str, Any]]]
    frames_not_kept: int
    faults: list[FaultKind]
    ended: trio.Event


RecordT = TypeVar("RecordT", bound=SimRecord)


@attrs.define(eq=False, kw_only=True)
class WsSimServer(abc.ABC, Generic[RecordT]):
    """One WebSocket simulator's server: accepts, numbers and records its connections.

    :meth:`handle_stream` serves one TCP connection: the WebSocket upgrade
    within ``HANDSHAKE_TIMEOUT`` (:meth:`_accept` may refuse it), a record
    numbered from 1 (:meth:`_record`, kept by the recorder if there is one),
    the session (:meth:`_connection`), and the socket closed whatever happens.
    """

    #: The provider module's logger and the prefix of its notices.
    logger: ClassVar[logging.Logger]
    log_prefix: ClassVar[str]

    model: MarketModel
    faults: FaultPlan
    #: Data messages per second per connection, in frames of ``batch``.
    rate: float | None
    batch: int
    key: str
    #: ns since the epoch, for message timestamps and bar windows.
    wall_clock: Callable[[], int]
    recorder: SimRecorder[RecordT] | None
    auth_timeout: float
    max_connections_per_key: int
    #: Historical requests per minute before a 429 (``None``: no limit).
    history_rate_limit: int | None = None
    #: Most trades on one historical page (``None``: as many as the request asks).
    history_page_size: int | None = None
    #: WebSocket connections accepted so far.
    accepted: int = attrs.field(default=0, init=False)
    #: Every trade the market printed (what the historical endpoints serve).
    tape: TradeTape = attrs.field(init=False, factory=TradeTape)
    #: The historical endpoints' faults and rate limit.
    history_faults: HistoryFaults = attrs.field(init=False)
    rate_window: RateWindow | None = attrs.field(init=False)
    #: The market while no connection streams (see :class:`OffAirMarket`).
    off_air: OffAirMarket = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        if self.recorder is not None:
            self.tape = self.recorder.tape
        self.history_faults = self.faults.for_history()
        limit = self.history_rate_limit
        self.rate_window = None if limit is None else RateWindow(limit)
        self.off_air = OffAirMarket(
            self.model, rate=self.rate, wall_clock=self.wall_clock, print_trade=self.print_trade
        )

    @abc.abstractmethod
    def _history_endpoint(self) -> RestEndpoint:
        """The provider's historical REST endpoints, served from :attr:`tape`."""

    def print_trade(self, trade: SimTrade) -> int:
        """Put a trade the market generated on the tape; its wire sequence number."""
        return self.tape.record(trade).seq

    @abc.abstractmethod
    async def _accept(self, request: WebSocketRequest) -> WebSocketConnection | None:
        """Accept the upgrade request, or refuse it (``None``)."""

    @abc.abstractmethod
    def _record(self, number: int, request: WebSocketRequest) -> RecordT:
        """The record of accepted connection number ``number``."""

    @abc.abstractmethod
    def _connection(
        self, ws: WebSocketConnection, transport: PausableStream, record: RecordT
    ) -> WsSimConnection[RecordT]:
        """The session that serves an accepted connection."""

    async def handle_stream(self, stream: trio.SocketStream) -> None:
        """Serve one TCP connection until either side ends it. Never raises on a disconnect.

        A WebSocket upgrade starts a stream session; any other HTTP request is
        answered by the historical endpoints (keep-alive, until the client closes).
        """
        transport = PausableStream(stream)
        number = 0
        try:
            head = b""
            with trio.move_on_after(HANDSHAKE_TIMEOUT):
                head = await read_head(transport)
            if not head:
                return
            if not wants_websocket(head):
                await serve_rest(
                    transport,
                    head,
                    self._history_endpoint(),
                    faults=self.history_faults,
                    wall_clock=self.wall_clock,
                    rate=self.rate_window,
                    log=None if self.recorder is None else self.recorder.history,
                    logger=self.logger,
                )
                return
            transport.unread(head)
            async with trio.open_nursery() as nursery:  # trio-websocket's reader task
                ws = None
                with trio.move_on_after(HANDSHAKE_TIMEOUT):
                    request = await wrap_server_stream(
                        nursery, transport, max_message_size=MAX_CLIENT_MESSAGE
                    )
                    ws = await self._accept(request)
                if ws is not None:
                    self.accepted += 1
                    number = self.accepted
                    record = self._record(number, request)
                    if self.recorder is not None:
                        self.recorder.connections.append(record)
                    await self._connection(ws, transport, record).run()
                nursery.cancel_scope.cancel()
        except* DISCONNECTS as group:
            self.logger.debug(
                "%s: connection %d lost: %r", self.log_prefix, number, group.exceptions[0]
            )
        finally:
            await trio.aclose_forcefully(transport)

    async def serve(
        self, *, host: str, port: int, label: str, task_status: trio.TaskStatus[int]
    ) -> NoReturn:
        """Listen (see :func:`~puffin_trio.sim._server.listen`) and run the market."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.off_air.run)
            await listen(
                self.handle_stream,
                host=host,
                port=port,
                logger=self.logger,
                label=label,
                task_status=task_status,
            )


class WsSimConnection(abc.ABC, Generic[RecordT]):
    """One simulated WebSocket session: its three tasks, its framing, its generic faults.

    :meth:`run` sends :meth:`_hello`, then runs :meth:`_read_loop` (client
    messages, handed to :meth:`_on_message`), :meth:`_auth_deadline` and
    :meth:`_pump` (rate-paced data frames from :meth:`_data_frame`, with the
    due faults applied before each frame) until one of them calls
    :meth:`_end`. Subclasses supply the protocol through the abstract hooks
    and may extend :meth:`_before_close`, :meth:`_send_data` and
    :meth:`_inject` (falling back to this class for the faults it knows).

    Every send goes through :meth:`_send` under ``_lock``, so a state change
    and its replies, or a data frame, go out whole.
    """

    def __init__(
        self,
        server: WsSimServer[RecordT],
        ws: WebSocketConnection,
        transport: PausableStream,
        record: RecordT,
    ) -> None:
        self._server_ref: WsSimServer[RecordT] = server
        self._ws = ws
        self._transport = transport
        self._record = record
        self._logger = server.logger
        self._log_prefix = server.log_prefix
        recorder = server.recorder
        self._recorded = recorder is not None
        self._max_frames = recorder.max_frames if recorder is not None else 0
        self._faults = server.faults.for_connection(record.number)
        self._rate = server.rate
        self._batch = server.batch
        self._auth_timeout = server.auth_timeout
        self._lock = trio.Lock()
        self._nursery: trio.Nursery | None = None
        #: How the session ends: DROP, CLOSE, a subclass's own marker or None
        #: (a plain close), with the close code and reason.
        self._ending: tuple[FaultKind | str | None, int, str] = (None, 1000, "")
        self._authenticated = trio.Event()
        self._changed = trio.Event()
        #: Whether the subscription produces data; a subclass keeps it current
        #: and sets (then replaces) ``_changed`` to wake the pump.
        self._streaming = False
        self._delay = 0.0
        self._slow_until = -math.inf
        self._data_sent = 0

    # -- hooks -------------------------------------------------------------

    @abc.abstractmethod
    def _hello(self) -> dict[str, Any]:
        """The message sent as soon as the WebSocket is open."""

    @abc.abstractmethod
    def _encode(self, frame: list[dict[str, Any]]) -> str | bytes:
        """One frame on the wire (a text or a binary WebSocket message). Hot path."""

    @abc.abstractmethod
    async def _on_message(self, frame: str | bytes) -> None:
        """Decode, record and answer one client message."""

    @abc.abstractmethod
    async def _on_auth_timeout(self) -> None:
        """Tell the client it did not authenticate in time, and :meth:`_end`."""

    @abc.abstractmethod
    def _data_frame(self, count: int) -> list[dict[str, Any]]:
        """Up to ``count`` data messages for the subscription. Caller holds ``_lock``. Hot path."""

    @abc.abstractmethod
    def _unknown_message(self) -> dict[str, Any]:
        """A fresh well-formed message of a type the protocol does not define."""

    @abc.abstractmethod
    def _malformed_default(self) -> str | bytes:
        """The ``MALFORMED`` frame when the fault names no payload."""

    @abc.abstractmethod
    def _release(self) -> None:
        """Free whatever the session holds on the server (its connection-limit slot)."""

    async def _before_close(self, how: FaultKind | str | None, code: int) -> None:
        """Runs just before the close frame ``code``, within ``CLOSE_TIMEOUT``. Default: nothing."""

    # -- lifecycle ---------------------------------------------------------

    async def run(self) -> None:
        """Serve until the client leaves or a fault/timeout ends the connection.

        Blocks for the whole session. Then ``DROP`` aborts TCP; anything else
        sends a close frame and waits up to ``CLOSE_TIMEOUT`` for the reply.
        Disconnect errors (:data:`DISCONNECTS`) propagate to the caller;
        ``ended`` on the record is set however it returns.
        """
        try:
            await self._send_control(self._hello())
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._read_loop)
                nursery.start_soon(self._auth_deadline)
                nursery.start_soon(self._pump)
            how, code, reason = self._ending
            if how is FaultKind.DROP:
                await self._transport.aclose()
            else:
                self._transport.resume()
                with trio.move_on_after(CLOSE_TIMEOUT):
                    await self._before_close(how, code)
                    await self._ws.aclose(code, reason)
        finally:
            self._server_ref.off_air.air(self._record.number, False)
            self._release()
            self._record.ended.set()

    def _end(self, how: FaultKind | str | None, code: int = 1000, reason: str = "") -> None:
        """Stop the connection's tasks; ``run`` then closes (DROP: TCP only)."""
        self._ending = (how, code, reason)
        assert self._nursery is not None
        self._nursery.cancel_scope.cancel()

    async def _read_loop(self) -> None:
        while True:
            try:
                frame = await self._ws.get_message()
            except ConnectionClosed:
                self._end(None)
                return
            await self._on_message(frame)

    async def _auth_deadline(self) -> None:
        with trio.move_on_after(self._auth_timeout):
            await self._authenticated.wait()
            return
        await self._on_auth_timeout()

    # -- sending -----------------------------------------------------------

    async def _send(self, frame: list[dict[str, Any]]) -> None:
        """Encode and send one frame. Caller holds ``_lock``. A checkpoint."""
        if self._delay and trio.current_time() < self._slow_until:
            await trio.sleep(self._delay)
        await self._ws.send_message(self._encode(frame))
        if self._recorded:
            if len(self._record.sent) < self._max_frames:
                self._record.sent.append(frame)
            else:
                self._record.frames_not_kept += 1

    async def _send_control(self, message: dict[str, Any]) -> None:
        async with self._lock:
            await self._send([message])

    async def _send_data(self, frame: list[dict[str, Any]]) -> None:
        """Send data messages (caller holds ``_lock``) and count them."""
        await self._send(frame)
        self._data_sent += len(frame)

    # -- data --------------------------------------------------------------

    async def _pump(self) -> None:
        await self._authenticated.wait()
        rate = self._rate
        batch = self._batch
        next_at = trio.current_time()
        while True:
            await self._wait_streaming()
            self._server_ref.off_air.air(self._record.number, True)
            # A fault may send data (and so make the next one due): apply until none is.
            while due := self._faults.take_due(self._data_sent):
                for fault in due:
                    await self._apply(fault)
            room = self._faults.room(self._data_sent)
            count = batch if room is None else min(batch, room)
            if rate:
                next_at = max(next_at + count / rate, trio.current_time() - MAX_PACING_LAG)
                await trio.sleep_until(next_at)
            else:
                await trio.lowlevel.checkpoint()
            async with self._lock:
                frame = self._data_frame(count) if self._streaming else []
                if frame:
                    await self._send_data(frame)

    async def _wait_streaming(self) -> None:
        """Block until something is subscribed that produces data (meanwhile, the
        server's market runs on its own)."""
        if not self._streaming:
            self._server_ref.off_air.air(self._record.number, False)
        while not self._streaming:
            await self._changed.wait()

    # -- faults ------------------------------------------------------------

    async def _apply(self, fault: Fault) -> None:
        """Record and log ``fault``, then :meth:`_inject` it."""
        self._record.faults.append(fault.kind)
        self._logger.debug(
            "%s: connection %d: fault %s", self._log_prefix, self._record.number, fault.kind
        )
        await self._inject(fault)

    async def _inject(self, fault: Fault) -> None:
        """Put a provider-neutral fault on the wire; other kinds are left to subclasses."""
        kind = fault.kind
        if kind is FaultKind.DROP:
            self._end(kind)
            await trio.lowlevel.checkpoint()
        elif kind is FaultKind.CLOSE:
            self._end(kind, fault.code or 1011, "simulated fault")
            await trio.lowlevel.checkpoint()
        elif kind is FaultKind.SILENT:
            if fault.duration is None:
                await trio.sleep_forever()
            await trio.sleep(fault.duration)
        elif kind is FaultKind.MALFORMED:
            payload = self._malformed_default() if fault.payload is None else fault.payload
            async with self._lock:
                await self._ws.send_message(payload)
        elif kind is FaultKind.UNKNOWN_MESSAGE:
            async with self._lock:
                await self._send([self._unknown_message()])
        elif kind is FaultKind.SLOW:
            self._delay = fault.delay
            self._slow_until = (
                math.inf if fault.duration is None else trio.current_time() + fault.duration
            )
        elif kind is FaultKind.IGNORE_PINGS:
            assert self._nursery is not None
            self._transport.pause_for(fault.duration, self._nursery)
