"""The fault matrix: one proxy fault against one provider session, measured.

Each run puts :func:`puffin_trio.testing.serve_fault_proxy` between a
supervised session (``Supervisor`` + ``AlpacaProvider`` or
``PolygonProvider``) and the provider's simulator, lets data flow, injects
one fault, and measures what the library did:

* **time to detect**: from the fault taking effect (the proxy's clock) to
  the session announcing ``reconnecting``;
* **time to stream again**: from the fault to the first market data event
  of a later connection;
* **resubscribed**: every later connection that authenticated sent exactly
  the subscribe messages of the first;
* **silent loss**: messages the proxy forwarded *intact* to the client that
  were neither delivered as events nor covered by a ``Gap`` announced where
  they would have been (between the delivered events around them). Lost
  messages at the very end of the run are in flight, not lost;
* **damage announced**: for each frame the proxy damaged, whether a ``Gap``
  sits where its messages would have been;
* **closed before reopening**: the library had closed the old connection
  before the next one reached the proxy (no leaked socket, no
  connection-limit refusal caused by our own zombie).

Both the tests (under ``MockClock``) and :mod:`fuzz.fault_matrix` (in real
time) run these rows, so the README's matrix and the tests cannot drift apart.
It must not assert anything: it measures; callers decide.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Any, Literal

import attrs
import orjson
import trio

from puffin_trio import Event, Gap, RestartPolicy, SessionState, Status, Supervisor
from puffin_trio.events import EVENT_TYPES
from puffin_trio.providers import AlpacaProvider, PolygonProvider, Provider
from puffin_trio.sim import AlpacaSimRecorder, PolygonSimRecorder, serve_alpaca, serve_polygon
from puffin_trio.testing import (
    ProxyConnection,
    ProxyControl,
    ProxyFault,
    ProxyFaultKind,
    ProxyPlan,
    mock_wall_clock,
    serve_fault_proxy,
)

__all__ = [
    "KEY",
    "MARKET_OPEN_NS",
    "PROVIDERS",
    "ROWS",
    "SECRET",
    "Outcome",
    "Row",
    "run_row",
]

ProviderName = Literal["alpaca", "polygon"]
PROVIDERS: tuple[ProviderName, ...] = ("alpaca", "polygon")
KEY = "matrix-key"
SECRET = "matrix-secret"
#: Tuesday 2026-11-24 15:00 UTC = 10:00 New York: the market is open, so
#: staleness checks are live as they would be in a trading day.
MARKET_OPEN_NS = int(datetime(2026, 11, 24, 15, 0, tzinfo=UTC).timestamp() * 1e9)
#: Data events delivered before the fault fires (the session is streaming and
#: the subscriptions are confirmed by then).
FIRE_AFTER = 50
#: Data events of the new connection to wait for after streaming again, so
#: the run ends with the pipeline in a steady state.
SETTLE_EVENTS = 50
#: Messages per second from the simulator: a lively symbol, in one frame each.
RATE = 50.0
#: The throttle row's share of the feed's byte rate: a link that is slow but
#: alive (60 %: enough backlog to delay a pong by the ping timeout within two
#: minutes on either provider, as the issue's "just below the feed's" does
#: over a longer run).
THROTTLE_SHARE = 0.6
_MARKET_CLASSES = frozenset(EVENT_TYPES) - {Status, Gap}


@attrs.frozen
class Row:
    """One fault of the matrix.

    ``fault`` builds the fault from connection 1's record when the session
    has delivered :data:`FIRE_AFTER` data events (it is then triggered live);
    ``plan`` is for faults that must be planned (during the upgrade).
    ``observe``: seconds to keep watching after the fault when the session
    does not reconnect: longer than the slowest heartbeat deadline (Polygon:
    20 s interval + 20 s timeout), and long enough for a slow fault to do
    its harm.
    """

    name: str
    label: str
    fault: Callable[[ProxyConnection], ProxyFault] | None = None
    plan: ProxyPlan | None = None
    observe: float = 60.0


def _throttle(connection: ProxyConnection) -> ProxyFault:
    """:data:`THROTTLE_SHARE` of the feed's byte rate so far: slow but alive."""
    frames = connection.frames(intact=None)
    span = max(frames[-1].at - frames[0].at, 1e-3) if len(frames) > 1 else 1.0
    size = sum(len(f.payload) + 2 for f in frames)
    return ProxyFault(ProxyFaultKind.THROTTLE, rate=THROTTLE_SHARE * size / span)


