"""Connections end cleanly and at once, whoever ends them, and nothing they received is lost.

Reproductions of issue 9, defects 1, 6, 7, 8 and 9, written against the
code as it was when the issue was filed: each is ``xfail(strict=True)`` with
its defect number until the fix lands (then the mark goes). They run over
real loopback sockets, with the fault proxy of :mod:`puffin_trio.testing`
where the network must misbehave, on trio's autojump ``MockClock``.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from functools import partial
from typing import Any

import attrs
import psutil
import pytest
import trio
from trio.testing import MockClock

from puffin_trio import (
    ConnectionLost,
    Event,
    Gap,
    RestartPolicy,
    SessionState,
    Status,
    Supervisor,
)
from puffin_trio.events import EVENT_TYPES
from puffin_trio.providers import AlpacaProvider
from puffin_trio.sim import AlpacaSimRecorder, FaultPlan, serve_alpaca
from puffin_trio.testing import (
    ProxyControl,
    ProxyFault,
    ProxyFaultKind,
    ProxyPlan,
    mock_wall_clock,
    serve_fault_proxy,
)
from puffin_trio.transports.ws import open_ws_transport

KEY = "hygiene-key"
SECRET = "hygiene-secret"
#: Tuesday 2026-11-24 15:00 UTC: the market is open.
OPEN_NS = int(datetime(2026, 11, 24, 15, 0, tzinfo=UTC).timestamp() * 1e9)
MARKET = frozenset(EVENT_TYPES) - {Status, Gap}


@attrs.define
class Rig:
    """A simulator behind the fault proxy: where the client connects, and what both saw."""

    url: str
    port: int
    recorder: AlpacaSimRecorder
    control: ProxyControl
    wall: Callable[[], int]


@asynccontextmanager
async def rig(
    *, faults: FaultPlan | None = None, plan: ProxyPlan | None = None, **sim: Any
) -> AsyncIterator[Rig]:
    wall = mock_wall_clock(OPEN_NS)
    recorder = AlpacaSimRecorder()
    control = ProxyControl()
    sim.setdefault("rate", 50.0)
    async with trio.open_nursery() as nursery:
        sim_port = await nursery.start(
            partial(
                serve_alpaca,
                key=KEY,
                secret=SECRET,
                symbols=["AAPL"],
                recorder=recorder,
                wall_clock=wall,
                faults=faults,
                **sim,
            )
        )
        port = await nursery.start(
            partial(serve_fault_proxy, "127.0.0.1", sim_port, plan=plan or (), control=control)
        )
        yield Rig(f"ws://127.0.0.1:{port}/v2/iex", port, recorder, control, wall)
        nursery.cancel_scope.cancel()


def alpaca(url: str, **knobs: Any) -> AlpacaProvider:
    return AlpacaProvider(key=KEY, secret=SECRET, url=url, encoding="json", **knobs)


async def collect(
    events: trio.abc.ReceiveChannel[Event],
    done: Callable[[list[tuple[float, Event]]], bool],
    *,
    seconds: float = 900.0,
    limit: int = 200_000,
    into: list[tuple[float, Event]] | None = None,
) -> list[tuple[float, Event]]:
    """(trio time, event) until ``done``, appended to ``into`` if given.

    Fails after ``seconds`` or ``limit`` events.
    """
    seen: list[tuple[float, Event]] = [] if into is None else into
    with trio.fail_after(seconds):
        async for event in events:
            seen.append((trio.current_time(), event))
            if done(seen):
                return seen
            assert len(seen) < limit
    raise AssertionError("the event channel ended first")


def streaming(attempt: int) -> Callable[[list[tuple[float, Event]]], bool]:
    def done(seen: list[tuple[float, Event]]) -> bool:
        _, last = seen[-1]
        return (
            isinstance(last, Status)
            and last.state is SessionState.STREAMING
            and last.attempt >= attempt
        )

    return done


def first_status(seen: list[tuple[float, Event]], state: SessionState) -> float:
    return next(t for t, e in seen if isinstance(e, Status) and e.state is state)


@contextlib.contextmanager
def no_garbage_collection() -> Iterator[None]:
    """A socket must be closed by its owner, not by the garbage collector finding it later."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def client_sockets(port: int) -> list[Any]:
    """This process's TCP sockets connected to ``port`` (the client ends, any state)."""
    return [
        c
        for c in psutil.Process().net_connections(kind="tcp")
        if c.raddr and c.raddr.port == port
    ]


# --------------------------------------------------------------------------- defect 1

