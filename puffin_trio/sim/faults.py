"""Declarative fault injection for the simulators, and the stream that makes pings go unanswered.

This module owns:

* :class:`Fault` / :class:`FaultKind` / :class:`FaultPlan`: *what* should go
  wrong, on which connection, and when. A plan is a provider-neutral value
  that a test builds up front (``FaultPlan.drop_after(5) +
  FaultPlan.silent_after(3, connection=2)``) and hands to a simulator.
* :class:`FaultSchedule`: one connection's view of a plan, which a simulator
  consults as it sends data (which faults are due, how many messages may
  still go out before the next one), and :class:`HistoryFaults`, the
  server's view of the faults of its historical endpoints.
* :class:`PausableStream`: a transport wrapper a simulator puts under its
  WebSocket library so it can stop *reading* from the peer while the TCP
  connection stays open. That is the only way to make a client's WebSocket
  pings go unanswered: trio-websocket (like every WebSocket library) answers
  pings from its reader task, whatever the application does.

It must not know any provider's wire format: *how* a fault looks on the wire
(which error code, which close code, what an "unknown message" is) is the
simulator's business.

Connections are numbered from 1 in the order the simulator accepts them;
``connection=None`` applies a fault to every connection. Data-phase faults
fire once the connection has sent ``after`` data messages (market data, not
control messages); auth-phase faults fire on the connection's first
authentication attempt. Each fault fires at most once per connection.
Historical-endpoint faults (:data:`HISTORY_FAULTS`: a 429, an error status,
a slow or truncated page) belong to no connection: ``after`` counts the
historical requests the server answered before (REST requests, or IB
``reqHistoricalTicks``), and ``connection`` is ``None``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator

import attrs
import trio

from puffin_trio.errors import ConfigurationError

__all__ = [
    "AUTH_FAULTS",
    "HISTORY_FAULTS",
    "Fault",
    "FaultKind",
    "FaultPlan",
    "FaultSchedule",
    "HistoryFaults",
    "PausableStream",
]


class FaultKind(enum.StrEnum):
    """What goes wrong. Parameters used by each kind are listed in brackets."""

    #: The TCP connection is closed without a WebSocket close frame (the client
    #: sees an abnormal closure, 1006).
    DROP = "drop"
    #: A WebSocket close frame with ``code`` is sent and the connection ends.
    CLOSE = "close"
    #: No more data for ``duration`` seconds (``None``: forever), while the
    #: connection stays open, pings are answered and control messages are
    #: still replied to: "connected but silent".
    SILENT = "silent"
    #: One frame that cannot be decoded (``payload``, else a provider default).
    MALFORMED = "malformed"
    #: One well-formed message of a type the protocol does not define.
    UNKNOWN_MESSAGE = "unknown_message"
    #: The authentication is refused with provider error ``code``.
    REJECT_AUTH = "reject_auth"
    #: The authentication is answered with the provider's connection-limit error.
    CONNECTION_LIMIT = "connection_limit"
    #: Every frame waits ``delay`` seconds first, for ``duration`` seconds
    #: (``None``: for the rest of the connection).
    SLOW = "slow"
    #: The simulator stops reading from the socket for ``duration`` seconds
    #: (``None``: forever), so pings (and everything else the client sends)
    #: go unanswered while data keeps flowing and TCP stays open.
    IGNORE_PINGS = "ignore_pings"
    #: Skip ``count`` sequence numbers: the messages are generated (so the
    #: market moves on) but never sent. Providers with sequence numbers only.
    GAP = "gap"
    #: Send the last ``count`` data messages again (same sequence numbers).
    DUPLICATE = "duplicate"
    #: Send the next ``count`` data messages (``count`` >= 2) in reverse order.
    REORDER = "reorder"
    #: IB: error 1100 (connectivity between IB and TWS lost), no data for
    #: ``duration`` seconds, then ``code`` (1102: restored, data kept, the
    #: default; 1101: restored, data lost).
    CONNECTIVITY_LOSS = "connectivity_loss"
    #: IB: one farm-status notice with ``code`` (2103 broken, 2104 OK, 2105,
    #: 2106, 2107, 2108, 2158).
    FARM_STATUS = "farm_status"
    #: A historical request is refused for its rate: HTTP 429 whose reset
    #: header says ``duration`` seconds (IB: error 162, a pacing violation).
    RATE_LIMITED = "rate_limited"
    #: ``count`` historical requests in a row are answered with HTTP status
    #: ``code`` (500 by default; 401/403 refuse the key; IB: error 162).
    HTTP_ERROR = "http_error"
    #: A historical answer waits ``delay`` seconds before it is sent.
    SLOW_PAGE = "slow_page"
    #: A historical answer is cut in the middle (JSON that does not parse; IB: a
    #: ``historicalTicksLast`` with fewer ticks than it announces).
    TRUNCATED_PAGE = "truncated_page"


#: Kinds that fire on the authentication message rather than after data.
AUTH_FAULTS = frozenset({FaultKind.REJECT_AUTH, FaultKind.CONNECTION_LIMIT})
#: Kinds that fire on a historical request, numbered across the whole server.
HISTORY_FAULTS = frozenset(
    {FaultKind.RATE_LIMITED, FaultKind.HTTP_ERROR, FaultKind.SLOW_PAGE, FaultKind.TRUNCATED_PAGE}
)


@attrs.frozen
class Fault:
    """One fault: ``kind`` on ``connection`` (``None``: every one) after ``after`` data messages.

    Only the parameters a kind uses (see :class:`FaultKind`) may be set.
    Raises ``ConfigurationError`` for values that cannot work.
    """

    kind: FaultKind
    after: int = 0
    connection: int | None = 1
    duration: float | None = None
    delay: float = 0.0
    code: int | None = None
    payload: bytes | str | None = None
    count: int = 1

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.kind, FaultKind):
            raise ConfigurationError(f"kind must be a FaultKind, got {self.kind!r}")
        if self.after < 0:
            raise ConfigurationError(f"after must be >= 0 data messages, got {self.after}")
        if self.kind in AUTH_FAULTS and self.after != 0:
            raise ConfigurationError(f"{self.kind} fires on the auth message; `after` must be 0")
        if self.kind in HISTORY_FAULTS and self.connection is not None:
            raise ConfigurationError(
                f"{self.kind} fires on a historical request, which belongs to no connection; "
                "`connection` must be None"
            )
        if self.kind is FaultKind.SLOW_PAGE and self.delay <= 0:
            raise ConfigurationError("a slow page needs a delay > 0 seconds")
        if self.connection is not None and self.connection < 1:
            raise ConfigurationError(
                f"connection numbers start at 1 (None: every connection), got {self.connection}"
            )
        if self.duration is not None and self.duration <= 0:
            raise ConfigurationError(
                f"duration must be > 0 seconds (None: forever), got {self.duration}"
            )
        if self.delay < 0:
            raise ConfigurationError(f"delay must be >= 0 seconds, got {self.delay}")
        if self.kind is FaultKind.SLOW and self.delay <= 0:
            raise ConfigurationError("a slow fault needs a delay > 0 seconds")
        if self.count < 1:
            raise ConfigurationError(f"count must be >= 1, got {self.count}")
        if self.kind is FaultKind.REORDER and self.count < 2:
            raise ConfigurationError("reordering needs count >= 2 messages")

    def applies_to(self, connection: int) -> bool:
        """Whether this fault is planned for connection number ``connection``."""
        return self.connection is None or self.connection == connection


@attrs.frozen
class FaultPlan:
    """An immutable list of faults. Combine plans with ``+``; ``FaultPlan()`` is no fault.

    The constructors below cover every :class:`FaultKind`; ``connection`` is
    the 1-based connection number (``None``: every connection).
    """

    faults: tuple[Fault, ...] = ()

    def __add__(self, other: FaultPlan) -> FaultPlan:
        return FaultPlan(self.faults + other.faults)

    def __iter__(self) -> Iterator[Fault]:
        return iter(self.faults)

    def __len__(self) -> int:
        return len(self.faults)

    def for_connection(self, connection: int) -> FaultSchedule:
        """A fresh schedule of the faults that apply to connection number ``connection``."""
        return FaultSchedule(
            f for f in self.faults if f.kind not in HISTORY_FAULTS and f.applies_to(connection)
        )

    def for_history(self) -> HistoryFaults:
        """A fresh schedule of the historical-endpoint faults (one per server)."""
        return HistoryFaults(f for f in self.faults if f.kind in HISTORY_FAULTS)

    @classmethod
    def drop_after(cls, after: int, *, connection: int | None = 1) -> FaultPlan:
        """Close TCP without a WebSocket close frame after ``after`` data messages."""
        return cls((Fault(FaultKind.DROP, after, connection),))

    @classmethod
    def close_after(cls, after: int, *, code: int = 1011, connection: int | None = 1) -> FaultPlan:
        """Send a WebSocket close frame with ``code`` (default 1011, server error) and end."""
        return cls((Fault(FaultKind.CLOSE, after, connection, code=code),))

    @classmethod
    def silent_after(
        cls, after: int, *, duration: float | None = None, connection: int | None = 1
    ) -> FaultPlan:
        """Stop sending data for ``duration`` seconds (``None``: forever); pings still answered."""
        return cls((Fault(FaultKind.SILENT, after, connection, duration=duration),))

    @classmethod
    def malformed_after(
        cls, after: int, *, payload: bytes | str | None = None, connection: int | None = 1
    ) -> FaultPlan:
        """Send one undecodable frame (``bytes``: binary, ``str``: text; ``None``: default)."""
        return cls((Fault(FaultKind.MALFORMED, after, connection, payload=payload),))

    @classmethod
    def unknown_message_after(cls, after: int, *, connection: int | None = 1) -> FaultPlan:
        """Send one message of a type the protocol does not define."""
        return cls((Fault(FaultKind.UNKNOWN_MESSAGE, after, connection),))

    @classmethod
    def reject_auth(cls, code: int, *, connection: int | None = 1) -> FaultPlan:
        """Refuse the authentication with provider error ``code`` (e.g. Alpaca 402)."""
        return cls((Fault(FaultKind.REJECT_AUTH, 0, connection, code=code),))

    @classmethod
    def connection_limit(cls, *, connection: int | None = 1) -> FaultPlan:
        """Answer the authentication with the provider's connection-limit error."""
        return cls((Fault(FaultKind.CONNECTION_LIMIT, 0, connection),))

    @classmethod
    def slow_after(
        cls,
        after: int,
        *,
        delay: float,
        duration: float | None = None,
        connection: int | None = 1,
    ) -> FaultPlan:
        """Wait ``delay`` seconds before every frame, for ``duration`` (``None``: for good)."""
        return cls((Fault(FaultKind.SLOW, after, connection, duration=duration, delay=delay),))

    @classmethod
    def ignore_pings_after(
        cls, after: int, *, duration: float | None = None, connection: int | None = 1
    ) -> FaultPlan:
        """Stop reading the socket (pings unanswered, data still sent) for ``duration``."""
        return cls((Fault(FaultKind.IGNORE_PINGS, after, connection, duration=duration),))

    @classmethod
    def gap_after(cls, after: int, *, count: int = 1, connection: int | None = 1) -> FaultPlan:
        """Skip ``count`` sequence numbers after ``after`` data messages."""
        return cls((Fault(FaultKind.GAP, after, connection, count=count),))

    @classmethod
    def duplicate_after(
        cls, after: int, *, count: int = 1, connection: int | None = 1
    ) -> FaultPlan:
        """Re-send the last ``count`` data messages after ``after`` data messages."""
        return cls((Fault(FaultKind.DUPLICATE, after, connection, count=count),))

    @classmethod
    def reorder_after(cls, after: int, *, count: int = 2, connection: int | None = 1) -> FaultPlan:
        """Send the ``count`` data messages after ``after`` in reverse order."""
        return cls((Fault(FaultKind.REORDER, after, connection, count=count),))

    @classmethod
    def connectivity_loss_after(
        cls,
        after: int,
        *,
        duration: float = 5.0,
        code: int = 1102,
        connection: int | None = 1,
    ) -> FaultPlan:
        """IB: 1100, ``duration`` seconds without data, then ``code`` (1101 or 1102)."""
        return cls(
            (Fault(FaultKind.CONNECTIVITY_LOSS, after, connection, duration=duration, code=code),)
        )

    @classmethod
    def farm_status_after(cls, after: int, *, code: int, connection: int | None = 1) -> FaultPlan:
        """IB: one farm-status notice ``code`` (e.g. 2103 broken, 2104 OK)."""
        return cls((Fault(FaultKind.FARM_STATUS, after, connection, code=code),))


    @classmethod
    def rate_limited(cls, after: int = 0, *, reset: float = 2.0) -> FaultPlan:
        """Answer historical request number ``after`` (0: the first) with HTTP 429 whose
        reset header says ``reset`` seconds (IB: a pacing violation, error 162)."""
        return cls((Fault(FaultKind.RATE_LIMITED, after, None, duration=reset),))

    @classmethod
    def http_error(cls, after: int = 0, *, status: int = 500, count: int = 1) -> FaultPlan:
        """Answer ``count`` historical requests from number ``after`` on with ``status``."""
        return cls((Fault(FaultKind.HTTP_ERROR, after, None, code=status, count=count),))

    @classmethod
    def slow_page(cls, after: int = 0, *, delay: float) -> FaultPlan:
        """Send the answer to historical request number ``after`` ``delay`` seconds late."""
        return cls((Fault(FaultKind.SLOW_PAGE, after, None, delay=delay),))

    @classmethod
    def truncated_page(cls, after: int = 0) -> FaultPlan:
        """Cut the answer to historical request number ``after`` in the middle."""
        return cls((Fault(FaultKind.TRUNCATED_PAGE, after, None),))


