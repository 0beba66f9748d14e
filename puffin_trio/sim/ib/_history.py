"""What the fake TWS answers to ``reqHistoricalTicks``: the request's fields and the ticks.

This module owns the server side of IB's historical trades
(https://interactivebrokers.github.io/tws-api/historical_time_and_sales.html):
reading a ``reqHistoricalTicks`` (96) request, choosing the ticks from the
trade tape as TWS does (at most ``numberOfTicks`` from the start time on, or
the last ones up to the end time, plus whatever completes the last second),
and the ``historicalTicksLast`` (98) message, whole or cut short for the
truncation fault. It must not do I/O or know about connections.
"""

from __future__ import annotations

import calendar
import time

import attrs

from puffin_trio.sim._tape import Printed, TradeTape
from puffin_trio.sim.ib._requests import NS, venue
from puffin_trio.sim.ib._wire import num

__all__ = ["MAX_TICKS", "HistoryRequest", "historical_ticks_last", "parse_request", "ticks"]

#: The most ticks one request may ask for (IB's limit).
MAX_TICKS = 1000


@attrs.frozen
class HistoryRequest:
    """The parts of a ``reqHistoricalTicks`` the simulator uses."""

    req_id: str
    contract: list[str]
    start_s: int | None
    end_s: int | None
    count: int
    what: str


def _seconds(text: str) -> int | None:
    """TWS's time text (``20240724 14:31:02 UTC`` or ``20240724-14:31:02``, UTC) -> Unix s."""
    if not text:
        return None
    text = text.removesuffix(" UTC").replace("-", " ")
    return calendar.timegm(time.strptime(text, "%Y%m%d %H:%M:%S"))


def parse_request(f: list[str]) -> HistoryRequest:
    """96, reqId, contract (12 fields), includeExpired, start, end, numberOfTicks,
    whatToShow, useRth, ignoreSize, miscOptions. ``ValueError`` for a malformed one."""
    if len(f) < 21:
        raise ValueError("reqHistoricalTicks lacks fields")
    start, end = _seconds(f[15]), _seconds(f[16])
    if (start is None) == (end is None):
        raise ValueError("exactly one of startDateTime and endDateTime must be given")
    return HistoryRequest(f[1], f[2:14], start, end, int(f[17]), f[18])


def ticks(tape: TradeTape, symbol: str, request: HistoryRequest) -> list[Printed]:
    """The tape's answer: ``count`` trades from the start second on (or the last ``count``
    up to the end second), and the rest of the last second's trades."""
    count = max(1, min(request.count, MAX_TICKS))
    if request.start_s is not None:
        found = tape.page(symbol, request.start_s * NS, 2**63 - 1, None, None)
        chosen = found[:count]
        if chosen:
            last_second = chosen[-1].trade.ts_ns // NS
            for extra in found[count:]:
                if extra.trade.ts_ns // NS != last_second:
                    break
                chosen.append(extra)
        return chosen
    assert request.end_s is not None
    found = tape.page(symbol, 0, request.end_s * NS + NS - 1, None, None)
    return found[-count:]


def historical_ticks_last(req_id: str, printed: list[Printed], *, truncated: bool) -> list[str]:
    """``historicalTicksLast`` (98): reqId, count, per tick time, mask, price, size,
    exchange, special conditions, then done. ``truncated`` announces every tick but
    sends only half of them (a message no client can parse)."""
    fields = ["98", req_id, str(len(printed))]
    sent = printed[: len(printed) // 2] if truncated else printed
    for p in sent:
        trade = p.trade
        conditions = " ".join(c for c in trade.conditions if c != "@")
        fields += [
            str(trade.ts_ns // NS), "0", repr(trade.price), num(trade.size),
            venue(trade.exchange), conditions,
        ]  # fmt: skip
    fields.append("1")
    return fields