CLOSE_KINDS = {
    "fin": ({"faults": FaultPlan.drop_after(40, connection=None)}, "a FIN, no close frame"),
    "close 1000": (
        {"faults": FaultPlan.close_after(40, code=1000, connection=None)},
        "a clean 1000 close",
    ),
    "protocol error 1002": (
        {"plan": ProxyPlan.corrupt_header(after_frames=40, connection=None)},
        "a reserved bit set",
    ),
    "protocol error 1007": (
        {"plan": ProxyPlan.invalid_utf8(after_frames=40, connection=None)},
        "invalid UTF-8",
    ),
}


@pytest.mark.xfail(strict=True, reason="issue 9 defect 1: the socket outlives a peer's close")
@pytest.mark.parametrize("kind", list(CLOSE_KINDS))
async def test_no_socket_of_ours_remains_after_server_initiated_closes(
    kind: str, autojump_clock: MockClock
) -> None:
    """After 3 closes by the server (or 3 protocol errors), only the live connection is open."""
    setup, _ = CLOSE_KINDS[kind]
    with no_garbage_collection():
        # Four connections per key, so a leaked connection cannot block the next one here.
        async with rig(max_connections_per_key=4, **setup) as r:
            async with Supervisor.open(wall_clock=r.wall, seed=0) as sup:
                sup.add(alpaca(r.url), quotes=["AAPL"])
                async with sup.events() as events:
                    await collect(events, streaming(3))
                    # Every close has had time to finish on both sides (a clean close
                    # is bounded by 2 s, and the reconnect waited a backoff of ~1 s
                    # already); the 4th connection is 0.3 s into its 0.8 s.
                    await trio.sleep(0.3)
                    sockets = client_sockets(r.port)
                    ended = [c.ended.is_set() for c in r.recorder.connections]
    assert len(sockets) == 1, f"{len(sockets)} sockets: {[s.status for s in sockets]}"
    # The server is not left streaming into a connection we gave up on.
    assert ended == [True, True, True, False]


@pytest.mark.xfail(
    strict=True, reason="issue 9 defect 1: a 1002 leaves the old connection open, so 406"
)
async def test_a_protocol_error_does_not_get_the_next_connection_refused(
    autojump_clock: MockClock,
) -> None:
    """One connection per key: the failed one must be closed before the next authenticates."""
    seen: list[tuple[float, Event]] = []
    async with rig(plan=ProxyPlan.corrupt_header(after_frames=20)) as r:
        async with Supervisor.open(wall_clock=r.wall, seed=0) as sup:
            sup.add(alpaca(r.url), quotes=["AAPL"])
            async with sup.events() as events:
                with trio.move_on_after(200):
                    await collect(events, streaming(1), into=seen)
    details = [e.detail for _, e in seen if isinstance(e, Status)]
    assert not any("406" in d for d in details), details
    assert first_status(seen, SessionState.STREAMING) < 5.0


# --------------------------------------------------------------------------- defect 6


@attrs.frozen
class BrokenRestartPolicy(RestartPolicy):
    """A restart policy with a bug: the supervisor's own task fails, not a session."""

    def delay(self, attempt: int, rng: Any) -> float:
        raise RuntimeError("bug in the restart path")


async def test_supervisor_open_raises_the_real_error_of_a_failed_supervisor_task(
    autojump_clock: MockClock,
) -> None:
    raised: BaseException | None = None
    async with rig(faults=FaultPlan.drop_after(5)) as r:
        try:
            async with Supervisor.open(wall_clock=r.wall, restart=BrokenRestartPolicy()) as sup:
                sup.add(alpaca(r.url), quotes=["AAPL"])
                async with sup.events() as events:
                    await collect(events, lambda seen: False, seconds=60)
        except BaseException as exc:  # what escapes is the point of the test
            raised = exc
    assert isinstance(raised, RuntimeError), repr(raised)
    assert "bug in the restart path" in str(raised)


# --------------------------------------------------------------------------- defect 7


@pytest.mark.xfail(strict=True, reason="issue 9 defect 7: an RST in the upgrade waits out 10 s")
async def test_an_rst_during_the_upgrade_fails_at_once_with_the_real_cause(
    autojump_clock: MockClock,
) -> None:
    async with rig(plan=ProxyPlan.reset_during_upgrade()) as r:
        start = trio.current_time()
        with pytest.raises(ConnectionLost) as caught:
            async with open_ws_transport(r.url):
                pass
        elapsed = trio.current_time() - start
    assert elapsed < 1.0, f"failed after {elapsed:.1f} s: {caught.value}"
    assert "reset" in str(caught.value).lower(), str(caught.value)