class HistoryFaults:
    """The historical-endpoint faults of one server, by request number (from 0).

    Not thread-safe; one per server, consulted once per historical request.
    """

    def __init__(self, faults: Iterator[Fault] | tuple[Fault, ...] = ()) -> None:
        self._faults = list(faults)
        self.requests = 0

    def next_request(self) -> list[Fault]:
        """The faults that apply to the next historical request (and count it)."""
        number = self.requests
        self.requests += 1
        return [f for f in self._faults if f.after <= number < f.after + f.count]


class FaultSchedule:
    """The not-yet-fired faults of one connection, in firing order.

    Not thread-safe; one per connection, used by that connection's tasks.
    """

    def __init__(self, faults: Iterator[Fault] | tuple[Fault, ...] = ()) -> None:
        planned = list(faults)
        # Stable sort: faults with the same `after` fire in plan order.
        self._data = sorted((f for f in planned if f.kind not in AUTH_FAULTS), key=_after)
        self._auth = [f for f in planned if f.kind in AUTH_FAULTS]

    def take_auth_fault(self) -> Fault | None:
        """The next auth-phase fault (consumed), or ``None``."""
        return self._auth.pop(0) if self._auth else None

    def take_due(self, sent: int) -> list[Fault]:
        """Every data-phase fault due once ``sent`` data messages have gone out (consumed)."""
        due = 0
        while due < len(self._data) and self._data[due].after <= sent:
            due += 1
        taken, self._data = self._data[:due], self._data[due:]
        return taken

    def room(self, sent: int) -> int | None:
        """How many more data messages may be sent before the next fault is due (``None``: any)."""
        return self._data[0].after - sent if self._data else None


