"""Sequence-gap detection: duplicates, reordering and holes in per-stream sequence numbers.

This module owns :class:`SequenceGuard`, a sans-IO state machine that sits
between a provider protocol and the fan-out. Events go in with a stream key and
the current time; events come out in sequence order, with a
:class:`~puffin_trio.events.Gap` exactly where something is missing.

It must not do I/O, read a clock, log, sleep or know about any provider: the
session passes the time in and calls :meth:`SequenceGuard.poll` from a timer
(sleeping until :meth:`SequenceGuard.next_deadline_ns`). Every method returns
at once; none blocks, none is a checkpoint.

Clocks: every method takes ``now_ns``, integer nanoseconds from a
**monotonic** clock (e.g. ``int(trio.current_time() * 1e9)``), for the
deadlines, and ``wall_ns``, nanoseconds since the epoch from the **wall
clock**, stamped as ``ts_recv`` on the ``Gap`` events it makes (it defaults
to ``now_ns`` for callers with one clock). A wall clock stepping (NTP) must
never move a deadline: that is why the two are separate.

How each mode treats duplicates, late messages and holes, the accounting the
tests assert, and the memory bounds are in ``docs/guide/gaps.rst``.
"""

from __future__ import annotations

import heapq
from array import array
from collections import deque
from collections.abc import MutableSequence, Sequence
from typing import Final, Generic, Literal, Protocol, TypeVar, cast

import attrs

from puffin_trio.errors import ConfigurationError
from puffin_trio.events import Gap, GapReason

__all__ = [
    "DEFAULT_MAX_DELAY_NS",
    "DEFAULT_MAX_LATE_RUN",
    "DEFAULT_WINDOW",
    "GuardMode",
    "GuardStream",
    "SequenceGuard",
    "SequenceGuardStatistics",
    "Sequenced",
]

#: How many out-of-order messages a key may buffer before the guard gives up
#: on the hole holding them back. Over one TCP connection, reordering can only
#: come from the provider's own fan-in of feed handlers, which displaces a
#: message by a handful of places; 64 leaves an order of magnitude of room
#: while keeping the worst case per key at 64 events (about 15 KiB). It is the
#: same order as Linux TCP's own reordering tolerance (``tcp_reordering``
#: starts at 3 and adapts up to ``tcp_max_reordering`` = 300 segments).
DEFAULT_WINDOW: Final = 64

#: How long (ns) a buffered message may wait for a missing predecessor. A hole
#: holds back everything behind it on its key, so this is the most latency one
#: lost message can add. 100 ms is well above the jitter between a provider's
#: feed handlers (single-digit ms), so a message that is merely late still
#: makes it, and well below the 1 s granularity of bars and the staleness
#: deadlines, so a lost message never delays a bar close or looks like a stall.
DEFAULT_MAX_DELAY_NS: Final = 100_000_000

#: How many messages in a row a key may drop as late (nothing delivered in
#: between) before the guard stops trusting its anchor: the message that makes
#: the run this long is not dropped, the key is re-anchored at it (a ``Gap``
#: announces the run) and delivery goes on from there. Such a run cannot come
#: from reordering: with messages displaced by at most ``d`` places, a run of
#: late ones is shorter than ``2 d``, and the guard is built for the handful of
#: places a provider's fan-in displaces a message. It comes from an anchor that
#: is wrong: one corrupt, absurd sequence number (Polygon's ``q = 2**62``)
#: that would otherwise make every later message of the key late, or a
#: provider that restarted its numbering. 64, one reorder window, bounds what
#: such a number costs to 63 messages, a fraction of a second of a busy symbol.
DEFAULT_MAX_LATE_RUN: Final = 64

GuardMode = Literal["strict", "monotonic", "none"]
_MODES: Final = ("strict", "monotonic", "none")


class Sequenced(Protocol):
    """What the guard reads from an event: every :mod:`puffin_trio.events` class fits."""

    @property
    def seq(self) -> int | None: ...

    @property
    def provider(self) -> str: ...

    @property
    def symbol(self) -> str: ...

    @property
    def ts_event(self) -> int: ...


E = TypeVar("E", bound=Sequenced)


