"""Subscriptions as state: what the user wants, what was sent, what the server confirmed.

This module owns :class:`SubscriptionState`, the per-session record of
subscriptions as *desired* (what the user asked for, replayed on every
reconnect) and *confirmed* (the server said so); what is desired and not
confirmed is in flight. It is plain data with no I/O; the session changes it and waits on
it.

Desired state is changed only by the user (``sup.add``, ``sup.subscribe``,
``sup.unsubscribe``) or by a provider error that concerns one subscription
(IB 200 "no security definition"); reconnects never change it.
"""

from __future__ import annotations

from collections.abc import Mapping

import trio

from puffin_trio.providers._base import Topics

__all__ = ["SubscriptionState", "merge_topics", "subtract_topics"]


def merge_topics(a: Mapping[str, frozenset[str]], b: Topics) -> dict[str, frozenset[str]]:
    """``a`` plus ``b``, channel by channel."""
    out = dict(a)
    for channel, symbols in b.items():
        out[channel] = out.get(channel, frozenset()) | frozenset(symbols)
    return {c: s for c, s in out.items() if s}


def subtract_topics(a: Mapping[str, frozenset[str]], b: Topics) -> dict[str, frozenset[str]]:
    """``a`` minus ``b``, channel by channel."""
    out = dict(a)
    for channel, symbols in b.items():
        if channel in out:
            out[channel] = out[channel] - frozenset(symbols)
    return {c: s for c, s in out.items() if s}


class SubscriptionState:
    """Desired and confirmed subscriptions of one session.

    :meth:`wait_confirmed` blocks until the server has confirmed a set of
    topics (each :meth:`confirm` wakes the waiters to re-check).
    """

    def __init__(self, desired: Mapping[str, frozenset[str]] | None = None) -> None:
        self.desired: dict[str, frozenset[str]] = dict(desired or {})
        self.confirmed: dict[str, frozenset[str]] = {}
        self._changed = trio.Event()

    def want(self, topics: Topics) -> None:
        """Add to the desired set."""
        self.desired = merge_topics(self.desired, topics)

    def unwant(self, topics: Topics) -> None:
        """Remove from the desired set. The confirmed set changes when the server says so."""
        self.desired = subtract_topics(self.desired, topics)

    def unconfirm(self, topics: Topics) -> None:
        """Forget confirmations of ``topics`` (they were re-sent and await a new one)."""
        self.confirmed = subtract_topics(self.confirmed, topics)
        self._wake()

    def connection_lost(self) -> None:
        """A new connection starts with nothing confirmed."""
        self.confirmed = {}
        self._wake()

    def confirm(self, topics: Mapping[str, frozenset[str]], *, complete: bool) -> None:
        """Record a server confirmation: the entire current set, or an addition to it."""
        self.confirmed = dict(topics) if complete else merge_topics(self.confirmed, topics)
        self._wake()

    def is_confirmed(self, topics: Topics) -> bool:
        """True if every (channel, symbol) in ``topics`` is confirmed."""
        for channel, symbols in topics.items():
            have = self.confirmed.get(channel, frozenset())
            if not frozenset(symbols) <= have:
                return False
        return True

    def is_removed(self, topics: Topics) -> bool:
        """True if no (channel, symbol) in ``topics`` is confirmed any more."""
        for channel, symbols in topics.items():
            if self.confirmed.get(channel, frozenset()) & frozenset(symbols):
                return False
        return True

    async def wait_confirmed(self, topics: Topics, *, removed: bool = False) -> None:
        """Block until ``topics`` are confirmed (or, with ``removed``, gone). A checkpoint."""
        check = self.is_removed if removed else self.is_confirmed
        while not check(topics):
            await self._changed.wait()
        await trio.lowlevel.checkpoint()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()
