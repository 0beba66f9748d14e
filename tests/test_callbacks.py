"""The Puffin-style callback adapter."""

from __future__ import annotations

import pytest
import trio

from puffin_trio import (
    Bar,
    Event,
    Gap,
    GapReason,
    OrderBookUpdate,
    Quote,
    SessionState,
    Status,
    Trade,
)
from puffin_trio.callbacks import run_callbacks

T = 1_700_000_000_000_000_000
TRADE = Trade(provider="p", symbol="A", ts_event=T, ts_recv=T, price=1.0, size=2.0)
QUOTE = Quote(
    provider="p", symbol="A", ts_event=T, ts_recv=T, bid=1.0, ask=1.1, bid_size=1, ask_size=1
)
BOOK = OrderBookUpdate(provider="p", symbol="A", ts_event=T, ts_recv=T, snapshot=True)
BAR = Bar(
    provider="p",
    symbol="A",
    ts_event=T,
    ts_recv=T,
    open=1,
    high=1,
    low=1,
    close=1,
    volume=1,
    interval_s=60,
)
GAP = Gap(provider="p", symbol="", ts_event=T, ts_recv=T, stream="p", reason=GapReason.RECONNECT)


def status(state: SessionState, attempt: int = 0) -> Status:
    return Status(provider="p", ts_event=T, ts_recv=T, state=state, session="p", attempt=attempt)


async def feed(events: list[Event]) -> trio.MemoryReceiveChannel[Event]:
    send, receive = trio.open_memory_channel[Event](len(events))
    async with send:
        for event in events:
            await send.send(event)
    return receive


async def test_each_event_goes_to_its_handler_in_order() -> None:
    calls: list[tuple[str, Event]] = []

    async def on_quote(event: Event) -> None:  # async handlers are awaited
        await trio.lowlevel.checkpoint()
        calls.append(("quote", event))

    stream = [TRADE, QUOTE, BOOK, BAR, GAP, status(SessionState.STREAMING)]
    handled = await run_callbacks(
        await feed(stream),
        on_trade=lambda e: calls.append(("trade", e)),
        on_quote=on_quote,
        on_book_update=lambda e: calls.append(("book", e)),
        on_bar=lambda e: calls.append(("bar", e)),
        on_gap=lambda e: calls.append(("gap", e)),
        on_status=lambda e: calls.append(("status", e)),
    )
    assert [name for name, _ in calls] == ["trade", "quote", "book", "bar", "gap", "status"]
    assert [event for _, event in calls] == stream
    assert handled == 6


async def test_reconnect_fires_after_resubscribing_and_error_when_the_session_fails() -> None:
    calls: list[str] = []
    stream = [
        status(SessionState.STREAMING),
        status(SessionState.RECONNECTING, 1),
        status(SessionState.SUBSCRIBING, 1),
        status(SessionState.STREAMING, 1),
        status(SessionState.FAILED, 2),
    ]
    await run_callbacks(
        await feed(stream),
        on_reconnect=lambda e: calls.append(f"reconnect {e.attempt}"),
        on_error=lambda e: calls.append(f"error {e.state.value}"),
    )
    assert calls == ["reconnect 1", "error failed"]


async def test_events_without_a_handler_are_skipped() -> None:
    assert await run_callbacks(await feed([TRADE, QUOTE, BAR]), on_bar=lambda e: None) == 1


async def test_a_failing_handler_ends_the_loop_with_its_error() -> None:
    def boom(event: Event) -> None:
        raise RuntimeError("handler bug")

    with pytest.raises(RuntimeError, match="handler bug"):
        await run_callbacks(await feed([TRADE]), on_trade=boom)
