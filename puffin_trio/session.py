"""One provider connection: handshake, subscriptions, and the tasks that run while it is up.

This module owns :class:`ProviderSession`. One call of :meth:`ProviderSession.run`
is one connection: connect, authenticate, (re)subscribe everything desired,
then stream until something fails. The session alone sets its state and
builds its own ``Status`` events. Streaming runs in the session's own nursery
with up to five sibling tasks:

* **reader**: frame -> provider protocol -> sequence guard -> fan-out. It never
  waits on processing beyond the consumers' declared overflow policies.
* **heartbeat**: a WebSocket ping (or the provider's application request,
  e.g. IB's ``reqCurrentTime``) every ``ping_interval`` seconds, whose answer
  must come before ``ping_timeout`` seconds pass with nothing at all
  arriving (inbound data is a sign of life: a slow link is not a dead one).
* **health-checker**: data liveness per subscription, market-hours aware. A
  subscription silent for ``stale_after`` seconds while its market is open is
  resubscribed; still silent after another ``stale_after``, the session
  fails with :class:`StaleFeedError` (and the supervisor reconnects). Quiet
  while the market is closed is not dead.
* **commander**: applies live ``subscribe``/``unsubscribe`` commands.
* **guard timer** (providers with sequence numbers only): releases what the
  sequence guard has held back for its time bound.
* **backfill** (``backfill="trades"``, after a reconnect): recovers the
  outage's trades and delivers them before the held live ones
  (:mod:`puffin_trio.history`); its failures are announced, never raised.

The reader runs from the start of the connection; the others once it is
authenticated. Any task that raises ends the connection and :meth:`run`
raises that first error, typed. The reader's own failure cancels everything;
another task's cancels the others, while the reader finishes its batch and
delivers the frames that already arrived first. Restarting is not this
module's job: the :mod:`~puffin_trio.supervisor` does it.

Time: trio's clock (``trio.current_time()``) for every deadline, the guard's
included, so tests run under ``MockClock``; ``wall_clock`` (injectable,
default ``time.time_ns``) for ``ts_recv``, the timestamps of ``Status`` and
``Gap`` events, and market hours.
"""
from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Literal

import attrs
import trio

from puffin_trio._liveness import HeartbeatDeadline, Liveness, Stream
from puffin_trio.channels import FanOut
from puffin_trio.errors import (
    ConnectionLost,
    HeartbeatTimeout,
    ProtocolError,
    ProviderError,
    StaleFeedError,
)
from puffin_trio.events import (
    EVENT_TYPES,
    Event,
    Gap,
    GapReason,
    SessionState,
    Status,
)
from puffin_trio.guard import GuardStream, SequenceGuard
from puffin_trio.histogram import HistogramSnapshot, LagHistogram
from puffin_trio.history import Backfiller, BackfillStatistics
from puffin_trio.market_hours import MarketSession, preload
from puffin_trio.providers._base import (
    Authenticated,
    Connected,
    Control,
    Frame,
    HeartbeatReply,
    HistoryReply,
    Malformed,
    Provider,
    ProviderFailure,
    ProviderNotice,
    ProviderProtocol,
    SubscriptionAck,
    Topics,
    UnknownMessage,
)
from puffin_trio.subscriptions import Expectation, SubscriptionState
from puffin_trio.transports import Transport

__all__ = ["ProviderSession", "SessionStatistics", "SessionTimeouts"]

logger = logging.getLogger("puffin_trio.session")

_EVENT_CLASSES = frozenset(EVENT_TYPES)


#: Most events the reader decodes from already-arrived frames before publishing:
#: enough to amortise the publish checkpoint (~4 µs) over many events, few
#: enough (a few hundred µs of decoding) that consumers see data promptly.
_MAX_BATCH = 256
#: Longest the reader waits for frames in all once the connection has failed
#: (see ``ProviderSession._arrived``): frames already in the socket's buffer
#: need only the transport's reader task to be scheduled (microseconds; 50 ms
#: is ample on a loaded machine), and the reconnect is announced at most this
#: late after a failure.
_DRAIN_WAIT = 0.05
#: Malformed frames are logged individually up to this many, then every 1000th,
#: so a flood of garbage cannot flood the logs (all are counted).
_LOG_FIRST_MALFORMED = 10


@attrs.frozen
class SessionTimeouts:
    """Deadlines (seconds) of the handshake steps.

    * ``handshake``: connect + server hello + authentication. Alpaca itself
      drops a client that has not authenticated within ~10 s; 15 s covers a
      slow TLS handshake on top.
    * ``subscribe``: the server's confirmation of a subscription. Confirmations
      come within milliseconds; 10 s means the server is not listening.
    """

    handshake: float = 15.0
    subscribe: float = 10.0


