"""A backfill's pages over HTTP: httpx on trio, bounded, retried, paced by the provider's headers.

This module owns :func:`fetch_rest`, which drives a provider's sans-IO
:class:`~puffin_trio.providers._history.RestHistory`: it GETs every page of a
query with httpx (which runs on trio through anyio), follows the pages,
waits out 429s as the provider's headers say, retries 5xx answers, timeouts
and malformed pages within the backfill's :class:`Retries` budget, refuses
401/403 at once (:class:`~puffin_trio.errors.BackfillRefused`), and hands each
symbol's trades to the deliverer. It must not decide what belongs to a
window (the :mod:`~puffin_trio.history._seams` module does) and never puts a
credential in a log line or an exception.
"""

from __future__ import annotations

import functools
import logging
import ssl
from collections import Counter
from collections.abc import Callable
from itertools import groupby

import httpx
import trio

from puffin_trio.errors import BackfillError, BackfillRefused
from puffin_trio.history._sources import Finished, Progress, Recovered, Retries, Sink
from puffin_trio.providers._history import HistoryQuery, HttpRequest, RestHistory, TradePage

__all__ = ["MAX_PAGES", "REQUEST_TIMEOUT", "TIMEOUTS", "fetch_rest", "tls_context"]

logger = logging.getLogger("puffin_trio.history")

#: Pages per backfill at most: 1 000 pages are 10 million Alpaca trades or 50
#: million Polygon ones, more than an hour of the whole US market; past it
#: the window is not a reconnect's and the backfill stops, announced.
MAX_PAGES = 1000
#: httpx's per-operation timeouts (seconds): connect within 5 s (a TLS
#: handshake to a data center takes ~0.1 s); read a page within 10 s (a
#: 50 000-row Polygon page is ~10 MB, under a second on any link that can
#: stream market data).
TIMEOUTS = httpx.Timeout(10.0, connect=5.0)
#: A whole request, answer included, within 15 s: the read timeout bounds one
#: read, not a server that dribbles a page out.
REQUEST_TIMEOUT = 15.0
#: Characters of an error answer's body kept in the error's message.
_BODY_SAMPLE = 200


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The TLS settings of every backfill's client (httpx's defaults: certifi's roots,
    or ``SSL_CERT_FILE``/``SSL_CERT_DIR``), built once per process: building them
    costs ~40 ms, which a client made per backfill would otherwise add each time."""
    return httpx.create_ssl_context()


def _sample(response: httpx.Response) -> str:
    text = response.content[:_BODY_SAMPLE].decode("utf-8", "replace")
    return " ".join(text.split())


async def _page(
    client: httpx.AsyncClient,
    history: RestHistory,
    request: HttpRequest,
    retries: Retries,
    wall_clock: Callable[[], int],
    progress: Progress,
) -> tuple[TradePage, int, int]:
    """One page, retried within the budget, and when its request was sent and answered
    (wall clock). A checkpoint."""
    provider = history.provider
    while True:
        response: httpx.Response | None = None
        failure: BackfillError | None = None
        progress.requests += 1
        sent = wall_clock()
        with trio.move_on_after(REQUEST_TIMEOUT):
            try:
                response = await client.get(request.path, params=list(request.params))
            except httpx.HTTPError as exc:
                failure = BackfillError(f"{type(exc).__name__}: {exc}", provider=provider)
        if response is None:
            failure = failure or BackfillError(
                f"no answer within {REQUEST_TIMEOUT} s", provider=provider
            )
            await retries.after_error(failure)
            continue
        status = response.status_code
        answered = wall_clock()
        wait = history.rate_limit_wait(status, response.headers, answered)
        if status == 200:
            try:
                page = history.parse(request, response.content, answered)
            except ValueError as exc:
                await retries.after_error(
                    BackfillError(f"malformed page: {exc}", provider=provider, code=status)
                )
                continue
            if wait:
                # The provider says the limit is spent: wait for the reset before the next.
                await trio.sleep(min(wait, max(0.0, retries.deadline - trio.current_time())))
            return page, sent, answered
        error = f"HTTP {status} from {request.path}: {_sample(response)}"
        if status in (401, 403):
            raise BackfillRefused(error, provider=provider, code=status)
        if status == 429:
            await retries.after_rate_limit(wait, BackfillError(error, provider=provider, code=429))
        elif status >= 500:
            await retries.after_error(BackfillError(error, provider=provider, code=status))
        else:
            raise BackfillError(error, provider=provider, code=status)


async def fetch_rest(
    history: RestHistory,
    query: HistoryQuery,
    sink: Sink,
    *,
    retries: Retries,
    wall_clock: Callable[[], int],
    progress: Progress,
) -> None:
    """Fetch every page of ``query`` and send each symbol's trades (then its end) to ``sink``.

    Symbols are finished as the pages move past them (pages come by symbol,
    then time); the symbols of ``query`` that no page named are finished at
    the end; ``progress`` counts the requests and pages. Raises
    :class:`~puffin_trio.errors.BackfillError` (or ``BackfillRefused``) when it
    cannot go on; cancellation (the backfill's deadline) stops it anywhere.
    """
    async with httpx.AsyncClient(
        base_url=history.base_url,
        headers=history.headers(),
        timeout=TIMEOUTS,
        verify=tls_context(),
    ) as client:
        for first in history.requests(query):
            request: HttpRequest | None = first
            current: str | None = None
            finished: set[str] = set()
            dropped: Counter[str] = Counter()
            while request is not None:
                if progress.pages >= MAX_PAGES:
                    raise BackfillError(
                        f"the window needs more than {MAX_PAGES} pages", provider=history.provider
                    )
                page, sent, answered = await _page(
                    client, history, request, retries, wall_clock, progress
                )
                progress.pages += 1
                progress.malformed += page.malformed
                dropped.update(dict(page.dropped))
                if page.malformed:
                    logger.warning(
                        "%s backfill: %d malformed rows dropped from a page of %s",
                        history.provider,
                        page.malformed,
                        request.path,
                    )
                for symbol, trades in groupby(page.trades, key=lambda t: t.symbol):
                    if current is not None and symbol != current and current not in finished:
                        finished.add(current)
                        await sink.send(Finished(current, dropped[current]))
                    current = symbol
                    await sink.send(Recovered(symbol, tuple(trades), sent, answered))
                request = page.next
            for symbol in first.symbols:
                if symbol not in finished:
                    await sink.send(Finished(symbol, dropped[symbol]))