@attrs.frozen(kw_only=True)
class SequenceGuardStatistics:
    """Counters of a :class:`SequenceGuard`, since it was made.

    * ``delivered``: input events released to the output (including those
      with ``seq=None`` and everything in ``"none"`` mode).
    * ``duplicates``: dropped because the number was already delivered or
      buffered.
    * ``late``: dropped because the number could no longer be delivered in
      order (see ``docs/guide/gaps.rst``).
    * ``gaps``: ``Gap`` events emitted; ``missing``: the sum of their
      ``missing`` counts.
    * ``buffered``: messages waiting in reorder buffers now.
    * ``keys``: stream keys with state now.
    """

    delivered: int
    duplicates: int
    late: int
    gaps: int
    missing: int
    buffered: int
    keys: int


class _LateRun:
    """A key's current run of messages dropped as late (see :data:`DEFAULT_MAX_LATE_RUN`)."""

    __slots__ = ("first", "length", "mark")

    def __init__(self) -> None:
        #: The key's anchor (strict: ``expected``; monotonic: the watermark) when
        #: the run began. Every delivery moves the anchor, so a run continues
        #: exactly while the anchor has not moved: no per-delivery bookkeeping.
        self.mark: int | None = None
        #: Messages in the run, and the number of its first one.
        self.length = 0
        self.first = 0

    def extend(self, anchor: int, seq: int) -> int:
        """Count one more late message at ``anchor``; the run's length now."""
        if self.mark == anchor:
            self.length += 1
        else:
            self.mark, self.length, self.first = anchor, 1, seq
        return self.length


class GuardStream:
    """One stream key of a :class:`SequenceGuard`: the handle :meth:`SequenceGuard.stream`
    returns, to feed with :meth:`SequenceGuard.feed_streams`.

    Opaque but for ``key``. A key has one handle for its guard's life:
    :meth:`~SequenceGuard.stream` returns the same object each time, and
    :meth:`~SequenceGuard.reset` empties the key's state in place, so a handle
    a caller keeps stays the key's. A handle belongs to the guard that made it:
    another guard refuses it.
    """

    __slots__ = ("_owner", "key")

    def __init__(self, key: str, owner: object) -> None:
        #: The stream key.
        self.key = key
        #: The token of the guard that made it.
        self._owner = owner


class _StrictStream(GuardStream, Generic[E]):
    """One key's state in strict mode; not started until its first numbered message."""

    __slots__ = (
        "expected",
        "holes",
        "horizon",
        "late",
        "order",
        "overtaken",
        "pending",
        "started",
    )

    def __init__(self, key: str, owner: object, window: int) -> None:
        super().__init__(key, owner)
        #: Whether a numbered message was taken since the handle was made or reset.
        self.started = False
        #: The next number to deliver (once started).
        self.expected = 0
        #: Below this, a number is not known to have been delivered: the start,
        #: raised to the end of each hole that falls out of ``holes``.
        self.horizon = 0
        #: Buffered messages by number, as (arrival ns, ``expected`` then, event),
        #: in arrival order.
        self.pending: dict[int, tuple[int, int, E]] = {}
        #: The buffered numbers as a heap, for the lowest one.
        self.order: list[int] = []
        #: The last ``window`` holes reported, as [first, end) ranges, ascending.
        self.holes: deque[tuple[int, int]] = deque(maxlen=window)
        self.late = _LateRun()
        #: The number of the oldest buffered message once a message numbered below
        #: it has arrived after it (the stream goes on below it), else ``None``.
        #: A buffered message stays the oldest until it leaves the buffer, so the
        #: mark holds exactly while that message is buffered.
        self.overtaken: int | None = None

    def start(self, seq: int) -> None:
        """Start (again) at ``seq``, delivered, with nothing known before it.

        Nothing may be buffered (a re-anchor flushes first).
        """
        self.started = True
        self.expected = seq + 1
        self.horizon = seq
        self.holes.clear()
        self.late = _LateRun()
        self.overtaken = None

    def was_delivered(self, seq: int) -> bool:
        """Whether ``seq`` (below ``expected``) is known to have been delivered."""
        if seq < self.horizon:
            return False
        for first, end in reversed(self.holes):
            if seq >= end:
                return True
            if seq >= first:
                return False
        return True


