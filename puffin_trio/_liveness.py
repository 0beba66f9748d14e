"""Liveness, sans-IO: which subscriptions went silent, and when a heartbeat is really overdue.

This module owns the state of the session's two watchers. :class:`Liveness`
is the health-checker's: the reader records when each subscribed trade,
quote and book symbol last delivered (:attr:`Liveness.streams`, one small
:class:`Stream` record per event class and symbol, which also holds the
stream's sequence-guard handle, so that one lookup per message reaches both); the
health-checker asks, at trio time ``now``, which confirmed subscriptions to
resubscribe and which stayed silent after their resubscribe
(:meth:`Liveness.check`). Whether silence is suspicious at all (market hours,
a provider that says data is not flowing) is the session's call; when it is
not, the session :meth:`~Liveness.restart`\\ s the count.
:class:`HeartbeatDeadline` is the heartbeat's: when an unanswered ping means
a dead link, counting inbound data as a sign of life. Neither may sleep, do
I/O or read a clock: times are passed in (trio's clock, seconds).
"""

from __future__ import annotations

from collections.abc import Mapping

from puffin_trio.events import OrderBookUpdate, Quote, Trade
from puffin_trio.guard import GuardStream

__all__ = ["LIVENESS_CHANNELS", "HeartbeatDeadline", "Liveness", "Stream"]

#: Channels whose silence means something is wrong. Bars arrive once a minute
#: and statuses/LULD only on events, so silence there proves nothing.
LIVENESS_CHANNELS: Mapping[type, str] = {
    Trade: "trades",
    Quote: "quotes",
    OrderBookUpdate: "books",
}


class Stream:
    """One (event class, symbol) stream of a liveness channel, as the reader sees it.

    ``at``: trio time of its last event. ``sequence``: its handle in the
    connection's sequence guard (:meth:`~puffin_trio.SequenceGuard.stream` of
    the protocol's ``stream_key``, which for these classes depends on the
    class and the symbol only), or ``None`` for a provider without sequence
    numbers. The reader reaches both with the one dictionary lookup it makes
    per message, and the guard needs no lookup of its own: per-symbol state is
    what makes a message dearer as a subscription grows (each lookup is a cache
    miss at 10,000 symbols).
    """

    __slots__ = ("at", "sequence")

    def __init__(self, at: float, sequence: GuardStream | None) -> None:
        self.at = at
        self.sequence = sequence


class Liveness:
    """When each subscription last delivered, and which ones were resubscribed for silence.

    A subscription is *silent* when it is confirmed and nothing arrived on it
    for ``stale_after`` seconds (counted from :meth:`restart` if nothing ever
    did). A silent subscription is resubscribed once; if it is still silent
    ``stale_after`` seconds after that, it is *dead*. ``"*"`` (every symbol)
    is never silent: no one symbol owes it data.
    """

    __slots__ = ("_resubscribed_at", "_since", "streams")

    def __init__(self) -> None:
        #: Event class -> symbol -> its :class:`Stream` (the reader adds and stamps them).
        self.streams: dict[type, dict[str, Stream]] = {cls: {} for cls in LIVENESS_CHANNELS}
        self._since = 0.0
        self._resubscribed_at: dict[tuple[str, str], float] = {}

    def restart(self, now: float) -> None:
        """Forget what was seen and resubscribed: silence counts from ``now``.

        At a new connection's start of streaming, and whenever silence proves
        nothing (the market is closed, the provider says data is not flowing).
        """
        self._since = now
        self._resubscribed_at.clear()
        for streams in self.streams.values():
            streams.clear()


    def ages(
        self, now: float | None, desired: Mapping[str, frozenset[str]]
    ) -> dict[str, float | None]:
        """Seconds since the last event per ``"channel:symbol"`` of ``desired``.

        ``None`` for a subscription that delivered nothing since the last
        :meth:`restart`, or for every one when ``now`` is unknown.
        """
        ages: dict[str, float | None] = {}
        for cls, channel in LIVENESS_CHANNELS.items():
            streams = self.streams[cls]
            for symbol in sorted(desired.get(channel, ())):
                stream = streams.get(symbol)
                age = None if stream is None or now is None else now - stream.at
                ages[f"{channel}:{symbol}"] = age
        return ages

    def check(
        self, now: float, confirmed: Mapping[str, frozenset[str]], stale_after: float
    ) -> tuple[dict[str, frozenset[str]], list[str]]:
        """What to do at ``now``: (subscriptions to resubscribe, ``"channel:symbol"`` dead ones).

        The ones returned for resubscribing are remembered as resubscribed at
        ``now``; one that delivers again is forgotten (its next silence starts
        over).
        """
        silent = self._silent(now, confirmed, stale_after)
        resubscribed_at = self._resubscribed_at
        fresh: dict[str, set[str]] = {}
        dead: list[str] = []
        for channel, symbols in silent.items():
            for symbol in symbols:
                since = resubscribed_at.get((channel, symbol))
                if since is None:
                    fresh.setdefault(channel, set()).add(symbol)
                    resubscribed_at[(channel, symbol)] = now
                elif now - since >= stale_after:
                    dead.append(f"{channel}:{symbol}")
        for key in list(resubscribed_at):
            if key[1] not in silent.get(key[0], ()):
                del resubscribed_at[key]
        return {c: frozenset(s) for c, s in fresh.items()}, sorted(dead)

    def _silent(
        self, now: float, confirmed: Mapping[str, frozenset[str]], stale_after: float
    ) -> dict[str, frozenset[str]]:
        """Confirmed liveness subscriptions with no event for ``stale_after`` seconds."""
        silent: dict[str, set[str]] = {}
        for cls, channel in LIVENESS_CHANNELS.items():
            streams = self.streams[cls]
            for symbol in confirmed.get(channel, ()):
                if symbol == "*":
                    continue
                stream = streams.get(symbol)
                last = self._since if stream is None else stream.at
                if now - last >= stale_after:
                    silent.setdefault(channel, set()).add(symbol)
        return {c: frozenset(s) for c, s in silent.items()}


class HeartbeatDeadline:
    """When an unanswered heartbeat means a dead link: ``timeout`` seconds in which
    nothing at all arrived.

    A pong (or IB's ``currentTime`` reply) queues behind everything the server
    sent before it. On a link slower than the feed that backlog grows, and the
    answer can be later than ``timeout`` while data plainly keeps arriving:
    dropping such a link loses what was in flight and reconnects into the same
    slowness. So inbound data counts as a sign of life: the deadline passes
    only if no frame arrived in the last ``timeout`` seconds. It is read from
    the transport's frame counter, once per deadline, so the data path pays
    nothing for it.

    The counter counts frames our reader took from the transport: a consumer
    that stalls the reader ("block") also stops the count, and a link whose
    data nobody reads is treated as silent.
    """

    __slots__ = ("_frames", "_timeout", "deadline")

    def __init__(self, now: float, frames: int, timeout: float) -> None:
        self._timeout = timeout
        self._frames = frames
        #: Trio time at which to ask :meth:`expired` (if the answer has not come).
        self.deadline = now + timeout

    def expired(self, now: float, frames: int) -> bool:
        """At the deadline, with the frame counter now: True if nothing arrived since the
        last look (the link is dead); otherwise the deadline moves ``timeout`` past ``now``."""
        if frames == self._frames:
            return True
        self._frames = frames
        self.deadline = now + self._timeout
        return False
