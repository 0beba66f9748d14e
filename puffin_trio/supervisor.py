"""The supervisor: owns the sessions, restarts them, and fans their events out.

This module owns :class:`Supervisor` (and the ``open_feed`` shortcut). A
supervisor is a nursery with one runner task per provider session. A runner
calls :meth:`ProviderSession.run` in a loop; when a connection fails it
classifies the failure:

* **fatal** (:class:`FatalProviderError`: authentication refused, a feed the
  plan does not include, an invalid request; and :class:`ConfigurationError`,
  should one surface only once connected): not retried. The session is
  marked ``failed`` (a ``Status`` event) and the error escalates.
* **transient** (anything else: a dropped connection, a heartbeat timeout, a
  stale feed, a protocol error): a ``Status(reconnecting)`` event, a backoff
  (:class:`RestartPolicy`), and a reconnect that re-sends every subscription
  and announces the outage as ``Gap(reason="reconnect")``. A connection-limit
  error waits at least the provider's ``limit_cooldown``.

A session that fails more often than the restart intensity allows (``N``
restarts within ``period`` seconds, as in Erlang/OTP supervisors) escalates
:class:`RestartBudgetExceeded`. Escalation never ends silently: with
``fail_fast=True`` (the default) the error cancels the supervisor and is
raised from ``async with Supervisor.open()``; with ``fail_fast=False`` the
failed session stays ``failed`` (announced by ``Status``) and the others go
on.

It must not parse frames or know any provider's protocol, and it never sets a
session's state or builds its ``Status`` events: the session does, when asked
(:meth:`~puffin_trio.session.ProviderSession.announce`, ``announce_closed``).
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sized
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio

from puffin_trio.channels import (
    DEFAULT_CAPACITY,
    ConsumerStatistics,
    EventReceiver,
    FanOut,
    Overflow,
)
from puffin_trio.errors import (
    ConfigurationError,
    ConnectionLimitError,
    FatalProviderError,
    ProtocolError,
    RestartBudgetExceeded,
)
from puffin_trio.events import SessionState
from puffin_trio.providers._base import Provider
from puffin_trio.session import ProviderSession, SessionStatistics, SessionTimeouts

__all__ = ["RestartPolicy", "Supervisor", "SupervisorStatistics", "open_feed"]

logger = logging.getLogger("puffin_trio.supervisor")


@attrs.frozen
class RestartPolicy:
    """When and how often a failed session is restarted.

    Defaults follow Puffin's ``RealtimeEngine`` (1 s doubling to 60 s) and
    OTP's intensity/period idea:

    * ``initial`` 1 s, ``factor`` 2, ``max_delay`` 60 s: the first retry is
      quick (most drops are one-off), later ones back off so a provider outage
      is not hammered.
    * ``jitter`` 0.2: each delay is scaled by a random factor in [0.8, 1.0],
      so many clients dropped at once do not reconnect in lockstep.
    * ``stable_after`` 60 s: a connection that streamed this long (from the
      moment it reached ``streaming``: connecting, authenticating and
      subscribing do not count) resets the backoff to ``initial`` (its
      failure is a new incident).
    * ``intensity`` 10 restarts within ``period`` 600 s: more than that means
      something is persistently wrong (Puffin gave up after 10 attempts);
      escalate rather than loop forever.

    Each is checked when the policy is made: a value that cannot work (a
    negative delay, a jitter outside [0, 1], a negative intensity) raises
    :class:`~puffin_trio.errors.ConfigurationError` naming it.
    """

    initial: float = 1.0
    factor: float = 2.0
    max_delay: float = 60.0
    jitter: float = 0.2
    stable_after: float = 60.0
    intensity: int = 10
    period: float = 600.0

    def __attrs_post_init__(self) -> None:
        _number("initial", self.initial, 0.0, "a number of seconds >= 0 (the first backoff)")
        _number("factor", self.factor, 1.0, "a number >= 1 (each backoff's multiple of the last)")
        _number(
            "max_delay",
            self.max_delay,
            self.initial,
            f"a number of seconds >= initial, {self.initial} (the longest backoff)",
        )
        _number("jitter", self.jitter, 0.0, "a fraction from 0 to 1 (of each delay)", high=1.0)
        _number("stable_after", self.stable_after, 0.0, "a number of seconds >= 0")
        _number(
            "intensity",
            self.intensity,
            0,
            "an integer >= 0 (restarts allowed within period)",
            integer=True,
        )
        _number("period", self.period, 0.0, "a positive number of seconds", strict=True)

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Backoff before restart number ``attempt`` (1-based) of the current incident."""
        base = min(self.max_delay, self.initial * self.factor ** max(0, attempt - 1))
        return base * (1.0 - self.jitter * rng.random())


