"""What a backfill's sources share: the items they hand over, and how they retry.

This module owns :class:`Recovered` and :class:`Finished` (what a source
sends the deliverer: a symbol's trades from one page, in order, and the end
of a symbol), :data:`Sink`, and :class:`Retries`, the retry budget and
backoff of one backfill, which both sources (REST over HTTP, IB in-band)
spend. It must not do HTTP or know a provider.
"""

from __future__ import annotations

import attrs
import trio

from puffin_trio.errors import BackfillError
from puffin_trio.events import Trade

__all__ = [
    "BACKOFF_INITIAL",
    "BACKOFF_MAX",
    "MAX_ERROR_RETRIES",
    "MAX_RATE_LIMITED",
    "MIN_RATE_LIMIT_WAIT",
    "Finished",
    "Item",
    "Progress",
    "Recovered",
    "Retries",
    "Sink",
]

#: Retries of failed requests (5xx, no answer, a malformed page) per backfill:
#: a passing fault costs one or two, a broken API stops the backfill within
#: 0.5 + 1 + 2 + 4 + 8 s of backoff rather than spending its whole deadline.
MAX_ERROR_RETRIES = 5
#: 429 answers per backfill that are waited out (for as long as the provider's
#: reset header says; never past the deadline, which bounds the time): a
#: backfill that needs more pages than a plan allows a minute meets its limit
#: once a minute (Massive's free plan allows 5 requests, so 100 tickers take
#: ~20), and a server that keeps answering 429 at once cannot keep it
#: spinning past this many.
MAX_RATE_LIMITED = 100
#: The least wait after a 429 whose reset time has already passed (a clock a
#: little apart from the server's): 0.1 s, not a tight loop of retries.
MIN_RATE_LIMIT_WAIT = 0.1
#: Backoff after a failed request: 0.5 s, doubling, at most 8 s (and when a
#: 429 names no reset time).
BACKOFF_INITIAL = 0.5
BACKOFF_MAX = 8.0


@attrs.frozen
class Recovered:
    """Trades of ``symbol`` from one page (or answer), in time order, as the API gave them,
    and when its request was sent and answered (the session's wall clock, ns)."""

    symbol: str
    trades: tuple[Trade, ...]
    sent_ns: int | None = None
    answered_ns: int | None = None


@attrs.frozen
class Finished:
    """Every page of ``symbol`` has been handed over; ``malformed`` of its rows were
    dropped on the way (the window is then not complete)."""

    symbol: str
    malformed: int = 0


Item = Recovered | Finished


@attrs.define
class Progress:
    """What a source has done so far (read by the backfill's statistics, even after
    a cancellation): requests sent, pages received, rows dropped as malformed."""

    requests: int = 0
    pages: int = 0
    malformed: int = 0
#: Where a source sends its items; bounded (a page in flight), so a slow
#: consumer slows the fetching instead of filling memory.
Sink = trio.MemorySendChannel[Item]


class Retries:
    """The retry budget of one backfill; ``deadline`` is its end (trio time).

    Each ``after_*`` call either sleeps the backoff (a checkpoint) or raises
    the error that ends the backfill.
    """

    def __init__(
        self,
        *,
        deadline: float,
        errors: int = MAX_ERROR_RETRIES,
        rate_limited: int = MAX_RATE_LIMITED,
    ) -> None:
        self.deadline = deadline
        self._errors = errors
        self._rate_limited = rate_limited
        self._backoff = BACKOFF_INITIAL
        #: Retries spent so far (failed requests, then 429s).
        self.errors = 0
        self.rate_limits = 0

    def _next_backoff(self) -> float:
        delay = self._backoff
        self._backoff = min(self._backoff * 2, BACKOFF_MAX)
        return delay

    async def after_error(self, error: BackfillError) -> None:
        """A request failed in a way a retry may fix; raise ``error`` once the budget is spent."""
        self.errors += 1
        if self.errors > self._errors:
            raise BackfillError(
                f"{error.args[0]} (gave up after {self._errors} retries)",
                provider=error.provider,
                code=error.code,
            ) from error
        await trio.sleep(self._next_backoff())

    async def after_rate_limit(self, wait: float | None, error: BackfillError) -> None:
        """A 429: wait ``wait`` seconds (the provider's reset; ``None``: our backoff), unless
        that goes past the deadline or the budget is spent (then raise ``error``)."""
        self.rate_limits += 1
        if self.rate_limits > self._rate_limited:
            raise BackfillError(
                f"{error.args[0]} ({self._rate_limited} times)",
                provider=error.provider,
                code=error.code,
            )
        delay = self._next_backoff() if wait is None else max(wait, MIN_RATE_LIMIT_WAIT)
        if trio.current_time() + delay > self.deadline:
            raise BackfillError(
                f"{error.args[0]}: the limit resets in {delay:.1f} s, after the backfill's "
                "deadline",
                provider=error.provider,
                code=error.code,
            )
        await trio.sleep(delay)
