"""Subscriptions as state: what the user wants, what was sent, what the server confirmed.

This module owns :class:`SubscriptionState`, the per-session record of
subscriptions as *desired* (what the user asked for, replayed on every
reconnect) and *confirmed* (the server said so); what is desired and not
confirmed is in flight. It is plain data with no I/O; the session changes it and waits on
it.

Desired state is changed only by the user (``sup.add``, ``sup.subscribe``,
``sup.unsubscribe``) or by a provider error that concerns one subscription
(IB 200 "no security definition"); reconnects never change it.

Confirmation is incremental: a server acknowledgement costs time in the
topics it names, not in the topics subscribed. Polygon confirms every topic
with its own message, so 10,000 symbols x (trades, quotes) are 20,000 acks;
when each one copied the confirmed set and re-checked every desired topic,
that was quadratic (8,000 topics: 0.43 s of the reader's time). Waiters hold
what they still miss, and an ack strikes names off it.
"""

from __future__ import annotations

from collections.abc import Mapping

import trio

from puffin_trio.providers._base import Topics

__all__ = ["Expectation", "SubscriptionState", "merge_topics", "subtract_topics"]


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


class Expectation:
    """A wait for a set of topics to be confirmed (or, ``removed``, to be gone).

    ``missing`` holds what is still awaited, per channel; ``done`` is set
    (and ``event`` fired) when it is empty. Made by
    :meth:`SubscriptionState.expect`.
    """

    __slots__ = ("done", "event", "missing", "removed", "topics")

    def __init__(self, topics: Mapping[str, frozenset[str]], *, removed: bool) -> None:
        self.topics = topics
        self.removed = removed
        self.missing: dict[str, set[str]] = {}
        self.done = False
        self.event = trio.Event()

    def recheck(self, confirmed: Mapping[str, set[str]]) -> None:
        """Recompute ``missing`` from scratch (after a complete ack or a reset)."""
        missing: dict[str, set[str]] = {}
        for channel, symbols in self.topics.items():
            have = confirmed.get(channel, set())
            left = symbols & have if self.removed else symbols - have
            if left:
                missing[channel] = set(left)
        self.missing = missing
        self._settle()

    def strike(self, topics: Topics, *, confirmed: bool) -> None:
        """``topics`` were confirmed (``confirmed``) or removed: update what is awaited."""
        missing = self.missing
        if confirmed != self.removed:
            # What we await arrived: strike it off.
            for channel, symbols in topics.items():
                left = missing.get(channel)
                if left:
                    left.difference_update(symbols)
                    if not left:
                        del missing[channel]
        else:
            # The opposite happened: what we want came undone, await it again.
            for channel, symbols in topics.items():
                wanted = self.topics.get(channel)
                if wanted:
                    again = wanted.intersection(symbols)
                    if again:
                        missing.setdefault(channel, set()).update(again)
        self._settle()

    def _settle(self) -> None:
        self.done = not self.missing
        if self.done:
            self.event.set()


class SubscriptionState:
    """Desired and confirmed subscriptions of one session.

    ``desired`` is a mapping of channel to frozenset, replaced on every
    change (changes are user calls, not per message). ``confirmed`` is kept
    in mutable sets and changed in place by each acknowledgement; the
    :attr:`confirmed` property gives a frozen copy, rebuilt only after a
    change. :meth:`wait_confirmed` and :meth:`expect` wait for a set of topics.
    """

    def __init__(self, desired: Mapping[str, frozenset[str]] | None = None) -> None:
        self.desired: dict[str, frozenset[str]] = dict(desired or {})
        self._confirmed: dict[str, set[str]] = {}
        self._snapshot: dict[str, frozenset[str]] | None = {}
        self._expectations: list[Expectation] = []

    @property
    def confirmed(self) -> dict[str, frozenset[str]]:
        """The confirmed topics, frozen (a copy made once per change: cheap to ask often)."""
        snapshot = self._snapshot
        if snapshot is None:
            snapshot = {c: frozenset(s) for c, s in self._confirmed.items() if s}
            self._snapshot = snapshot
        return snapshot

    def want(self, topics: Topics) -> None:
        """Add to the desired set."""
        self.desired = merge_topics(self.desired, topics)

    def unwant(self, topics: Topics) -> None:
        """Remove from the desired set. The confirmed set changes when the server says so."""
        self.desired = subtract_topics(self.desired, topics)

    def confirm(self, topics: Topics, *, complete: bool) -> None:
        """Record a server confirmation: the entire current set (``complete``), or an
        addition to it. An addition costs time in ``topics`` only."""
        self._snapshot = None
        if complete:
            self._confirmed = {c: set(s) for c, s in topics.items()}
            for expectation in self._expectations:
                expectation.recheck(self._confirmed)
        else:
            confirmed = self._confirmed
            for channel, symbols in topics.items():
                have = confirmed.get(channel)
                if have is None:
                    confirmed[channel] = set(symbols)
                else:
                    have.update(symbols)
            for expectation in self._expectations:
                expectation.strike(topics, confirmed=True)
        self._forget_settled()

    def unconfirm(self, topics: Topics) -> None:
        """Forget confirmations of ``topics``: the server removed them, or they were
        re-sent and await a new confirmation. Costs time in ``topics`` only."""
        self._snapshot = None
        confirmed = self._confirmed
        for channel, symbols in topics.items():
            have = confirmed.get(channel)
            if have is not None:
                have.difference_update(symbols)
        for expectation in self._expectations:
            expectation.strike(topics, confirmed=False)
        self._forget_settled()

    def connection_lost(self) -> None:
        """A new connection starts with nothing confirmed."""
        self._snapshot = None
        self._confirmed = {}
        for expectation in self._expectations:
            expectation.recheck(self._confirmed)
        self._forget_settled()

    def is_confirmed(self, topics: Topics) -> bool:
        """True if every (channel, symbol) in ``topics`` is confirmed."""
        for channel, symbols in topics.items():
            have = self._confirmed.get(channel, set())
            if not have.issuperset(symbols):
                return False
        return True

    def is_removed(self, topics: Topics) -> bool:
        """True if no (channel, symbol) in ``topics`` is confirmed any more."""
        for channel, symbols in topics.items():
            if not self._confirmed.get(channel, set()).isdisjoint(symbols):
                return False
        return True

    def expect(self, topics: Topics, *, removed: bool = False) -> Expectation:
        """Start waiting for ``topics`` to be confirmed (``removed``: to be gone).

        The returned :class:`Expectation` is kept up to date by every
        acknowledgement until it is done; its ``done`` is O(1) to test.
        """
        frozen = {c: frozenset(s) for c, s in topics.items() if s}
        expectation = Expectation(frozen, removed=removed)
        expectation.recheck(self._confirmed)
        if not expectation.done:
            self._expectations.append(expectation)
        return expectation

    def withdraw(self, expectation: Expectation) -> None:
        """Stop updating ``expectation`` (its waiter gave up)."""
        if expectation in self._expectations:
            self._expectations.remove(expectation)

    async def wait_confirmed(self, topics: Topics, *, removed: bool = False) -> None:
        """Block until ``topics`` are confirmed (or, with ``removed``, gone). A checkpoint."""
        expectation = self.expect(topics, removed=removed)
        try:
            await expectation.event.wait()
        finally:
            self.withdraw(expectation)

    def _forget_settled(self) -> None:
        if any(e.done for e in self._expectations):
            self._expectations = [e for e in self._expectations if not e.done]
