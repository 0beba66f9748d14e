"""IB's historical trades, sans-IO: the ``reqHistoricalTicks`` request and its answer.

This module owns what :class:`~puffin_trio.providers.ib.IBProtocol` needs to
backfill trades over the TWS connection itself: the request (96,
``whatToShow=TRADES``, at most :data:`MAX_TICKS` ticks from a start time;
https://interactivebrokers.github.io/tws-api/historical_time_and_sales.html),
the decoding of ``historicalTicksLast`` (98: request id, tick count, then per
tick time, attribute mask, price, size, exchange, special conditions, and a
``done`` flag), what an ``error`` for such a request means, IB's pacing rules
for historical requests, and how its trades meet the live ones (by time, price
and size: IB has no trade id). It must not do I/O or read a clock.
"""

from __future__ import annotations

import time
from collections.abc import Hashable

from puffin_trio.errors import BackfillError, BackfillRefused
from puffin_trio.events import Trade
from puffin_trio.providers._history import SeamRule
from puffin_trio.providers.ib._fields import amount, number, seconds_to_ns
from puffin_trio.providers.ib._wire import PROVIDER, message

__all__ = [
    "MAX_TICKS",
    "PACING_BURST",
    "PACING_PER_CONTRACT",
    "PACING_WINDOW",
    "SEAM",
    "historical_trades",
    "history_error",
    "ib_utc_time",
    "req_historical_ticks",
]

#: Ticks per request: IB's maximum for ``reqHistoricalTicks`` (it may send a
#: few more to finish the last second).
MAX_TICKS = 1000
#: IB's pacing of historical requests
#: (https://interactivebrokers.github.io/tws-api/historical_limitations.html):
#: no more than 60 requests in any 10 minutes, fewer than six for one
#: contract within two seconds (a violation is error 162, and repeated ones
#: can disconnect the session). So at most :data:`PACING_BURST` requests per
#: :data:`PACING_WINDOW` seconds, and :data:`PACING_PER_CONTRACT` seconds
#: between two requests for one symbol (five per two seconds).
PACING_BURST = 60
PACING_WINDOW = 600.0
PACING_PER_CONTRACT = 0.4
#: Error 162 texts that mean "not allowed" rather than "try later".
_REFUSALS = ("permission", "not subscribed", "no market data")
#: Codes that refuse historical data for good (no subscription, no such contract).
_REFUSED_CODES = frozenset({200, 354, 10089, 10168})
_NS = 1_000_000_000


def _time_price_size(trade: Trade) -> Hashable:
    return (trade.ts_event, trade.price, trade.size)


#: IB trades carry no id: a trade is its second, price and size, and twins are
#: common, so the window's end is matched by position (see ``SeamRule.unique``).
SEAM = SeamRule(key=_time_price_size, unique=False)


def ib_utc_time(ts_ns: int) -> str:
    """``ts_ns`` (rounded down to the second) as TWS reads a UTC time: ``20240724 14:31:02 UTC``."""
    return time.strftime("%Y%m%d %H:%M:%S UTC", time.gmtime(ts_ns // _NS))


def req_historical_ticks(req_id: int, contract: str, start_ns: int, count: int) -> bytes:
    """``reqHistoricalTicks`` (96) of TRADES from ``start_ns``, as ib_async encodes it:
    reqId, contract, includeExpired=0, startDateTime, endDateTime="", numberOfTicks,
    whatToShow, useRth=0 (all hours), ignoreSize=0, miscOptions."""
    return message(
        "96", str(req_id), contract, "0", ib_utc_time(start_ns), "", str(count), "TRADES", "0",
        "0", "",
    )  # fmt: skip


def historical_trades(
    fields: list[bytes], symbol: str, ts_recv: int
) -> tuple[tuple[Trade, ...], bool, int]:
    """A ``historicalTicksLast`` message's (trades, done, malformed rows).

    Raises ``ValueError``/``IndexError`` if the message's framing is broken
    (a count that does not match its fields): the protocol reports it as
    malformed and the backfill retries the request.
    """
    count = int(fields[2])
    if count < 0 or len(fields) != 4 + 6 * count:
        raise ValueError(f"historicalTicksLast announces {count} ticks in {len(fields)} fields")
    trades = []
    malformed = 0
    for i in range(3, 3 + 6 * count, 6):
        stamp, _mask, price, size, exchange, conditions = fields[i : i + 6]
        try:
            trades.append(
                Trade(
                    provider=PROVIDER,
                    symbol=symbol,
                    ts_event=seconds_to_ns(stamp),
                    ts_recv=ts_recv,
                    price=number(price),
                    size=amount(size),
                    exchange=exchange.decode("utf-8", "backslashreplace"),
                    conditions=tuple(conditions.decode("utf-8", "backslashreplace").split()),
                    backfilled=True,
                )
            )
        except (ValueError, OverflowError):
            malformed += 1
    return tuple(trades), fields[-1] not in (b"0", b""), malformed


def history_error(code: int, text: str, symbol: str) -> BackfillError:
    """What an ``error`` for a historical request means: refused for good, or failed
    (retry later: a pacing violation, an HMDS query that timed out or broke)."""
    lowered = text.lower()
    what = f"historical trades of {symbol}: {text}"
    if code in _REFUSED_CODES or (code == 162 and any(r in lowered for r in _REFUSALS)):
        return BackfillRefused(what, provider=PROVIDER, code=code)
    return BackfillError(what, provider=PROVIDER, code=code)
