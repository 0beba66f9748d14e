"""A local L2 order book for one symbol, and whether it can be trusted.

This module owns :class:`OrderBook`: it folds
:class:`~puffin_trio.events.OrderBookUpdate` snapshots and deltas into sorted
price levels, and keeps a :class:`BookState` that says whether those levels
can be trusted. Books go wrong at the seams (the first snapshot, a reconnect,
a crossed book), so the state machine is the point of the module, not an
extra.

It also owns :class:`OrderBooks`, which keeps one book per symbol from a
consumer's event stream and marks books for resync when the stream announces
a reconnect, a sequence gap or an overflow.

It is sans-IO and must not do I/O, log, request snapshots or look for gaps in
the stream: the :class:`SequenceGuard` upstream detects gaps and the session
announces them as ``Gap`` events; :class:`OrderBooks` reacts with
:meth:`OrderBook.mark_resync`, and the consumer asks for fresh snapshots with
``await sup.resync(name, books=[...])``. It does not validate updates either
(that is the provider protocols' job at the trust boundary): prices must not
be NaN, and an update must belong to this book's symbol.

Every method is synchronous, never blocks and is not a trio checkpoint.
"""

from __future__ import annotations

import enum
import operator
from collections.abc import Iterable, Iterator, MutableMapping, Sequence
from itertools import islice
from typing import Any

import attrs
from sortedcontainers import SortedDict

from puffin_trio.errors import ConfigurationError
from puffin_trio.events import Gap, GapReason, OrderBookUpdate

__all__ = [
    "DEFAULT_MAX_PENDING",
    "BookState",
    "OrderBook",
    "OrderBookStatistics",
    "OrderBooks",
    "apply_levels",
    "is_stale",
]

#: How many deltas a book buffers while it waits for a snapshot. Binance's
#: "manage a local order book" procedure (buffer the stream, fetch a REST
#: snapshot, replay) is the pattern: a snapshot arrives within a second or two,
#: and a busy crypto book sends up to ~1,000 deltas a second at peaks. 10,000
#: covers ~10 s of such a book (minutes of a typical one) while bounding the
#: memory of a book whose snapshot never comes to a few MB.
DEFAULT_MAX_PENDING = 10_000

_Level = tuple[float, float]


class BookState(enum.StrEnum):
    """Whether an :class:`OrderBook`'s levels can be trusted.

    * ``SYNCING``: no snapshot yet (a new book), or :meth:`OrderBook.clear`
      was called. The book is empty and waits for a snapshot.
    * ``LIVE``: built from a snapshot plus every delta since; trustworthy.
    * ``RESYNC_NEEDED``: the levels may be wrong (a delta crossed the book,
      the session flagged a gap or reconnect, deltas newer than the snapshot
      were lost). They stay readable, but the book waits for a snapshot.

    Only a snapshot leads to ``LIVE``.
    """

    SYNCING = "syncing"
    LIVE = "live"
    RESYNC_NEEDED = "resync_needed"


@attrs.frozen
class OrderBookStatistics:
    """A point-in-time copy of an :class:`OrderBook`'s state and counters.

    * ``deltas_applied``: deltas folded into the levels (including buffered
      ones replayed after a snapshot).
    * ``snapshots_applied``: snapshots that replaced the levels.
    * ``deltas_discarded``: deltas dropped: older than the book (``seq`` not
      above the last applied one), without ``seq`` while waiting for a
      snapshot, or thrown away with the pending buffer.
    * ``buffer_overflows``: times the pending buffer was full and dropped.
    * ``resyncs``: times the book went from ``LIVE`` to ``RESYNC_NEEDED``.
    * ``pending``: deltas buffered now, waiting for a snapshot.
    """

    state: BookState
    reason: str
    deltas_applied: int
    snapshots_applied: int
    deltas_discarded: int
    buffer_overflows: int
    resyncs: int
    pending: int
    bid_levels: int
    ask_levels: int


