"""A thin callback adapter for Puffin-style code (``on_trade``, ``on_quote``, ...).

This module owns :func:`run_callbacks`, which drains an event channel and
calls the matching handler for each event, so code written for Puffin's
thread-based ``RealtimeEngine`` callbacks runs on puffin_trio with its
handlers unchanged. It must not buffer, drop or reorder anything: it is a
loop over the channel the user already chose a capacity and overflow policy
for.

Handlers may be plain functions or ``async def`` functions. A handler that
raises ends :func:`run_callbacks` with that exception (nothing is swallowed:
in a nursery, it cancels its siblings, as any failing task does).

Puffin's semantics map as follows:

* ``on_reconnect(status)``: after a reconnect *and* resubscribe, i.e. on the
  ``Status(streaming)`` whose ``attempt`` is > 0.
* ``on_error(status)``: when a session gives up (``Status(failed)``), where
  Puffin called ``on_error`` after its last attempt.
* ``on_status`` / ``on_gap``: every ``Status`` / ``Gap`` (puffin_trio's
  additions; a ``Gap`` is how you learn that data is missing).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from puffin_trio.events import Bar, Event, Gap, OrderBookUpdate, Quote, SessionState, Status, Trade

__all__ = ["Handler", "run_callbacks"]

#: A handler: ``f(event)`` or ``async f(event)``.
Handler = Callable[[Any], Awaitable[object] | object]


async def run_callbacks(
    events: trio.abc.ReceiveChannel[Event],
    *,
    on_trade: Handler | None = None,
    on_quote: Handler | None = None,
    on_book_update: Handler | None = None,
    on_bar: Handler | None = None,
    on_status: Handler | None = None,
    on_gap: Handler | None = None,
    on_reconnect: Handler | None = None,
    on_error: Handler | None = None,
) -> int:
    """Call the handler for every event until the channel ends; return how many were handled.

    Events without a handler are skipped. Blocks (checkpointing on every
    receive) until ``events`` ends (``EndOfChannel``) or is closed.
    """
    table: dict[type, Handler] = {}
    for cls, handler in (
        (Trade, on_trade),
        (Quote, on_quote),
        (OrderBookUpdate, on_book_update),
        (Bar, on_bar),
        (Gap, on_gap),
    ):
        if handler is not None:
            table[cls] = handler
    handled = 0
    async for event in events:
        handler = table.get(type(event))
        if handler is not None:
            await _call(handler, event)
            handled += 1
        elif isinstance(event, Status):
            if on_status is not None:
                await _call(on_status, event)
                handled += 1
            if on_reconnect is not None and event.state is SessionState.STREAMING and event.attempt:
                await _call(on_reconnect, event)
            if on_error is not None and event.state is SessionState.FAILED:
                await _call(on_error, event)
    return handled


async def _call(handler: Handler, event: Event) -> None:
    result = handler(event)
    if inspect.isawaitable(result):
        await result
