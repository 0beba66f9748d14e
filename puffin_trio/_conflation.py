"""The ``"conflate"`` overflow policy: the latest quote and the merged book per symbol.

This module owns :class:`ConflatingBuffer`: a consumer's buffer that keeps,
per ``(provider, symbol)``, one slot for the latest pending ``Quote`` and one
for the merge of the pending ``OrderBookUpdate`` events, in queue order with
every other event, which it never merges (``docs/guide/channels.rst``
describes the policy as a consumer sees it). The rules a merge follows (how levels
apply, which delta is stale) are the order book's, in :mod:`puffin_trio.book`:
applying a merged update equals applying the updates it absorbed. It must not
block, spawn tasks or log.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import Final

from puffin_trio._buffers import Buffer
from puffin_trio.book import apply_levels, is_stale
from puffin_trio.events import Event, Gap, OrderBookUpdate, Quote, Status, TradingStatus

__all__ = ["ConflatingBuffer"]

#: Events that a later quote/book update must never overtake under "conflate".
_BARRIERS: Final = (Status, Gap, TradingStatus)

_Key = tuple[str, str]  # (provider, symbol)


class _QuoteSlot:
    """The latest pending ``Quote`` for one ``(provider, symbol)``.

    ``after`` is how many non-conflatable events were queued before the slot
    was opened: the slot's place in the queue.
    """

    __slots__ = ("after", "key", "latest", "since")

    def __init__(self, key: _Key, after: int, quote: Quote) -> None:
        self.key = key
        self.after = after
        self.since = quote.ts_recv
        self.latest = quote

    def event(self) -> Quote:
        return self.latest


class _BookSlot:
    """The merge of the pending ``OrderBookUpdate`` events for one ``(provider, symbol)``.

    While only one update is pending it is kept as is (``bids is None``); the
    first merge turns it into per-price dicts, so each further merge costs
    O(levels in the new update), not O(levels pending). ``after`` as for
    :class:`_QuoteSlot`.
    """

    __slots__ = ("after", "asks", "bids", "key", "latest", "since", "snapshot")

    def __init__(self, key: _Key, after: int, update: OrderBookUpdate) -> None:
        self.key = key
        self.after = after
        self.since = update.ts_recv
        self.latest = update
        self.snapshot = update.snapshot
        self.bids: dict[float, float] | None = None
        self.asks: dict[float, float] | None = None

    def merge(self, update: OrderBookUpdate) -> None:
        """Merge ``update`` so that applying :meth:`event` equals applying both in turn.

        A delta whose ``seq`` is not above the pending one's is ignored, as a
        book ignores a stale delta. (Lagging snapshots never get here.)
        """
        if not update.snapshot and is_stale(update.seq, self.latest.seq):
            return
        if update.snapshot:
            self.latest = update
            self.snapshot = True
            self.bids = self.asks = None
            return
        bids, asks = self.bids, self.asks
        if bids is None or asks is None:
            base = self.latest
            if base.snapshot:
                bids, asks = {}, {}
                apply_levels(bids, base.bids)
                apply_levels(asks, base.asks)
            else:
                bids, asks = dict(base.bids), dict(base.asks)
            self.bids, self.asks = bids, asks
        if self.snapshot:
            apply_levels(bids, update.bids)
            apply_levels(asks, update.asks)
        else:
            bids.update(update.bids)
            asks.update(update.asks)
        self.latest = update

    def event(self) -> OrderBookUpdate:
        latest = self.latest
        if self.bids is None or self.asks is None:
            return latest
        return OrderBookUpdate(
            provider=latest.provider,
            symbol=latest.symbol,
            ts_event=latest.ts_event,
            ts_recv=latest.ts_recv,
            bids=tuple(self.bids.items()),
            asks=tuple(self.asks.items()),
            snapshot=self.snapshot,
            seq=latest.seq,
        )


class ConflatingBuffer(Buffer):
    """The "conflate" policy: quote/book slots plus a FIFO of everything else.

    Entries leave each of the two FIFOs in order (a receive takes the older
    head, an eviction takes the head of one of them). Numbering the
    non-conflatable events (``plain_in`` counts those ever queued,
    ``plain_out`` those that left) and stamping each slot with ``plain_in`` at
    its opening is enough to interleave them, without a per-event allocation.
    """

    __slots__ = ("book_seq", "books", "plain", "plain_in", "plain_out", "quotes", "slots")

    def __init__(self, capacity: int, clock: Callable[[], int]) -> None:
        super().__init__(capacity, clock)
        self.plain: deque[Event] = deque()
        self.plain_in = 0
        self.plain_out = 0
        self.slots: deque[_QuoteSlot | _BookSlot] = deque()
        #: The open (mergeable) slots; a barrier event closes them all.
        self.quotes: dict[_Key, _QuoteSlot] = {}
        self.books: dict[_Key, _BookSlot] = {}
        #: The highest ``seq`` published per book since the last barrier.
        self.book_seq: dict[_Key, int] = {}

    def put(self, event: Event) -> None:
        if isinstance(event, Quote):
            key = (event.provider, event.symbol)
            quote_slot = self.quotes.get(key)
            if quote_slot is not None:
                quote_slot.latest = event
                self.conflated += 1
                return
            self._make_room_for_slot()
            quote_slot = _QuoteSlot(key, self.plain_in, event)
            self.quotes[key] = quote_slot
            self.slots.append(quote_slot)
        elif isinstance(event, OrderBookUpdate):
            key = (event.provider, event.symbol)
            if self._lagging(key, event):
                # Merged with nothing, before or after it (see puffin_trio.channels).
                self.books.pop(key, None)
                self._make_room_for_slot()
                self.slots.append(_BookSlot(key, self.plain_in, event))
            else:
                book_slot = self.books.get(key)
                if book_slot is not None:
                    book_slot.merge(event)
                    self.conflated += 1
                    return
                self._make_room_for_slot()
                book_slot = _BookSlot(key, self.plain_in, event)
                self.books[key] = book_slot
                self.slots.append(book_slot)
        else:
            if isinstance(event, _BARRIERS) and (self.quotes or self.books or self.book_seq):
                self.quotes.clear()
                self.books.clear()
                self.book_seq.clear()
            if len(self.plain) + len(self.slots) >= self.capacity:
                self.lose()
                if not self.plain:
                    return  # only slots queued: the incoming event is the oldest plain one
                self.plain.popleft()
                self.plain_out += 1
            self.plain.append(event)
            self.plain_in += 1
        queued = len(self.plain) + len(self.slots)
        if queued > self.max_queued:
            self.max_queued = queued
        if self.receivers_waiting:
            self.readable.unpark()

    def put_many(self, events: Sequence[Event]) -> None:
        put = self.put
        for event in events:
            put(event)

    def _lagging(self, key: _Key, update: OrderBookUpdate) -> bool:
        """Track each book's highest ``seq``; True for a snapshot older than that."""
        seq = update.seq
        if seq is None:
            return False
        highest = self.book_seq.get(key)
        if highest is None or seq > highest:
            self.book_seq[key] = seq
            return False
        return update.snapshot and seq < highest

    def _make_room_for_slot(self) -> None:
        if len(self.plain) + len(self.slots) < self.capacity:
            return
        self.lose()
        if self.plain:
            self.plain.popleft()
            self.plain_out += 1
        else:
            self._forget(self.slots.popleft())

    def _forget(self, slot: _QuoteSlot | _BookSlot) -> None:
        """Close ``slot`` if it is still open (a barrier may have closed it already)."""
        if isinstance(slot, _QuoteSlot):
            if self.quotes.get(slot.key) is slot:
                del self.quotes[slot.key]
        elif self.books.get(slot.key) is slot:
            del self.books[slot.key]

    def _plain_first(self) -> bool:
        """Is the oldest entry a non-conflatable event? (False when there are none.)"""
        return bool(self.plain) and (not self.slots or self.plain_out < self.slots[0].after)

    def take(self) -> Event | None:
        event: Event
        if self._plain_first():
            event = self.plain.popleft()
            self.plain_out += 1
        elif self.slots:
            slot = self.slots.popleft()
            self._forget(slot)
            event = slot.event()
        else:
            return None
        self.delivered += 1
        return event

    def __len__(self) -> int:
        return len(self.plain) + len(self.slots)

    def oldest_ts_recv(self) -> int | None:
        if self._plain_first():
            return self.plain[0].ts_recv
        return self.slots[0].since if self.slots else None

    def clear(self) -> None:
        self.plain.clear()
        self.slots.clear()
        self.quotes.clear()
        self.books.clear()
        self.book_seq.clear()