ROWS: tuple[Row, ...] = (
    Row("latency", "latency 200 ms each way", lambda c: ProxyFault(
        ProxyFaultKind.LATENCY, delay=0.2, direction="both"), observe=45.0),
    Row("throttle", "throttle to 60 % of the feed", _throttle, observe=120.0),
    Row("stall", "half-open stall (60 s)", lambda c: ProxyFault(
        ProxyFaultKind.STALL, direction="both", duration=60.0), observe=120.0),
    Row("reset", "RST", lambda c: ProxyFault(ProxyFaultKind.RESET)),
    Row("fin", "FIN in mid-frame", lambda c: ProxyFault(ProxyFaultKind.FIN_MID_FRAME)),
    Row("header", "corrupt header byte (RSV1)", lambda c: ProxyFault(
        ProxyFaultKind.CORRUPT_HEADER)),
    Row("payload", "corrupt payload byte", lambda c: ProxyFault(
        ProxyFaultKind.CORRUPT_PAYLOAD), observe=45.0),
    Row("utf8", "invalid UTF-8 in a text frame", lambda c: ProxyFault(
        ProxyFaultKind.INVALID_UTF8, offset=1)),
    Row("inject", "injected frame (unknown type)", lambda c: ProxyFault(
        ProxyFaultKind.INJECT_FRAME, payload='[{"T":"zz","ev":"ZZ","note":"injected"}]'),
        observe=45.0),
    Row("upgrade", "RST during the upgrade", plan=ProxyPlan.reset_during_upgrade()),
)  # fmt: skip


@attrs.frozen
class Outcome:
    """What one row did to one provider's session (times in seconds of trio time)."""

    provider: str
    row: str
    fired_at: float | None
    detected_at: float | None
    streaming_again_at: float | None
    reasons: tuple[str, ...]
    resubscribed: bool | None
    silent_loss: int
    in_flight: int
    delivered: int
    damaged: int
    damage_announced: int
    closed_before_reopening: bool | None
    connections: int
    malformed: int
    unknown: int
    ended_early: str

    @property
    def detect(self) -> float | None:
        """Seconds from the fault to ``reconnecting`` (None: the session never reconnected)."""
        if self.fired_at is None or self.detected_at is None:
            return None
        return self.detected_at - self.fired_at

    @property
    def recover(self) -> float | None:
        """Seconds from the fault to the first data event of a later connection."""
        if self.fired_at is None or self.streaming_again_at is None:
            return None
        return self.streaming_again_at - self.fired_at

    @property
    def reconnected(self) -> bool:
        return self.detected_at is not None

    def summary(self) -> str:
        """What the library did, in a few words."""
        parts = []
        if self.reasons:
            parts.append("reconnected after " + " -> ".join(self.reasons))
        else:
            parts.append("kept streaming")
        if self.malformed:
            parts.append(f"{self.malformed} malformed counted")
        if self.unknown:
            parts.append(f"{self.unknown} unknown counted")
        if self.damaged and self.damage_announced < self.damaged:
            parts.append("damage not announced")
        if self.closed_before_reopening is False:
            parts.append("old socket left open")
        if self.ended_early:
            parts.append(self.ended_early)
        return "; ".join(parts)


def _provider(name: ProviderName, url: str, knobs: dict[str, Any]) -> Provider:
    if name == "alpaca":
        return AlpacaProvider(key=KEY, secret=SECRET, url=url, encoding="json", **knobs)
    return PolygonProvider(key=KEY, url=url, **knobs)


def _reason(status: Status) -> str:
    """``"HeartbeatTimeout"`` / ``"ConnectionLost 1006"`` from a reconnecting status."""
    kind = status.detail.split(":", 1)[0]
    code = ""
    if "(code " in status.detail:
        code = " " + status.detail.rsplit("(code ", 1)[1].split(")", 1)[0]
    return kind + code


