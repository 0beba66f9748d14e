"""A session's backfill: after a reconnect, the outage's trades, in order, before the live ones.

This module owns :class:`Backfiller`, the session's helper for
``backfill="trades"`` (the delivery model and its bounds are in
``docs/guide/backfill.rst``). The session calls it at four points:

* :meth:`Backfiller.filter` on every batch the reader (or the guard timer)
  is about to publish: it remembers each symbol's last live trades, and,
  while a backfill runs, holds the live trades of the symbols being
  backfilled and drops live trades the backfill already delivered;
* :meth:`Backfiller.prepare` when a reconnect starts, before its data flows;
* :meth:`Backfiller.run` as a session task once the reconnect streams: it
  fetches the window (REST over httpx, or in-band for IB), publishes each
  symbol's recovered trades, the ``Gap`` that closes them and the held live
  trades, then lets that symbol flow; announced by ``Status`` notices;
* :meth:`Backfiller.abandon` when the connection ends: whatever is held is
  handed back to be published first on the next connection, announced.

It never raises out of :meth:`run` (a failed backfill is announced and the
live stream goes on) and never makes the reader wait.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Sequence

import attrs
import trio

from puffin_trio.channels import FanOut
from puffin_trio.errors import ConfigurationError, ProviderError
from puffin_trio.events import Event, Gap, Status, Trade
from puffin_trio.history._inband import InbandHistory, Pacer
from puffin_trio.history._rest import fetch_rest, tls_context
from puffin_trio.history._seams import Reconciler, TradeEdges, Window
from puffin_trio.history._sources import Item, Progress, Recovered, Retries, Sink
from puffin_trio.providers._base import HistoryReply, Provider, ProviderProtocol
from puffin_trio.providers._history import HistoryQuery, RestHistory
from puffin_trio.transports import Transport

__all__ = ["END_MARGIN", "MAX_HELD", "BackfillStatistics", "Backfiller"]

logger = logging.getLogger("puffin_trio.history")

#: Live trades held at most (all backfilled symbols together) while their
#: backfill runs: ~35 MB of trades, or a minute of the busiest few hundred
#: symbols. Reaching it ends the backfill at once: what was recovered is
#: delivered, the rest announced as not recovered, and the held trades flow.
MAX_HELD = 100_000
#: The requests' window ends this long after the moment the backfill starts
#: (ns): a provider whose clock runs a little ahead stamps the trades just
#: before our reconnect later than our clock says; recovered trades that
#: also arrive live are dropped at the seam.
END_MARGIN = 1_000_000_000
#: Events published between two checkpoints when the backfill publishes one
#: event at a time (so a cancellation knows exactly what went out).
_CHECKPOINT_EVERY = 256


@attrs.frozen
class BackfillStatistics:
    """A session's backfill counters (``SessionStatistics.backfill``).

    ``backfills``: reconnect windows backfilled; ``recovered``: trades
    delivered from history; ``duplicates``: trades dropped at the seams
    (recovered ones received live, live ones recovered); ``incomplete``:
    symbol windows not fully recovered; ``requests``/``pages``: historical
    requests sent (retries included) and pages received; ``malformed``: rows
    dropped; ``held``: live trades held back right now; ``last_duration``:
    seconds the last backfill took, from its start to its last release.
    """

    backfills: int
    recovered: int
    duplicates: int
    incomplete: int
    requests: int
    pages: int
    malformed: int
    held: int
    last_duration: float | None


def _clock(ts_ns: int) -> str:
    seconds, ns = divmod(ts_ns, 1_000_000_000)
    return time.strftime("%H:%M:%S", time.gmtime(seconds)) + f".{ns // 1_000_000:03d}"


class Backfiller:
    """The backfill of one session (``provider.backfill == "trades"``).

    ``status`` builds a ``Status`` notice with a detail (the session builds
    its own events); ``stream`` names the session in the ``Gap`` events;
    ``pacer`` paces in-band requests (default: IB's rules, :class:`Pacer`).
    Raises :class:`ConfigurationError` if the provider has no historical
    trades (no REST ``history()`` and no in-band history).
    """

    def __init__(
        self,
        provider: Provider,
        *,
        stream: str,
        fanout: FanOut,
        wall_clock: Callable[[], int],
        status: Callable[[str], Status],
        pacer: Pacer | None = None,
    ) -> None:
        self._provider = provider
        self._stream = stream
        self._fanout = fanout
        self._wall = wall_clock
        self._status = status
        self._history: RestHistory | None = provider.history()
        self._inband: InbandHistory | None = None
        if self._history is not None:
            seam = self._history.seam
            tls_context()  # now, not in the middle of the first backfill
        else:
            proto_class = type(provider.protocol())
            if not proto_class.history_limit:
                raise ConfigurationError(
                    f"{provider.name}: this provider has no historical trades; use backfill=None"
                )
            seam = proto_class.history_seam
            self._inband = InbandHistory(
                pacer or Pacer(), provider=provider.name, wall_clock=wall_clock
            )
        self.edges = TradeEdges(seam)
        self._current: Reconciler | None = None
        self._pending = False
        self._fetch_scope: trio.CancelScope | None = None
        self._stop_reason = ""
        self._progress = Progress()
        self._end_ns = 0
        # counters of past backfills
        self.backfills = 0
        self.recovered = 0
        self.incomplete = 0
        self._duplicates_before = 0
        self._requests_before = 0
        self._pages_before = 0
        self._malformed_before = 0
        self.last_duration: float | None = None

    # ------------------------------------------------------------------ session hooks

    def filter(self, batch: list[Event]) -> None:
        """Remember live trades; hold those being backfilled; drop live duplicates. In place.

        Not a checkpoint. The reader's hot path: one type check per event, and
        while a backfill runs one dictionary lookup per trade.
        """
        current = self._current
        observe = self.edges.observe
        if current is None:
            for event in batch:
                if type(event) is Trade:
                    observe(event)
            return
        kept: list[Event] = []
        changed = False
        for event in batch:
            if type(event) is Trade:
                observe(event)
                if current.holds(event.symbol):
                    current.hold(event)
                    changed = True
                    continue
                if current.is_live_duplicate(event):
                    changed = True
                    continue
            kept.append(event)
        if changed:
            batch[:] = kept
        if current.held_total > MAX_HELD and self._fetch_scope is not None:
            if not self._stop_reason:
                self._stop_reason = f"the {MAX_HELD} live trades it may hold are reached"
            self._fetch_scope.cancel()
        if not self._pending and current.settled():
            self._retire(current)

    def prepare(self, symbols: Collection[str], *, outage_start: int | None) -> None:
        """A reconnect starts: hold the live trades of ``symbols`` (the subscribed trade
        symbols) until their backfill; :meth:`run` does it once the connection streams."""
        if self._current is not None:
            self._retire(self._current)  # its tail no longer matters: a new window starts
        wanted = sorted(s for s in symbols if s != "*")
        if not wanted:
            return
        now = self._wall()
        fallback = self.edges.latest_ns
        if fallback is None:
            fallback = outage_start if outage_start is not None else now
        self._current = Reconciler(
            wanted,
            edges=self.edges,
            fallback_start_ns=fallback,
            opened_ns=now,
            provider=self._provider.name,
            stream=self._stream,
        )
        self._pending = True
        self._stop_reason = ""

    def answer(self, reply: HistoryReply) -> None:
        """An in-band answer arrived (the reader's control items)."""
        if self._inband is not None:
            self._inband.answer(reply)

    def abandon(self) -> list[Event]:
        """The connection ended: what the current backfill still holds, announced (its
        open symbols' ``Gap`` and held live trades, then a ``Status``), to publish
        first on the next connection. Not a checkpoint."""
        current = self._current
        if current is None:
            return []
        started = not self._pending
        self._pending = False
        self._fetch_scope = None
        detail = "connection lost " + ("during" if started else "before") + " the backfill"
        events: list[Event] = list(
            current.abandon(detail, now_ns=self._wall(), end_ns=self._end_ns, started=started)
        )
        incomplete = sum(1 for e in events if type(e) is Gap)
        self.incomplete += incomplete
        self._retire(current)
        if incomplete:
            events.append(
                self._status(
                    f"backfill interrupted: the connection was lost; {incomplete} symbols "
                    "not (fully) recovered"
                )
            )
        return events

    async def run(self, proto: ProviderProtocol, transport: Transport) -> None:
        """The backfill of the current reconnect (if :meth:`prepare` started one).

        Returns once every symbol is delivered and flowing live again: after
        the whole window, after ``backfill_timeout`` seconds, or when the held
        trades reach :data:`MAX_HELD`. Never raises a backfill failure (it is
        announced); cancelled with the connection (see :meth:`abandon`).
        """
        current = self._current
        if current is None or not self._pending:
            return
        self._pending = False
        self.backfills += 1
        started = trio.current_time()
        timeout = self._provider.backfill_timeout
        deadline = started + timeout
        self._end_ns = self._wall() + END_MARGIN
        windows = current.windows_from()
        start_ns = min(w.start_ns for w in windows)
        await self._publish_one(
            self._status(
                f"backfill of trades started: {len(windows)} symbols, window from "
                f"{_clock(start_ns)} UTC"
            )
        )
        logger.info("%s: backfilling %d symbols from %s", self._stream, len(windows), start_ns)
        progress = self._progress = Progress()
        send, receive = trio.open_memory_channel[Item](1)
        recovered = 0
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._fetch, proto, transport, windows, deadline, send, progress)
            async with receive:
                async for item in receive:
                    if isinstance(item, Recovered):
                        recovered += await self._deliver(current, item)
                    else:
                        # A dropped row may be one of the window's trades: not complete.
                        await self._close(
                            current,
                            item.symbol,
                            complete=not item.malformed,
                            detail=f"malformed rows dropped: {item.malformed}"
                            if item.malformed
                            else "",
                        )
        reason = self._stop_reason or (
            f"malformed rows dropped: {progress.malformed}" if progress.malformed else "stopped"
        )
        for symbol in current.pending():
            await self._close(current, symbol, complete=False, detail=reason)
        self.last_duration = trio.current_time() - started
        complete = sum(1 for w in current.windows.values() if w.complete)
        outcome = "done" if complete == len(windows) else "incomplete" if complete else "failed"
        summary = (
            f"backfill {outcome}: {recovered} trades recovered in {self.last_duration:.2f} s, "
            f"{complete} of {len(windows)} symbols complete"
        )
        if complete < len(windows):
            summary += f" ({reason})"
        await self._publish_one(self._status(summary))
        logger.info("%s: %s", self._stream, summary)

    def statistics(self) -> BackfillStatistics:
        """The counters now. Cheap, not a checkpoint."""
        current = self._current
        progress = self._progress
        return BackfillStatistics(
            backfills=self.backfills,
            recovered=self.recovered,
            duplicates=self._duplicates_before + (current.duplicates if current else 0),
            incomplete=self.incomplete,
            requests=self._requests_before + progress.requests,
            pages=self._pages_before + progress.pages,
            malformed=self._malformed_before + progress.malformed,
            held=current.held_total if current else 0,
            last_duration=self.last_duration,
        )

    # ------------------------------------------------------------------ internals

    def _retire(self, current: Reconciler) -> None:
        """The backfill is over and its tails are passed: stop looking at live trades."""
        if self._current is current:
            self._current = None
            self._duplicates_before += current.duplicates
            progress = self._progress
            self._requests_before += progress.requests
            self._pages_before += progress.pages
            self._malformed_before += progress.malformed
            self._progress = Progress()

    async def _fetch(
        self,
        proto: ProviderProtocol,
        transport: Transport,
        windows: Sequence[Window],
        deadline: float,
        sink: Sink,
        progress: Progress,
    ) -> None:
        """Run the source until it is done, fails, or the deadline (or a full hold) stops it."""
        retries = Retries(deadline=deadline)
        async with sink:
            with trio.move_on_at(deadline) as scope:
                self._fetch_scope = scope
                try:
                    if self._history is not None:
                        query = HistoryQuery(
                            tuple(w.symbol for w in windows),
                            min(w.start_ns for w in windows),
                            self._end_ns,
                        )
                        await fetch_rest(
                            self._history,
                            query,
                            sink,
                            retries=retries,
                            wall_clock=self._wall,
                            progress=progress,
                        )
                    else:
                        assert self._inband is not None
                        await self._inband.fetch(
                            proto, transport, list(windows), sink, retries=retries,
                            progress=progress,
                        )  # fmt: skip
                except ProviderError as exc:
                    # BackfillError (refused, failed, gave up) or the transport's
                    # ConnectionLost (the reader will notice and end the connection).
                    self._stop_reason = self._stop_reason or f"{type(exc).__name__}: {exc}"
                    logger.warning("%s: backfill stopped: %s", self._stream, exc)
            self._fetch_scope = None
            if scope.cancelled_caught and not self._stop_reason:
                timeout = self._provider.backfill_timeout
                self._stop_reason = f"not done within backfill_timeout={timeout} s"

    async def _deliver(self, current: Reconciler, item: Recovered) -> int:
        """Publish the page's trades that belong to the window; how many went out.

        Each one also moves the symbol's start edge, so a backfill cut short by a
        reconnect is continued from there by the next one, not repeated.
        """
        trades = current.accept(
            item.symbol, item.trades, sent_ns=item.sent_ns, answered_ns=item.answered_ns
        )
        observe = self.edges.observe
        sent = 0
        try:
            for trade in trades:
                await self._publish_one(trade, sent)
                observe(trade)
                sent += 1
        finally:
            if sent < len(trades):
                current.unaccept(item.symbol, trades[sent:])
            self.recovered += sent
        return sent

    async def _close(
        self, current: Reconciler, symbol: str, *, complete: bool, detail: str
    ) -> None:
        """Announce ``symbol``'s backfill, deliver its held live trades, let it flow."""
        gap = current.close(
            symbol, complete=complete, detail=detail, end_ns=self._end_ns, now_ns=self._wall()
        )
        if not gap.complete:
            self.incomplete += 1
        await self._publish_one(gap)
        count = 0
        while (trade := current.next_held(symbol)) is not None:
            await self._publish_one(trade, count)
            current.sent(symbol)
            count += 1
        current.release(symbol)

    async def _publish_one(self, event: Event, index: int = 0) -> None:
        """Publish one event; if cancelled, it went to no one (so the caller knows exactly
        what went out). A checkpoint for every :data:`_CHECKPOINT_EVERY`-th event of a
        run (``index``), and whenever a consumer is full."""
        if index % _CHECKPOINT_EVERY == 0:
            await trio.lowlevel.checkpoint()
        try:
            self._fanout.publish_nowait(event)
        except trio.WouldBlock:
            await self._fanout.publish(event)

