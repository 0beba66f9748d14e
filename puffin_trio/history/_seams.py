"""Where a backfill meets the live stream: edges, windows, the held trades and the accounting.

This module owns the sans-IO bookkeeping of a backfill (``docs/guide/backfill.rst``):

* :class:`TradeEdges`: the last live trades of every symbol (the start edge
  of the next reconnect's window), kept for the whole session.
* :class:`Reconciler`: one reconnect's backfill. It holds the live trades of
  the symbols being backfilled, decides for every recovered trade whether it
  belongs to the window and was not already received (:meth:`Reconciler.accept`,
  by the provider's :class:`~puffin_trio.providers._history.SeamRule`), drops
  live trades that the backfill already delivered, and builds the ``Gap``
  that closes each symbol's backfill with what was and was not recovered.

It must not do I/O, read a clock (times are passed in) or publish: the
session glue (:mod:`puffin_trio.history._backfill`) does.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import Counter, deque
from collections.abc import Collection, Hashable, Iterable

import attrs

from puffin_trio.events import Gap, GapReason, Trade
from puffin_trio.providers._history import SeamRule

__all__ = [
    "MAX_EDGE",
    "MAX_TAIL",
    "QUIET_SLACK",
    "SKEW_SLACK",
    "Reconciler",
    "SymbolWindow",
    "TradeEdges",
    "Window",
]

#: Live trades remembered per symbol at its latest timestamp: more than one
#: stamp ever carries on a real feed (a sweep prints a few dozen trades in one
#: nanosecond; IB's one-second stamps a few hundred on a busy stock). Beyond
#: it the oldest stay and the rest are not remembered; a recovered trade among
#: those could then be delivered twice.
MAX_EDGE = 1024
#: Recovered trades remembered per symbol to recognise them if they also
#: arrive live (those stamped after the new connection opened, see
#: :data:`SKEW_SLACK`; the last ones delivered, for keys that are not
#: unique): a few seconds of a busy symbol.
MAX_TAIL = 10_000
#: How far the provider's clock may be behind ours (seconds, in ns): a
#: recovered trade stamped later than "our reconnect time minus this" may
#: also come live. NTP keeps real clocks within milliseconds; 5 s covers a
#: badly set one.
SKEW_SLACK = 5_000_000_000
#: A symbol whose last live trade is older than this (ns) before the
#: session's last received trade is treated as quiet: its window starts
#: this long before that instead of at its own last trade, since any trade it
#: printed while we were connected would have reached us. It keeps one quiet
#: symbol from widening a multi-symbol request to hours of its neighbours.
QUIET_SLACK = 60_000_000_000


class _Edge:
    __slots__ = ("max_key", "trades", "ts")

    def __init__(self, trade: Trade, key: Hashable) -> None:
        self.ts = trade.ts_event
        self.trades: list[Trade] = [trade]
        self.max_key = key


class TradeEdges:
    """The last live trades of each symbol, for the start of a reconnect's window.

    ``observe`` every live trade (not a recovered one). For a symbol it keeps
    the trades with the latest timestamp seen (the start edge) and, for an
    ordered seam, the largest key. A trade stamped earlier than the edge
    (a late report) changes nothing: the window starts at the latest one.
    """

    def __init__(self, seam: SeamRule) -> None:
        self.seam = seam
        self._edges: dict[str, _Edge] = {}
        #: Provider time of the latest live trade of any symbol (None: none yet).
        self.latest_ns: int | None = None

    def observe(self, trade: Trade) -> None:
        """Remember a live trade. Not a checkpoint; no allocation unless the timestamp moved
        on for a new symbol."""
        edge = self._edges.get(trade.symbol)
        ts = trade.ts_event
        if edge is None:
            self._edges[trade.symbol] = _Edge(trade, self.seam.key(trade))
        elif ts > edge.ts:
            edge.ts = ts
            edge.trades.clear()
            edge.trades.append(trade)
        elif ts == edge.ts and len(edge.trades) < MAX_EDGE:
            edge.trades.append(trade)
        if edge is not None and self.seam.ordered:
            key = self.seam.key(trade)
            if key is not None and (edge.max_key is None or key > edge.max_key):  # type: ignore[operator]
                edge.max_key = key
        if self.latest_ns is None or ts > self.latest_ns:
            self.latest_ns = ts

    def edge(self, symbol: str) -> tuple[int, list[Trade], Hashable] | None:
        """(timestamp, the trades at it, the largest key) of ``symbol``'s last live trades."""
        edge = self._edges.get(symbol)
        return None if edge is None else (edge.ts, edge.trades, edge.max_key)


@attrs.frozen
class Window:
    """One symbol's window: from ``start_ns`` (its last live trade, inclusive) on."""

    symbol: str
    start_ns: int


