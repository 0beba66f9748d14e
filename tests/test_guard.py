"""SequenceGuard: duplicate, reorder and gap detection (puffin_trio.guard).

Also covers the sequence strategies of puffin_trio.testing, which these
tests use to describe what the network did.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from puffin_trio.errors import ConfigurationError
from puffin_trio.events import Gap, GapReason, Trade
from puffin_trio.guard import (
    DEFAULT_MAX_DELAY_NS,
    DEFAULT_MAX_LATE_RUN,
    DEFAULT_WINDOW,
    GuardMode,
    SequenceGuard,
    SequenceGuardStatistics,
)
from puffin_trio.testing import SequenceStream, bounded_reorderings, sequence_streams

KEY = "sim:T:AAPL"
MAX_DELAY = 100


def trade(seq: int | None, symbol: str = KEY, ts_event: int | None = None) -> Trade:
    """A trade on stream ``symbol`` (the tests use the key as the symbol)."""
    return Trade(
        provider="sim",
        symbol=symbol,
        ts_event=ts_event if ts_event is not None else 1_000 + (seq or 0),
        ts_recv=0,
        price=10.0,
        size=1.0,
        seq=seq,
    )


def feed_all(
    guard: SequenceGuard[Trade], seqs: Iterable[int], now_ns: int = 0, key: str = KEY
) -> list[Trade | Gap]:
    out: list[Trade | Gap] = []
    for seq in seqs:
        guard.feed(key, trade(seq, key), now_ns, out)
    return out


def delivered(out: Sequence[Trade | Gap]) -> list[int]:
    """The numbers of the delivered (numbered) trades, in output order."""
    return [item.seq for item in out if isinstance(item, Trade) and item.seq is not None]


def holes(out: Sequence[Trade | Gap]) -> list[range]:
    """The reported gaps as ranges of missing numbers."""
    return [
        range(item.expected, item.received)
        for item in out
        if isinstance(item, Gap) and item.expected is not None and item.received is not None
    ]


def summary(out: Sequence[Trade | Gap]) -> list[int | str]:
    """Delivered numbers, with ``"gap a-b"`` where a gap of a..b-1 sits."""
    shown: list[int | str] = []
    for item in out:
        if isinstance(item, Gap):
            shown.append(f"gap {item.expected}-{item.received}")
        elif item.seq is not None:
            shown.append(item.seq)
    return shown


def check_tiling(out: Sequence[Trade | Gap]) -> None:
    """Strict mode, one key: each gap sits right before the event it names, and the
    delivered numbers and the gaps follow on from each other without overlap."""
    previous: int | None = None
    for index, item in enumerate(out):
        if isinstance(item, Gap):
            assert item.expected is not None and item.received is not None
            assert item.received > item.expected
            assert item.missing == item.received - item.expected
            if previous is not None:
                assert item.expected == previous + 1
            following = out[index + 1]
            assert isinstance(following, Trade) and following.seq == item.received
            previous = item.received - 1
        else:
            assert item.seq is not None
            if previous is not None:
                assert item.seq == previous + 1
            previous = item.seq


# -- plain cases ------------------------------------------------------------------------------


def test_in_order_events_pass_through_unchanged() -> None:
    guard: SequenceGuard[Trade] = SequenceGuard()
    events = [trade(seq) for seq in range(5)]

    out = [item for event in events for item in guard.feed(KEY, event, 0)]

    assert out == events
    assert all(a is b for a, b in zip(out, events, strict=True))
    assert guard.statistics() == SequenceGuardStatistics(
        delivered=5, duplicates=0, late=0, gaps=0, missing=0, buffered=0, keys=1
    )


def test_the_first_message_is_the_start_with_no_gap_before_it() -> None:
    guard: SequenceGuard[Trade] = SequenceGuard()

    assert summary(feed_all(guard, [1_000, 1_001])) == [1_000, 1_001]
    assert guard.statistics().gaps == 0


def test_a_swap_is_put_back_in_order() -> None:
    guard: SequenceGuard[Trade] = SequenceGuard()
    feed_all(guard, [0])

    assert guard.feed(KEY, trade(2), 0) == []
    assert guard.statistics().buffered == 1
    assert delivered(guard.feed(KEY, trade(1), 0)) == [1, 2]
    assert guard.statistics().buffered == 0


def test_a_simple_gap_is_reported_where_the_hole_is_once_the_window_is_full() -> None:
    guard: SequenceGuard[Trade] = SequenceGuard(window=2)
    feed_all(guard, [0, 1])

    assert feed_all(guard, [3, 4], now_ns=5) == []
    out = guard.feed(KEY, trade(5, ts_event=77), 9)  # the gap describes 3, not this one

    assert summary(out) == ["gap 2-3", 3, 4, 5]
    assert out[0] == Gap(
        provider="sim",
        symbol=KEY,
        ts_event=trade(3).ts_event,
        ts_recv=9,
        stream=KEY,
        reason=GapReason.SEQUENCE,
        expected=2,
        received=3,
        missing=1,
    )
    stats = guard.statistics()
    assert (stats.gaps, stats.missing, stats.buffered) == (1, 1, 0)


def test_a_gap_of_several_numbers_is_one_gap_event() -> None:
    guard: SequenceGuard[Trade] = SequenceGuard(window=1)

    out = feed_all(guard, [0, 5, 6])

    assert summary(out) == [0, "gap 1-5", 5, 6]
    assert guard.statistics().missing == 4


def test_a_duplicate_of_a_delivered_message_is_dropped_and_counted() -> None:
    guard: SequenceGuard[Trade] = SequenceGuard()

    assert summary(feed_all(guard, [0, 1, 1, 0])) == [0, 1]
    assert guard.statistics().duplicates == 2


def test_a_duplicate_of_a_buffered_message_is_dropped_and_counted() -> None:
    guard: SequenceGuard[Trade] = SequenceGuard()

    assert summary(feed_all(guard, [0, 2, 2, 1])) == [0, 1, 2]
    assert guard.statistics().duplicates == 1


def test_a_message_below_the_start_is_late() -> None:
    guard: SequenceGuard[Trade] = SequenceGuard()

    assert summary(feed_all(guard, [5, 4, 6])) == [5, 6]
    stats = guard.statistics()
    assert (stats.late, stats.duplicates, stats.gaps) == (1, 0, 0)


def test_a_message_already_reported_missing_is_late_and_missing_stays() -> None:
    guard: SequenceGuard[Trade] = SequenceGuard(window=1)
    feed_all(guard, [0, 2, 3])

    assert guard.feed(KEY, trade(1), 0) == []
    stats = guard.statistics()
    assert (stats.late, stats.duplicates, stats.missing, stats.delivered) == (1, 0, 1, 3)


def test_a_key_remembers_its_last_window_holes_and_counts_older_arrivals_as_late() -> None:
    guard: SequenceGuard[Trade] = SequenceGuard(window=1)
    feed_all(guard, [0, 2, 3, 5, 6])  # holes 1 and 4; with window=1 only hole 4 is remembered

    def fates(seq: int) -> tuple[int, int]:
        assert guard.feed(KEY, trade(seq), 0) == []
        stats = guard.statistics()
        return stats.duplicates, stats.late

    assert fates(4) == (0, 1)  # in the remembered hole
    assert fates(3) == (1, 1)  # delivered, above every forgotten hole
    assert fates(2) == (2, 1)
    assert fates(0) == (2, 2)  # delivered, but below a forgotten hole: not known to be


def test_events_without_a_seq_pass_straight_through_even_past_buffered_ones() -> None:
    guard: SequenceGuard[Trade] = SequenceGuard()
    feed_all(guard, [0, 2])
    unnumbered = trade(None)

    assert guard.feed(KEY, unnumbered, 0) == [unnumbered]
    assert guard.statistics().buffered == 1


def test_keys_are_independent() -> None:
    guard: SequenceGuard[Trade] = SequenceGuard(window=1)
    feed_all(guard, [0, 2], key="a")

    assert summary(feed_all(guard, [7, 8], key="b")) == [7, 8]
    assert summary(guard.feed("a", trade(3, "a"), 0)) == ["gap 1-2", 2, 3]
    assert guard.statistics().keys == 2


def test_none_mode_passes_everything_through() -> None:
    guard: SequenceGuard[Trade] = SequenceGuard("none")

    assert delivered(feed_all(guard, [3, 1, 1, 9])) == [3, 1, 1, 9]
    assert guard.statistics() == SequenceGuardStatistics(
        delivered=4, duplicates=0, late=0, gaps=0, missing=0, buffered=0, keys=0
    )


def test_monotonic_mode_delivers_across_holes_without_a_gap() -> None:
    guard: SequenceGuard[Trade] = SequenceGuard("monotonic")

    assert summary(feed_all(guard, [10, 14, 15, 40])) == [10, 14, 15, 40]
    assert guard.statistics().gaps == 0


def test_monotonic_mode_drops_duplicates_and_late_messages() -> None:
    guard: SequenceGuard[Trade] = SequenceGuard("monotonic")

    assert summary(feed_all(guard, [10, 14, 14, 12, 10, 15])) == [10, 14, 15]
    stats = guard.statistics()
    assert (stats.duplicates, stats.late, stats.buffered) == (2, 1, 0)


def test_monotonic_mode_remembers_the_last_window_delivered_numbers() -> None:
    guard: SequenceGuard[Trade] = SequenceGuard("monotonic", window=2)
    feed_all(guard, [1, 2, 3])

    assert feed_all(guard, [2, 1]) == []
    stats = guard.statistics()
    assert (stats.duplicates, stats.late) == (1, 1)


def test_the_statistics_object_is_frozen() -> None:
    stats = SequenceGuard[Trade]().statistics()

    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        stats.delivered = 1  # type: ignore[misc]


def test_defaults() -> None:
    guard: SequenceGuard[Trade] = SequenceGuard()

    assert (guard.mode, guard.window, guard.max_delay_ns, guard.max_late_run) == (
        "strict",
        DEFAULT_WINDOW,
        DEFAULT_MAX_DELAY_NS,
        DEFAULT_MAX_LATE_RUN,
    )
    assert (DEFAULT_WINDOW, DEFAULT_MAX_DELAY_NS, DEFAULT_MAX_LATE_RUN) == (64, 100_000_000, 64)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "fast"}, "unknown sequence guard mode 'fast'"),
        ({"mode": "STRICT"}, "unknown sequence guard mode 'STRICT'"),
        ({"window": 0}, "window must be a positive whole number of messages, got 0"),
        ({"window": -3}, "window must be a positive whole number of messages, got -3"),
        ({"window": 2.5}, "window must be a positive whole number of messages, got 2.5"),
        ({"window": True}, "window must be a positive whole number of messages, got True"),
        ({"max_delay_ns": 0}, "max_delay_ns must be a positive whole number of nanoseconds"),
        ({"max_delay_ns": 0.1}, "max_delay_ns must be a positive whole number of nanoseconds"),
        ({"max_late_run": 0}, "max_late_run must be a positive whole number of messages"),
        ({"max_late_run": None}, "max_late_run must be a positive whole number of messages"),
    ],
)
def test_bad_constructor_arguments_raise_configuration_error(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        SequenceGuard(**kwargs)  # type: ignore[arg-type]


# -- recovering from a wrong anchor ------------------------------------------------------------


def test_monotonic_a_run_of_max_late_run_late_messages_re_anchors_the_key_with_a_gap() -> None:
    """One absurd number (Polygon's q = 2**62) must not make the rest of the key late."""
    guard: SequenceGuard[Trade] = SequenceGuard("monotonic", max_late_run=4)
    feed_all(guard, [10, 11, 2**62])

    assert feed_all(guard, [12, 13, 14]) == []  # late: 3 in a row
    out = feed_all(guard, [15, 16, 17])

    assert summary(out) == ["gap 12-15", 15, 16, 17]
    gap = out[0]
    assert isinstance(gap, Gap) and (gap.missing, gap.reason) == (3, GapReason.SEQUENCE)
    stats = guard.statistics()
    assert (stats.late, stats.delivered, stats.gaps, stats.missing) == (3, 6, 1, 3)


def test_strict_a_run_of_max_late_run_late_messages_re_anchors_the_key_with_a_gap() -> None:
    guard: SequenceGuard[Trade] = SequenceGuard(max_delay_ns=MAX_DELAY, max_late_run=3)
    feed_all(guard, [1, 2, 10**12])
    [jump, bogus] = guard.poll(MAX_DELAY)  # nothing else came: the hole is given up
    assert isinstance(jump, Gap) and bogus.seq == 10**12

    out = feed_all(guard, [3, 4, 5, 6], now_ns=MAX_DELAY)

    assert summary(out) == ["gap 3-5", 5, 6]
    assert guard.statistics().late == 2


def test_a_delivery_ends_a_run_of_late_messages() -> None:
    """Late messages between deliveries are reordering, however many there are in all."""
    guard: SequenceGuard[Trade] = SequenceGuard("monotonic", max_late_run=3)
    arrivals = [10]
    for top in range(20, 80, 10):
        arrivals += [top, top - 2, top - 1]  # two late, then the next one is above
    out = feed_all(guard, arrivals)

    assert summary(out) == [10, 20, 30, 40, 50, 60, 70]
    assert guard.statistics().late == 12


def test_duplicates_neither_count_towards_nor_end_a_run_of_late_messages() -> None:
    guard: SequenceGuard[Trade] = SequenceGuard("monotonic", max_late_run=3)
    feed_all(guard, [5, 6, 100])

    assert feed_all(guard, [7, 100, 8, 6]) == []
    assert summary(feed_all(guard, [9])) == ["gap 7-9", 9]


def test_an_outlier_far_ahead_of_a_stream_going_on_below_it_is_dropped_at_its_deadline() -> None:
    """Strict: a message more than two windows ahead, with the stream still arriving
    below it, is no reordering; when its time is up it is dropped (counted late),
    instead of the hole below it, which would make the live stream late."""
    guard: SequenceGuard[Trade] = SequenceGuard(window=4, max_delay_ns=MAX_DELAY)
    feed_all(guard, [1, 10**12])
    now = 0
    out: list[Trade | Gap] = []
    for seq in range(2, 40):
        now += MAX_DELAY // 10
        guard.feed(KEY, trade(seq), now, out)
        guard.poll(now, out)

    assert summary(out) == list(range(2, 40))
    stats = guard.statistics()
    assert (stats.late, stats.buffered, stats.gaps) == (1, 0, 0)


def test_a_message_far_ahead_with_nothing_arriving_below_it_is_a_hole_as_before() -> None:
    """Strict: a real outage (the numbers after the hole follow on from it) is a Gap."""
    guard: SequenceGuard[Trade] = SequenceGuard(window=4, max_delay_ns=MAX_DELAY)
    feed_all(guard, [1])
    out = feed_all(guard, [1000, 1001], now_ns=0) + guard.poll(MAX_DELAY)

    assert summary(out) == ["gap 2-1000", 1000, 1001]


# -- the time bound ---------------------------------------------------------------------------


def test_poll_declares_a_hole_missing_once_the_oldest_message_waited_max_delay() -> None:
    guard: SequenceGuard[Trade] = SequenceGuard(max_delay_ns=MAX_DELAY)
    feed_all(guard, [0])
    feed_all(guard, [2], now_ns=1_000)
    feed_all(guard, [4], now_ns=1_050)

    assert guard.next_deadline_ns() == 1_000 + MAX_DELAY
    assert guard.poll(1_000 + MAX_DELAY - 1) == []
    assert summary(guard.poll(1_000 + MAX_DELAY)) == ["gap 1-2", 2]
    assert guard.next_deadline_ns() == 1_050 + MAX_DELAY
    assert summary(guard.poll(1_050 + MAX_DELAY)) == ["gap 3-4", 4]
    assert guard.next_deadline_ns() is None


def test_poll_releases_every_hole_below_an_expired_message() -> None:
    guard: SequenceGuard[Trade] = SequenceGuard(max_delay_ns=MAX_DELAY)
    feed_all(guard, [0])
    feed_all(guard, [5], now_ns=0)
    feed_all(guard, [3], now_ns=60)

    assert summary(guard.poll(MAX_DELAY)) == ["gap 1-3", 3, "gap 4-5", 5]


def test_feed_also_releases_its_keys_expired_messages() -> None:
    guard: SequenceGuard[Trade] = SequenceGuard(max_delay_ns=MAX_DELAY)
    feed_all(guard, [0, 2])

    assert summary(guard.feed(KEY, trade(3), MAX_DELAY)) == ["gap 1-2", 2, 3]


def test_poll_with_nothing_buffered_returns_nothing() -> None:
    guard: SequenceGuard[Trade] = SequenceGuard()
    feed_all(guard, range(3))
    out: list[Trade | Gap] = []

    assert guard.poll(10**12, out) is out
    assert out == []
    assert guard.next_deadline_ns() is None


# -- reset ------------------------------------------------------------------------------------


def test_reset_flushes_the_buffer_in_order_and_forgets_the_key() -> None:
    guard: SequenceGuard[Trade] = SequenceGuard()
    feed_all(guard, [0, 3, 2, 5])

    assert summary(guard.reset(KEY, 7)) == ["gap 1-2", 2, 3, "gap 4-5", 5]
    assert guard.statistics().keys == 0
    assert summary(feed_all(guard, [1, 2])) == [1, 2]


def test_reset_of_an_unknown_key_does_nothing() -> None:
    guard: SequenceGuard[Trade] = SequenceGuard()

    assert guard.reset("nobody", 0) == []


def test_reset_all_flushes_and_forgets_every_key() -> None:
    guard: SequenceGuard[Trade] = SequenceGuard()
    feed_all(guard, [0, 2], key="a")
    feed_all(guard, [5, 7], key="b")

    out = guard.reset_all(0)

    assert summary([item for item in out if item.symbol == "a"]) == ["gap 1-2", 2]
    assert summary([item for item in out if item.symbol == "b"]) == ["gap 6-7", 7]
    assert (guard.statistics().keys, guard.statistics().buffered) == (0, 0)


def test_monotonic_reset_forgets_the_watermark() -> None:
    guard: SequenceGuard[Trade] = SequenceGuard("monotonic")
    feed_all(guard, [10])

    assert guard.reset(KEY, 0) == []
    assert summary(feed_all(guard, [3])) == [3]


# -- properties -------------------------------------------------------------------------------


@given(stream=sequence_streams(max_displacement=8), window=st.integers(1, 8))
def test_output_is_strictly_increasing_and_free_of_duplicates(
    stream: SequenceStream, window: int
) -> None:
    """Whatever arrives, the strict output (flushed by reset) is strictly increasing,
    each gap sits right before the event it names, and events and gaps tile the range."""
    guard: SequenceGuard[Trade] = SequenceGuard(window=window)

    out = feed_all(guard, stream.arrivals) + guard.reset(KEY, 0)

    numbers = delivered(out)
    assert numbers == sorted(set(numbers))
    check_tiling(out)


@given(stream=sequence_streams(max_displacement=6), slack=st.integers(0, 3))
def test_within_the_window_every_received_number_from_the_start_is_delivered_once(
    stream: SequenceStream, slack: int
) -> None:
    """With displacement <= window (and no time expiry), every number that arrives
    at or after the first arrival is delivered exactly once; copies are duplicates,
    and only numbers below the first arrival (the start) are late."""
    guard: SequenceGuard[Trade] = SequenceGuard(window=max(1, stream.displacement + slack))

    out = feed_all(guard, stream.arrivals) + guard.reset(KEY, 0)

    start = stream.arrivals[0] if stream.arrivals else 0
    out_seqs = delivered(out)
    assert out_seqs == sorted(seq for seq in stream.received if seq >= start)
    stats = guard.statistics()
    assert stats.late == sum(1 for seq in stream.arrivals if seq < start)
    assert stats.duplicates == sum(1 for seq in stream.arrivals if seq >= start) - len(out_seqs)


@given(stream=sequence_streams(max_displacement=6), slack=st.integers(0, 3))
def test_within_the_window_the_gaps_are_exactly_the_detectable_dropped_runs(
    stream: SequenceStream, slack: int
) -> None:
    """With displacement <= window and no time expiry, the gaps are exactly the runs of
    dropped numbers between the first arrival and the highest one. Drops before the
    first arrival are before the start; drops after the highest arrival cannot be seen."""
    guard: SequenceGuard[Trade] = SequenceGuard(window=max(1, stream.displacement + slack))

    out = feed_all(guard, stream.arrivals) + guard.reset(KEY, 0)

    if stream.arrivals:
        first, last = stream.arrivals[0], max(stream.arrivals)
        expected = [run for run in stream.dropped_runs() if first < run.start and run.stop <= last]
    else:
        expected = []
    assert holes(out) == expected
    assert guard.statistics().missing == sum(len(run) for run in expected)


@given(stream=sequence_streams(max_len=40, max_displacement=12), window=st.integers(1, 3))
def test_beyond_the_window_the_accounting_adds_up_and_nothing_is_lost_silently(
    stream: SequenceStream, window: int
) -> None:
    """With displacement > window, messages come too late and are dropped, but each
    input is counted exactly once (delivered + duplicates + late == inputs), the
    delivered numbers and the numbers reported missing tile [start, last delivered]
    (delivered + missing == last - start + 1), and every number that arrived was
    either delivered, reported missing, or is below the start."""
    guard: SequenceGuard[Trade] = SequenceGuard(window=window)

    out = feed_all(guard, stream.arrivals) + guard.reset(KEY, 0)

    stats = guard.statistics()
    assert stats.delivered + stats.duplicates + stats.late == len(stream.arrivals)
    numbers = delivered(out)
    reported = {seq for run in holes(out) for seq in run}
    if stream.arrivals:
        start = stream.arrivals[0]
        assert stats.delivered + stats.missing == numbers[-1] - start + 1
        assert set(numbers) | reported == set(range(start, numbers[-1] + 1))
        assert all(seq in set(numbers) | reported or seq < start for seq in stream.arrivals)
    assert not set(numbers) & reported


@given(stream=sequence_streams(max_displacement=10), window=st.integers(1, 6))
def test_the_buffer_never_exceeds_the_window(stream: SequenceStream, window: int) -> None:
    """After every feed, the reorder buffer holds at most ``window`` messages."""
    guard: SequenceGuard[Trade] = SequenceGuard(window=window)

    for seq in stream.arrivals:
        guard.feed(KEY, trade(seq), 0)
        assert guard.statistics().buffered <= window


@given(stream=sequence_streams(max_displacement=6), spacing=st.integers(1, 5))
def test_monotonic_mode_reports_no_gaps_and_detects_duplicates_and_reordering(
    stream: SequenceStream, spacing: int
) -> None:
    """Monotonic mode delivers a number iff it is above every number seen so far,
    never reports a hole, counts a repeat of a delivered number as a duplicate
    and any other number below the highest delivered (a reordered one) as late."""
    guard: SequenceGuard[Trade] = SequenceGuard("monotonic")
    arrivals = [seq * spacing for seq in stream.arrivals]

    out = feed_all(guard, arrivals)

    expected: list[int] = []
    duplicates = late = 0
    for seq in arrivals:
        if not expected or seq > expected[-1]:
            expected.append(seq)
        elif seq in expected:
            duplicates += 1
        else:
            late += 1
    assert out == [trade(seq) for seq in expected]
    stats = guard.statistics()
    assert (stats.duplicates, stats.late, stats.gaps, stats.missing, stats.buffered) == (
        duplicates,
        late,
        0,
        0,
        0,
    )


@given(
    stream=sequence_streams(max_displacement=4),
    steps=st.lists(st.integers(0, 2 * MAX_DELAY), min_size=100, max_size=100),
)
def test_a_hole_is_declared_missing_exactly_when_the_oldest_message_has_waited_max_delay(
    stream: SequenceStream, steps: list[int]
) -> None:
    """With the count bound out of reach, a gap is declared only when the oldest
    buffered message has waited max_delay_ns or more, and after poll(now) no
    buffered message has waited that long (next_deadline_ns() > now)."""
    guard: SequenceGuard[Trade] = SequenceGuard(window=1_000, max_delay_ns=MAX_DELAY)
    now = 0
    waiting: dict[int, int] = {}  # kept (delivered or buffered) number -> arrival time
    for seq, step in zip(stream.arrivals, steps, strict=False):
        now += step
        before = guard.statistics()
        out = guard.feed(KEY, trade(seq), now)
        after = guard.statistics()
        if (after.duplicates, after.late) == (before.duplicates, before.late):
            waiting[seq] = now
        out += guard.poll(now)
        for item in out:
            if isinstance(item, Gap):
                assert item.received == min(waiting)
                assert min(waiting.values()) <= now - MAX_DELAY
            else:
                assert item.seq is not None
                del waiting[item.seq]
        deadline = guard.next_deadline_ns()
        assert deadline is None or deadline > now
        assert deadline == (min(waiting.values()) + MAX_DELAY if waiting else None)


@given(stream=sequence_streams(max_displacement=6), window=st.integers(1, 8), then=st.integers())
def test_reset_flushes_everything_buffered_and_forgets_the_key(
    stream: SequenceStream, window: int, then: int
) -> None:
    """reset(key) releases every buffered message, in order, and empties the guard:
    the next number on the key is a new start, whatever it is."""
    guard: SequenceGuard[Trade] = SequenceGuard(window=window)
    out = feed_all(guard, stream.arrivals)
    buffered = guard.statistics().buffered

    flushed = guard.reset(KEY, 0)

    assert len(delivered(flushed)) == buffered
    check_tiling(out + flushed)
    stats = guard.statistics()
    assert (stats.buffered, stats.keys) == (0, 0)
    assert delivered(guard.feed(KEY, trade(then), 0)) == [then]


@given(
    mode=st.sampled_from(["strict", "monotonic", "none"]),
    frames=st.lists(
        st.lists(
            st.tuples(
                st.sampled_from(["k1", "k2", "k3"]),
                st.none() | st.integers(0, 40),
                st.integers(0, 150),
            ),
            max_size=12,
        ),
        max_size=12,
    ),
)
def test_feed_many_is_exactly_feed_in_a_loop(
    mode: GuardMode, frames: list[list[tuple[str, int | None, int]]]
) -> None:
    """feed_many(keys, events, now) gives the output, counters and later behaviour of
    feed(key, event, now) called on each pair in turn: duplicates, late runs, re-anchors,
    holes and expiries included (small windows and numbers make them all happen)."""

    def guard() -> SequenceGuard[Trade]:
        return SequenceGuard(mode, window=3, max_delay_ns=MAX_DELAY, max_late_run=3)

    one, many = guard(), guard()
    now = 0
    for frame in frames:
        now += frame[0][2] if frame else 1
        keys = [key for key, _, _ in frame]
        events = [trade(seq, key) for key, seq, _ in frame]
        looped: list[Trade | Gap] = []
        for key, event in zip(keys, events, strict=True):
            one.feed(key, event, now, looped, now + 1)
        assert many.feed_many(keys, events, now, None, now + 1) == looped
        assert many.statistics() == one.statistics()
        assert many.poll(now + MAX_DELAY) == one.poll(now + MAX_DELAY)


@pytest.mark.parametrize("mode", ["strict", "monotonic", "none"])
def test_feed_many_refuses_keys_and_events_of_different_lengths_and_takes_nothing(
    mode: GuardMode,
) -> None:
    guard: SequenceGuard[Trade] = SequenceGuard(mode)
    with pytest.raises(ValueError, match="1 keys for 2 events"):
        guard.feed_many(["k1"], [trade(1, "k1"), trade(2, "k1")], 0)
    assert guard.statistics() == SequenceGuard(mode).statistics()


#: Numbers around the ends of a 64-bit integer, where a monotonic key's ring of machine
#: integers gives way to Python ints.
BEYOND_64_BITS = [2**63 - 2, 2**63 - 1, 2**63, 2**64 + 5, -(2**63), -(2**63) - 1, -(2**70)]


@given(
    mode=st.sampled_from(["strict", "monotonic", "none"]),
    frames=st.lists(
        st.tuples(
            st.lists(
                st.tuples(
                    st.sampled_from(["k1", "k2", "k3"]),
                    st.none() | st.integers(0, 40) | st.sampled_from(BEYOND_64_BITS),
                    st.integers(0, 150),
                ),
                max_size=12,
            ),
            st.none() | st.sampled_from(["k1", "k2", "*"]),
        ),
        max_size=12,
    ),
)
def test_feed_streams_with_handles_kept_throughout_is_exactly_feed_in_a_loop(
    mode: GuardMode, frames: list[tuple[list[tuple[str, int | None, int]], str | None]]
) -> None:
    """feed_streams(handles, events, now), with each key's handle taken once before
    anything was fed and kept through resets, gives the output, counters and later
    behaviour of feed(key, event, now) on each pair in turn: duplicates, late runs,
    re-anchors, holes, expiries and numbers beyond 64 bits included."""

    def guard() -> SequenceGuard[Trade]:
        return SequenceGuard(mode, window=3, max_delay_ns=MAX_DELAY, max_late_run=3)

    one, many = guard(), guard()
    handles = {key: many.stream(key) for key in ("k1", "k2", "k3")}
    now = 0
    for frame, reset in frames:
        now += frame[0][2] if frame else 1
        events = [trade(seq, key) for key, seq, _ in frame]
        looped: list[Trade | Gap] = []
        for (key, _, _), event in zip(frame, events, strict=True):
            one.feed(key, event, now, looped, now + 1)
        streams = [handles[key] for key, _, _ in frame]
        assert many.feed_streams(streams, events, now, None, now + 1) == looped
        assert many.statistics() == one.statistics()
        assert many.poll(now + MAX_DELAY) == one.poll(now + MAX_DELAY)
        if reset == "*":
            assert many.reset_all(now, None, now + 2) == one.reset_all(now, None, now + 2)
        elif reset is not None:
            assert many.reset(reset, now, None, now + 2) == one.reset(reset, now, None, now + 2)
    if mode != "none":
        assert all(many.stream(key) is handle for key, handle in handles.items())


@pytest.mark.parametrize("mode", ["strict", "monotonic"])
def test_a_key_has_one_handle_and_taking_it_starts_nothing(mode: GuardMode) -> None:
    guard: SequenceGuard[Trade] = SequenceGuard(mode)
    handle = guard.stream(KEY)
    assert (handle.key, guard.stream(KEY)) == (KEY, handle)
    assert guard.statistics().keys == 0
    assert delivered(guard.feed_streams([handle], [trade(7)], 0)) == [7]  # the start
    assert delivered(guard.feed(KEY, trade(8), 0)) == [8]
    assert guard.statistics().keys == 1
    guard.reset(KEY, 0)
    assert (guard.stream(KEY), guard.statistics().keys) == (handle, 0)
    assert delivered(guard.feed_streams([handle], [trade(2)], 0)) == [2]  # a new start


def test_monotonic_numbers_beyond_64_bits_are_guarded_like_any_other() -> None:
    guard: SequenceGuard[Trade] = SequenceGuard("monotonic", window=4)
    handle = guard.stream(KEY)
    numbers = [2**63 - 2, 2**63 - 1, 2**63, 2**63 - 1, 2**70, 2**63, 2**70 + 1]
    out = guard.feed_streams([handle] * len(numbers), [trade(q) for q in numbers], 0)
    assert delivered(out) == [2**63 - 2, 2**63 - 1, 2**63, 2**70, 2**70 + 1]
    assert (guard.statistics().duplicates, guard.statistics().late) == (2, 0)
    low = guard.stream("low")
    out = guard.feed_streams([low] * 3, [trade(q, "low") for q in (-(2**70), -5, -(2**70))], 0)
    assert delivered(out) == [-(2**70), -5]
    assert guard.statistics().duplicates == 3


@pytest.mark.parametrize("mode", ["strict", "monotonic"])
def test_a_handle_of_another_guard_is_refused(mode: GuardMode) -> None:
    mine: SequenceGuard[Trade] = SequenceGuard(mode)
    theirs: SequenceGuard[Trade] = SequenceGuard(mode)
    foreign = theirs.stream(KEY)
    theirs.feed_streams([foreign], [trade(1)], 0)
    with pytest.raises(ValueError, match="'sim:T:AAPL' belongs to another guard"):
        mine.feed_streams([mine.stream("other"), foreign], [trade(5, "other"), trade(2)], 0)
    assert mine.statistics().delivered == 1  # the event before it was taken
    assert theirs.statistics().delivered == 1  # the foreign key was not touched


@pytest.mark.parametrize("mode", ["strict", "monotonic", "none"])
def test_feed_streams_refuses_streams_and_events_of_different_lengths_and_takes_nothing(
    mode: GuardMode,
) -> None:
    guard: SequenceGuard[Trade] = SequenceGuard(mode)
    with pytest.raises(ValueError, match="1 streams for 2 events"):
        guard.feed_streams([guard.stream("k1")], [trade(1, "k1"), trade(2, "k1")], 0)
    assert guard.statistics() == SequenceGuard(mode).statistics()


# -- stateful ---------------------------------------------------------------------------------


@attrs.define
class Segment:
    """What the model knows about one key since its start."""

    start: int
    last: int  # the highest number delivered (strict: or reported missing)
    delivered: list[int]
    gaps: list[range] = attrs.field(factory=list)
    waiting: dict[int, int] = attrs.field(factory=dict)  # buffered number -> arrival time
    late_run: list[int] = attrs.field(factory=list)  # numbers dropped late since last moved
    run_at: int | None = None  # the value of last when late_run began


KEYS = ("a", "b")


class GuardMachine(RuleBasedStateMachine):
    """Drives feed / poll / reset / reset_all on two keys and checks the fate of every
    message and the place of every gap against the documented rules; invariants:
    each buffer stays within the window, and the accounting identities hold.

    A small ``max_late_run`` makes re-anchoring happen. (The strict outlier rule cannot:
    messages are fed at most two ahead of the next expected number, never more than
    two windows ahead; test_an_outlier_far_ahead_... covers it.)"""

    guard: SequenceGuard[Trade]
    mode: GuardMode

    def __init__(self) -> None:
        super().__init__()
        self.now = 0
        self.inputs = 0
        self.gaps = 0
        self.missing = 0
        self.closed_span = 0  # strict: sum of last - start + 1 over the segments reset
        self.reanchored = 0  # the missing counts of re-anchor gaps (late drops announced)
        self.segments: dict[str, Segment] = {}

    @initialize(
        mode=st.sampled_from(["strict", "monotonic"]),
        window=st.integers(1, 4),
        max_late_run=st.integers(2, 6),
    )
    def make_guard(self, mode: GuardMode, window: int, max_late_run: int) -> None:
        self.mode = mode
        self.guard = SequenceGuard(
            mode, window=window, max_delay_ns=MAX_DELAY, max_late_run=max_late_run
        )

    @rule(
        burst=st.lists(
            st.tuples(
                st.sampled_from(KEYS),
                st.one_of(st.integers(1, 3), st.integers(-12, 0)),
                st.integers(0, MAX_DELAY // 2),
            ),
            min_size=1,
            max_size=12,
        )
    )
    def feed(self, burst: list[tuple[str, int, int]]) -> None:
        """Feed numbers near each key's last one: half of them ahead, with holes, and
        half behind (duplicates, or late or reordered messages)."""
        for key, offset, step in burst:
            self.feed_one(key, offset, step)

    def feed_one(self, key: str, offset: int, step: int) -> None:
        self.now += step
        self.inputs += 1
        segment = self.segments.get(key)
        seq = offset if segment is None else segment.last + offset
        event = trade(seq, key)
        before = self.guard.statistics()
        out = self.guard.feed(key, event, self.now)
        after = self.guard.statistics()
        dropped = (after.duplicates - before.duplicates, after.late - before.late)
        if segment is None:
            assert out == [event]
            self.segments[key] = Segment(start=seq, last=seq, delivered=[seq])
            return
        fate = self.fate(segment, seq)
        if fate == "late":
            if segment.run_at != segment.last:
                segment.run_at, segment.late_run = segment.last, []
            segment.late_run.append(seq)
            if len(segment.late_run) == self.guard.max_late_run:
                fate = "reanchor"
        assert dropped == {
            "kept": (0, 0), "duplicate": (1, 0), "late": (0, 1), "reanchor": (0, 0)
        }[fate]  # fmt: skip
        if fate == "reanchor":
            self.check_reanchor(key, segment, event, out)
            return
        if fate == "kept" and self.mode == "strict":
            segment.waiting[seq] = self.now
        self.check_output(out, forced=False)
        assert all(arrival > self.now - MAX_DELAY for arrival in segment.waiting.values())

    def check_reanchor(
        self, key: str, segment: Segment, event: Trade, out: list[Trade | Gap]
    ) -> None:
        """The late run reached max_late_run: the key is flushed as by reset, a Gap names
        the run (its first number, the new start, the messages dropped) and the message
        that ended the run is delivered as the key's new start."""
        assert out[-1] is event and event.seq is not None
        gap = out[-2]
        assert isinstance(gap, Gap) and gap.stream == key
        run = segment.late_run
        assert (gap.expected, gap.received, gap.missing) == (run[0], event.seq, len(run) - 1)
        assert (gap.reason, gap.ts_recv, gap.ts_event) == (
            GapReason.SEQUENCE, self.now, event.ts_event
        )  # fmt: skip
        self.check_output(out[:-2], forced=True)
        self.close(key)
        self.gaps += 1
        self.missing += gap.missing
        self.reanchored += gap.missing
        self.segments[key] = Segment(start=event.seq, last=event.seq, delivered=[event.seq])

    def fate(self, segment: Segment, seq: int) -> str:
        """What the documented rules say becomes of ``seq`` on this key."""
        window = self.guard.window
        if self.mode == "monotonic":
            if seq > segment.last:
                return "kept"
            return "duplicate" if seq in segment.delivered[-window:] else "late"
        if seq > segment.last:
            return "duplicate" if seq in segment.waiting else "kept"
        forgotten = segment.gaps[:-window]
        horizon = forgotten[-1].stop if forgotten else segment.start
        return "duplicate" if seq >= horizon and seq in segment.delivered else "late"

    @rule(step=st.integers(0, 2 * MAX_DELAY))
    def poll(self, step: int) -> None:
        self.now += step
        self.check_output(self.guard.poll(self.now), forced=False)
        deadline = self.guard.next_deadline_ns()
        assert deadline is None or deadline > self.now

    @precondition(lambda self: self.guard.next_deadline_ns() is not None)
    @rule()
    def poll_at_the_deadline(self) -> None:
        deadline = self.guard.next_deadline_ns()
        assert deadline is not None
        self.now = max(self.now, deadline)  # feeding another key does not expire this one
        out = self.guard.poll(self.now)
        assert any(isinstance(item, Gap) for item in out)
        self.check_output(out, forced=False)

    @precondition(lambda self: bool(self.segments))
    @rule(data=st.data())
    def reset(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(sorted(self.segments)))
        self.check_output(self.guard.reset(key, self.now), forced=True)
        self.close(key)

    @rule()
    def reset_all(self) -> None:
        self.check_output(self.guard.reset_all(self.now), forced=True)
        for key in list(self.segments):
            self.close(key)

    def close(self, key: str) -> None:
        segment = self.segments.pop(key)
        assert not segment.waiting
        self.closed_span += segment.last - segment.start + 1

    def check_output(self, out: list[Trade | Gap], *, forced: bool) -> None:
        """Per key, the output carries on from the last number, in order; a gap names the
        lowest buffered number, comes right before it, and only when a bound (or a
        reset, when ``forced``) says so."""
        announced: dict[str, int] = {}  # key -> the number a gap said comes next
        for item in out:
            if isinstance(item, Gap):
                assert self.mode == "strict"
                segment = self.segments[item.stream]
                assert item.received is not None and item.received == min(segment.waiting)
                assert item.expected == segment.last + 1
                assert item.missing == item.received - item.expected
                assert (item.provider, item.symbol, item.reason, item.ts_recv) == (
                    "sim",
                    item.stream,
                    GapReason.SEQUENCE,
                    self.now,
                )
                assert item.ts_event == trade(item.received).ts_event
                assert (
                    forced
                    or len(segment.waiting) > self.guard.window
                    or min(segment.waiting.values()) <= self.now - MAX_DELAY
                )
                segment.gaps.append(range(item.expected, item.received))
                segment.last = item.received - 1
                announced[item.stream] = item.received
                self.gaps += 1
                self.missing += item.missing
                continue
            assert item.seq is not None
            segment = self.segments[item.symbol]
            if item.symbol in announced:
                assert item.seq == announced.pop(item.symbol)
            if self.mode == "strict":
                assert item.seq == segment.last + 1
                del segment.waiting[item.seq]
            else:
                assert item.seq > segment.last
            segment.last = item.seq
            segment.delivered.append(item.seq)
        assert not announced

    @invariant()
    def buffers_stay_within_the_window(self) -> None:
        stats = self.guard.statistics()
        assert all(len(s.waiting) <= self.guard.window for s in self.segments.values())
        assert stats.buffered == sum(len(s.waiting) for s in self.segments.values())
        assert stats.keys == len(self.segments)

    @invariant()
    def accounting_adds_up(self) -> None:
        stats = self.guard.statistics()
        assert stats.delivered + stats.duplicates + stats.late + stats.buffered == self.inputs
        assert (stats.gaps, stats.missing) == (self.gaps, self.missing)
        if self.mode == "strict":
            open_span = sum(s.last - s.start + 1 for s in self.segments.values())
            announced = stats.missing - self.reanchored  # holes, without announced late drops
            assert stats.delivered + announced == self.closed_span + open_span


TestGuardMachine = GuardMachine.TestCase


# -- the strategies ---------------------------------------------------------------------------


@given(data=st.data(), length=st.integers(0, 30), max_displacement=st.integers(0, 6))
def test_bounded_reorderings_move_nothing_further_than_the_bound(
    data: st.DataObject, length: int, max_displacement: int
) -> None:
    """A bounded reordering is a permutation in which no element moves more than the bound."""
    items = list(range(length))

    shuffled = data.draw(bounded_reorderings(items, max_displacement))

    assert sorted(shuffled) == items
    assert all(abs(place - item) <= max_displacement for place, item in enumerate(shuffled))


@given(stream=sequence_streams(min_len=1, max_len=30, start=100, max_displacement=5))
def test_sequence_streams_record_what_was_done(stream: SequenceStream) -> None:
    """The record matches the arrivals: dropped numbers never arrive, duplicated ones
    arrive twice, the rest once, and the displacement respects the bound."""
    assert stream.sent.start == 100 and 1 <= len(stream.sent) <= 30
    assert stream.dropped <= set(stream.sent) and not stream.dropped & stream.duplicated
    for seq in stream.sent:
        copies = stream.arrivals.count(seq)
        assert copies == (0 if seq in stream.dropped else 2 if seq in stream.duplicated else 1)
    assert 0 <= stream.displacement <= 5
    runs = stream.dropped_runs()
    assert {seq for run in runs for seq in run} == stream.dropped
    assert all(a.stop < b.start for a, b in itertools.pairwise(runs))


@given(stream=sequence_streams(drop=False, duplicate=False, max_displacement=0))
def test_sequence_streams_without_damage_are_the_sent_numbers_in_order(
    stream: SequenceStream,
) -> None:
    """With no drops, no duplicates and no displacement, what arrives is what was sent."""
    assert stream.arrivals == tuple(stream.sent)
    assert stream.displacement == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_len": -1}, "need 0 <= min_len <= max_len"),
        ({"min_len": 5, "max_len": 4}, "need 0 <= min_len <= max_len"),
        ({"max_displacement": -1}, "max_displacement must be >= 0"),
    ],
)
def test_sequence_streams_reject_bad_bounds(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        sequence_streams(**kwargs)  # type: ignore[arg-type]


def test_bounded_reorderings_reject_a_negative_bound() -> None:
    with pytest.raises(ValueError, match="max_displacement must be >= 0, got -1"):
        bounded_reorderings([1, 2], -1)


def test_deadlines_run_on_now_ns_and_gaps_carry_wall_ns() -> None:
    """The two clocks are separate: a wall clock stepping an hour forward moves no
    deadline, and the ``Gap`` a deadline produces is stamped with the wall clock."""
    wall = 1_700_000_000_000_000_000
    guard: SequenceGuard[Trade] = SequenceGuard("strict")
    assert guard.feed(KEY, trade(1), 0, wall_ns=wall) == [trade(1)]
    assert guard.feed(KEY, trade(3), 1_000, wall_ns=wall) == []
    assert guard.feed(KEY, trade(4), 2_000, wall_ns=wall + 3600 * 10**9) == []
    assert guard.next_deadline_ns() == 1_000 + guard.max_delay_ns
    assert guard.poll(guard.max_delay_ns, wall_ns=wall + 7) == []
    released = guard.poll(1_000 + guard.max_delay_ns, wall_ns=wall + 9)
    gap = released[0]
    assert isinstance(gap, Gap) and (gap.expected, gap.missing) == (2, 1)
    assert gap.ts_recv == wall + 9
    assert released[1:] == [trade(3), trade(4)]


def test_one_clock_serves_both_when_no_wall_time_is_given() -> None:
    guard: SequenceGuard[Trade] = SequenceGuard("strict")
    guard.feed(KEY, trade(1), 0)
    guard.feed(KEY, trade(3), 5)
    (gap, _) = guard.poll(5 + guard.max_delay_ns)
    assert isinstance(gap, Gap) and gap.ts_recv == 5 + guard.max_delay_ns