def _number(
    name: str,
    value: object,
    low: float,
    what: str,
    *,
    high: float = math.inf,
    strict: bool = False,
    integer: bool = False,
) -> None:
    """Raise ConfigurationError unless ``value`` is a finite number (an ``int`` if
    ``integer``) in [low, high], low excluded if ``strict``."""
    ok = (
        not isinstance(value, bool)
        and isinstance(value, int if integer else int | float)
        and math.isfinite(value)
        and (value > low if strict else value >= low)
        and value <= high
    )
    if not ok:
        raise ConfigurationError(f"RestartPolicy: {name} must be {what}, not {value!r}")


@attrs.frozen
class SupervisorStatistics:
    """Per-session and per-consumer counters (see :meth:`Supervisor.statistics`)."""

    sessions: Mapping[str, SessionStatistics]
    consumers: Mapping[str, ConsumerStatistics]
    unconsumed: int


class Supervisor:
    """Runs provider sessions under a restart policy and fans their events out.

    Use :meth:`open`; the restart semantics are in ``docs/guide/supervision.rst``.
    """

    def __init__(
        self,
        nursery: trio.Nursery,
        *,
        restart: RestartPolicy,
        fail_fast: bool,
        wall_clock: Callable[[], int],
        timeouts: SessionTimeouts | None,
        rng: random.Random,
    ) -> None:
        self._nursery = nursery
        self.restart = restart
        self.fail_fast = fail_fast
        self._wall = wall_clock
        self._timeouts = timeouts
        self._rng = rng
        self._fanout = FanOut()
        self._sessions: dict[str, ProviderSession] = {}
        self._failure: BaseException | None = None
        self.failures: dict[str, BaseException] = {}

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        *,
        restart: RestartPolicy | None = None,
        fail_fast: bool = True,
        wall_clock: Callable[[], int] = time.time_ns,
        timeouts: SessionTimeouts | None = None,
        seed: int | None = None,
    ) -> AsyncIterator[Supervisor]:
        """Open a supervisor for the duration of the block.

        Leaving the block cancels every session (each announces ``closed``)
        and ends every event channel. If a session escalated (fatal error,
        restart budget spent) and ``fail_fast`` is set, the block is cancelled
        and that error is raised here, unwrapped. So is any single error that
        ends the block: the body's own, or a bug in a supervisor task (never a
        bare :class:`trio.Cancelled` in its place).

        Raises :class:`~puffin_trio.errors.ConfigurationError` before starting
        anything if an argument has the wrong type.
        """
        if restart is not None and not isinstance(restart, RestartPolicy):
            raise ConfigurationError(
                f"Supervisor.open: restart must be a RestartPolicy, e.g. "
                f"RestartPolicy(max_delay=30), not {restart!r}"
            )
        if timeouts is not None and not isinstance(timeouts, SessionTimeouts):
            raise ConfigurationError(
                f"Supervisor.open: timeouts must be a SessionTimeouts, not {timeouts!r}"
            )
        if not isinstance(fail_fast, bool):
            raise ConfigurationError(
                f"Supervisor.open: fail_fast must be True or False, not {fail_fast!r}"
            )
        sup: Supervisor | None = None
        error: BaseException | None = None
        try:
            async with trio.open_nursery() as nursery:
                sup = cls(
                    nursery,
                    restart=restart or RestartPolicy(),
                    fail_fast=fail_fast,
                    wall_clock=wall_clock,
                    timeouts=timeouts,
                    rng=random.Random(seed),
                )
                try:
                    yield sup
                finally:
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # One error (the body's, or a runner's bug, which cancelled the body):
            # raise it as it is, outside this handler so that it does not chain
            # to the group. Several: the group says it all.
            if len(group.exceptions) != 1:
                raise
            error = group.exceptions[0]
        finally:
            if sup is not None:
                sup._fanout.close()
        if error is not None:
            raise error
        if sup is not None and sup._failure is not None:
            raise sup._failure

    # ------------------------------------------------------------------ sessions

    def add(
        self,
        provider: Provider,
        *,
        name: str | None = None,
        trades: Collection[str] = (),
        quotes: Collection[str] = (),
        books: Collection[str] = (),
        bars: Collection[str] = (),
        **channels: Collection[str],
    ) -> ProviderSession:
        """Start a session for ``provider`` with these subscriptions (kept across reconnects).

        Validates before connecting: raises :class:`ConfigurationError` for
        missing credentials, unknown channels, bad symbols or a duplicate
        session name. The session starts at the supervisor's next checkpoint.
        Not a checkpoint; the first call in a process for a US-equity provider
        blocks ~1 s while the session loads the exchange calendar
        (:func:`~puffin_trio.market_hours.preload`).
        """
        if not isinstance(provider, Provider):
            raise ConfigurationError(
                f"sup.add takes a provider object, e.g. AlpacaProvider(feed='iex'), "
                f"PolygonProvider() or IBProvider(), not {provider!r}"
            )
        if name is not None and (not isinstance(name, str) or not name):
            raise ConfigurationError(f"sup.add: name must be a non-empty string, not {name!r}")
        provider.check()
        asked = {"trades": trades, "quotes": quotes, "books": books, "bars": bars, **channels}
        # Empty channels are left out (the defaults name channels a provider may lack);
        # anything else, None and bare strings included, is the provider's to judge.
        topics = provider.normalize({c: s for c, s in asked.items() if not _empty(s)})
        name = name or provider.session_name
        if name in self._sessions:
            raise ConfigurationError(
                f"a session named {name!r} already exists; pass name= to add another"
            )
        session = ProviderSession(
            provider,
            name=name,
            fanout=self._fanout,
            topics=topics,
            wall_clock=self._wall,
            timeouts=self._timeouts,
        )
        self._sessions[name] = session
        self._nursery.start_soon(self._run_session, session, name=f"puffin:{name}")
        return session

    def session(self, name: str) -> ProviderSession:
        """The session called ``name`` (ConfigurationError if there is none)."""
        try:
            return self._sessions[name]
        except KeyError:
            known = ", ".join(sorted(self._sessions)) or "none"
            raise ConfigurationError(f"no session named {name!r} (sessions: {known})") from None

    async def subscribe(self, name: str, **topics: Collection[str]) -> bool:
        """Add subscriptions to session ``name``, live, and keep them for reconnects.

        Returns True once the provider confirmed them (False if the session is
        not streaming right now: they are sent when it connects).
        """
        session = self.session(name)
        return await session.subscribe(session.provider.normalize(topics))

    async def unsubscribe(self, name: str, **topics: Collection[str]) -> bool:
        """Remove subscriptions from session ``name`` (see :meth:`subscribe`)."""
        session = self.session(name)
        return await session.unsubscribe(session.provider.normalize(topics))

    async def resync(self, name: str, **topics: Collection[str]) -> bool:
        """Re-request ``topics`` of session ``name`` so the provider sends fresh snapshots.

        Use it for the books :meth:`OrderBooks.needing_resync` lists. Returns
        True once the provider confirmed the renewed subscription.
        """
        session = self.session(name)
        return await session.resync(session.provider.normalize(topics))

    # ------------------------------------------------------------------ consumers

    def events(
        self,
        capacity: int = DEFAULT_CAPACITY,
        overflow: Overflow = "block",
        *,
        name: str | None = None,
    ) -> Any:
        """A new consumer: an async context manager yielding a bounded receive channel.

        Every consumer gets every event (market data, ``Status``, ``Gap``) in
        order, under its own overflow policy (see ``docs/guide/channels.rst``).
        Registration happens on entering the block, before any checkpoint.
        """
        return self._fanout.consumer(capacity=capacity, overflow=overflow, name=name)

    def statistics(self) -> SupervisorStatistics:
        """Per-session counters, states and lag, and per-consumer queue statistics."""
        fan = self._fanout.statistics()
        return SupervisorStatistics(
            sessions={name: s.statistics() for name, s in self._sessions.items()},
            consumers=fan.consumers,
            unconsumed=fan.unconsumed,
        )

    # ------------------------------------------------------------------ restart loop

    async def _run_session(self, session: ProviderSession) -> None:
        policy = self.restart
        restarts: deque[float] = deque()
        attempt = 0
        incident = 0
        outage_start: int | None = None
        try:
            while True:
                try:
                    await session.run(attempt=attempt, outage_start=outage_start)
                except (FatalProviderError, ConfigurationError) as exc:
                    # Retrying cannot help: the same request would fail the same way.
                    await self._escalate(session, exc, attempt)
                    return
                except Exception as exc:
                    error = exc
                else:
                    # run() ends only by raising; should it ever return, restart it
                    # like any failure (with backoff), never in a tight loop.
                    error = ProtocolError(
                        "the session ended without an error", provider=session.provider.name
                    )
                outage_start = session.last_event_wall or self._wall()
                now = trio.current_time()
                if session.streamed_for(now) >= policy.stable_after:
                    incident = 0
                restarts.append(now)
                while restarts and now - restarts[0] > policy.period:
                    restarts.popleft()
                attempt += 1
                incident += 1
                if len(restarts) > policy.intensity:
                    budget = RestartBudgetExceeded(
                        f"session {session.name!r} failed {len(restarts)} times within "
                        f"{policy.period} s (intensity {policy.intensity}); last error: {error}"
                    )
                    budget.__cause__ = error
                    await self._escalate(session, budget, attempt)
                    return
                delay = policy.delay(incident, self._rng)
                if isinstance(error, ConnectionLimitError):
                    delay = max(delay, session.provider.limit_cooldown)
                logger.warning(
                    "%s: %s; reconnecting in %.1f s (attempt %d)",
                    session.name,
                    error,
                    delay,
                    attempt,
                )
                await session.announce(
                    SessionState.RECONNECTING,
                    detail=f"{type(error).__name__}: {error}; retry in {delay:.1f} s",
                    attempt=attempt,
                )
                await trio.sleep(delay)
        finally:
            session.announce_closed()

    async def _escalate(self, session: ProviderSession, error: BaseException, attempt: int) -> None:
        logger.error("%s: giving up: %s", session.name, error)
        self.failures[session.name] = error
        await session.announce(
            SessionState.FAILED, detail=f"{type(error).__name__}: {error}", attempt=attempt
        )
        if self.fail_fast and self._failure is None:
            self._failure = error
            self._nursery.cancel_scope.cancel()


def _empty(value: object) -> bool:
    """An empty collection of symbols (``()``, ``[]``, ``set()``): a channel not asked for."""
    return isinstance(value, Sized) and not isinstance(value, str | bytes) and len(value) == 0


@asynccontextmanager
async def open_feed(
    provider: Provider,
    *,
    capacity: int = DEFAULT_CAPACITY,
    overflow: Overflow = "block",
    trades: Collection[str] = (),
    quotes: Collection[str] = (),
    books: Collection[str] = (),
    bars: Collection[str] = (),
    restart: RestartPolicy | None = None,
    **channels: Collection[str],
) -> AsyncIterator[EventReceiver]:
    """One provider, one consumer: ``async with open_feed(p, trades=["AAPL"]) as events:``."""
    async with Supervisor.open(restart=restart) as sup:
        sup.add(provider, trades=trades, quotes=quotes, books=books, bars=bars, **channels)  # type: ignore[arg-type]
        async with sup.events(capacity=capacity, overflow=overflow) as events:
            yield events
