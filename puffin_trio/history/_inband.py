"""A backfill's trades over the stream's own connection (IB ``reqHistoricalTicks``), paced.

This module owns :class:`InbandHistory`: it asks a protocol with in-band
history (:attr:`~puffin_trio.providers._base.ProviderProtocol.history_limit`)
for a window's trades request by request (each from the second the last
one ended in, skipping what it delivered of that second), through the
session's transport; the session's reader hands the answers back (:meth:`InbandHistory.answer`).
Requests are paced as IB requires (:class:`Pacer`); failures are retried
within the backfill's :class:`Retries` budget; a refusal ends it at once.
It must not decide what belongs to a window.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable

import trio

from puffin_trio.errors import BackfillError, BackfillRefused
from puffin_trio.events import Trade
from puffin_trio.history._seams import Window
from puffin_trio.history._sources import Finished, Progress, Recovered, Retries, Sink
from puffin_trio.providers._base import HistoryReply, ProviderProtocol
from puffin_trio.providers.ib._history import PACING_BURST, PACING_PER_CONTRACT, PACING_WINDOW
from puffin_trio.transports import Transport

__all__ = ["REPLY_TIMEOUT", "InbandHistory", "Pacer"]

#: Seconds to wait for the answer to one historical request: TWS answers a
#: 1 000-tick request in well under a second when its data farm is up, and in
#: a few seconds when the farm is waking up (notice 2107); past 20 s the
#: request is retried (within the budget).
REPLY_TIMEOUT = 20.0
_NS = 1_000_000_000


class Pacer:
    """IB's pacing of historical requests, on trio's clock (one per session: TWS counts
    the requests of every connection of the client).

    At most ``burst`` requests in any ``window`` seconds, and ``per_symbol``
    seconds between two for one symbol (defaults: IB's 60 per 10 minutes and
    fewer than six per two seconds for one contract).
    """

    def __init__(
        self,
        *,
        burst: int = PACING_BURST,
        window: float = PACING_WINDOW,
        per_symbol: float = PACING_PER_CONTRACT,
    ) -> None:
        self._burst = burst
        self._window = window
        self._per_symbol = per_symbol
        self._sent: deque[float] = deque()
        self._last: dict[str, float] = {}

    def next_at(self, symbol: str, now: float) -> float:
        """The earliest trio time the next request for ``symbol`` may go."""
        while self._sent and now - self._sent[0] >= self._window:
            self._sent.popleft()
        at = now
        if len(self._sent) >= self._burst:
            at = self._sent[0] + self._window
        last = self._last.get(symbol)
        if last is not None:
            at = max(at, last + self._per_symbol)
        return at

    async def wait(self, symbol: str) -> None:
        """Sleep until a request for ``symbol`` may go, and count it. A checkpoint."""
        await trio.sleep_until(self.next_at(symbol, trio.current_time()))
        now = trio.current_time()
        self._sent.append(now)
        self._last[symbol] = now


class InbandHistory:
    """Historical trades through the session's own protocol and transport."""

    def __init__(self, pacer: Pacer, *, provider: str, wall_clock: Callable[[], int]) -> None:
        self._pacer = pacer
        self._provider = provider
        self._wall = wall_clock
        self._answers: dict[int, trio.MemorySendChannel[HistoryReply]] = {}

    def answer(self, reply: HistoryReply) -> None:
        """The reader got an answer: hand it to its request (ignored if nobody waits)."""
        send = self._answers.get(reply.request_id)
        if send is not None:
            send.send_nowait(reply)

    async def fetch(
        self,
        proto: ProviderProtocol,
        transport: Transport,
        windows: list[Window],
        sink: Sink,
        *,
        retries: Retries,
        progress: Progress,
    ) -> None:
        """Request each window's trades until the present, in symbol order, and send them
        to ``sink``. Raises ``BackfillError``/``BackfillRefused`` when it cannot go on.

        Each request starts at the second the previous answer ended in (an answer
        completes its last second only as far as it has happened yet), and the
        trades of that second it delivered already are skipped; an answer that is
        one second alone (more than ``history_limit`` trades in it) moves on to the
        next second. Fewer trades than asked for means the present is reached.
        """
        limit = proto.history_limit
        for window in windows:
            symbol = window.symbol
            cursor = window.start_ns // _NS * _NS
            seen_in_cursor = 0  # trades of the cursor's second already handed over
            dropped = 0  # malformed ticks of this symbol's answers
            while True:
                trades, malformed, sent, answered = await self._one(
                    proto, transport, symbol, cursor, retries, progress
                )
                dropped += malformed
                progress.pages += 1
                skip = 0
                while skip < seen_in_cursor and skip < len(trades):
                    if trades[skip].ts_event // _NS * _NS != cursor:
                        break
                    skip += 1
                fresh = trades[skip:]
                if fresh:
                    await sink.send(Recovered(symbol, fresh, sent, answered))
                if len(trades) < limit:
                    break  # fewer than asked for: the present is reached
                last = trades[-1].ts_event // _NS * _NS
                if last == cursor:
                    cursor, seen_in_cursor = cursor + _NS, 0  # one whole second: go on
                else:
                    cursor = last
                    seen_in_cursor = sum(1 for t in trades if t.ts_event // _NS * _NS == last)
            await sink.send(Finished(symbol, dropped))

    async def _one(
        self,
        proto: ProviderProtocol,
        transport: Transport,
        symbol: str,
        cursor: int,
        retries: Retries,
        progress: Progress,
    ) -> tuple[tuple[Trade, ...], int, int, int]:
        """The trades of one request (retried within the budget), how many of its ticks
        were malformed, and when it was sent and answered (wall clock)."""
        while True:
            await self._pacer.wait(symbol)
            req_id = proto.request_history(symbol, cursor)
            # Unbounded in type only: the reader must never wait on it, and TWS sends
            # one answer per request (or one error).
            send, receive = trio.open_memory_channel[HistoryReply](math.inf)
            self._answers[req_id] = send
            progress.requests += 1
            trades: list[Trade] = []
            malformed = 0
            failure: BackfillError | None = None
            try:
                sent = self._wall()
                await transport.send_all(proto.data_to_send())
                with trio.move_on_after(REPLY_TIMEOUT) as scope:
                    async for reply in receive:
                        progress.malformed += reply.malformed
                        malformed += reply.malformed
                        if reply.error is not None:
                            failure = self._error(reply.error)
                            break
                        trades.extend(reply.trades)
                        if reply.done:
                            break
                if scope.cancelled_caught:
                    failure = BackfillError(
                        f"no answer to historical request {req_id} within {REPLY_TIMEOUT} s",
                        provider=self._provider,
                    )
            finally:
                del self._answers[req_id]
            if failure is None:
                return tuple(trades), malformed, sent, self._wall()
            if isinstance(failure, BackfillRefused):
                raise failure
            await retries.after_error(failure)

    def _error(self, error: Exception) -> BackfillError:
        if isinstance(error, BackfillError):
            return error
        return BackfillError(str(error), provider=self._provider)