@attrs.frozen
class SessionStatistics:
    """A snapshot of one session's counters (see :meth:`ProviderSession.statistics`)."""

    name: str
    provider: str
    state: SessionState
    connects: int
    reconnects: int
    messages: int
    frames: int
    bytes: int
    malformed: int
    unknown: int
    gaps: int
    duplicates: int
    late: int
    resubscribes: int
    heartbeat_rtt: float | None
    #: ``ts_recv - ts_event`` of the last event, ns (includes clock skew with the provider).
    lag_ns: int | None
    #: The provider says data is not flowing right now (IB 1100, a data farm down).
    stale: bool
    #: Seconds since the last event per ``"channel:symbol"`` subscription
    #: (``None``: nothing received on this connection yet).
    last_message_age: Mapping[str, float | None]
    desired: Mapping[str, frozenset[str]]
    confirmed: Mapping[str, frozenset[str]]
    #: ``lag_ns`` observed once per published batch, as a histogram (seconds).
    lag_histogram: HistogramSnapshot
    #: Backfill counters (``None`` without ``backfill="trades"``).
    backfill: BackfillStatistics | None = None


class _Command:
    __slots__ = ("action", "done", "topics")

    def __init__(
        self, action: Literal["subscribe", "unsubscribe", "resync"], topics: Topics
    ) -> None:
        self.action = action
        self.topics = topics
        self.done = trio.Event()


