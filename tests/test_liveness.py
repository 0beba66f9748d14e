"""The watchers' state (puffin_trio._liveness), sans-IO: silence, resubscribe, death, and when
an unanswered heartbeat means a dead link."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from puffin_trio._liveness import HeartbeatDeadline, Liveness, Stream
from puffin_trio.events import Bar, Quote, Trade

CONFIRMED = {"trades": frozenset({"AAPL", "MSFT"}), "quotes": frozenset({"*"})}


def test_a_silent_subscription_is_resubscribed_once_then_declared_dead() -> None:
    live = Liveness()
    live.restart(0.0)
    live.streams[Trade]["MSFT"] = Stream(25.0, None)
    assert live.check(29.0, CONFIRMED, 30.0) == ({}, [])
    assert live.check(30.0, CONFIRMED, 30.0) == ({"trades": frozenset({"AAPL"})}, [])
    assert live.check(45.0, CONFIRMED, 30.0) == ({}, []), "resubscribed, not yet dead"
    live.streams[Trade]["MSFT"] = Stream(59.0, None)
    assert live.check(60.0, CONFIRMED, 30.0) == ({}, ["trades:AAPL"])


def test_a_subscription_that_delivers_again_starts_its_next_silence_over() -> None:
    live = Liveness()
    live.restart(0.0)
    assert live.check(30.0, CONFIRMED, 30.0)[0] == {"trades": frozenset({"AAPL", "MSFT"})}
    live.streams[Trade]["AAPL"] = Stream(40.0, None)
    live.streams[Trade]["MSFT"] = Stream(40.0, None)
    assert live.check(50.0, CONFIRMED, 30.0) == ({}, [])
    assert live.check(70.0, CONFIRMED, 30.0)[0] == {"trades": frozenset({"AAPL", "MSFT"})}


def test_restart_forgets_what_was_seen_and_resubscribed() -> None:
    live = Liveness()
    live.restart(0.0)
    live.check(30.0, CONFIRMED, 30.0)
    live.streams[Quote]["AAPL"] = Stream(31.0, None)
    live.restart(100.0)
    assert live.streams[Quote] == {}
    assert live.check(129.0, CONFIRMED, 30.0) == ({}, [])
    assert live.check(130.0, CONFIRMED, 30.0)[0] == {"trades": frozenset({"AAPL", "MSFT"})}


def test_ages_cover_the_desired_liveness_subscriptions_only() -> None:
    live = Liveness()
    live.restart(0.0)
    live.streams[Trade]["AAPL"] = Stream(4.0, None)
    desired = {"trades": frozenset({"AAPL", "MSFT"}), "bars": frozenset({"AAPL"})}
    assert live.ages(10.0, desired) == {"trades:AAPL": 6.0, "trades:MSFT": None}
    assert live.ages(None, desired) == {"trades:AAPL": None, "trades:MSFT": None}
    assert Bar not in live.streams


def test_an_unanswered_heartbeat_on_a_silent_link_expires_at_its_timeout() -> None:
    deadline = HeartbeatDeadline(100.0, frames=7, timeout=10.0)
    assert deadline.deadline == 110.0
    assert deadline.expired(110.0, frames=7)


def test_inbound_data_moves_the_heartbeat_deadline_on() -> None:
    deadline = HeartbeatDeadline(100.0, frames=7, timeout=10.0)
    assert not deadline.expired(110.0, frames=8), "a frame arrived: the link is alive"
    assert deadline.deadline == 120.0
    assert not deadline.expired(120.0, frames=500)
    assert deadline.expired(130.0, frames=500), "then nothing for 10 s: dead"


@given(st.lists(st.integers(0, 3), max_size=50), st.floats(0.1, 100.0))
def test_a_heartbeat_expires_only_after_a_full_timeout_with_nothing_arriving(
    arrivals: list[int], timeout: float
) -> None:
    """Property: asked at each deadline with the frames that arrived since the last one, the
    deadline expires at the first look with no new frame, and never earlier."""
    frames = 0
    deadline = HeartbeatDeadline(0.0, frames, timeout)
    for count in arrivals:
        now = deadline.deadline
        frames += count
        if deadline.expired(now, frames):
            assert count == 0
            return
        assert count > 0 and deadline.deadline == now + timeout
    assert all(count > 0 for count in arrivals)