class SymbolWindow:
    """The state of one symbol during a backfill (see :class:`Reconciler`)."""

    __slots__ = (
        "answered_ns",
        "closed",
        "complete",
        "delivered",
        "edge_ts",
        "end_ns",
        "held",
        "held_sent",
        "last_key",
        "max_live_key",
        "recent",
        "released",
        "sent_ns",
        "skip_start",
        "start_ns",
        "symbol",
        "tail",
        "tail_max_ts",
    )

    def __init__(self, symbol: str, start_ns: int) -> None:
        self.symbol = symbol
        self.start_ns = start_ns
        self.edge_ts: int | None = None
        self.skip_start: Counter[Hashable] = Counter()
        #: Ordered seams: the largest key received live before the drop.
        self.max_live_key: Hashable = None
        self.held: list[Trade] = []
        self.held_sent = 0
        self.delivered = 0
        #: Ordered seams: the largest key delivered by the backfill.
        self.last_key: Hashable = None
        self.tail: Counter[Hashable] = Counter()
        self.tail_max_ts: int | None = None
        #: Keys that are not unique: the last trades delivered, and when the request of
        #: the last page was sent and answered (our wall clock, ns).
        self.recent: deque[Trade] = deque(maxlen=MAX_TAIL)
        self.sent_ns: int | None = None
        self.answered_ns: int | None = None
        self.end_ns: int | None = None
        self.closed = False
        #: Closed with the whole window recovered.
        self.complete = False
        self.released = False