class _MonotonicStream(GuardStream):
    """One key's state in monotonic mode: its last ``window`` delivered numbers.

    ``ring`` holds them (``None`` until the key's first numbered message), the
    next to be overwritten at ``pos``, so ``ring[pos - 1]`` is the watermark
    (the highest delivered). It starts as ``window`` copies of the first
    number: as a set, exactly the numbers delivered so far. The numbers are
    machine integers in an ``array`` (8 bytes each, no object per number, so a
    delivery frees nothing and touches one small block); a number beyond a
    64-bit integer turns the key's ring into a list. With 10,000 symbols, the
    per-key memory a message touches is what makes it dearer.
    """

    __slots__ = ("late", "pos", "ring")

    def __init__(self, key: str, owner: object) -> None:
        super().__init__(key, owner)
        self.ring: MutableSequence[int] | None = None
        self.pos = 0
        #: The current run of messages dropped as late, once there was one.
        self.late: _LateRun | None = None

    def start(self, seq: int, window: int) -> None:
        """Start (again) at ``seq``, delivered, with nothing known before it."""
        try:
            self.ring = array("q", (seq,)) * window
        except OverflowError:
            self.ring = [seq] * window
        self.pos = 0
        self.late = None

    def record(self, ring: MutableSequence[int], seq: int, window: int) -> None:
        """Remember ``seq`` (above the watermark) as delivered; ``ring`` is ``self.ring``."""
        pos = self.pos
        try:
            ring[pos] = seq
        except OverflowError:  # beyond 64 bits: this key's numbers are kept as ints from now on
            ring = self.ring = list(ring)
            ring[pos] = seq
        pos += 1
        self.pos = 0 if pos == window else pos