async def run_row(
    provider: ProviderName,
    row: Row,
    *,
    mock_clock: bool = True,
    budget: float = 400.0,
    knobs: dict[str, Any] | None = None,
    rate: float = RATE,
    seed: int = 0,
) -> Outcome:
    """Run one row against one provider; returns the measurements. A checkpoint.

    ``budget``: the most trio seconds the run may take. ``knobs``: provider
    keyword arguments (timing knobs) instead of the defaults.
    """
    wall = mock_wall_clock(MARKET_OPEN_NS) if mock_clock else time.time_ns
    control = ProxyControl()
    recorder: AlpacaSimRecorder | PolygonSimRecorder
    if provider == "alpaca":
        recorder = AlpacaSimRecorder()
        serve = partial(serve_alpaca, key=KEY, secret=SECRET, recorder=recorder)
        path = "/v2/iex"
    else:
        recorder = PolygonSimRecorder()
        serve = partial(serve_polygon, key=KEY, recorder=recorder)
        path = "/stocks"
    seen: list[tuple[float, Event]] = []
    fired_local: list[float] = []
    ended_early = ""
    async with trio.open_nursery() as nursery:
        sim_port = await nursery.start(
            partial(serve, symbols=["AAPL"], rate=rate, wall_clock=wall, seed=seed)
        )
        proxy_port = await nursery.start(
            partial(
                serve_fault_proxy, "127.0.0.1", sim_port, plan=row.plan or (), control=control
            )
        )
        url = f"ws://127.0.0.1:{proxy_port}{path}"
        client = _provider(provider, url, knobs or {})
        try:
            async with Supervisor.open(
                wall_clock=wall, restart=RestartPolicy(intensity=50), seed=seed
            ) as sup:
                sup.add(client, trades=["AAPL"], quotes=["AAPL"])
                async with sup.events(capacity=8192) as events:
                    await _watch(events, row, control, seen, fired_local, budget)
                stats = sup.statistics().sessions[client.name]
        except Exception as exc:  # measured, not judged: the caller decides
            ended_early = f"Supervisor.open raised {type(exc).__name__}: {exc}"
            stats = None
        nursery.cancel_scope.cancel()
    return _measure(
        provider, row, control, recorder, seen, fired_local, stats, ended_early, client
    )


async def _watch(
    events: trio.abc.ReceiveChannel[Event],
    row: Row,
    control: ProxyControl,
    seen: list[tuple[float, Event]],
    fired_local: list[float],
    budget: float,
) -> None:
    """Collect events; fire the fault after FIRE_AFTER data events; stop once settled."""
    data = 0
    after_streaming_again = -1
    reconnecting = False
    with trio.CancelScope() as scope:
        scope.deadline = trio.current_time() + budget
        if row.plan is not None:
            fired_local.append(trio.current_time())
        async for event in events:
            now = trio.current_time()
            seen.append((now, event))
            if type(event) in _MARKET_CLASSES:
                data += 1
                if after_streaming_again >= 0:
                    after_streaming_again += 1
                    if after_streaming_again >= SETTLE_EVENTS:
                        return
                if not fired_local and data >= FIRE_AFTER and row.fault is not None:
                    control.trigger(row.fault(control.connection(1)), connection=1)
                    fired_local.append(now)
                    scope.deadline = min(scope.deadline, now + row.observe)
            elif isinstance(event, Status) and fired_local:
                if event.state is SessionState.RECONNECTING and not reconnecting:
                    reconnecting = True
                    scope.deadline = fired_local[0] + budget
                elif event.state is SessionState.STREAMING and event.attempt > 0:
                    after_streaming_again = max(after_streaming_again, 0)


def _expected(
    client: Provider, control: ProxyControl
) -> list[tuple[Literal["event", "damaged"], object]]:
    """The market events the intact messages carry, in wire order, with damaged frames marked."""
    out: list[tuple[Literal["event", "damaged"], object]] = []
    for connection in control.connections:
        proto = client.protocol()
        frames = connection.frames(intact=None)
        opcode: int | None = None
        parts: list[bytes] = []
        whole = True
        for frame in frames:
            if not frame.intact:
                out.append(("damaged", (connection.number, frame)))
            if frame.opcode != 0:
                opcode, parts, whole = frame.opcode, [], True
            parts.append(frame.payload)
            whole = whole and frame.intact
            if not frame.fin:
                continue
            if whole and opcode is not None:
                payload = b"".join(parts)
                message: str | bytes = payload.decode() if opcode == 1 else payload
                for item in proto.receive(message, 0):
                    if type(item) in _MARKET_CLASSES:
                        out.append(("event", attrs.evolve(item, ts_recv=0)))  # type: ignore[arg-type]
            opcode = None
    return out