class OrderBook:
    """The L2 book of one symbol: sorted levels plus a trust state.

    Levels live in two :class:`~sortedcontainers.SortedDict` s keyed by price
    (bids ordered by negated price), so a level change costs O(log n) and the
    best levels are read without sorting. ``bids`` and ``asks`` are live
    views: they follow the book as it changes; copy them (``list(book.bids)``)
    to keep a picture, and do not iterate one while applying updates.

    How :meth:`apply` treats an update depends on :attr:`state`:

    * A snapshot (``snapshot=True``) always replaces the book and makes it
      ``LIVE``. Deltas buffered while waiting for it are then replayed in
      arrival order if both carry a ``seq`` and the delta's is greater than
      the snapshot's; the others are older than the snapshot and discarded.
    * A delta on a ``LIVE`` book sets each ``(price, size)`` level; a size of
      0 (or below, which no provider sends) deletes it, and deleting an
      absent level does nothing. Within one update the last pair for a price
      wins. A delta whose ``seq`` is not above the last applied one is stale
      (e.g. in flight when a REST snapshot arrived) and discarded.
    * A delta on a ``SYNCING`` or ``RESYNC_NEEDED`` book is buffered (at most
      ``max_pending``; see :data:`DEFAULT_MAX_PENDING`) if it carries a
      ``seq``. One without ``seq`` is discarded at once: with no way to order
      it against the coming snapshot it must be assumed older than it.
    * When the buffer is full it is dropped as a whole and counted. If a
      dropped delta turns out newer than the next snapshot, the replay would
      leave a hole, so the book becomes ``RESYNC_NEEDED`` after that snapshot.
    * An update (or a snapshot plus its replay) that leaves the book crossed
      (best bid above best ask) makes it ``RESYNC_NEEDED``. A locked book
      (best bid == best ask) stays ``LIVE``; :attr:`locked` flags it.

    ``seq`` must increase within a book between snapshots. The book does not
    check that sequence numbers are contiguous (not every provider's are);
    that is the :class:`SequenceGuard`'s job.
    """

    __slots__ = (
        "_ask_levels",
        "_ask_prices",
        "_asks",
        "_bid_levels",
        "_bid_prices",
        "_bids",
        "_buffer_overflows",
        "_deltas_applied",
        "_deltas_discarded",
        "_dropped_seq",
        "_pending",
        "_reason",
        "_resyncs",
        "_seq",
        "_snapshots_applied",
        "_state",
        "_ts_event",
        "max_pending",
        "provider",
        "symbol",
    )

    def __init__(
        self, symbol: str, provider: str = "", *, max_pending: int = DEFAULT_MAX_PENDING
    ) -> None:
        if isinstance(max_pending, bool) or not isinstance(max_pending, int) or max_pending < 1:
            raise ConfigurationError(
                "max_pending (how many deltas to buffer while waiting for a snapshot) "
                f"must be an int >= 1, got {max_pending!r}"
            )
        self.symbol = symbol
        self.provider = provider
        self.max_pending = max_pending
        self._bids: Any = SortedDict(operator.neg)
        self._asks: Any = SortedDict()
        # Views are made once: they follow the dicts, so reads allocate nothing.
        self._bid_prices: Sequence[float] = self._bids.keys()
        self._ask_prices: Sequence[float] = self._asks.keys()
        self._bid_levels: Sequence[_Level] = self._bids.items()
        self._ask_levels: Sequence[_Level] = self._asks.items()
        self._state = BookState.SYNCING
        self._reason = "no snapshot yet"
        self._pending: list[OrderBookUpdate] = []
        self._dropped_seq: int | None = None
        self._seq: int | None = None
        self._ts_event = 0
        self._deltas_applied = 0
        self._snapshots_applied = 0
        self._deltas_discarded = 0
        self._buffer_overflows = 0
        self._resyncs = 0

    # -- updates -------------------------------------------------------------

    def apply(self, update: OrderBookUpdate) -> None:
        """Fold one snapshot or delta into the book (see the class docstring)."""
        if update.snapshot:
            self._apply_snapshot(update)
        elif self._state is BookState.LIVE:
            self._apply_delta(update)
            self._check_crossed()
        else:
            self._buffer(update)

    def mark_resync(self, reason: str) -> None:
        """Flag the book as possibly wrong (a sequence gap, a reconnect) until a snapshot.

        A ``LIVE`` book becomes ``RESYNC_NEEDED`` and keeps its levels; a
        ``SYNCING`` book stays ``SYNCING``. Either way the buffered deltas are
        discarded (they belong to the stream that went wrong) and ``reason``
        becomes :attr:`reason`. The next snapshot makes the book ``LIVE``.
        """
        self._drop_pending()
        self._dropped_seq = None
        self._reason = reason
        if self._state is BookState.LIVE:
            self._state = BookState.RESYNC_NEEDED
            self._resyncs += 1

    def clear(self) -> None:
        """Empty the book and return it to ``SYNCING``; buffered deltas are discarded."""
        self._bids.clear()
        self._asks.clear()
        self._drop_pending()
        self._dropped_seq = None
        self._seq = None
        self._state = BookState.SYNCING
        self._reason = "cleared"

    def _apply_snapshot(self, snapshot: OrderBookUpdate) -> None:
        self._bids.clear()
        self._asks.clear()
        apply_levels(self._bids, snapshot.bids)
        apply_levels(self._asks, snapshot.asks)
        self._snapshots_applied += 1
        self._seq = snapshot.seq
        self._ts_event = snapshot.ts_event
        self._state = BookState.LIVE
        self._reason = ""
        lost_newer = False
        if snapshot.seq is None:
            self._drop_pending()
        else:
            lost_newer = self._dropped_seq is not None and self._dropped_seq > snapshot.seq
            for delta in self._pending:
                self._apply_delta(delta)
            self._pending.clear()
        self._dropped_seq = None
        if lost_newer:
            self._to_resync_needed(
                "the pending buffer overflowed and lost deltas newer than the snapshot"
            )
        else:
            self._check_crossed()

    def _apply_delta(self, delta: OrderBookUpdate) -> None:
        seq = delta.seq
        if is_stale(seq, self._seq):
            self._deltas_discarded += 1
            return
        if seq is not None:
            self._seq = seq
        apply_levels(self._bids, delta.bids)
        apply_levels(self._asks, delta.asks)
        self._deltas_applied += 1
        self._ts_event = delta.ts_event

    def _buffer(self, delta: OrderBookUpdate) -> None:
        if delta.seq is None:
            self._deltas_discarded += 1
            return
        pending = self._pending
        if len(pending) >= self.max_pending:
            dropped = max(d.seq for d in pending if d.seq is not None)
            if self._dropped_seq is None or dropped > self._dropped_seq:
                self._dropped_seq = dropped
            self._buffer_overflows += 1
            self._drop_pending()
        pending.append(delta)

    def _drop_pending(self) -> None:
        self._deltas_discarded += len(self._pending)
        self._pending.clear()

    def _check_crossed(self) -> None:
        bid_prices = self._bid_prices
        ask_prices = self._ask_prices
        if bid_prices and ask_prices and bid_prices[0] > ask_prices[0]:
            self._to_resync_needed(f"crossed: best bid {bid_prices[0]} > best ask {ask_prices[0]}")

    def _to_resync_needed(self, reason: str) -> None:
        self._state = BookState.RESYNC_NEEDED
        self._reason = reason
        self._resyncs += 1

    # -- state ---------------------------------------------------------------

    @property
    def state(self) -> BookState:
        """Whether the levels can be trusted (see :class:`BookState`)."""
        return self._state

    @property
    def is_valid(self) -> bool:
        """``True`` when the book is ``LIVE``, i.e. trustworthy."""
        return self._state is BookState.LIVE

    @property
    def reason(self) -> str:
        """Why the book is not ``LIVE`` (``""`` when it is)."""
        return self._reason

    @property
    def last_seq(self) -> int | None:
        """``seq`` of the last snapshot or delta applied, ``None`` if it had none."""
        return self._seq

    @property
    def ts_event(self) -> int:
        """``ts_event`` of the last snapshot or delta applied (0 before the first)."""
        return self._ts_event

    def statistics(self) -> OrderBookStatistics:
        """The book's state and counters, as a frozen copy."""
        return OrderBookStatistics(
            state=self._state,
            reason=self._reason,
            deltas_applied=self._deltas_applied,
            snapshots_applied=self._snapshots_applied,
            deltas_discarded=self._deltas_discarded,
            buffer_overflows=self._buffer_overflows,
            resyncs=self._resyncs,
            pending=len(self._pending),
            bid_levels=len(self._bid_levels),
            ask_levels=len(self._ask_levels),
        )

    # -- reads ---------------------------------------------------------------

    @property
    def bids(self) -> Sequence[_Level]:
        """Bid levels as ``(price, size)``, best (highest) first; a live view."""
        return self._bid_levels

    @property
    def asks(self) -> Sequence[_Level]:
        """Ask levels as ``(price, size)``, best (lowest) first; a live view."""
        return self._ask_levels

    @property
    def best_bid(self) -> _Level | None:
        """``(price, size)`` of the highest bid, ``None`` when there is no bid."""
        return self._bid_levels[0] if self._bid_levels else None

    @property
    def best_ask(self) -> _Level | None:
        """``(price, size)`` of the lowest ask, ``None`` when there is no ask."""
        return self._ask_levels[0] if self._ask_levels else None

    @property
    def spread(self) -> float | None:
        """Best ask minus best bid; ``None`` when either side is empty (negative if crossed)."""
        if not self._bid_prices or not self._ask_prices:
            return None
        return self._ask_prices[0] - self._bid_prices[0]

    @property
    def mid(self) -> float | None:
        """Midpoint of the best bid and ask; ``None`` when either side is empty."""
        if not self._bid_prices or not self._ask_prices:
            return None
        return (self._bid_prices[0] + self._ask_prices[0]) / 2

    @property
    def crossed(self) -> bool:
        """Best bid above best ask (a ``LIVE`` book is never crossed)."""
        bid_prices = self._bid_prices
        ask_prices = self._ask_prices
        return bool(bid_prices and ask_prices and bid_prices[0] > ask_prices[0])

    @property
    def locked(self) -> bool:
        """Best bid equal to best ask (allowed; some venues show it briefly)."""
        bid_prices = self._bid_prices
        ask_prices = self._ask_prices
        return bool(bid_prices and ask_prices and bid_prices[0] == ask_prices[0])

    def depth(self, n: int) -> tuple[list[_Level], list[_Level]]:
        """The top ``n`` levels of each side: ``(bids, asks)``, best first.

        Raises :class:`~puffin_trio.errors.ConfigurationError` if ``n < 0``.
        """
        _check_levels(n)
        return list(islice(self._bid_levels, n)), list(islice(self._ask_levels, n))

    def imbalance(self, n: int) -> float | None:
        """``(bid_volume - ask_volume) / (bid_volume + ask_volume)`` over the top ``n`` levels.

        In ``[-1, 1]``: positive when bids outweigh asks. ``None`` when the top
        ``n`` levels of both sides are empty. Raises
        :class:`~puffin_trio.errors.ConfigurationError` if ``n < 0``.
        """
        _check_levels(n)
        bid_volume = sum((size for _, size in islice(self._bid_levels, n)), 0.0)
        ask_volume = sum((size for _, size in islice(self._ask_levels, n)), 0.0)
        total = bid_volume + ask_volume
        if total <= 0:
            return None
        return (bid_volume - ask_volume) / total

    def __repr__(self) -> str:
        name = f"{self.provider}:{self.symbol}" if self.provider else self.symbol
        state = f"{self._state} ({self._reason})" if self._reason else str(self._state)
        return (
            f"<OrderBook {name} {state} bid {_format_level(self.best_bid)}"
            f" ask {_format_level(self.best_ask)}"
            f" levels {len(self._bid_levels)}/{len(self._ask_levels)}>"
        )