# --------------------------------------------------------------------------- defect 8


@pytest.mark.xfail(strict=True, reason="issue 9 defect 8: 2 s spent closing a dead link")
async def test_a_heartbeat_timeout_aborts_the_link_at_once(autojump_clock: MockClock) -> None:
    """The reconnect is announced at the pong deadline, not after a close handshake."""
    interval, timeout = 5.0, 3.0
    # Half-open from 1 s after the upgrade: the first ping (at 5 s) is never answered.
    async with rig(plan=ProxyPlan.stall(after_seconds=1.0)) as r:
        async with Supervisor.open(wall_clock=r.wall, seed=0) as sup:
            sup.add(alpaca(r.url, ping_interval=interval, ping_timeout=timeout), quotes=["AAPL"])
            async with sup.events() as events:
                seen = await collect(events, lambda s: isinstance(s[-1][1], Status) and (
                    s[-1][1].state is SessionState.RECONNECTING))  # fmt: skip
    streaming_at = first_status(seen, SessionState.STREAMING)
    reconnecting_at = first_status(seen, SessionState.RECONNECTING)
    assert "HeartbeatTimeout" in seen[-1][1].detail  # type: ignore[union-attr]
    deadline = streaming_at + interval + timeout
    assert reconnecting_at - deadline < 0.1, reconnecting_at - deadline


# --------------------------------------------------------------------------- defect 9


def _throttle_share(share: float) -> Callable[[Rig], ProxyFault]:
    def fault(r: Rig) -> ProxyFault:
        frames = r.control.connection(1).frames(intact=None)
        span = max(frames[-1].at - frames[0].at, 1e-3)
        rate = share * sum(len(f.payload) + 2 for f in frames) / span
        return ProxyFault(ProxyFaultKind.THROTTLE, rate=rate)

    return fault


async def test_a_slow_but_live_link_is_not_dropped(autojump_clock: MockClock) -> None:
    """Throttled to 60 % of the feed, data keeps arriving: that is liveness, not a dead link."""
    seen: list[tuple[float, Event]] = []
    async with rig() as r:
        async with Supervisor.open(wall_clock=r.wall, seed=0) as sup:
            sup.add(alpaca(r.url), quotes=["AAPL"], trades=["AAPL"])
            async with sup.events(capacity=8192) as events:
                await collect(events, lambda s: len(s) >= 100, into=seen)
                r.control.trigger(_throttle_share(0.6)(r), connection=1)
                with trio.move_on_after(180):
                    await collect(events, lambda s: False, seconds=10_000, into=seen)
    statuses = [e for _, e in seen if isinstance(e, Status)]
    assert not any(e.state is SessionState.RECONNECTING for e in statuses), statuses[-1]
    assert sum(type(e) in MARKET for _, e in seen) > 1000, "the feed did not keep flowing"


async def test_what_reached_our_socket_is_delivered_before_the_connection_is_given_up(
    autojump_clock: MockClock,
) -> None:
    """A consumer stalls past the pong deadline (backpressure "block"), so the heartbeat fails
    legitimately; every message that was forwarded intact into our socket before the deadline
    must still come out, before the reconnect is announced."""
    interval, timeout = 5.0, 3.0
    async with rig(rate=200.0) as r:
        async with Supervisor.open(wall_clock=r.wall, seed=0) as sup:
            sup.add(alpaca(r.url, ping_interval=interval, ping_timeout=timeout), quotes=["AAPL"])
            async with sup.events(capacity=16, overflow="block") as events:
                seen = await collect(events, streaming(0))
                streaming_at = seen[-1][0]
                await trio.sleep(interval + timeout + 5.0)  # the consumer stalls
                await collect(events, streaming(1), into=seen)
    deadline = streaming_at + interval + timeout
    proto = alpaca(r.url).protocol()
    sent = [
        attrs.evolve(item, ts_recv=0)
        for frame in r.control.connection(1).frames()
        if frame.at < deadline - 0.5
        for item in proto.receive(frame.payload.decode(), 0)
        if type(item) in MARKET
    ]
    gap_at = next(i for i, (_, e) in enumerate(seen) if isinstance(e, Gap))
    delivered = [attrs.evolve(e, ts_recv=0) for _, e in seen[:gap_at] if type(e) in MARKET]
    missing = [e for e in sent if e not in delivered]
    assert not missing, f"{len(missing)} of {len(sent)} messages in our socket were discarded"
