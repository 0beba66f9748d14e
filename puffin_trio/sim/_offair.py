"""The simulated market while no client is connected: it goes on, and its trades are printed.

This module owns :class:`OffAirMarket`, which every simulator server keeps:
it knows which connections are producing data, and while none is, it steps
the market model at the server's rate, drawing what the last streaming
connection drew, and hands each trade to the server's ``print_trade`` (the
trade tape the historical endpoints serve). That is what gives a backfill
something to find after an outage. It must not know a wire format.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NoReturn

import trio

from puffin_trio.sim.market import MarketModel, SimTrade

__all__ = ["MAX_PACING_LAG", "Draws", "OffAirMarket"]

#: How far behind schedule a rate-paced sender may be before it stops catching
#: up (seconds). Timers wake late (epoll rounds waits up to the next
#: millisecond), so pacing from the *ideal* send time keeps the average rate
#: (5,000 msg/s, not the ~1,800 that "now + 1/rate" gives); the bound keeps a
#: sender that was stalled (silence fault, slow client) from bursting more
#: than 0.1 s of backlog at once.
MAX_PACING_LAG = 0.1

#: The symbols a market draws from: (trades, quotes, books), as ``MarketModel.next_tick``.
Draws = tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]


class OffAirMarket:
    """The market of one simulator server between connections.

    Connections report with :meth:`air` whether they produce data now, and
    keep :attr:`draws` current while they stream. :meth:`run` (a server task)
    steps the model ``rate`` times a second while no connection is on the
    air, and prints each trade; with ``rate`` ``None`` or 0 (as fast as a
    client reads) the market stands still instead, as it has no pace of its own.
    """

    def __init__(
        self,
        model: MarketModel,
        *,
        rate: float | None,
        wall_clock: Callable[[], int],
        print_trade: Callable[[SimTrade], object],
    ) -> None:
        self._model = model
        self._rate = rate
        self._wall = wall_clock
        self._print = print_trade
        self.on_air: set[int] = set()
        #: What the last streaming connection drew (``None``: nobody has streamed yet).
        self.draws: Draws | None = None
        self._changed = trio.Event()

    def air(self, connection: int, streaming: bool) -> None:
        """Connection number ``connection`` started (or stopped) producing data."""
        if streaming == (connection in self.on_air):
            return
        if streaming:
            self.on_air.add(connection)
        else:
            self.on_air.discard(connection)
        self._changed.set()
        self._changed = trio.Event()

    async def run(self) -> NoReturn:
        """Step and print while no connection is on the air; runs until cancelled."""
        while True:
            while self.on_air or self.draws is None or not self._rate:
                await self._changed.wait()
            rate = self._rate
            next_at = trio.current_time()
            while not self.on_air:
                next_at = max(next_at + 1 / rate, trio.current_time() - MAX_PACING_LAG)
                with trio.move_on_at(next_at):
                    await self._changed.wait()
                if self.on_air or self.draws is None:
                    break
                trades, quotes, books = self.draws
                now = self._wall()
                tick = self._model.next_tick(now, trades=trades, quotes=quotes, books=books)
                if type(tick) is SimTrade:
                    self._print(tick)