class SequenceGuard(Generic[E]):
    """Per-key duplicate, reorder and gap detection (sans-IO; see ``docs/guide/gaps.rst``).

    ``mode`` is ``"strict"``, ``"monotonic"`` or ``"none"``. ``window`` (> 0)
    bounds each key's reorder buffer in messages, and is also how many holes
    (strict) or delivered numbers (monotonic) a key remembers. ``max_delay_ns``
    (> 0) bounds how long a buffered message waits for a missing predecessor.
    ``max_late_run`` (> 0) is how many messages in a row a key may drop as late
    before the guard re-anchors it (see :data:`DEFAULT_MAX_LATE_RUN`).
    Raises :class:`~puffin_trio.errors.ConfigurationError` for anything else.

    ``now_ns`` must not go backwards between calls (a monotonic clock);
    ``wall_ns`` only stamps the ``Gap`` events (see the module docstring).
    """

    __slots__ = (
        "_delivered",
        "_duplicates",
        "_gaps",
        "_keys",
        "_late",
        "_missing",
        "_mode",
        "_monotonic",
        "_strict",
        "_token",
        "_waiting",
        "max_delay_ns",
        "max_late_run",
        "window",
    )

    def __init__(
        self,
        mode: GuardMode = "strict",
        *,
        window: int = DEFAULT_WINDOW,
        max_delay_ns: int = DEFAULT_MAX_DELAY_NS,
        max_late_run: int = DEFAULT_MAX_LATE_RUN,
    ) -> None:
        if mode not in _MODES:
            raise ConfigurationError(
                f"unknown sequence guard mode {mode!r}: use 'strict' (contiguous sequence "
                "numbers), 'monotonic' (increasing with skips, like Polygon's q) or 'none'"
            )
        _check_positive_int("window", window, "messages")
        _check_positive_int("max_delay_ns", max_delay_ns, "nanoseconds")
        _check_positive_int("max_late_run", max_late_run, "messages")
        self._mode: GuardMode = mode
        self.window: Final = window
        self.max_delay_ns: Final = max_delay_ns
        self.max_late_run: Final = max_late_run
        #: Every key's handle, by mode (the other dict stays empty). A handle is
        #: the key's state: the caller that keeps it (the session's reader, per
        #: symbol) reaches the state without a lookup in these dicts; with 10,000
        #: symbols, each lookup is a cache miss that makes a message dearer.
        self._strict: dict[str, _StrictStream[E]] = {}
        self._monotonic: dict[str, _MonotonicStream] = {}
        #: Strict keys with something buffered (what ``poll`` has to look at).
        self._waiting: dict[str, _StrictStream[E]] = {}
        #: Keys started (a numbered message taken since the handle was made or reset).
        self._keys = 0
        #: What this guard's handles carry as their owner (not the guard: no cycle).
        self._token = object()
        self._delivered = 0
        self._duplicates = 0
        self._late = 0
        self._gaps = 0
        self._missing = 0

    @property
    def mode(self) -> GuardMode:
        """The mode this guard was made with."""
        return self._mode

    def stream(self, key: str) -> GuardStream:
        """The handle of stream ``key``, for :meth:`feed_streams` (see :class:`GuardStream`).

        Made on the first call for ``key``, the same object afterwards. Taking a
        handle starts nothing: the key's first numbered message is its start, as
        with :meth:`feed`. In ``"none"`` mode there is no per-key state and each
        call makes a new handle.
        """
        if self._mode == "monotonic":
            return self._monotonic_stream(key)
        if self._mode == "strict":
            return self._strict_stream(key)
        return GuardStream(key, self._token)

    def _monotonic_stream(self, key: str) -> _MonotonicStream:
        monotonic = self._monotonic.get(key)
        if monotonic is None:
            monotonic = self._monotonic[key] = _MonotonicStream(key, self._token)
        return monotonic

    def _strict_stream(self, key: str) -> _StrictStream[E]:
        strict = self._strict.get(key)
        if strict is None:
            strict = self._strict[key] = _StrictStream(key, self._token, self.window)
        return strict

    def feed(
        self,
        key: str,
        event: E,
        now_ns: int,
        out: list[E | Gap] | None = None,
        wall_ns: int | None = None,
    ) -> list[E | Gap]:
        """Take one event of stream ``key`` received at ``now_ns``; append what it releases.

        Appends to ``out`` (a new list when ``None``) whatever can now be
        delivered, in sequence order, with a ``Gap`` (``ts_recv=wall_ns``)
        before the first event after a hole; returns ``out``. Appends nothing
        when the event is buffered or dropped. Also releases this key's
        messages whose time is up.
        """
        if out is None:
            out = []
        seq = event.seq
        if seq is None or self._mode == "none":
            self._delivered += 1
            out.append(event)
            return out
        if self._mode == "monotonic":
            monotonic = self._monotonic.get(key) or self._monotonic_stream(key)
            wall = now_ns if wall_ns is None else wall_ns
            self._take_monotonic(monotonic, seq, event, out, wall)
            return out
        strict = self._strict.get(key) or self._strict_stream(key)
        if seq == strict.expected and strict.started and not strict.pending:
            strict.expected = seq + 1
            self._delivered += 1
            out.append(event)
        else:
            wall = now_ns if wall_ns is None else wall_ns
            self._feed_strict(strict, seq, event, now_ns, out, wall)
        return out

    def feed_many(
        self,
        keys: Sequence[str],
        events: Sequence[E],
        now_ns: int,
        out: list[E | Gap] | None = None,
        wall_ns: int | None = None,
    ) -> list[E | Gap]:
        """:meth:`feed` each event of ``events`` with the key at the same index of ``keys``.

        Exactly what that loop of :meth:`feed` calls would do (the same output,
        counters and state): :meth:`feed_streams` with each key's handle.
        Raises ``ValueError`` if the two lengths differ (and then takes nothing).
        """
        if len(keys) != len(events):
            raise ValueError(f"{len(keys)} keys for {len(events)} events")
        if out is None:
            out = []
        if self._mode == "none":
            self._delivered += len(events)
            out.extend(events)
            return out
        stream = self.stream
        return self.feed_streams([stream(key) for key in keys], events, now_ns, out, wall_ns)

    def feed_streams(
        self,
        streams: Sequence[GuardStream],
        events: Sequence[E],
        now_ns: int,
        out: list[E | Gap] | None = None,
        wall_ns: int | None = None,
    ) -> list[E | Gap]:
        """:meth:`feed` each event of ``events`` to the stream at the same index of ``streams``.

        ``streams`` are this guard's handles (:meth:`stream`). Exactly what
        :meth:`feed` with each handle's key in turn would do (the same output,
        counters and state), for a whole frame's events at once: the session's
        reader calls it once per frame, with the handles it keeps per symbol. An
        event that simply follows its key's last one in order (the bulk of a
        live feed) is delivered here, with no lookup by key and the per-call
        costs (the call, the mode tests, the attribute loads) paid once per
        batch; anything else takes :meth:`feed`'s path. Raises ``ValueError``
        if the two lengths differ (and then takes nothing), or at a handle
        another guard made (the events before it are taken; in ``"none"`` mode,
        where handles carry nothing, none is refused).
        """
        if len(streams) != len(events):
            raise ValueError(f"{len(streams)} streams for {len(events)} events")
        if out is None:
            out = []
        append = out.append
        take = self._take
        token = self._token
        delivered = 0
        if self._mode == "monotonic":
            window = self.window
            monotonic = cast("Sequence[_MonotonicStream]", streams)
            for stream, event in zip(monotonic, events, strict=True):
                seq = event.seq
                ring = stream.ring
                if seq is not None and ring is not None and stream._owner is token:
                    pos = stream.pos
                    if seq > ring[pos - 1]:
                        try:
                            ring[pos] = seq
                        except OverflowError:  # beyond 64 bits: record() converts the ring
                            take(stream, event, now_ns, out, wall_ns)
                            continue
                        pos += 1
                        stream.pos = 0 if pos == window else pos
                        delivered += 1
                        append(event)
                        continue
                take(stream, event, now_ns, out, wall_ns)
        elif self._mode == "strict":
            strict = cast("Sequence[_StrictStream[E]]", streams)
            for handle, event in zip(strict, events, strict=True):
                seq = event.seq
                # seq None never equals ``expected``: take() delivers it.
                if (
                    seq == handle.expected
                    and handle.started
                    and not handle.pending
                    and handle._owner is token
                ):
                    handle.expected = seq + 1
                    delivered += 1
                    append(event)
                else:
                    take(handle, event, now_ns, out, wall_ns)
        else:
            out.extend(events)
            delivered = len(events)
        self._delivered += delivered
        return out

    def poll(
        self, now_ns: int, out: list[E | Gap] | None = None, wall_ns: int | None = None
    ) -> list[E | Gap]:
        """Release whatever has waited ``max_delay_ns`` or more, declaring holes below it missing.

        Appends to ``out`` (a new list when ``None``), in sequence order per key.
        Costs one dictionary check when nothing is buffered.
        """
        if out is None:
            out = []
        if self._waiting:
            wall = now_ns if wall_ns is None else wall_ns
            for stream in list(self._waiting.values()):
                self._expire(stream, now_ns, out, wall)
        return out

    def next_deadline_ns(self) -> int | None:
        """The earliest ``now_ns`` at which :meth:`poll` would release something, or ``None``.

        The session can sleep until then instead of polling on a fixed period.
        """
        if not self._waiting:
            return None
        return self.max_delay_ns + min(
            next(iter(stream.pending.values()))[0] for stream in self._waiting.values()
        )

    def reset(
        self, key: str, now_ns: int, out: list[E | Gap] | None = None, wall_ns: int | None = None
    ) -> list[E | Gap]:
        """Forget ``key`` (after a reconnect or an unsubscribe); return ``out``.

        Buffered messages are flushed first, in order, with a ``Gap`` for each
        hole among them, so nothing is lost silently. The next number seen on
        ``key`` is a new start. An unknown key is a no-op. The key's handle
        (:meth:`stream`) stays its handle, empty.
        """
        if out is None:
            out = []
        wall = now_ns if wall_ns is None else wall_ns
        strict = self._strict.get(key)
        if strict is not None:
            self._forget_strict(strict, wall, out)
        monotonic = self._monotonic.get(key)
        if monotonic is not None:
            self._forget_monotonic(monotonic)
        return out

    def reset_all(
        self, now_ns: int, out: list[E | Gap] | None = None, wall_ns: int | None = None
    ) -> list[E | Gap]:
        """:meth:`reset` every key; return ``out``."""
        if out is None:
            out = []
        wall = now_ns if wall_ns is None else wall_ns
        for strict in self._strict.values():
            self._forget_strict(strict, wall, out)
        for monotonic in self._monotonic.values():
            self._forget_monotonic(monotonic)
        return out

    def statistics(self) -> SequenceGuardStatistics:
        """A snapshot of the counters (see :class:`SequenceGuardStatistics`)."""
        return SequenceGuardStatistics(
            delivered=self._delivered,
            duplicates=self._duplicates,
            late=self._late,
            gaps=self._gaps,
            missing=self._missing,
            buffered=sum(len(stream.pending) for stream in self._waiting.values()),
            keys=self._keys,
        )

    def _forget_strict(self, stream: _StrictStream[E], wall_ns: int, out: list[E | Gap]) -> None:
        """Flush a strict key and empty its handle."""
        if stream.started:
            self._flush(stream, wall_ns, out)
            stream.started = False
            stream.holes.clear()
            self._keys -= 1

    def _forget_monotonic(self, stream: _MonotonicStream) -> None:
        """Empty a monotonic key's handle."""
        if stream.ring is not None:
            stream.ring = None
            stream.late = None
            self._keys -= 1

    def _take(
        self,
        stream: GuardStream,
        event: E,
        now_ns: int,
        out: list[E | Gap],
        wall_ns: int | None,
    ) -> None:
        """:meth:`feed_streams`' path for an event its in-order test did not take (a strict
        or monotonic guard); refuses another guard's handle."""
        if stream._owner is not self._token:
            raise ValueError(f"the stream handle of {stream.key!r} belongs to another guard")
        seq = event.seq
        if seq is None:
            self._delivered += 1
            out.append(event)
            return
        wall = now_ns if wall_ns is None else wall_ns
        if self._mode == "monotonic":
            self._take_monotonic(cast("_MonotonicStream", stream), seq, event, out, wall)
            return
        self._feed_strict(cast("_StrictStream[E]", stream), seq, event, now_ns, out, wall)

    def _take_monotonic(
        self, stream: _MonotonicStream, seq: int, event: E, out: list[E | Gap], wall_ns: int
    ) -> None:
        """The monotonic mode: deliver above the watermark, else drop as a duplicate or late."""
        ring = stream.ring
        if ring is None:
            stream.start(seq, self.window)
            self._keys += 1
        elif seq > ring[stream.pos - 1]:
            stream.record(ring, seq, self.window)
        elif seq in ring:
            self._duplicates += 1
            return
        else:
            run = stream.late
            if run is None:
                run = stream.late = _LateRun()
            if run.extend(ring[stream.pos - 1], seq) < self.max_late_run:
                self._late += 1
                return
            self._announce_reanchor(stream.key, run, seq, event, out, wall_ns)
            stream.start(seq, self.window)
        self._delivered += 1
        out.append(event)

    def _feed_strict(
        self,
        stream: _StrictStream[E],
        seq: int,
        event: E,
        now_ns: int,
        out: list[E | Gap],
        wall_ns: int,
    ) -> None:
        """The strict mode's slow path: a first message, a duplicate, a late one or a hole."""
        if not stream.started:
            stream.start(seq)
            self._keys += 1
            self._delivered += 1
            out.append(event)
            return
        pending = stream.pending
        if seq < stream.expected:
            if stream.was_delivered(seq):
                self._duplicates += 1
            elif stream.late.extend(stream.expected, seq) < self.max_late_run:
                self._late += 1
            else:
                self._reanchor(stream, seq, event, out, wall_ns)
                return
        elif seq in pending:
            self._duplicates += 1
        else:
            if pending:
                oldest = next(iter(pending))
                if seq < oldest:  # the stream goes on below the oldest buffered message
                    stream.overtaken = oldest
            if seq == stream.expected:
                stream.expected = seq + 1
                self._delivered += 1
                out.append(event)
                self._release_run(stream, out)
            else:
                self._buffer(stream, seq, event, now_ns, out, wall_ns)
        self._expire(stream, now_ns, out, wall_ns)

    def _buffer(
        self,
        stream: _StrictStream[E],
        seq: int,
        event: E,
        now_ns: int,
        out: list[E | Gap],
        wall_ns: int,
    ) -> None:
        """Keep a message that arrived ahead of a hole; give up the hole if the buffer is full."""
        pending = stream.pending
        if not pending:
            self._waiting[stream.key] = stream
        pending[seq] = (now_ns, stream.expected, event)
        heapq.heappush(stream.order, seq)
        if len(pending) > self.window:
            self._give_up(stream, wall_ns, out)

    def _expire(
        self, stream: _StrictStream[E], now_ns: int, out: list[E | Gap], wall_ns: int
    ) -> None:
        """Give up on holes until the oldest buffered message has waited less than the bound.

        An outlier is dropped (counted late) instead of having the hole below it
        given up: the lowest buffered message, when it arrived more than two
        windows ahead of the key and the key's messages have kept arriving below
        it since. That is no reordering the guard is built for (a message's lead
        is its displacement, up to a window, plus what was lost below it, and
        what is below it is arriving), and giving up the hole would make the
        live stream below it late: one corrupt, absurd number would silence the
        key. If it was a real message, its number becomes a hole when the
        stream gets there, and that hole is announced.
        """
        pending = stream.pending
        while pending and now_ns - next(iter(pending.values()))[0] >= self.max_delay_ns:
            lowest = stream.order[0]
            if stream.overtaken == lowest and lowest - pending[lowest][1] > 2 * self.window:
                heapq.heappop(stream.order)
                del pending[lowest]
                stream.overtaken = None
                self._late += 1
                if not pending:
                    self._waiting.pop(stream.key, None)
            else:
                self._give_up(stream, wall_ns, out)

    def _reanchor(
        self,
        stream: _StrictStream[E],
        seq: int,
        event: E,
        out: list[E | Gap],
        wall_ns: int,
    ) -> None:
        """Start ``stream`` afresh at ``event`` (number ``seq``, the last of a run of late
        messages) as :meth:`reset` would, announcing the run."""
        self._flush(stream, wall_ns, out)
        self._announce_reanchor(stream.key, stream.late, seq, event, out, wall_ns)
        stream.start(seq)
        self._delivered += 1
        out.append(event)

    def _announce_reanchor(
        self, key: str, run: _LateRun, seq: int, event: E, out: list[E | Gap], wall_ns: int
    ) -> None:
        """The ``Gap`` before a re-anchored key's new start (``seq``): the run was dropped."""
        self._sequence_gap(key, event, run.first, seq, run.length - 1, wall_ns, out)

    def _sequence_gap(
        self,
        key: str,
        event: E,
        expected: int,
        received: int,
        missing: int,
        wall_ns: int,
        out: list[E | Gap],
    ) -> None:
        """Announce and count ``missing`` events of ``key`` between ``expected`` and
        ``received`` (``event`` is the one that follows them), stamped ``wall_ns``."""
        out.append(
            Gap(
                provider=event.provider,
                symbol=event.symbol,
                ts_event=event.ts_event,
                ts_recv=wall_ns,
                stream=key,
                reason=GapReason.SEQUENCE,
                expected=expected,
                received=received,
                missing=missing,
            )
        )
        self._gaps += 1
        self._missing += missing

    def _flush(self, stream: _StrictStream[E], wall_ns: int, out: list[E | Gap]) -> None:
        """Give up on every hole of ``stream``, releasing all it buffers."""
        while stream.pending:
            self._give_up(stream, wall_ns, out)

    def _give_up(self, stream: _StrictStream[E], wall_ns: int, out: list[E | Gap]) -> None:
        """Declare the lowest hole missing: a ``Gap`` stamped ``wall_ns``, then what follows."""
        received = stream.order[0]
        event = stream.pending[received][2]
        expected = stream.expected
        self._sequence_gap(
            stream.key, event, expected, received, received - expected, wall_ns, out
        )
        holes = stream.holes
        if len(holes) == holes.maxlen:
            stream.horizon = holes[0][1]
        holes.append((expected, received))
        stream.expected = received
        self._release_run(stream, out)

    def _release_run(self, stream: _StrictStream[E], out: list[E | Gap]) -> None:
        """Deliver the buffered messages that now follow on without a hole."""
        pending = stream.pending
        order = stream.order
        expected = stream.expected
        while order and order[0] == expected:
            heapq.heappop(order)
            out.append(pending.pop(expected)[2])
            self._delivered += 1
            expected += 1
        stream.expected = expected
        if not pending:
            self._waiting.pop(stream.key, None)


def _check_positive_int(name: str, value: object, unit: str) -> None:
    """Raise ``ConfigurationError`` unless ``value`` is a positive ``int`` (not a ``bool``)."""
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigurationError(
            f"SequenceGuard {name} must be a positive whole number of {unit}, got {value!r}"
        )