class Reconciler:
    """One reconnect's backfill of ``symbols``, sans-IO.

    * ``edges``: the session's :class:`TradeEdges` (start edges).
    * ``fallback_start_ns``: where the window of a symbol with no live trade
      yet starts (the session's last received trade, or the outage start).
    * ``opened_ns``: our wall clock when the new connection opened (live
      trades cannot predate it by more than :data:`SKEW_SLACK`).

    Life of a symbol: held (its live trades wait in :meth:`hold`), recovered
    pages go through :meth:`accept`, :meth:`close` makes its ``Gap``, its held
    trades go out through :meth:`next_held` (dropping those recovered
    already), and :meth:`release` lets its live trades flow again, still
    checked against the recovered tail by :meth:`is_live_duplicate`.
    """

    def __init__(
        self,
        symbols: Collection[str],
        *,
        edges: TradeEdges,
        fallback_start_ns: int,
        opened_ns: int,
        provider: str,
        stream: str,
    ) -> None:
        self.seam = edges.seam
        self.provider = provider
        self.stream = stream
        self._tail_from = opened_ns - SKEW_SLACK
        self.windows: dict[str, SymbolWindow] = {}
        quiet_floor = None if edges.latest_ns is None else edges.latest_ns - QUIET_SLACK
        for symbol in sorted(symbols):
            edge = edges.edge(symbol)
            if edge is None:
                state = SymbolWindow(symbol, fallback_start_ns)
            else:
                ts, trades, max_key = edge
                start = ts if quiet_floor is None else max(ts, quiet_floor)
                state = SymbolWindow(symbol, start)
                if start == ts:
                    state.edge_ts = ts
                    state.skip_start.update(self.seam.key(t) for t in trades)
                state.max_live_key = max_key
            self.windows[symbol] = state
        #: Live trades held now, over every symbol.
        self.held_total = 0
        #: Symbols not released yet, and released ones whose recovered tail may still
        #: come live (see :meth:`settled`).
        self._open = len(self.windows)
        self._tails = 0
        #: Recovered trades dropped because they were received live, and live trades
        #: dropped because they were recovered.
        self.duplicates = 0
        #: Recovered trades outside their symbol's window (before it, or after its
        #: first live trade): dropped, not counted as duplicates.
        self.outside = 0

    # -- windows -------------------------------------------------------------

    def settled(self) -> bool:
        """Every symbol is released and no recovered trade can still come live: the
        backfill no longer needs to see the live trades."""
        return self._open == 0 and self._tails == 0

    def _set_tail(self, state: SymbolWindow, ts: int | None) -> None:
        if (state.tail_max_ts is None) != (ts is None):
            self._tails += 1 if ts is not None else -1
        state.tail_max_ts = ts

    def pending(self) -> list[str]:
        """Symbols whose backfill is not closed yet, in order."""
        return [s for s, w in self.windows.items() if not w.closed]

    def windows_from(self) -> list[Window]:
        """Each symbol's window start, for the requests."""
        return [Window(w.symbol, w.start_ns) for w in self.windows.values()]

    # -- the live side -------------------------------------------------------

    def holds(self, symbol: str) -> bool:
        """Whether live trades of ``symbol`` must wait now."""
        state = self.windows.get(symbol)
        return state is not None and not state.released

    def hold(self, trade: Trade) -> None:
        """Keep a live trade of a held symbol until its backfill is out."""
        self.windows[trade.symbol].held.append(trade)
        self.held_total += 1

    def is_live_duplicate(self, trade: Trade) -> bool:
        """Whether a live trade of a released symbol was already delivered by the backfill
        (it is then dropped and counted). Forgets the tail once live trades pass it."""
        state = self.windows.get(trade.symbol)
        if state is None or state.tail_max_ts is None:
            return False
        if self._recovered_already(state, trade):
            self.duplicates += 1
            return True
        if trade.ts_event > state.tail_max_ts:
            self._set_tail(state, None)
            state.tail.clear()
        return False

    def _recovered_already(self, state: SymbolWindow, trade: Trade) -> bool:
        if not self.seam.unique:
            return False  # resolved by position when the symbol closed
        key = self.seam.key(trade)
        if self.seam.ordered:
            last = state.last_key
            return key is not None and last is not None and key <= last  # type: ignore[operator]
        if state.tail[key] > 0:
            state.tail[key] -= 1
            return True
        return False

    # -- the recovered side --------------------------------------------------

    def accept(
        self,
        symbol: str,
        trades: Iterable[Trade],
        *,
        sent_ns: int | None = None,
        answered_ns: int | None = None,
    ) -> list[Trade]:
        """The trades of ``symbol`` from one page that belong to the window and were not
        received live, in order; counted as recovered. Trades of an unknown or closed
        symbol are dropped.

        Unordered keys: a trade stamped before the window, or at its start and
        among the live trades there, is dropped; so is one stamped after the
        first held live trade (the live stream has it). A trade stamped at or
        after that one may also be held: those delivered here are remembered
        (the tail) and dropped from the held ones. Ordered keys (Polygon):
        only keys between the last live one before the drop and the first
        held one are delivered. Keys that are not unique (IB): everything after
        the window's start is delivered, and the held trades it overlaps are
        found by position when the symbol closes (``sent_ns``/``answered_ns``:
        when this page was asked for and answered, our wall clock).
        """
        state = self.windows.get(symbol)
        if state is None or state.closed:
            return []
        key_of = self.seam.key
        held = state.held
        out: list[Trade] = []
        if self.seam.ordered:
            low = state.max_live_key if state.last_key is None else state.last_key
            high = key_of(held[0]) if held else None
            for trade in trades:
                key = key_of(trade)
                if trade.ts_event < state.start_ns:
                    self.outside += 1
                elif (low is not None and key <= low) or (high is not None and key >= high):  # type: ignore[operator]
                    self.duplicates += 1
                else:
                    out.append(trade)
                    low = key
            if out:
                state.last_key = low
                self._set_tail(state, max(state.tail_max_ts or 0, out[-1].ts_event))
            state.delivered += len(out)
            return out
        if not self.seam.unique:
            return self._accept_by_position(state, trades, sent_ns, answered_ns)
        cutoff = held[0].ts_event if held else None
        tail_from = self._tail_from
        for trade in trades:
            ts = trade.ts_event
            key = key_of(trade)
            if ts < state.start_ns or (cutoff is not None and ts > cutoff):
                self.outside += 1
                continue
            if ts == state.edge_ts and state.skip_start[key] > 0:
                state.skip_start[key] -= 1
                self.duplicates += 1
                continue
            out.append(trade)
            if ts >= tail_from and len(state.tail) < MAX_TAIL:
                state.tail[key] += 1
                if state.tail_max_ts is None or ts > state.tail_max_ts:
                    self._set_tail(state, ts)
        state.delivered += len(out)
        return out

    def _accept_by_position(
        self,
        state: SymbolWindow,
        trades: Iterable[Trade],
        sent_ns: int | None,
        answered_ns: int | None,
    ) -> list[Trade]:
        key_of = self.seam.key
        out: list[Trade] = []
        for trade in trades:
            ts = trade.ts_event
            if ts < state.start_ns:
                self.outside += 1
                continue
            if ts == state.edge_ts:
                key = key_of(trade)
                if state.skip_start[key] > 0:
                    state.skip_start[key] -= 1
                    self.duplicates += 1
                    continue
            out.append(trade)
        state.recent.extend(out)
        state.delivered += len(out)
        if out:
            state.sent_ns, state.answered_ns = sent_ns, answered_ns
        return out

    def _overlap(self, state: SymbolWindow) -> int:
        """Keys that are not unique: how many held trades the last delivered ones are.

        The recovered trades are everything up to the moment the last request
        was answered, the held ones everything from the reconnect on, so the
        overlap is a run at the end of the first that begins the second. Held
        trades received before that request was sent must be in it, and those
        received after it was answered cannot: the largest run that matches
        within those bounds is the overlap (twins can make a longer run match
        too: the bounds keep it to what the times allow).
        """
        held, recent = state.held, state.recent
        if not held or not recent:
            return 0
        received = [t.ts_recv for t in held]
        low = 0 if state.sent_ns is None else bisect_left(received, state.sent_ns)
        high = len(held) if state.answered_ns is None else bisect_right(received, state.answered_ns)
        high = min(high, len(recent))
        low = min(low, high)
        key_of = self.seam.key
        tail = [key_of(t) for t in list(recent)[-high:]] if high else []
        head = [key_of(t) for t in held[:high]]
        for size in range(high, low - 1, -1):
            if tail[len(tail) - size :] == head[:size]:
                return size
        return low

    def unaccept(self, symbol: str, trades: list[Trade]) -> None:
        """The last ``trades`` that :meth:`accept` returned were not delivered after all
        (the backfill was cancelled while publishing them): forget them."""
        if not trades:
            return
        state = self.windows[symbol]
        state.delivered -= len(trades)
        if not self.seam.unique:
            for _ in trades:
                if state.recent:
                    state.recent.pop()
            return
        if self.seam.ordered:
            state.last_key = None if state.delivered == 0 else self.seam.key(trades[0]) - 1  # type: ignore[operator]
            return
        for trade in trades:
            key = self.seam.key(trade)
            if state.tail[key] > 0:
                state.tail[key] -= 1

    def close(
        self, symbol: str, *, complete: bool, detail: str, end_ns: int, now_ns: int
    ) -> Gap:
        """End ``symbol``'s backfill: the ``Gap`` that says what it recovered.

        ``end_ns`` is where the window ended if no live trade has arrived yet
        (the requests' end); with held trades, it is the first of them.
        """
        state = self.windows[symbol]
        state.closed = True
        held = state.held
        if not self.seam.unique:
            overlap = self._overlap(state)
            state.held_sent = overlap
            self.held_total -= overlap
            self.duplicates += overlap
        state.end_ns = held[0].ts_event if held else end_ns
        missing = 0
        if self.seam.contiguous and held and state.max_live_key is not None:
            first = held[0].seq
            last = state.max_live_key
            if isinstance(first, int) and isinstance(last, int):
                missing = max(0, first - last - 1 - state.delivered)
        state.complete = complete and missing == 0
        return Gap(
            provider=self.provider,
            symbol=symbol,
            ts_event=now_ns,
            ts_recv=now_ns,
            stream=self.stream,
            reason=GapReason.BACKFILL,
            window_start=state.start_ns,
            window_end=state.end_ns,
            missing=missing,
            recovered=state.delivered,
            complete=state.complete,
            detail=detail,
        )

    def next_held(self, symbol: str) -> Trade | None:
        """The next held trade of ``symbol`` to deliver (those recovered already are
        dropped on the way), or ``None`` when none is left. Call :meth:`sent` once it is out."""
        state = self.windows[symbol]
        held = state.held
        while state.held_sent < len(held):
            trade = held[state.held_sent]
            if not self._recovered_already(state, trade):
                return trade
            self.duplicates += 1
            state.held_sent += 1
            self.held_total -= 1
        return None

    def sent(self, symbol: str) -> None:
        """The trade :meth:`next_held` returned is delivered."""
        self.windows[symbol].held_sent += 1
        self.held_total -= 1

    def release(self, symbol: str) -> None:
        """Let ``symbol``'s live trades flow again (call when :meth:`next_held` is ``None``)."""
        state = self.windows[symbol]
        if not state.released:
            state.released = True
            self._open -= 1
        state.held.clear()
        state.held_sent = 0

    def abandon(
        self, detail: str, now_ns: int, end_ns: int, *, started: bool = True
    ) -> list[Gap | Trade]:
        """The connection ended mid-backfill: for every symbol not released, its ``Gap``
        (if not closed yet; incomplete, with ``detail``) and its undelivered held trades.
        Everything is released.

        If the backfill had not ``started``, a symbol with no held trade gets no
        ``Gap``: its start edge has not moved, so the next reconnect's window
        covers this one.
        """
        out: list[Gap | Trade] = []
        for symbol, state in self.windows.items():
            if state.released:
                continue
            if not state.closed and (started or state.held):
                out.append(self.close(symbol, complete=False, detail=detail, end_ns=end_ns,
                                      now_ns=now_ns))  # fmt: skip
            while (trade := self.next_held(symbol)) is not None:
                out.append(trade)
                self.sent(symbol)
            self.release(symbol)
        return out