def _after(fault: Fault) -> int:
    return fault.after


class PausableStream(trio.abc.Stream):
    """A stream whose *receiving* side can be paused while sending goes on.

    While paused, bytes from the peer are still read from the socket (so a
    closed connection is noticed: :meth:`receive_some` then returns ``b""``)
    but are held back, up to ``hold_limit`` bytes, after which reading stops
    and TCP flow control pushes back on the peer. A WebSocket library reading
    from this stream therefore never sees the peer's pings and never answers
    them. :meth:`resume` hands the held bytes over at once.

    ``hold_limit`` is 64 KiB: far more than the pings and control messages a
    client sends while it waits for pongs, and small enough not to matter.
    """

    def __init__(self, transport: trio.abc.Stream, *, hold_limit: int = 64 * 1024) -> None:
        self.transport = transport
        self._hold_limit = hold_limit
        self._held = bytearray()
        self._resumed = trio.Event()
        self._resumed.set()
        self._read_scope: trio.CancelScope | None = None

    @property
    def paused(self) -> bool:
        """Whether bytes from the peer are being held back."""
        return not self._resumed.is_set()

    def unread(self, data: bytes) -> None:
        """Hand ``data`` (bytes already read from the peer) out again, before anything
        else: how a server that looked at a request's head passes it on."""
        self._held[:0] = data

    def pause(self) -> None:
        """Hold back everything the peer sends from now on (including bytes being read)."""
        if not self.paused:
            self._resumed = trio.Event()

    def resume(self) -> None:
        """Deliver the held bytes and pass new ones through again."""
        self._resumed.set()
        if self._read_scope is not None:
            self._read_scope.cancel()

    def pause_for(self, duration: float | None, nursery: trio.Nursery) -> None:
        """:meth:`pause` now, and :meth:`resume` after ``duration`` seconds (``None``:
        never) from a task in ``nursery`` (the connection's, so it ends with it)."""
        self.pause()
        if duration is not None:
            nursery.start_soon(self._resume_after, duration)

    async def _resume_after(self, seconds: float) -> None:
        await trio.sleep(seconds)
        self.resume()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        """Receive bytes from the peer; blocks while paused (except on end of stream)."""
        while True:
            if self._resumed.is_set():
                if self._held:
                    count = len(self._held) if max_bytes is None else max_bytes
                    chunk = bytes(self._held[:count])
                    del self._held[:count]
                    return chunk
                data = await self.transport.receive_some(max_bytes)
                if not data or self._resumed.is_set():
                    return data
                self._held += data  # paused while this read was in flight
            elif len(self._held) >= self._hold_limit:
                await self._resumed.wait()
            else:
                # resume() cancels this read, so held bytes go out without
                # waiting for the peer to send more.
                with trio.CancelScope() as self._read_scope:
                    data = await self.transport.receive_some()
                    if not data:
                        return b""
                    self._held += data
                self._read_scope = None

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Send to the peer (never paused)."""
        await self.transport.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        """See :meth:`trio.abc.SendStream.wait_send_all_might_not_block`."""
        await self.transport.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        """Close the transport (a plain TCP close: no WebSocket close frame)."""
        self.resume()
        await self.transport.aclose()