class ProviderSession:
    """A provider connection and everything that runs while it is up.

    Made by :meth:`Supervisor.add`; users see it through ``sup.statistics()``.
    """

    def __init__(
        self,
        provider: Provider,
        *,
        name: str,
        fanout: FanOut,
        topics: Mapping[str, frozenset[str]],
        wall_clock: Callable[[], int] = time.time_ns,
        timeouts: SessionTimeouts | None = None,
    ) -> None:
        self.provider = provider
        self.name = name
        self._fanout = fanout
        self._wall = wall_clock
        self.timeouts = timeouts or SessionTimeouts()
        self.subscriptions = SubscriptionState(topics)
        self.state = SessionState.CONNECTING
        # Unbounded in type only: a command is queued by a subscribe/unsubscribe/resync
        # call while the session streams, and the commander takes each one as soon as
        # the previous one is sent. Queueing never blocks, so a call cannot be
        # cancelled between changing the desired set and queueing its command.
        self._commands_send, self._commands_recv = trio.open_memory_channel[_Command](math.inf)
        # The calendar's tables load now (up to ~1 s once per process), before
        # anything streams, not at the health-checker's first question.
        preload(provider.calendar)
        # counters
        self.connects = 0
        self.messages = 0
        self.malformed = 0
        self.unknown = 0
        self.resubscribes = 0
        self.heartbeat_rtt: float | None = None
        self._frames_before = 0
        self._bytes_before = 0
        self._transport: Transport | None = None
        self._guard: SequenceGuard[Event] | None = None
        self._guard_totals = (0, 0, 0)  # gaps, duplicates, late of guards of past connections
        #: Events a past connection's guard still held, published when the next one starts.
        self._carry: list[Event | Gap] = []
        # liveness: event class -> symbol -> trio time of the last event
        self._liveness = Liveness()
        #: trio time at which the current connection reached STREAMING (None: not yet).
        self._streamed_from: float | None = None
        #: trio time at which the last connection ended (for statistics() after the run).
        self._ended_at: float | None = None
        self._last_event_wall: int | None = None
        self._heartbeat_reply = trio.Event()
        #: True while the provider says data is not flowing (IB 1100, farm down).
        self.stale = False
        #: ``ts_recv - ts_event`` of the last event received, in ns (provider-to-us lag).
        self.lag_ns: int | None = None
        #: Every batch's ``lag_ns``: one bisect and two additions per batch.
        self.lag_histogram = LagHistogram()
        #: Notices to act on after the current frame: (notice, staleness changed).
        self._notices: list[tuple[ProviderNotice, bool]] = []
        #: Recovers the trades of each reconnect's outage (``backfill="trades"``).
        self._backfill = (
            Backfiller(
                provider,
                stream=name,
                fanout=fanout,
                wall_clock=wall_clock,
                status=lambda detail: self._status(self.state, detail=detail),
            )
            if provider.backfill == "trades"
            else None
        )

    # ------------------------------------------------------------------ public

    async def run(self, *, attempt: int = 0, outage_start: int | None = None) -> None:
        """Connect and stream until failure; raises the first error (it never returns
        normally; cancellation ends it). ``attempt`` > 0 marks a reconnect: once
        authenticated again, right after the ``subscribing`` status and before any
        data of the new connection, a ``Gap(reason="reconnect")`` covering
        ``outage_start`` .. now is published.
        """
        provider = self.provider
        proto = provider.protocol()
        self.subscriptions.connection_lost()
        self._guard = SequenceGuard(proto.guard_mode) if proto.guard_mode != "none" else None
        self._bind_streams(self._guard)
        self._streamed_from = None
        self._authenticated = trio.Event()
        self._streaming = trio.Event()
        self.stale = False
        self._until_streaming: tuple[Expectation, int] | None = None
        self._drop_queued_commands()
        await self._publish_carry()
        if self._backfill is not None and attempt > 0:
            trades = self.subscriptions.desired.get("trades", frozenset())
            self._backfill.prepare(trades, outage_start=outage_start)
        await self._set_state(SessionState.CONNECTING, attempt=attempt)
        self._receiving = trio.CancelScope()
        self._stopping = self._waiting_for_frame = False
        self._held_frame: Frame | None = None
        self._drain_wait = _DRAIN_WAIT
        failure: list[BaseException] = []
        async with provider.open_transport() as transport:
            self._transport = transport
            self.connects += 1
            try:
                async with trio.open_nursery() as nursery:

                    def fail(exc: BaseException) -> None:
                        """The reader failed: end everything now."""
                        if not failure:
                            failure.append(exc)
                        nursery.cancel_scope.cancel()

                    self._spawn(nursery, fail, self._reader, proto, transport)
                    async with trio.open_nursery() as tasks:

                        def stop(exc: BaseException) -> None:
                            """Another task failed: end it, and let the reader drain."""
                            if not failure:
                                failure.append(exc)
                            tasks.cancel_scope.cancel()
                            self._stop_reading()

                        try:
                            await self._handshake(proto, transport, attempt, outage_start)
                        except Exception as exc:
                            stop(exc)
                        else:
                            self._spawn(tasks, stop, self._heartbeat, proto, transport)
                            self._spawn(tasks, stop, self._health, proto, transport)
                            self._spawn(tasks, stop, self._commander, proto, transport)
                            if self._guard is not None:
                                self._spawn(tasks, stop, self._guard_timer)
                            if self._backfill is not None:
                                self._spawn(tasks, stop, self._backfill.run, proto, transport)
            finally:
                self._frames_before += transport.frames_received
                self._bytes_before += transport.bytes_received
                self._transport = None
                self._ended_at = trio.current_time()
                if self._backfill is not None:
                    # What a backfill still held arrived before what the guard still holds.
                    self._carry.extend(self._backfill.abandon())
                self._retire_guard()
        if failure:
            # Before the supervisor announces the reconnect: these arrived first.
            await self._publish_carry()
            raise failure[0]

    async def subscribe(self, topics: Mapping[str, frozenset[str]]) -> bool:
        """Add subscriptions; kept for every reconnect. A checkpoint.

        If the session is streaming, the command goes to the session task and
        this waits (at most ``timeouts.subscribe``) for the server's
        confirmation. Returns True once confirmed; False if the session is not
        streaming (the topics are sent when it next connects) or no
        confirmation came in time.

        Cancellation: a call cancelled before it starts (its first checkpoint)
        changes nothing. Once started, the topics are desired and their
        subscribe frame is queued in one step; cancelling the wait for the
        confirmation does not take them back (the frame may be on the wire
        already), so they are kept for reconnects like any others.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        self.subscriptions.want(topics)
        return await self._command("subscribe", topics)

    async def unsubscribe(self, topics: Mapping[str, frozenset[str]]) -> bool:
        """Remove subscriptions (from the desired set, and live if streaming).

        Returns True once the server confirmed the removal; cancellation as
        for :meth:`subscribe` (once started, the topics are no longer desired).
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        self.subscriptions.unwant(topics)
        return await self._command("unsubscribe", topics)

    async def resync(self, topics: Mapping[str, frozenset[str]]) -> bool:
        """Unsubscribe and resubscribe ``topics`` so the provider sends fresh snapshots.

        For books that went ``RESYNC_NEEDED`` (see :class:`~puffin_trio.book.OrderBooks`).
        Only topics that are subscribed are touched. Returns True once the
        provider confirmed the new subscription.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        wanted = {c: s & self.subscriptions.desired.get(c, frozenset()) for c, s in topics.items()}
        wanted = {c: s for c, s in wanted.items() if s}
        if not wanted:
            await trio.lowlevel.checkpoint()
            return False
        return await self._command("resync", wanted)

    def statistics(self) -> SessionStatistics:
        """Counters and state; cheap, never blocks, not a checkpoint.

        Works outside a trio run too (e.g. after ``trio.run`` returned): the
        ages in ``last_message_age`` are then measured at the moment the last
        connection ended.
        """
        gaps, dups, late = self._guard_totals
        if self._guard is not None:
            g = self._guard.statistics()
            gaps, dups, late = gaps + g.gaps, dups + g.duplicates, late + g.late
        t = self._transport
        try:
            now: float | None = trio.current_time()
        except RuntimeError:  # no trio run: as of the end of the last connection
            now = self._ended_at
        ages = self._liveness.ages(now, self.subscriptions.desired)
        return SessionStatistics(
            name=self.name,
            provider=self.provider.name,
            state=self.state,
            connects=self.connects,
            reconnects=max(0, self.connects - 1),
            messages=self.messages,
            frames=self._frames_before + (t.frames_received if t else 0),
            bytes=self._bytes_before + (t.bytes_received if t else 0),
            malformed=self.malformed,
            unknown=self.unknown,
            gaps=gaps,
            duplicates=dups,
            late=late,
            resubscribes=self.resubscribes,
            heartbeat_rtt=self.heartbeat_rtt,
            lag_ns=self.lag_ns,
            stale=self.stale,
            last_message_age=ages,
            desired=dict(self.subscriptions.desired),
            confirmed=dict(self.subscriptions.confirmed),
            lag_histogram=self.lag_histogram.snapshot(),
            backfill=None if self._backfill is None else self._backfill.statistics(),
        )

    async def announce(self, state: SessionState, *, detail: str = "", attempt: int = 0) -> None:
        """Enter ``state`` and publish its ``Status`` (the supervisor's reconnecting/failed)."""
        await self._set_state(state, detail=detail, attempt=attempt)

    def announce_closed(self) -> None:
        """The session will not run again: enter ``closed`` unless it ``failed``.

        Its ``Status`` is published if every consumer has room: this runs while
        the supervisor is being cancelled and cannot wait for a full consumer.
        Not a checkpoint.
        """
        if self.state is SessionState.FAILED:
            return
        self.state = SessionState.CLOSED
        with contextlib.suppress(trio.WouldBlock, trio.ClosedResourceError):
            self._fanout.publish_nowait(self._status(SessionState.CLOSED))

    def streamed_for(self, now: float) -> float:
        """Seconds the current (or last) connection has been streaming at trio time ``now``.

        Measured from the moment it reached ``streaming``: connecting,
        authenticating and subscribing do not count. 0 if it never got there.
        """
        return 0.0 if self._streamed_from is None else now - self._streamed_from

    # ------------------------------------------------------------------ internals

    def _spawn(
        self,
        nursery: trio.Nursery,
        fail: Callable[[BaseException], None],
        fn: Callable[..., object],
        *args: object,
    ) -> None:
        async def guarded() -> None:
            try:
                await fn(*args)  # type: ignore[misc]
            except Exception as exc:
                fail(exc)

        nursery.start_soon(guarded, name=f"{self.name}:{getattr(fn, '__name__', fn)}")

    def _status(self, state: SessionState, *, detail: str = "", attempt: int = 0) -> Status:
        now = self._wall()
        return Status(
            provider=self.provider.name,
            session=self.name,
            state=state,
            detail=detail,
            attempt=attempt,
            ts_event=now,
            ts_recv=now,
        )

    async def _set_state(self, state: SessionState, *, detail: str = "", attempt: int = 0) -> None:
        self.state = state
        await self._fanout.publish(self._status(state, detail=detail, attempt=attempt))

    async def _command(
        self, action: Literal["subscribe", "unsubscribe", "resync"], topics: Topics
    ) -> bool:
        if self.state is not SessionState.STREAMING:
            await trio.lowlevel.cancel_shielded_checkpoint()
            return False
        cmd = _Command(action, topics)
        self._commands_send.send_nowait(cmd)
        with trio.move_on_after(self.timeouts.subscribe):
            await cmd.done.wait()
            await self.subscriptions.wait_confirmed(topics, removed=action == "unsubscribe")
            return True
        return False

    async def _publish_carry(self) -> None:
        """Publish what the last connection left (its guard's held events, its backfill's
        held trades), first thing."""
        if self._carry:
            carry, self._carry = self._carry, []
            if self._backfill is not None:
                self._backfill.filter(carry)
            await self._fanout.publish_batch(carry)

    def _drop_queued_commands(self) -> None:
        """Commands queued before a (re)connect are covered by the desired state it replays."""
        while True:
            try:
                self._commands_recv.receive_nowait().done.set()
            except trio.WouldBlock:
                return

    async def _handshake(
        self,
        proto: ProviderProtocol,
        transport: Transport,
        attempt: int,
        outage_start: int | None,
    ) -> None:
        await transport.send_all(proto.data_to_send())
        await self._set_state(SessionState.AUTHENTICATING, attempt=attempt)
        with trio.move_on_after(self.timeouts.handshake) as scope:
            await self._authenticated.wait()
        if scope.cancelled_caught:
            raise ProtocolError(
                f"no authentication reply within {self.timeouts.handshake} s",
                provider=self.provider.name,
            )
        # The outage ends here: announce it before anything the new connection
        # delivers (data may flow before every subscription frame is confirmed).
        self.state = SessionState.SUBSCRIBING
        status = self._status(SessionState.SUBSCRIBING, attempt=attempt)
        now = status.ts_event
        announce: list[Event] = [status]
        if attempt > 0:
            announce.append(
                Gap(
                    provider=self.provider.name,
                    symbol="",
                    ts_event=now,
                    ts_recv=now,
                    stream=self.name,
                    reason=GapReason.RECONNECT,
                    window_start=outage_start,
                    window_end=now,
                )
            )
        await self._fanout.publish_batch(announce)
        desired = dict(self.subscriptions.desired)
        if desired and proto.confirms_subscriptions:
            # The reader announces STREAMING in order with the data, right after
            # the confirmation that completes this set (see _reader).
            expectation = self.subscriptions.expect(desired)
            self._until_streaming = (expectation, attempt)
            try:
                proto.subscribe(desired)
                await transport.send_all(proto.data_to_send())
                with trio.move_on_after(self.timeouts.subscribe) as scope:
                    await self._streaming.wait()
            finally:
                self.subscriptions.withdraw(expectation)
            if scope.cancelled_caught:
                raise ProtocolError(
                    f"subscription not confirmed within {self.timeouts.subscribe} s: "
                    f"{_describe(expectation.missing)}",
                    provider=self.provider.name,
                )
            return
        if desired:
            proto.subscribe(desired)
            await transport.send_all(proto.data_to_send())
            self.subscriptions.confirm(desired, complete=True)
        await self._fanout.publish_batch(self._start_streaming(attempt))

    def _start_streaming(self, attempt: int) -> list[Event]:
        """Enter STREAMING: the Status to publish now."""
        self._until_streaming = None
        self._streaming.set()
        self.state = SessionState.STREAMING
        self._streamed_from = trio.current_time()
        self._liveness.restart(self._streamed_from)
        return [self._status(SessionState.STREAMING, attempt=attempt)]

    async def _reader(self, proto: ProviderProtocol, transport: Transport) -> None:
        """Receive -> decode -> guard -> publish, until the connection fails.

        When another task fails the connection (:meth:`_stop_reading`), the
        reader is not cancelled: it finishes the batch in hand (publishing it
        may wait for a "block" consumer, as any batch does), then delivers the
        frames that have already arrived (:meth:`_arrived`), and ends. What
        reached our socket before we gave up on it is not thrown away.
        """
        with self._receiving:
            await self._read(proto, transport, draining=False)
        self._until_streaming = None
        await self._read(proto, transport, draining=True)

    def _bind_streams(self, guard: SequenceGuard[Event] | None) -> None:
        """Give the liveness streams kept from past connections ``guard``'s handles.

        A connection has a guard of its own; its reader takes each stream's
        handle from the stream (see :class:`~puffin_trio._liveness.Stream`). A
        stream made without a guard is dropped: its next event makes it again,
        with its key.
        """
        for table in self._liveness.streams.values():
            for symbol, stream in list(table.items()):
                handle = stream.sequence
                if guard is None:
                    stream.sequence = None
                elif handle is not None:
                    stream.sequence = guard.stream(handle.key)
                else:
                    del table[symbol]

    def _stop_reading(self) -> None:
        """Another task failed the connection: the reader stops waiting for frames and
        drains. Not a checkpoint."""
        self._stopping = True
        if self._waiting_for_frame:
            self._receiving.cancel()

    def _stopped(self) -> bool:
        """Whether :meth:`_stop_reading` was called (read anew after an ``await``)."""
        return self._stopping

    async def _arrived(self, transport: Transport) -> Frame | None:
        """The next frame that has already arrived (the drain), or None once there is none.

        A frame the transport holds is taken at once. Past those, the drain
        waits for more for at most :data:`_DRAIN_WAIT` seconds in all: what
        was already in the socket's buffer comes in microseconds, and a server
        that keeps streaming cannot keep a connection we gave up on alive.
        """
        frame, self._held_frame = self._held_frame, None
        if frame is None:
            frame = transport.receive_nowait()
        if frame is not None or self._drain_wait <= 0:
            return frame
        start = trio.current_time()
        with trio.move_on_after(self._drain_wait):
            try:
                frame = await transport.receive()
            except ConnectionLost:  # ended: nothing more will arrive
                self._drain_wait = 0.0
        self._drain_wait -= trio.current_time() - start
        return frame

    async def _read(self, proto: ProviderProtocol, transport: Transport, *, draining: bool) -> None:
        """The reader's loop; ``draining``: only frames that already arrived, nothing sent.

        Frames that have already arrived (``transport.receive_nowait``) are
        decoded into the same batch, up to :data:`_MAX_BATCH` events, so a burst
        of small frames (IB sends one message per frame) costs one publish and
        one scheduler trip, not one per frame. That trip is the transport's
        ``receive`` (a checkpoint: it parks when nothing has arrived, and
        yields when frames are waiting): handing the batch to the consumers
        adds none (``publish_batch_nowait``) unless a "block" consumer is full,
        so at one message per frame the reader costs one wake-up per frame.
        """
        fanout = self._fanout
        guard = self._guard
        feed_streams = None if guard is None else guard.feed_streams
        backfill = self._backfill
        stream_key = proto.stream_key
        # Trades, quotes and books: one lookup per item reaches the symbol's Stream,
        # its liveness stamp and its guard handle (the bulk of the data). Other items
        # take a second lookup to tell events whose silence proves nothing (bars,
        # ...) from controls.
        streams = self._liveness.streams
        event_classes = _EVENT_CLASSES
        batch: list[Event] = []
        append = batch.append
        # A frame's events for the guard, fed as one batch (SequenceGuard.feed_streams)
        # at the frame's end, or before a control item's output to keep the order.
        handles: list[GuardStream] = []
        guarded: list[Event] = []
        failure: ProviderError | None = None
        while True:
            frame: Frame | None
            if draining:
                frame = await self._arrived(transport)
                if frame is None:
                    return
            elif self._stopping:
                return
            else:
                self._waiting_for_frame = True
                frame = await transport.receive()
                self._waiting_for_frame = False
                if self._stopped():  # it came as the connection was stopped: the drain takes it
                    self._held_frame = frame
                    return
            ts_recv = self._wall()
            now = trio.current_time()
            now_ns = int(now * 1e9)
            while frame is not None:
                items = proto.receive(frame, ts_recv)
                outgoing = proto.data_to_send()
                if outgoing and not draining:
                    await transport.send_all(outgoing)
                for item in items:
                    cls = type(item)
                    table = streams.get(cls)
                    if table is not None:
                        symbol = item.symbol  # type: ignore[union-attr]
                        try:
                            stream = table[symbol]
                        except KeyError:  # its first event since the last restart
                            handle = None if guard is None else guard.stream(stream_key(item))  # type: ignore[arg-type]
                            stream = table[symbol] = Stream(now, handle)
                        else:
                            stream.at = now
                        handle = stream.sequence
                    elif cls in event_classes:
                        handle = None if guard is None else guard.stream(stream_key(item))  # type: ignore[arg-type]
                    else:
                        if guarded:
                            feed_streams(handles, guarded, now_ns, batch, ts_recv)  # type: ignore[misc]
                            handles.clear()
                            guarded.clear()
                        if cls is Malformed:
                            # The loss, announced where it happened (counted and logged too).
                            append(self._malformed(item, ts_recv, len(items) > 1))  # type: ignore[arg-type]
                            continue
                        error = self._control(item)  # type: ignore[arg-type]
                        if error is not None:
                            failure = error
                        elif self._until_streaming is not None:
                            expectation, attempt = self._until_streaming
                            if expectation.done:
                                batch.extend(self._start_streaming(attempt))
                        continue
                    if handle is None:
                        append(item)  # type: ignore[arg-type]
                    else:
                        handles.append(handle)
                        guarded.append(item)  # type: ignore[arg-type]
                if guarded:
                    feed_streams(handles, guarded, now_ns, batch, ts_recv)  # type: ignore[misc]
                    handles.clear()
                    guarded.clear()
                if failure is not None or self._notices or len(batch) >= _MAX_BATCH:
                    break
                frame = transport.receive_nowait()
            if batch and backfill is not None:
                backfill.filter(batch)
            if batch:
                self.messages += len(batch)
                self._last_event_wall = ts_recv
                last = batch[-1]
                self.lag_ns = lag = ts_recv - last.ts_event
                self.lag_histogram.observe(lag)
                delivered = fanout.publish_batch_nowait(batch)
                if delivered < len(batch):
                    await fanout.publish_batch(batch[delivered:])
                batch.clear()
            if failure is not None:
                raise failure
            if self._notices:
                if draining:
                    self._notices.clear()
                else:
                    await self._act_on_notices(proto, transport)

    def _control(self, item: Control) -> ProviderError | None:
        """Act on a control item; return a provider error that must end the connection."""
        if isinstance(item, SubscriptionAck):
            if item.removed:
                self.subscriptions.unconfirm(item.topics)
            else:
                self.subscriptions.confirm(item.topics, complete=item.complete)
        elif isinstance(item, Authenticated):
            self._authenticated.set()
        elif isinstance(item, Connected):
            logger.debug("%s: server hello %s", self.name, item.detail)
        elif isinstance(item, HeartbeatReply):
            self._heartbeat_reply.set()
        elif isinstance(item, HistoryReply):
            if self._backfill is not None:
                self._backfill.answer(item)
        elif isinstance(item, UnknownMessage):
            self.unknown += 1
            if self.unknown <= _LOG_FIRST_MALFORMED:
                logger.info("%s: ignoring unknown message type %r", self.name, item.kind)
        elif isinstance(item, ProviderNotice):
            logger.info("%s: notice %s: %s", self.name, item.code, item.message)
            changed = item.stale is not None and item.stale != self.stale
            if changed:
                self.stale = bool(item.stale)
            if changed or item.resubscribe:
                self._notices.append((item, changed))
        elif isinstance(item, ProviderFailure):
            if item.symbol:
                logger.warning(
                    "%s: dropping subscription %s:%s: %s",
                    self.name,
                    item.channel,
                    item.symbol,
                    item.error,
                )
                failed = {item.channel: {item.symbol}}
                self.subscriptions.unwant(failed)
                self.subscriptions.unconfirm(failed)
            else:
                return item.error
        return None

    def _malformed(self, item: Malformed, ts_recv: int, one_of_many: bool) -> Gap:
        """Count and log a message that did not decode; the ``Gap`` that announces its loss.

        ``one_of_many``: it came from a frame that decoded into several items,
        so it stands for exactly one message; otherwise it may be a whole
        frame, and how many messages it held is unknown (``missing=0``).
        """
        self.malformed += 1
        if self.malformed <= _LOG_FIRST_MALFORMED or self.malformed % 1000 == 0:
            logger.warning(
                "%s: malformed message #%d (%s): %s",
                self.name,
                self.malformed,
                item.reason,
                item.sample,
            )
        return Gap(
            provider=self.provider.name,
            symbol="",
            ts_event=ts_recv,
            ts_recv=ts_recv,
            stream=self.name,
            reason=GapReason.MALFORMED,
            missing=1 if one_of_many else 0,
            window_start=ts_recv,
            window_end=ts_recv,
        )

    async def _act_on_notices(self, proto: ProviderProtocol, transport: Transport) -> None:
        """Announce staleness changes (a ``Status``) and resubscribe when the provider asks."""
        notices, self._notices = self._notices, []
        resubscribe = False
        for notice, changed in notices:
            resubscribe = resubscribe or notice.resubscribe
            if changed:
                word = "stale" if notice.stale else "fresh"
                await self._set_state(
                    self.state, detail=f"data {word}: {notice.code} {notice.message}"
                )
        desired = dict(self.subscriptions.desired)
        if resubscribe and desired:
            self.resubscribes += 1
            logger.warning("%s: provider asked for a resubscribe; re-sending everything", self.name)
            proto.subscribe(desired)
            await transport.send_all(proto.data_to_send())

    async def _heartbeat(self, proto: ProviderProtocol, transport: Transport) -> None:
        """Every ``ping_interval``: a ping, whose answer must come before ``ping_timeout``
        seconds pass with nothing at all arriving (see :class:`HeartbeatDeadline`)."""
        interval = self.provider.ping_interval
        timeout = self.provider.ping_timeout
        while True:
            await trio.sleep(interval)
            start = trio.current_time()
            deadline = HeartbeatDeadline(start, transport.frames_received, timeout)
            if proto.heartbeat():
                self._heartbeat_reply = trio.Event()
                await transport.send_all(proto.data_to_send())
                answered = await _answered(self._heartbeat_reply.wait, transport, deadline)
            else:
                answered = await _answered(transport.ping, transport, deadline)
            if not answered:
                # The link is declared dead: drop it now. A closing handshake
                # would wait out its timeout for a reply that cannot come.
                transport.abort()
                raise HeartbeatTimeout(
                    f"no heartbeat reply, and nothing else received, for {timeout} s",
                    provider=self.provider.name,
                )
            self.heartbeat_rtt = trio.current_time() - start

    def _market_open(self) -> bool:
        return self.provider.calendar.session_at(self._wall()) is not MarketSession.CLOSED

    async def _health(self, proto: ProviderProtocol, transport: Transport) -> None:
        """Resubscribe silent subscriptions once; fail if they stay silent."""
        stale_after = self.provider.stale_after
        if not math.isfinite(stale_after) or stale_after <= 0:
            return
        period = max(stale_after / 4, 0.05)
        liveness = self._liveness
        while True:
            await trio.sleep(period)
            now = trio.current_time()
            if self.stale or not self._market_open():
                # Quiet while the market is closed is not dead; nor is it while the
                # provider itself says data is not flowing (IB 1100): reconnecting to
                # it would not help, and it tells us when data is back.
                liveness.restart(now)
                continue
            fresh, dead = liveness.check(now, self.subscriptions.confirmed, stale_after)
            if dead:
                raise StaleFeedError(
                    f"silent for {stale_after} s after a resubscribe during market hours: "
                    f"{', '.join(dead[:10])}",
                    provider=self.provider.name,
                )
            if fresh:
                self.resubscribes += 1
                logger.warning(
                    "%s: no data for %s s on %s; resubscribing",
                    self.name,
                    stale_after,
                    _describe(fresh),
                )
                proto.subscribe(fresh)
                await transport.send_all(proto.data_to_send())

    async def _commander(self, proto: ProviderProtocol, transport: Transport) -> None:
        """Send live subscribe/unsubscribe commands; the caller waits for the confirmation."""
        async for cmd in self._commands_recv:
            if cmd.action == "unsubscribe":
                proto.unsubscribe(cmd.topics)
            elif cmd.action == "resync":
                proto.unsubscribe(cmd.topics)
                proto.subscribe(cmd.topics)
                self.subscriptions.unconfirm(cmd.topics)
            else:
                proto.subscribe(cmd.topics)
            await transport.send_all(proto.data_to_send())
            if not proto.confirms_subscriptions:
                self.subscriptions.confirm(self.subscriptions.desired, complete=True)
            cmd.done.set()

    async def _guard_timer(self) -> None:
        """Release what the guard has held for its time bound.

        The guard's deadlines run on trio's clock (monotonic, and mocked in
        tests), so a wall-clock step cannot make it give up early or late; the
        ``Gap`` events it makes carry the wall clock as their ``ts_recv``.
        """
        guard = self._guard
        assert guard is not None
        out: list[Event | Gap] = []
        while True:
            deadline = guard.next_deadline_ns()
            if deadline is None:
                await trio.sleep(guard.max_delay_ns / 1e9)
                continue
            await trio.sleep_until(deadline / 1e9)
            # Woken at or after the deadline; the float round trip may read 1 ns short.
            guard.poll(max(deadline, _monotonic_ns()), out, self._wall())
            if out and self._backfill is not None:
                self._backfill.filter(out)
            if out:
                self.messages += len(out)
                await self._fanout.publish_batch(out)
                out.clear()

    def _retire_guard(self) -> None:
        """Flush a connection's guard: what it still holds is delivered, holes announced."""
        guard = self._guard
        if guard is None:
            return
        # What it still held (and the holes behind it) is published first thing on
        # the next connection: the connection is gone and we may be cancelled here,
        # so there is no waiting for a full consumer now.
        self._carry.extend(guard.reset_all(_monotonic_ns(), wall_ns=self._wall()))
        g = guard.statistics()
        gaps, dups, late = self._guard_totals
        self._guard_totals = (gaps + g.gaps, dups + g.duplicates, late + g.late)
        self._guard = None

    @property
    def last_event_wall(self) -> int | None:
        """Wall-clock ns of the last event received (start of an outage window)."""
        return self._last_event_wall


async def _answered(
    answer: Callable[[], Awaitable[object]], transport: Transport, deadline: HeartbeatDeadline
) -> bool:
    """Wait for ``answer()`` (a heartbeat's reply); False once ``deadline`` expired: its
    timeout passed with no frame arriving. Raises what ``answer`` raises (ConnectionLost)."""
    done = trio.Event()
    error: list[Exception] = []

    async def wait() -> None:
        try:
            await answer()
        except Exception as exc:
            error.append(exc)
        done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait)
        while not done.is_set():
            with trio.move_on_at(deadline.deadline):
                await done.wait()
            if not done.is_set() and deadline.expired(
                trio.current_time(), transport.frames_received
            ):
                nursery.cancel_scope.cancel()
                return False
    if error:
        raise error[0]
    return True


def _monotonic_ns() -> int:
    """trio's clock in integer ns: the guard's deadline clock."""
    return int(trio.current_time() * 1e9)


def _describe(topics: Mapping[str, object]) -> str:
    parts = []
    for channel, symbols in topics.items():
        names = sorted(symbols)  # type: ignore[call-overload]
        shown = ",".join(names[:5]) + (f",+{len(names) - 5}" if len(names) > 5 else "")
        parts.append(f"{channel}[{shown}]")
    return " ".join(parts)