def _measure(
    provider: str,
    row: Row,
    control: ProxyControl,
    recorder: AlpacaSimRecorder | PolygonSimRecorder,
    seen: list[tuple[float, Event]],
    fired_local: list[float],
    stats: Any,
    ended_early: str,
    client: Provider,
) -> Outcome:
    first = control.connections[0] if control.connections else None
    fired_at: float | None = None
    if first is not None and first.faults:
        fired_at = first.faults[0].at
    elif fired_local:
        fired_at = fired_local[0]
    detected_at = streaming_again_at = None
    reasons: list[str] = []
    streaming_again = False
    for now, event in seen:
        if isinstance(event, Status):
            if event.state is SessionState.RECONNECTING:
                reasons.append(_reason(event))
                if detected_at is None:
                    detected_at = now
            elif event.state is SessionState.STREAMING and event.attempt > 0:
                streaming_again = True
        elif streaming_again and streaming_again_at is None and type(event) in _MARKET_CLASSES:
            streaming_again_at = now
    # resubscription: every later connection that subscribed sent what the first did
    subscribes = [c.actions("subscribe") for c in recorder.connections]
    later = [s for s in subscribes[1:] if s]
    resubscribed = None if len(recorder.connections) < 2 else (
        bool(later) and all(s == subscribes[0] for s in later)
    )  # fmt: skip
    # silent loss
    expected = _expected(client, control)
    stream = [event for _, event in seen]
    delivered_at: dict[int, int] = {}  # index in expected -> index in stream
    position = 0
    events_only = [i for i, (kind, _) in enumerate(expected) if kind == "event"]
    for index, event in enumerate(stream):
        if type(event) not in _MARKET_CLASSES:
            continue
        key = attrs.evolve(event, ts_recv=0)
        for j in range(position, len(events_only)):
            if expected[events_only[j]][1] == key:
                delivered_at[events_only[j]] = index
                position = j + 1
                break
    gaps = [i for i, event in enumerate(stream) if isinstance(event, Gap)]
    last_delivered = max(delivered_at, default=-1)
    silent = in_flight = damaged = announced = 0
    for i, (kind, _) in enumerate(expected):
        if kind == "event" and i in delivered_at:
            continue
        before = max((delivered_at[k] for k in delivered_at if k < i), default=-1)
        after_keys = [k for k in delivered_at if k > i]
        after = delivered_at[min(after_keys)] if after_keys else len(stream)
        covered = any(before < g < after for g in gaps)
        if kind == "damaged":
            damaged += 1
            announced += covered
        elif i > last_delivered:
            in_flight += 1
        elif not covered:
            silent += 1
    # the old connection was closed before the next one reached the proxy
    closed_first = None
    stalled = first is not None and any(
        f.fault.kind is ProxyFaultKind.STALL for f in first.faults
    )  # a stalled proxy holds the old link itself: it cannot see the client close it
    if len(control.connections) > 1 and fired_at is not None and not stalled:
        nxt = control.connections[1]
        end = first.ended_at if first is not None else None
        closed_first = end is not None and end <= nxt.accepted_at
    return Outcome(
        provider=provider,
        row=row.name,
        fired_at=fired_at,
        detected_at=detected_at,
        streaming_again_at=streaming_again_at,
        reasons=tuple(reasons),
        resubscribed=resubscribed,
        silent_loss=silent,
        in_flight=in_flight,
        delivered=len(delivered_at),
        damaged=damaged,
        damage_announced=announced,
        closed_before_reopening=closed_first,
        connections=len(control.connections),
        malformed=stats.malformed if stats is not None else 0,
        unknown=stats.unknown if stats is not None else 0,
        ended_early=ended_early,
    )


def format_seconds(value: float | None) -> str:
    """A time for the table: ``"1.23 s"``, or ``"-"``."""
    if value is None or math.isnan(value):
        return "-"
    return f"{value:.2f} s"


def table(outcomes: Sequence[Outcome]) -> str:
    """The matrix as an RST simple table."""
    labels = {row.name: row.label for row in ROWS}
    header = ("fault", "provider", "what the library did", "detect", "stream again",
              "resubscribed", "silent loss")  # fmt: skip
    rows = [
        (
            labels.get(o.row, o.row),
            o.provider,
            o.summary(),
            format_seconds(o.detect),
            format_seconds(o.recover),
            "-" if o.resubscribed is None else ("yes" if o.resubscribed else "NO"),
            str(o.silent_loss),
        )
        for o in outcomes
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    rule = "  ".join("=" * w for w in widths)
    lines = [rule, "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)), rule]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.append(rule)
    return "\n".join(lines)


def dumps(outcomes: Sequence[Outcome]) -> bytes:
    """The outcomes as JSON (for keeping a run next to its table)."""
    return orjson.dumps([attrs.asdict(o) for o in outcomes], option=orjson.OPT_INDENT_2)
