"""The health-checker's state (puffin_trio._liveness), sans-IO: silence, resubscribe, death."""

from __future__ import annotations

from puffin_trio._liveness import Liveness
from puffin_trio.events import Bar, Quote, Trade

CONFIRMED = {"trades": frozenset({"AAPL", "MSFT"}), "quotes": frozenset({"*"})}


def test_a_silent_subscription_is_resubscribed_once_then_declared_dead() -> None:
    live = Liveness()
    live.restart(0.0)
    live.seen[Trade]["MSFT"] = 25.0
    assert live.check(29.0, CONFIRMED, 30.0) == ({}, [])
    assert live.check(30.0, CONFIRMED, 30.0) == ({"trades": frozenset({"AAPL"})}, [])
    assert live.check(45.0, CONFIRMED, 30.0) == ({}, []), "resubscribed, not yet dead"
    live.seen[Trade]["MSFT"] = 59.0
    assert live.check(60.0, CONFIRMED, 30.0) == ({}, ["trades:AAPL"])


def test_a_subscription_that_delivers_again_starts_its_next_silence_over() -> None:
    live = Liveness()
    live.restart(0.0)
    assert live.check(30.0, CONFIRMED, 30.0)[0] == {"trades": frozenset({"AAPL", "MSFT"})}
    live.seen[Trade]["AAPL"] = 40.0
    live.seen[Trade]["MSFT"] = 40.0
    assert live.check(50.0, CONFIRMED, 30.0) == ({}, [])
    assert live.check(70.0, CONFIRMED, 30.0)[0] == {"trades": frozenset({"AAPL", "MSFT"})}


def test_restart_forgets_what_was_seen_and_resubscribed() -> None:
    live = Liveness()
    live.restart(0.0)
    live.check(30.0, CONFIRMED, 30.0)
    live.seen[Quote]["AAPL"] = 31.0
    live.restart(100.0)
    assert live.seen[Quote] == {}
    assert live.check(129.0, CONFIRMED, 30.0) == ({}, [])
    assert live.check(130.0, CONFIRMED, 30.0)[0] == {"trades": frozenset({"AAPL", "MSFT"})}


def test_ages_cover_the_desired_liveness_subscriptions_only() -> None:
    live = Liveness()
    live.restart(0.0)
    live.seen[Trade]["AAPL"] = 4.0
    desired = {"trades": frozenset({"AAPL", "MSFT"}), "bars": frozenset({"AAPL"})}
    assert live.ages(10.0, desired) == {"trades:AAPL": 6.0, "trades:MSFT": None}
    assert live.ages(None, desired) == {"trades:AAPL": None, "trades:MSFT": None}
    assert Bar not in live.seen
