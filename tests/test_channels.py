"""Specification of puffin_trio.channels: fan-out, overflow policies, announcements, statistics."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Iterator

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from puffin_trio.channels import (
    DEFAULT_CAPACITY,
    OVERFLOW_POLICIES,
    ConsumerStatistics,
    EventReceiver,
    FanOut,
    Overflow,
    receive_events,
)
from puffin_trio.errors import ConfigurationError
from puffin_trio.events import (
    Bar,
    Event,
    Gap,
    GapReason,
    OrderBookUpdate,
    Quote,
    SessionState,
    Status,
    Trade,
    TradingStatus,
)

Levels = tuple[tuple[float, float], ...]


def trade(n: int, symbol: str = "AAPL", provider: str = "sim") -> Trade:
    return Trade(provider=provider, symbol=symbol, ts_event=n, ts_recv=n, price=100.0 + n, size=1.0)


def quote(bid: float, symbol: str = "AAPL", provider: str = "sim", ts: int = 0) -> Quote:
    return Quote(
        provider=provider,
        symbol=symbol,
        ts_event=ts,
        ts_recv=ts,
        bid=bid,
        ask=bid + 0.01,
        bid_size=1.0,
        ask_size=1.0,
    )


def book(
    bids: Levels = (),
    asks: Levels = (),
    *,
    snapshot: bool = False,
    symbol: str = "BTC/USD",
    seq: int | None = None,
) -> OrderBookUpdate:
    return OrderBookUpdate(
        provider="sim",
        symbol=symbol,
        ts_event=0,
        ts_recv=0,
        bids=bids,
        asks=asks,
        snapshot=snapshot,
        seq=seq,
    )


def status(state: SessionState = SessionState.RECONNECTING) -> Status:
    return Status(provider="sim", ts_event=0, ts_recv=0, state=state)


def overflow_gap(name: str, missing: int, ts: int) -> Gap:
    return Gap(
        provider="puffin",
        symbol="",
        ts_event=ts,
        ts_recv=ts,
        stream=name,
        reason=GapReason.OVERFLOW,
        missing=missing,
    )


def publish_all(fanout: FanOut, *events: Event) -> None:
    for event in events:
        fanout.publish_nowait(event)


def drain(receiver: EventReceiver, limit: float = math.inf) -> list[Event]:
    """Everything queued now (at most ``limit`` events), without waiting."""
    out: list[Event] = []
    while len(out) < limit:
        try:
            out.append(receiver.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel):
            break
    return out


#: Virtual seconds after which a test that is still waiting has deadlocked.
DEADLOCK_AFTER = 60


def fails_on_deadlock(
    test: Callable[[], Awaitable[None]],
) -> Callable[[trio.testing.MockClock], Awaitable[None]]:
    """Run an async test on trio's autojump clock under a deadline.

    These tests never sleep, so virtual time only moves when every task is
    blocked: a deadlock jumps straight to the deadline and fails the test with
    ``trio.TooSlowError`` instead of hanging the suite. (The wrapper asks for
    pytest-trio's ``autojump_clock`` fixture, which makes the test run on it.)
    """

    async def run(autojump_clock: trio.testing.MockClock) -> None:
        with trio.fail_after(DEADLOCK_AFTER):
            await test()

    run.__name__ = run.__qualname__ = test.__name__
    run.__doc__ = test.__doc__
    return run


class Ticker:
    """A fake clock for FanOut: 1000, 2000, 3000, ... ns, one step per call."""

    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        self.now += 1000
        return self.now


# --- configuration errors -------------------------------------------------------------


@pytest.mark.parametrize("capacity", [0, -1])
def test_capacity_below_one_is_rejected(capacity: int) -> None:
    with pytest.raises(ConfigurationError, match=r"capacity must be an integer >= 1"):
        FanOut().open_consumer(capacity=capacity)


@pytest.mark.parametrize("capacity", [1.5, "64", True, math.inf, None])
def test_capacity_that_is_not_an_integer_is_rejected(capacity: object) -> None:
    with pytest.raises(ConfigurationError, match=r"capacity must be an integer >= 1.*got"):
        FanOut().open_consumer(capacity=capacity)  # type: ignore[arg-type]


@pytest.mark.parametrize("overflow", ["drop_newest", "BLOCK", "", None, ["block"]])
def test_unknown_overflow_policy_is_rejected_with_the_valid_names(overflow: object) -> None:
    with pytest.raises(ConfigurationError) as excinfo:
        FanOut().open_consumer(overflow=overflow)  # type: ignore[arg-type]
    message = str(excinfo.value)
    assert "'block', 'drop_oldest', 'conflate'" in message
    assert repr(overflow) in message


def test_the_policy_names_are_block_drop_oldest_and_conflate() -> None:
    assert OVERFLOW_POLICIES == ("block", "drop_oldest", "conflate")


@pytest.mark.parametrize("name", ["", 7])
def test_consumer_name_must_be_a_non_empty_string(name: object) -> None:
    with pytest.raises(ConfigurationError, match="non-empty string"):
        FanOut().open_consumer(name=name)  # type: ignore[arg-type]


def test_consumer_names_are_unique_among_registered_consumers() -> None:
    fanout = FanOut()
    first = fanout.open_consumer(name="view")
    with pytest.raises(ConfigurationError, match="'view' is already registered"):
        fanout.open_consumer(name="view")
    first.close()
    assert fanout.open_consumer(name="view").name == "view"


def test_unnamed_consumers_get_distinct_names() -> None:
    fanout = FanOut()
    taken = fanout.open_consumer(name="consumer-2")
    names = {fanout.open_consumer().name for _ in range(3)} | {taken.name}
    assert len(names) == 4


@fails_on_deadlock
async def test_consumer_context_validates_its_arguments_on_entry() -> None:
    with pytest.raises(ConfigurationError, match="capacity"):
        async with FanOut().consumer(capacity=0):
            pytest.fail("entered a consumer with capacity 0")


def test_defaults_are_block_with_the_default_capacity() -> None:
    receiver = FanOut().open_consumer()
    assert (receiver.policy, receiver.capacity) == ("block", DEFAULT_CAPACITY)


# --- registration, context manager, closing ----------------------------------------------


@fails_on_deadlock
async def test_consumer_context_registers_on_entry_without_a_checkpoint() -> None:
    fanout = FanOut()
    entered = False
    with trio.CancelScope() as scope:
        scope.cancel()
        async with fanout.consumer(name="c") as events:
            # A checkpoint during entry would have raised Cancelled before this line.
            entered = True
            fanout.publish_nowait(trade(1))
            assert events.receive_nowait() == trade(1)
    assert entered
    assert fanout.statistics().consumers == {}


@fails_on_deadlock
async def test_consumer_context_sees_nothing_published_before_entry() -> None:
    fanout = FanOut()
    context = fanout.consumer()
    fanout.publish_nowait(trade(1))
    async with context as events:
        fanout.publish_nowait(trade(2))
        assert drain(events) == [trade(2)]


@fails_on_deadlock
async def test_leaving_the_consumer_context_unregisters_and_closes_the_channel() -> None:
    fanout = FanOut()
    async with fanout.consumer(name="c") as events:
        assert set(fanout.statistics().consumers) == {"c"}
    assert fanout.statistics().consumers == {}
    with pytest.raises(trio.ClosedResourceError):
        events.receive_nowait()


@fails_on_deadlock
async def test_open_consumer_returns_an_async_context_manager_too() -> None:
    fanout = FanOut()
    async with fanout.open_consumer(name="c") as events:
        fanout.publish_nowait(trade(1))
        assert await events.receive() == trade(1)
    assert fanout.statistics().consumers == {}


@fails_on_deadlock
async def test_publishing_to_no_consumers_is_counted_as_unconsumed() -> None:
    fanout = FanOut()
    fanout.publish_nowait(trade(1))
    await fanout.publish(trade(2))
    await fanout.publish_batch([trade(3), trade(4)])
    receiver = fanout.open_consumer()
    fanout.publish_nowait(trade(5))
    receiver.close()
    await fanout.publish_batch([trade(6)])
    stats = fanout.statistics()
    assert (stats.published, stats.unconsumed) == (6, 5)


@fails_on_deadlock
async def test_close_ends_every_consumer_after_it_drains() -> None:
    fanout = FanOut()
    consumers = [fanout.open_consumer(overflow=policy) for policy in OVERFLOW_POLICIES]
    await fanout.publish_batch([trade(1), trade(2)])
    fanout.close()
    for events in consumers:
        assert [event async for event in events] == [trade(1), trade(2)]
        with pytest.raises(trio.EndOfChannel):
            await events.receive()
    assert fanout.statistics().closed


@fails_on_deadlock
async def test_close_wakes_a_waiting_receiver_with_end_of_channel() -> None:
    fanout = FanOut()
    events = fanout.open_consumer()
    outcome: list[str] = []

    async def receive_one() -> None:
        with pytest.raises(trio.EndOfChannel):
            await events.receive()
        outcome.append("ended")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receive_one)
        await trio.testing.wait_all_tasks_blocked()
        fanout.close()
    assert outcome == ["ended"]


@fails_on_deadlock
async def test_publishing_after_close_raises_closed_resource_error() -> None:
    fanout = FanOut()
    fanout.close()
    fanout.close()
    with pytest.raises(trio.ClosedResourceError):
        fanout.publish_nowait(trade(1))
    with pytest.raises(trio.ClosedResourceError):
        await fanout.publish(trade(1))
    with pytest.raises(trio.ClosedResourceError):
        await fanout.publish_batch([trade(1)])
    with pytest.raises(trio.ClosedResourceError):
        fanout.open_consumer()


@fails_on_deadlock
async def test_close_releases_a_publisher_waiting_on_a_full_block_consumer() -> None:
    fanout = FanOut()
    fanout.open_consumer(capacity=1)
    fanout.publish_nowait(trade(1))
    outcome: list[str] = []

    async def publish() -> None:
        with pytest.raises(trio.ClosedResourceError):
            await fanout.publish(trade(2))
        outcome.append("released")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(publish)
        await trio.testing.wait_all_tasks_blocked()
        fanout.close()
    assert outcome == ["released"]


@fails_on_deadlock
async def test_closing_a_consumer_wakes_its_waiting_receivers_with_closed_resource_error() -> None:
    events = FanOut().open_consumer()
    outcome: list[str] = []

    async def receive_one() -> None:
        with pytest.raises(trio.ClosedResourceError):
            await events.receive()
        outcome.append("closed")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receive_one)
        await trio.testing.wait_all_tasks_blocked()
        await events.aclose()
    await events.aclose()
    assert outcome == ["closed"]


@fails_on_deadlock
async def test_closing_a_full_block_consumer_releases_the_waiting_publisher() -> None:
    fanout = FanOut()
    full = fanout.open_consumer(capacity=1, name="full")
    other = fanout.open_consumer(capacity=8, name="other")
    fanout.publish_nowait(trade(1))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(fanout.publish, trade(2))
        await trio.testing.wait_all_tasks_blocked()
        assert fanout.statistics().publishers_waiting == 1
        full.close()
    assert drain(other) == [trade(1), trade(2)]


# --- block ------------------------------------------------------------------------------


@fails_on_deadlock
async def test_block_consumers_each_receive_everything_in_order() -> None:
    fanout = FanOut()
    published = [trade(n) for n in range(500)]
    received: dict[str, list[Event]] = {}

    async def consume(events: EventReceiver) -> None:
        async with events:
            received[events.name] = [event async for event in events]

    async with trio.open_nursery() as nursery:
        for n in range(10):
            nursery.start_soon(consume, fanout.open_consumer(capacity=n + 1, name=f"c{n}"))
        for n in range(0, 250, 10):
            await fanout.publish_batch(published[n : n + 10])
        for event in published[250:]:
            await fanout.publish(event)
        fanout.close()
    assert received == {f"c{n}": published for n in range(10)}


@fails_on_deadlock
async def test_a_full_block_consumer_makes_the_publisher_and_everyone_else_wait() -> None:
    fanout = FanOut()
    blocking = fanout.open_consumer(capacity=2, overflow="block", name="blocking")
    dropping = fanout.open_consumer(capacity=8, overflow="drop_oldest", name="dropping")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(fanout.publish_batch, [trade(n) for n in range(3)])
        await trio.testing.wait_all_tasks_blocked()
        assert fanout.statistics().publishers_waiting == 1
        assert drain(dropping) == [trade(0), trade(1)]
        assert await blocking.receive() == trade(0)
    assert drain(dropping) == [trade(2)]
    assert drain(blocking) == [trade(1), trade(2)]
    assert fanout.statistics().consumers["blocking"].max_queued == 2


def test_publish_nowait_to_a_full_block_consumer_delivers_to_no_one() -> None:
    fanout = FanOut()
    blocking = fanout.open_consumer(capacity=1)
    dropping = fanout.open_consumer(overflow="drop_oldest")
    fanout.publish_nowait(trade(1))
    with pytest.raises(trio.WouldBlock):
        fanout.publish_nowait(trade(2))
    assert drain(dropping) == [trade(1)]
    assert drain(blocking) == [trade(1)]
    assert fanout.statistics().published == 1


@fails_on_deadlock
async def test_a_cancelled_waiting_publish_delivers_to_no_one() -> None:
    fanout = FanOut()
    blocking = fanout.open_consumer(capacity=1)
    dropping = fanout.open_consumer(overflow="drop_oldest")
    fanout.publish_nowait(trade(1))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(fanout.publish, trade(2))
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert drain(blocking) == [trade(1)]
    assert drain(dropping) == [trade(1)]
    assert fanout.statistics().publishers_waiting == 0


@fails_on_deadlock
async def test_a_batch_cancelled_while_waiting_delivered_exactly_a_prefix() -> None:
    fanout = FanOut()
    blocking = fanout.open_consumer(capacity=2)
    dropping = fanout.open_consumer(overflow="drop_oldest")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(fanout.publish_batch, [trade(n) for n in range(5)])
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert drain(blocking) == [trade(0), trade(1)]
    assert drain(dropping) == [trade(0), trade(1)]


@fails_on_deadlock
async def test_publish_batch_yields_to_the_scheduler_once_per_batch() -> None:
    fanout = FanOut()
    events = fanout.open_consumer(capacity=1000)
    ticks = 0

    async def tick_forever() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(tick_forever)
        await trio.lowlevel.checkpoint()
        before = ticks
        await fanout.publish_batch([trade(n) for n in range(100)])
        batch_ticks = ticks - before
        before = ticks
        for n in range(100):
            await fanout.publish(trade(n))
        single_ticks = ticks - before
        nursery.cancel_scope.cancel()
    assert batch_ticks <= 2
    assert single_ticks >= 50
    assert len(drain(events)) == 200


@fails_on_deadlock
async def test_publish_batch_waits_for_room_event_by_event() -> None:
    fanout = FanOut()
    events = fanout.open_consumer(capacity=3)
    published = [trade(n) for n in range(20)]
    received: list[Event] = []

    async def consume() -> None:
        async for event in events:
            received.append(event)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consume)
        await fanout.publish_batch(published)
        fanout.close()
    assert received == published
    assert fanout.statistics().consumers[events.name].max_queued <= 3


@fails_on_deadlock
async def test_a_parked_publisher_is_woken_when_the_consumer_is_down_to_half() -> None:
    """Not before (the two would ping-pong one event at a time) and not later,
    whether the consumer calls receive() or iterates."""
    for iterate in (False, True):
        fanout = FanOut()
        events = fanout.open_consumer(capacity=8)
        next_event = aiter(events).__anext__ if iterate else events.receive
        async with trio.open_nursery() as nursery:
            nursery.start_soon(fanout.publish_batch, [trade(n) for n in range(9)])
            await trio.testing.wait_all_tasks_blocked()
            for n in range(4):  # 8 queued -> 4 queued: the 4th take reaches half
                assert fanout.statistics().publishers_waiting == 1
                assert await next_event() == trade(n)
            await trio.testing.wait_all_tasks_blocked()
            assert fanout.statistics().publishers_waiting == 0
        assert drain(events) == [trade(n) for n in range(4, 9)]


# --- receiving ----------------------------------------------------------------------------


@fails_on_deadlock
async def test_receive_is_a_checkpoint_even_when_events_are_queued() -> None:
    """trio's contract for ``receive``: cancelled, it raises at once (even with events
    queued) and takes nothing, as does ``async for``."""
    fanout = FanOut()
    events = fanout.open_consumer()
    for i in range(200):
        fanout.publish_nowait(trade(i))
    for iterate in (False, True):
        got: list[Event] = []
        with trio.CancelScope() as scope:
            scope.cancel()
            if iterate:
                async for event in events:
                    got.append(event)
            else:
                while True:
                    got.append(await events.receive())
        assert scope.cancelled_caught
        assert got == []
    assert events.statistics().delivered == 0
    assert await events.receive() == trade(0)


@pytest.mark.parametrize("policy", OVERFLOW_POLICIES)
@pytest.mark.parametrize("way", ["receive", "async for", "receive_batch"])
async def test_another_task_runs_between_two_receives_even_when_events_are_queued(
    policy: Overflow, way: str
) -> None:
    """Each call is a schedule point: a task that only counts its turns gets a turn per
    call, however many events are queued (trio may run the two in either order
    within one round of its scheduler, hence one turn of slack)."""
    fanout = FanOut()
    events = fanout.open_consumer(overflow=policy)
    for i in range(50):
        fanout.publish_nowait(trade(i))
    turns = 0

    async def count_turns() -> None:
        nonlocal turns
        while True:
            turns += 1
            await trio.lowlevel.checkpoint()

    calls = 10
    async with trio.open_nursery() as nursery:
        nursery.start_soon(count_turns)
        await trio.lowlevel.checkpoint()
        before = turns
        if way == "receive":
            for _ in range(calls):
                await events.receive()
        elif way == "async for":
            taken = 0
            async for _ in events:
                taken += 1
                if taken == calls:
                    break
        else:
            for _ in range(calls):
                await events.receive_batch(1)
        ran = turns - before
        nursery.cancel_scope.cancel()
    assert ran >= calls - 1
    assert events.statistics().delivered == calls


async def test_a_cancelled_receive_with_nothing_queued_raises_at_once() -> None:
    fanout = FanOut()
    events = fanout.open_consumer()
    with trio.CancelScope() as scope:
        scope.cancel()
        await events.receive()
    assert scope.cancelled_caught
    fanout.publish_nowait(trade(1))
    assert await events.receive() == trade(1)


@fails_on_deadlock
async def test_a_receive_cancelled_while_waiting_loses_nothing() -> None:
    fanout = FanOut()
    events = fanout.open_consumer()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(events.receive)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    fanout.publish_nowait(trade(1))
    assert events.receive_nowait() == trade(1)


@fails_on_deadlock
async def test_several_tasks_can_share_one_receiver_and_each_event_goes_to_one() -> None:
    fanout = FanOut()
    events = fanout.open_consumer(capacity=4)
    received: list[Event] = []

    async def consume() -> None:
        async for event in events:
            received.append(event)

    published = [trade(n) for n in range(100)]
    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(consume)
        for event in published:
            await fanout.publish(event)
        fanout.close()
    assert sorted(received, key=lambda event: event.ts_event) == published


# --- drop_oldest ------------------------------------------------------------------------


def test_drop_oldest_discards_the_oldest_and_announces_the_loss_first() -> None:
    clock = Ticker()
    fanout = FanOut(clock=clock)
    events = fanout.open_consumer(capacity=3, overflow="drop_oldest", name="view")
    for n in range(5):
        fanout.publish_nowait(trade(n))
    assert drain(events) == [overflow_gap("view", 2, 1000), trade(2), trade(3), trade(4)]


def test_each_gap_counts_the_drops_since_the_previous_announcement() -> None:
    clock = Ticker()
    fanout = FanOut(clock=clock)
    events = fanout.open_consumer(capacity=2, overflow="drop_oldest", name="view")
    for n in range(4):
        fanout.publish_nowait(trade(n))
    assert events.receive_nowait() == overflow_gap("view", 2, 1000)
    assert events.receive_nowait() == trade(2)
    for n in range(4, 8):
        fanout.publish_nowait(trade(n))
    assert drain(events) == [overflow_gap("view", 3, 2000), trade(6), trade(7)]
    stats = events.statistics()
    assert (stats.dropped, stats.gaps, stats.unannounced, stats.delivered) == (5, 2, 0, 3)


@fails_on_deadlock
async def test_drop_oldest_batches_count_their_losses_exactly() -> None:
    fanout = FanOut(clock=Ticker())
    events = fanout.open_consumer(capacity=4, overflow="drop_oldest", name="view")
    fanout.publish_nowait(trade(0))
    await fanout.publish_batch([trade(n) for n in range(1, 10)])
    assert drain(events) == [overflow_gap("view", 6, 1000)] + [trade(n) for n in range(6, 10)]


@fails_on_deadlock
async def test_a_slow_drop_oldest_consumer_never_slows_a_block_consumer() -> None:
    fanout = FanOut()
    fast = fanout.open_consumer(capacity=8, overflow="block", name="fast")
    fanout.open_consumer(capacity=8, overflow="drop_oldest", name="slow")
    published = [trade(n) for n in range(1000)]
    received: list[Event] = []

    async def consume() -> None:
        async for event in fast:
            received.append(event)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consume)
        for event in published:
            await fanout.publish(event)
        fanout.close()
    assert received == published
    slow = fanout.statistics().consumers["slow"]
    assert (slow.queued, slow.dropped, slow.delivered) == (8, 992, 0)


@fails_on_deadlock
async def test_drop_oldest_memory_is_bounded_and_every_loss_is_counted_and_announced() -> None:
    fanout = FanOut()
    events = fanout.open_consumer(capacity=64, overflow="drop_oldest", name="slow")
    published = 100_000
    delivered: list[Event] = []
    announced = 0

    async def consume_slowly() -> None:
        nonlocal announced
        async for event in events:
            if isinstance(event, Gap):
                announced += event.missing
            else:
                delivered.append(event)
            for _ in range(3):
                await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consume_slowly)
        for start in range(0, published, 100):
            await fanout.publish_batch([trade(n) for n in range(start, start + 100)])
        fanout.close()
    stats = fanout.statistics().consumers["slow"]
    assert stats.max_queued <= 64
    assert stats.dropped > 0
    assert len(delivered) + stats.dropped == published == stats.published
    assert announced == stats.dropped
    assert [event.ts_event for event in delivered] == sorted(event.ts_event for event in delivered)


# --- conflate ---------------------------------------------------------------------------


def test_conflate_keeps_the_latest_quote_at_the_position_of_the_first() -> None:
    fanout = FanOut()
    events = fanout.open_consumer(overflow="conflate")
    publish_all(fanout, quote(1.0), trade(1), quote(5.0, "MSFT"), quote(2.0), trade(2), quote(3.0))
    assert drain(events) == [quote(3.0), trade(1), quote(5.0, "MSFT"), trade(2)]
    assert events.statistics().conflated == 2


def test_a_delivered_quote_frees_its_slot_for_the_next_one() -> None:
    fanout = FanOut()
    events = fanout.open_consumer(overflow="conflate")
    fanout.publish_nowait(quote(1.0))
    fanout.publish_nowait(trade(1))
    assert events.receive_nowait() == quote(1.0)
    fanout.publish_nowait(quote(2.0))
    assert drain(events) == [trade(1), quote(2.0)]


def test_conflation_slots_are_per_provider_and_symbol() -> None:
    fanout = FanOut()
    events = fanout.open_consumer(overflow="conflate")
    published = [quote(1.0, provider="alpaca"), quote(1.0, provider="polygon"), quote(1.0, "MSFT")]
    for event in published:
        fanout.publish_nowait(event)
    assert drain(events) == published


def test_conflate_never_merges_trades_bars_or_other_events() -> None:
    fanout = FanOut()
    events = fanout.open_consumer(overflow="conflate")
    bar = Bar(
        provider="sim",
        symbol="AAPL",
        ts_event=0,
        ts_recv=0,
        open=1.0,
        high=1.0,
        low=1.0,
        close=1.0,
        volume=1.0,
        interval_s=60,
    )
    published: list[Event] = [trade(1), trade(1), bar, bar, trade(2)]
    for event in published:
        fanout.publish_nowait(event)
    assert drain(events) == published
    assert events.statistics().conflated == 0


@pytest.mark.parametrize(
    "barrier",
    [
        status(),
        overflow_gap("upstream", 1, 0),
        TradingStatus(provider="sim", symbol="AAPL", ts_event=0, ts_recv=0, status_code="H"),
    ],
)
def test_quotes_and_books_never_overtake_a_status_gap_or_trading_status(barrier: Event) -> None:
    fanout = FanOut()
    events = fanout.open_consumer(overflow="conflate")
    first = book(bids=((1.0, 1.0),), snapshot=True)
    after = book(bids=((2.0, 1.0),), snapshot=True)
    publish_all(fanout, quote(1.0), first, barrier, quote(2.0), after, quote(3.0))
    assert drain(events) == [quote(1.0), first, barrier, quote(3.0), after]


def test_replacing_a_quote_is_not_a_loss() -> None:
    fanout = FanOut()
    events = fanout.open_consumer(capacity=1, overflow="conflate")
    for n in range(10):
        fanout.publish_nowait(quote(float(n)))
    assert drain(events) == [quote(9.0)]
    stats = events.statistics()
    assert (stats.dropped, stats.conflated, stats.gaps) == (0, 9, 0)


def test_conflate_drops_the_oldest_trade_when_full_and_announces_it() -> None:
    fanout = FanOut(clock=Ticker())
    events = fanout.open_consumer(capacity=3, overflow="conflate", name="c")
    publish_all(fanout, trade(1), quote(1.0), trade(2), trade(3), quote(2.0))
    assert drain(events) == [overflow_gap("c", 1, 1000), quote(2.0), trade(2), trade(3)]


def test_a_new_slot_in_a_full_buffer_drops_the_oldest_trade_not_a_slot() -> None:
    fanout = FanOut(clock=Ticker())
    events = fanout.open_consumer(capacity=3, overflow="conflate", name="c")
    publish_all(fanout, quote(1.0), trade(1), trade(2), quote(1.0, "MSFT"))
    assert drain(events) == [
        overflow_gap("c", 1, 1000),
        quote(1.0),
        trade(2),
        quote(1.0, "MSFT"),
    ]


def test_a_trade_arriving_at_a_buffer_of_only_slots_is_itself_dropped() -> None:
    fanout = FanOut(clock=Ticker())
    events = fanout.open_consumer(capacity=2, overflow="conflate", name="c")
    publish_all(fanout, quote(1.0), quote(1.0, "MSFT"), trade(1))
    assert drain(events) == [overflow_gap("c", 1, 1000), quote(1.0), quote(1.0, "MSFT")]


def test_a_new_symbol_in_a_buffer_of_only_slots_drops_the_oldest_slot() -> None:
    fanout = FanOut(clock=Ticker())
    events = fanout.open_consumer(capacity=2, overflow="conflate", name="c")
    publish_all(fanout, quote(1.0, "A"), quote(1.0, "B"), quote(1.0, "C"), quote(2.0, "A"))
    assert drain(events) == [overflow_gap("c", 2, 1000), quote(1.0, "C"), quote(2.0, "A")]


def test_a_book_snapshot_replaces_the_pending_deltas() -> None:
    fanout = FanOut()
    events = fanout.open_consumer(overflow="conflate")
    snapshot = book(bids=((9.0, 1.0),), asks=((10.0, 2.0),), snapshot=True)
    publish_all(fanout, book(bids=((1.0, 1.0),)), book(asks=((2.0, 1.0),)), snapshot)
    assert drain(events) == [snapshot]


def test_a_delta_after_a_snapshot_is_applied_to_the_snapshot() -> None:
    fanout = FanOut()
    events = fanout.open_consumer(overflow="conflate")
    snapshot = book(bids=((9.0, 1.0), (8.0, 1.0)), asks=((10.0, 2.0),), snapshot=True)
    publish_all(fanout, snapshot, book(bids=((9.0, 0.0), (7.0, 3.0)), asks=((10.0, 5.0),)))
    assert drain(events) == [
        book(bids=((8.0, 1.0), (7.0, 3.0)), asks=((10.0, 5.0),), snapshot=True)
    ]


def test_deltas_merge_with_later_levels_winning_per_price_deletions_kept() -> None:
    fanout = FanOut()
    events = fanout.open_consumer(overflow="conflate")
    publish_all(
        fanout,
        book(bids=((9.0, 1.0), (8.0, 1.0))),
        book(bids=((9.0, 0.0),), asks=((10.0, 2.0),)),
        book(bids=((8.0, 4.0),)),
    )
    assert drain(events) == [book(bids=((9.0, 0.0), (8.0, 4.0)), asks=((10.0, 2.0),))]
    assert events.statistics().conflated == 2


def test_a_snapshot_older_than_a_published_delta_is_merged_with_nothing() -> None:
    fanout = FanOut()
    events = fanout.open_consumer(overflow="conflate")
    lagging = book(bids=((1.0, 1.0),), snapshot=True, seq=5)
    publish_all(
        fanout,
        book(bids=((2.0, 1.0),), seq=6),
        book(bids=((3.0, 1.0),), seq=7),
        lagging,
        book(bids=((4.0, 1.0),), seq=8),
        book(bids=((5.0, 1.0),), seq=9),
    )
    assert drain(events) == [
        book(bids=((2.0, 1.0), (3.0, 1.0)), seq=7),
        lagging,
        book(bids=((4.0, 1.0), (5.0, 1.0)), seq=9),
    ]


def test_a_delta_not_newer_than_the_pending_snapshot_is_ignored_as_a_book_would() -> None:
    fanout = FanOut()
    events = fanout.open_consumer(overflow="conflate")
    leading = book(bids=((1.0, 1.0),), snapshot=True, seq=7)
    publish_all(fanout, leading, book(bids=((2.0, 1.0),), seq=6), book(bids=((2.0, 1.0),), seq=7))
    assert drain(events) == [leading]
    assert events.statistics().conflated == 2


def test_a_barrier_forgets_the_book_sequence_numbers() -> None:
    fanout = FanOut()
    events = fanout.open_consumer(overflow="conflate")
    restarted = book(bids=((1.0, 1.0),), snapshot=True, seq=1)
    publish_all(fanout, book(seq=900), status(), restarted, book(bids=((2.0, 1.0),), seq=2))
    assert drain(events) == [
        book(seq=900),
        status(),
        book(bids=((1.0, 1.0), (2.0, 1.0)), snapshot=True, seq=2),
    ]


Books = dict[str, tuple[dict[float, float], dict[float, float]]]


def apply_book(books: Books, update: Event) -> None:
    """The reference model: apply one OrderBookUpdate to a dict-of-levels book."""
    if not isinstance(update, OrderBookUpdate):
        return
    if update.snapshot or update.symbol not in books:
        books[update.symbol] = ({}, {})
    for side, levels in zip(books[update.symbol], (update.bids, update.asks), strict=True):
        for price, size in levels:
            if size == 0:
                side.pop(price, None)
            else:
                side[price] = size


levels_st = st.lists(
    st.tuples(st.sampled_from([1.0, 1.5, 2.0, 2.5, 3.0]), st.sampled_from([0.0, 1.0, 2.5])),
    max_size=4,
).map(tuple)
book_st = st.builds(
    book,
    bids=levels_st,
    asks=levels_st,
    snapshot=st.booleans(),
    symbol=st.sampled_from(["A", "B", "C"]),
)
op_st = st.one_of(
    book_st,
    st.builds(trade, st.integers(0, 100), st.sampled_from(["A", "B", "C"])),
    st.just(status()),
    st.integers(1, 5),  # receive this many events now
)


@given(st.lists(op_st, max_size=60))
def test_conflated_book_updates_build_the_same_books_as_applying_each_in_turn(
    ops: list[Event | int],
) -> None:
    """For any interleaving of snapshots, deltas, trades, statuses and partial drains,
    the books built from what a conflating consumer receives equal the books built by
    applying every published update in turn."""
    fanout = FanOut()
    events = fanout.open_consumer(capacity=64, overflow="conflate")
    expected: Books = {}
    actual: Books = {}
    for op in ops:
        if isinstance(op, int):
            for event in drain(events, limit=op):
                apply_book(actual, event)
        else:
            fanout.publish_nowait(op)
            apply_book(expected, op)
    for event in drain(events):
        apply_book(actual, event)
    assert events.statistics().dropped == 0
    assert actual == expected


class BookModel:
    """The book rules of :class:`puffin_trio.book.OrderBook`, reduced to levels and ``seq``.

    A snapshot replaces the book and replays the buffered deltas newer than it;
    a live book ignores a delta whose ``seq`` is not above its own; a book with
    no snapshot yet buffers deltas.
    """

    def __init__(self) -> None:
        self.live = False
        self.seq: int | None = None
        self.sides: tuple[dict[float, float], dict[float, float]] = ({}, {})
        self.pending: list[OrderBookUpdate] = []

    def apply(self, update: OrderBookUpdate) -> None:
        if update.snapshot:
            self.sides = ({}, {})
            self._levels(update)
            self.seq, self.live = update.seq, True
            pending, self.pending = self.pending, []
            for delta in pending:
                if delta.seq is not None and update.seq is not None and delta.seq > update.seq:
                    self._delta(delta)
        elif self.live:
            self._delta(update)
        elif update.seq is not None:
            self.pending.append(update)

    def _delta(self, delta: OrderBookUpdate) -> None:
        if delta.seq is not None:
            if self.seq is not None and delta.seq <= self.seq:
                return
            self.seq = delta.seq
        self._levels(delta)

    def _levels(self, update: OrderBookUpdate) -> None:
        for side, levels in zip(self.sides, (update.bids, update.asks), strict=True):
            for price, size in levels:
                if size == 0:
                    side.pop(price, None)
                else:
                    side[price] = size

    def state(self) -> tuple[bool, int | None, dict[float, float], dict[float, float]]:
        return (self.live, self.seq, *self.sides)


@st.composite
def sequenced_book_streams(draw: st.DrawFn) -> list[OrderBookUpdate | int]:
    """Deltas for books "A" and "B" in ``seq`` order; snapshots that are a book's true
    state at a ``seq`` up to two before or after the stream's position (lagging and
    leading REST snapshots); and ints, which mean "receive up to this many events now"."""
    deltas: dict[str, list[tuple[Levels, Levels]]] = {
        symbol: draw(st.lists(st.tuples(levels_st, levels_st), max_size=12)) for symbol in "AB"
    }
    truth: dict[str, list[tuple[Levels, Levels]]] = {}
    for symbol, updates in deltas.items():
        model = BookModel()
        model.apply(book(snapshot=True, symbol=symbol, seq=0))
        truth[symbol] = [((), ())]
        for seq, (bids, asks) in enumerate(updates, start=1):
            model.apply(book(bids, asks, symbol=symbol, seq=seq))
            truth[symbol].append((tuple(model.sides[0].items()), tuple(model.sides[1].items())))
    position = dict.fromkeys("AB", 0)
    ops: list[OrderBookUpdate | int] = []
    steps = st.sampled_from(["delta A", "delta B", "snapshot A", "snapshot B", "receive"])
    for step in draw(st.lists(steps, max_size=60)) + ["delta A"] * 12 + ["delta B"] * 12:
        symbol = step[-1]
        if step == "receive":
            ops.append(draw(st.integers(1, 4)))
        elif step.startswith("snapshot"):
            here = position[symbol]
            seq = draw(st.integers(max(0, here - 2), min(len(deltas[symbol]), here + 2)))
            bids, asks = truth[symbol][seq]
            ops.append(book(bids, asks, snapshot=True, symbol=symbol, seq=seq))
        elif position[symbol] < len(deltas[symbol]):
            bids, asks = deltas[symbol][position[symbol]]
            position[symbol] += 1
            ops.append(book(bids, asks, symbol=symbol, seq=position[symbol]))
    return ops


@given(sequenced_book_streams())
def test_conflated_sequenced_books_end_where_books_fed_every_update_end(
    ops: list[OrderBookUpdate | int],
) -> None:
    """For deltas in seq order and consistent snapshots taken at any seq (lagging or
    leading the stream), books following OrderBook's rules end in the same state (live
    or not, seq, levels) whether fed every update or what a conflating consumer receives."""
    fanout = FanOut()
    events = fanout.open_consumer(capacity=128, overflow="conflate")
    expected = {symbol: BookModel() for symbol in "AB"}
    actual = {symbol: BookModel() for symbol in "AB"}

    def take(event: Event) -> None:
        assert isinstance(event, OrderBookUpdate)
        actual[event.symbol].apply(event)

    for op in ops:
        if isinstance(op, int):
            for event in drain(events, limit=op):
                take(event)
        else:
            fanout.publish_nowait(op)
            expected[op.symbol].apply(op)
    for event in drain(events):
        take(event)
    assert events.statistics().dropped == 0
    assert {s: m.state() for s, m in actual.items()} == {s: m.state() for s, m in expected.items()}


@given(
    st.sampled_from(OVERFLOW_POLICIES),
    st.integers(1, 8),
    st.lists(
        st.one_of(
            st.builds(trade, st.integers(0, 100), st.sampled_from(["A", "B"])),
            st.builds(quote, st.floats(1, 2), st.sampled_from(["A", "B", "C"])),
            book_st,
            st.just(status()),
            st.just("receive"),
        ),
        max_size=80,
    ),
)
def test_every_published_event_is_delivered_dropped_conflated_or_queued(
    policy: Overflow, capacity: int, ops: list[Event | str]
) -> None:
    """For any policy, capacity and mix of publishes and receives: the buffer never holds
    more than its capacity, published == delivered + dropped + conflated + queued, and the
    overflow gaps announce exactly the dropped events."""
    fanout = FanOut()
    events = fanout.open_consumer(capacity=capacity, overflow=policy)
    received: list[Event] = []
    for op in ops:
        if op == "receive":
            received.extend(drain(events, limit=1))
        else:
            assert not isinstance(op, str)
            try:
                fanout.publish_nowait(op)
            except trio.WouldBlock:
                received.extend(drain(events))
                fanout.publish_nowait(op)
        stats = events.statistics()
        assert stats.queued <= capacity
        assert stats.published == stats.delivered + stats.dropped + stats.conflated + stats.queued
    received.extend(drain(events))
    stats = events.statistics()
    assert stats.max_queued <= capacity
    announced = sum(e.missing for e in received if isinstance(e, Gap) and e.stream == events.name)
    assert announced == stats.dropped
    if policy == "block":
        assert stats.dropped == 0


@fails_on_deadlock
async def test_conflate_memory_is_bounded_trades_are_counted_and_last_quotes_delivered() -> None:
    fanout = FanOut()
    events = fanout.open_consumer(capacity=64, overflow="conflate", name="slow")
    symbols = ["A", "B", "C", "D", "E"]
    published_trades = 0
    last_quote: dict[str, Quote] = {}
    delivered_trades = 0
    announced = 0
    latest_received: dict[str, Quote] = {}

    async def consume_slowly() -> None:
        nonlocal delivered_trades, announced
        async for event in events:
            if isinstance(event, Gap):
                announced += event.missing
            elif isinstance(event, Trade):
                delivered_trades += 1
            elif isinstance(event, Quote):
                latest_received[event.symbol] = event
            for _ in range(3):
                await trio.lowlevel.checkpoint()

    def batches() -> Iterator[list[Event]]:
        nonlocal published_trades
        for start in range(0, 100_000, 100):
            batch: list[Event] = []
            for n in range(start, start + 100):
                symbol = symbols[n % len(symbols)]
                if n % 3:
                    last_quote[symbol] = quote(float(n), symbol, ts=n)
                    batch.append(last_quote[symbol])
                else:
                    published_trades += 1
                    batch.append(trade(n, symbol))
            yield batch

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consume_slowly)
        for batch in batches():
            await fanout.publish_batch(batch)
        fanout.close()
    stats = fanout.statistics().consumers["slow"]
    assert stats.max_queued <= 64
    assert stats.dropped > 0
    assert delivered_trades + stats.dropped == published_trades
    assert announced == stats.dropped
    assert latest_received == last_quote


# --- statistics -------------------------------------------------------------------------


@fails_on_deadlock
async def test_statistics_report_every_counter() -> None:
    fanout = FanOut(clock=lambda: 50_000)
    dropping = fanout.open_consumer(capacity=3, overflow="drop_oldest", name="dropping")
    conflating = fanout.open_consumer(capacity=3, overflow="conflate", name="conflating")
    for n in range(5):
        fanout.publish_nowait(quote(float(n), ts=1000 + n))
    fanout.publish_nowait(trade(2000))
    assert dropping.receive_nowait() == overflow_gap("dropping", 3, 50_000)
    assert dropping.receive_nowait() == quote(3.0, ts=1003)
    assert conflating.receive_nowait() == quote(4.0, ts=1004)
    stats = fanout.statistics()
    assert (stats.published, stats.unconsumed, stats.publishers_waiting, stats.closed) == (
        6,
        0,
        0,
        False,
    )
    assert stats.consumers == {
        "dropping": ConsumerStatistics(
            name="dropping",
            policy="drop_oldest",
            capacity=3,
            published=6,
            queued=2,
            max_queued=3,
            delivered=1,
            dropped=3,
            conflated=0,
            gaps=1,
            unannounced=0,
            lag_ns=50_000 - 1004,
            closed=False,
        ),
        "conflating": ConsumerStatistics(
            name="conflating",
            policy="conflate",
            capacity=3,
            published=6,
            queued=1,
            max_queued=2,
            delivered=1,
            dropped=0,
            conflated=4,
            gaps=0,
            unannounced=0,
            lag_ns=50_000 - 2000,
            closed=False,
        ),
    }


def test_lag_of_a_conflated_slot_counts_from_its_first_update() -> None:
    fanout = FanOut(clock=lambda: 10_000)
    events = fanout.open_consumer(overflow="conflate")
    fanout.publish_nowait(quote(1.0, ts=1000))
    fanout.publish_nowait(quote(2.0, ts=9000))
    assert events.statistics().lag_ns == 9000
    events.receive_nowait()
    assert events.statistics().lag_ns == 0


def test_a_closed_consumer_keeps_its_final_statistics_and_leaves_the_fanout() -> None:
    fanout = FanOut()
    events = fanout.open_consumer(name="c")
    fanout.publish_nowait(trade(1))
    events.close()
    fanout.publish_nowait(trade(2))
    stats = events.statistics()
    assert (stats.published, stats.queued, stats.closed) == (1, 0, True)
    assert "c" not in fanout.statistics().consumers


# --- receiving in batches -----------------------------------------------------------------


@fails_on_deadlock
async def test_receive_batch_returns_what_is_queued_up_to_the_limit_in_order() -> None:
    fanout = FanOut()
    events = fanout.open_consumer()
    for i in range(10):
        fanout.publish_nowait(trade(i))
    assert await events.receive_batch(4) == [trade(i) for i in range(4)]
    assert await events.receive_batch(100) == [trade(i) for i in range(4, 10)]
    assert events.statistics().delivered == 10
    assert events.statistics().queued == 0


@fails_on_deadlock
async def test_receive_batch_waits_for_at_least_one_event() -> None:
    fanout = FanOut()
    events = fanout.open_consumer()
    got: list[list[Event]] = []

    async def take() -> None:
        got.append(await events.receive_batch(100))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(take)
        await trio.testing.wait_all_tasks_blocked()
        assert got == []
        fanout.publish_nowait(trade(1))
    assert got == [[trade(1)]]


@fails_on_deadlock
async def test_receive_batch_is_one_checkpoint_however_many_it_returns() -> None:
    fanout = FanOut()
    events = fanout.open_consumer(capacity=1000)
    for i in range(500):
        fanout.publish_nowait(trade(i))
    turns = 0

    async def count_turns() -> None:
        nonlocal turns
        while True:
            turns += 1
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(count_turns)
        await trio.lowlevel.checkpoint()
        before = turns
        batch = await events.receive_batch(1000)
        # One trip through the scheduler: the ticker ran at most once on each side of it.
        assert turns - before <= 2
        nursery.cancel_scope.cancel()
    assert batch == [trade(i) for i in range(500)]


async def test_a_cancelled_receive_batch_takes_nothing() -> None:
    fanout = FanOut()
    events = fanout.open_consumer()
    publish_all(fanout, trade(1), trade(2))
    with trio.CancelScope() as scope:
        scope.cancel()
        await events.receive_batch(10)
    assert scope.cancelled_caught
    assert await events.receive_batch(10) == [trade(1), trade(2)]


async def test_receive_batch_announces_a_loss_first() -> None:
    fanout = FanOut(clock=lambda: 1000)
    events = fanout.open_consumer(capacity=2, overflow="drop_oldest", name="view")
    publish_all(fanout, trade(1), trade(2), trade(3))
    assert await events.receive_batch(1) == [overflow_gap("view", 1, 1000)]
    publish_all(fanout, trade(4))
    assert await events.receive_batch(10) == [overflow_gap("view", 1, 1000), trade(3), trade(4)]
    assert events.statistics().gaps == 2


async def test_receive_batch_conflates_like_receive() -> None:
    fanout = FanOut()
    events = fanout.open_consumer(overflow="conflate")
    publish_all(fanout, quote(1.0), trade(1), quote(2.0), trade(2))
    assert await events.receive_batch(10) == [quote(2.0), trade(1), trade(2)]


async def test_receive_batch_ends_like_receive() -> None:
    fanout = FanOut()
    events = fanout.open_consumer()
    publish_all(fanout, trade(1))
    fanout.close()
    assert await events.receive_batch(10) == [trade(1)]
    with pytest.raises(trio.EndOfChannel):
        await events.receive_batch(10)
    events.close()
    with pytest.raises(trio.ClosedResourceError):
        await events.receive_batch(10)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, None])
async def test_receive_batch_refuses_a_limit_that_is_not_a_positive_integer(bad: object) -> None:
    events = FanOut().open_consumer()
    with pytest.raises(ValueError, match="max_events"):
        await events.receive_batch(bad)  # type: ignore[arg-type]


@given(
    policy=st.sampled_from(["block", "drop_oldest"]),
    steps=st.lists(
        st.one_of(
            st.integers(min_value=1, max_value=40).map(lambda n: ("publish", n)),
            st.integers(min_value=1, max_value=40).map(lambda n: ("take", n)),
        ),
        max_size=30,
    ),
)
def test_receive_batch_keeps_order_and_counts(
    policy: Overflow, steps: list[tuple[str, int]]
) -> None:
    """Property: whatever the interleaving of publishes and batch sizes, the batches
    joined are the published events in order (minus drops, each announced by a Gap
    counting them), every batch holds between 1 and its limit, and
    published == delivered + dropped + queued."""

    async def run() -> None:
        fanout = FanOut(clock=lambda: 0)
        events = fanout.open_consumer(capacity=16, overflow=policy, name="c")
        published = 0
        received: list[Event] = []
        for action, n in steps:
            if action == "publish":
                for _ in range(n):
                    if policy == "block" and events.statistics().queued == 16:
                        break
                    fanout.publish_nowait(trade(published))
                    published += 1
            elif events.statistics().queued or events.statistics().unannounced:
                batch = await events.receive_batch(n)
                assert 1 <= len(batch) <= n
                received += batch
        stats = events.statistics()
        assert stats.published == stats.delivered + stats.dropped + stats.queued
        data = [e for e in received if isinstance(e, Trade)]
        announced = sum(e.missing or 0 for e in received if isinstance(e, Gap))
        assert [int(e.ts_event) for e in data] == sorted(int(e.ts_event) for e in data)
        assert announced + stats.unannounced == stats.dropped
        assert len(data) == stats.delivered

    trio.run(run)


@fails_on_deadlock
async def test_receive_events_takes_a_batch_from_a_receiver_and_one_event_elsewhere() -> None:
    fanout = FanOut()
    events = fanout.open_consumer()
    publish_all(fanout, trade(1), trade(2), trade(3))
    assert await receive_events(events, 2) == [trade(1), trade(2)]
    send, receive = trio.open_memory_channel[Event](10)
    send.send_nowait(trade(4))
    send.send_nowait(trade(5))
    assert await receive_events(receive, 2) == [trade(4)]
    await send.aclose()
    assert await receive_events(receive, 2) == [trade(5)]
    with pytest.raises(trio.EndOfChannel):
        await receive_events(receive, 2)