def apply_levels(side: MutableMapping[float, float], levels: Iterable[_Level]) -> None:
    """Apply ``(price, size)`` levels to one side of a book, in order.

    A size above 0 sets the level; 0 (or below, which no provider sends)
    deletes it, and deleting an absent level does nothing. The book's rule,
    and conflation's when it merges updates (:mod:`puffin_trio._conflation`).
    """
    for price, size in levels:
        if size > 0:
            side[price] = size
        else:
            side.pop(price, None)


def is_stale(seq: int | None, last_seq: int | None) -> bool:
    """Whether a delta numbered ``seq`` is stale after ``last_seq``: both known, not above it.

    A stale delta (e.g. in flight when a REST snapshot arrived) is ignored, by
    the book and by conflation alike.
    """
    return seq is not None and last_seq is not None and seq <= last_seq


def _check_levels(n: int) -> None:
    if n < 0:
        raise ConfigurationError(f"the number of levels must be >= 0, got {n!r}")


def _format_level(level: _Level | None) -> str:
    if level is None:
        return "-"
    price, size = level
    return f"{size}@{price}"


class OrderBooks:
    """One :class:`OrderBook` per ``(provider, symbol)``, fed from an event stream.

    Feed it every event a consumer receives (``books.apply(event)``): it routes
    each :class:`~puffin_trio.events.OrderBookUpdate` to its book and turns
    the stream's announcements into trust decisions, so a book is never
    silently wrong:

    * ``Gap(reason="reconnect")``: every book of that provider may have missed
      deltas; they become ``RESYNC_NEEDED`` until the snapshot the provider
      sends after the resubscribe (Alpaca's ``r: true``, Polygon's XL2, IB's
      depth reset).
    * ``Gap(reason="sequence")`` for a symbol: that symbol's book.
    * ``Gap(reason="malformed")``: a message of that provider did not decode,
      and it may have been a book update: that symbol's book if the gap names
      one, else every book of that provider.
    * ``Gap(reason="overflow")``: this consumer dropped events it cannot name,
      so every book it holds.

    :meth:`needing_resync` lists the books waiting for a snapshot, ready for
    ``await sup.resync(name, books=[...])``. Sans-IO; never blocks.
    """

    def __init__(self, *, max_pending: int = DEFAULT_MAX_PENDING) -> None:
        self.max_pending = max_pending
        self._books: dict[tuple[str, str], OrderBook] = {}

    def apply(self, event: object) -> OrderBook | None:
        """Take one event; return the book it changed, if it was a book update."""
        if isinstance(event, OrderBookUpdate):
            key = (event.provider, event.symbol)
            book = self._books.get(key)
            if book is None:
                book = self._books[key] = OrderBook(
                    event.symbol, event.provider, max_pending=self.max_pending
                )
            book.apply(event)
            return book
        if isinstance(event, Gap):
            self._on_gap(event)
        return None

    def _on_gap(self, gap: Gap) -> None:
        reason = gap.reason
        if reason is GapReason.BACKFILL:
            return  # trades recovered after a reconnect: nothing a book holds
        if reason is GapReason.RECONNECT:
            why = f"reconnect of {gap.stream}"
            targets = [b for (p, _), b in self._books.items() if p == gap.provider]
        elif reason is GapReason.SEQUENCE:
            why = f"sequence gap on {gap.stream} ({gap.missing} missing)"
            targets = [
                b for (p, s), b in self._books.items() if p == gap.provider and s == gap.symbol
            ]
        elif reason is GapReason.MALFORMED:
            why = f"malformed message on {gap.stream}"
            targets = [
                b
                for (p, s), b in self._books.items()
                if p == gap.provider and (not gap.symbol or s == gap.symbol)
            ]
        else:
            why = f"{gap.missing} events dropped by overflow on {gap.stream}"
            targets = list(self._books.values())
        for book in targets:
            book.mark_resync(why)

    def get(self, symbol: str, provider: str | None = None) -> OrderBook | None:
        """The book of ``symbol`` (of ``provider``, or of any provider if there is one)."""
        if provider is not None:
            return self._books.get((provider, symbol))
        found = [b for (_, s), b in self._books.items() if s == symbol]
        return found[0] if len(found) == 1 else None

    def __iter__(self) -> Iterator[OrderBook]:
        return iter(self._books.values())

    def __len__(self) -> int:
        return len(self._books)

    def needing_resync(self) -> dict[str, list[str]]:
        """Symbols per provider whose book waits for a snapshot (not ``LIVE``)."""
        out: dict[str, list[str]] = {}
        for (provider, symbol), book in sorted(self._books.items()):
            if book.state is not BookState.LIVE:
                out.setdefault(provider, []).append(symbol)
        return out
