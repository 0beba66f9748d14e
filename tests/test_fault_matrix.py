"""The fault matrix: every fault of the fault proxy against the Alpaca and Polygon sessions.

Each test runs one row of :mod:`fuzz.matrix` (supervisor -> provider ->
fault proxy -> simulator, on loopback, under trio's autojump ``MockClock``)
and checks what the library must do: detect the fault in time, stream again
in time, resubscribe identically, close the broken connection before
opening the next, and lose nothing silently (every message the proxy
forwarded intact is delivered, or a ``Gap`` sits where it would have been).

Rows that fail today because of a defect listed in issue 9 are marked
``xfail(strict=True)`` with the defect's number: fixing the defect flips
the test, and the mark must go.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from trio.testing import MockClock

from fuzz.matrix import FIRE_AFTER, ROWS, Outcome, run_row, table
from puffin_trio import RestartPolicy
from puffin_trio.providers import AlpacaProvider, PolygonProvider

#: The providers' default timing knobs, which the matrix runs with.
ALPACA = AlpacaProvider(key="k", secret="s")
POLYGON = PolygonProvider(key="k")
KNOBS = {"alpaca": ALPACA, "polygon": POLYGON}
#: The longest first backoff of the default restart policy (1 s, jitter down only).
BACKOFF = RestartPolicy().initial
#: Slack for the loopback round trips and scheduling between two steps (s).
SLACK = 0.5

DEFECTS: dict[tuple[str, str], str] = {
    ("alpaca", "stall"): "issue 9 defect 8: 2 s spent closing a link declared dead",
    ("polygon", "stall"): "issue 9 defect 8: 2 s spent closing a link declared dead",
    ("alpaca", "fin"): "issue 9 defect 1: the socket is not closed after the peer's FIN",
    ("polygon", "fin"): "issue 9 defect 1: the socket is not closed after the peer's FIN",
    ("alpaca", "header"): "issue 9 defect 1: a 1002 protocol error leaves the socket open",
    ("polygon", "header"): "issue 9 defect 1: a 1002 protocol error leaves the socket open",
    ("alpaca", "utf8"): "issue 9 defect 1: a 1007 protocol error leaves the socket open",
    ("polygon", "utf8"): "issue 9 defect 1: a 1007 protocol error leaves the socket open",
    ("alpaca", "upgrade"): "issue 9 defect 7: an RST during the upgrade waits out 10 s",
    ("polygon", "upgrade"): "issue 9 defect 7: an RST during the upgrade waits out 10 s",
}


def nothing_lost_silently(o: Outcome) -> None:
    assert not o.ended_early, o.ended_early
    assert o.silent_loss == 0, f"{o.silent_loss} messages forwarded intact, not delivered, no Gap"


def kept_streaming(o: Outcome) -> None:
    nothing_lost_silently(o)
    assert not o.reconnected, f"reconnected after {o.reasons}"
    assert o.connections == 1
    assert o.delivered >= FIRE_AFTER + 1000, "the feed did not keep flowing after the fault"


def reconnected_at_once(o: Outcome, reason: str, *, limit: float = SLACK) -> None:
    """Detected within ``limit``, streaming again after one backoff, the old socket closed."""
    nothing_lost_silently(o)
    assert o.reasons and o.reasons[0].startswith(reason), o.reasons
    assert o.detect is not None and o.detect <= limit, o.detect
    assert o.recover is not None and o.recover <= o.detect + BACKOFF + SLACK, o.recover
    assert o.closed_before_reopening, "the broken connection was still open when the next began"
    assert o.resubscribed is not False


def check_latency(o: Outcome) -> None:
    kept_streaming(o)


def check_throttle(o: Outcome) -> None:
    """A slow but live link is kept: inbound data is liveness."""
    kept_streaming(o)


def check_stall(o: Outcome) -> None:
    """Half-open: found by the heartbeat within one interval plus the timeout."""
    nothing_lost_silently(o)
    knobs = KNOBS[o.provider]
    deadline = knobs.ping_interval + knobs.ping_timeout
    assert o.reasons and o.reasons[0] == "HeartbeatTimeout", o.reasons
    assert o.detect is not None and o.detect <= deadline + SLACK, o.detect
    # Alpaca keeps the stalled connection's slot (one per key) until it dies:
    # the next connection gets 406 and waits the limit cool-down.
    cooldown = knobs.limit_cooldown if o.provider == "alpaca" else 0.0
    assert o.recover is not None
    assert o.recover <= deadline + SLACK + BACKOFF + cooldown + 2 * SLACK, o.recover
    assert o.resubscribed is True


def check_reset(o: Outcome) -> None:
    reconnected_at_once(o, "ConnectionLost")
    assert o.resubscribed is True


def check_fin(o: Outcome) -> None:
    reconnected_at_once(o, "ConnectionLost")
    assert o.resubscribed is True


def check_header(o: Outcome) -> None:
    """A reserved bit set: the client fails the connection (1002) and closes it."""
    reconnected_at_once(o, "ConnectionLost 1002")
    assert o.resubscribed is True


def check_utf8(o: Outcome) -> None:
    """Invalid UTF-8 in a text frame: the client fails the connection (1007) and closes it."""
    reconnected_at_once(o, "ConnectionLost 1007")
    assert o.resubscribed is True


def check_payload(o: Outcome) -> None:
    """A damaged frame is counted and its loss announced in order; the link stays up."""
    kept_streaming(o)
    assert o.malformed == 1
    assert o.damaged == 1
    assert o.damage_announced == o.damaged, "no Gap where the damaged frame's messages were"


def check_inject(o: Outcome) -> None:
    """An unknown but well-formed message is counted and skipped; the link stays up."""
    kept_streaming(o)
    assert o.unknown == 1


def check_upgrade(o: Outcome) -> None:
    """An RST during the upgrade fails the attempt at once, not after the connect timeout."""
    reconnected_at_once(o, "ConnectionLost", limit=SLACK)


CHECKS: dict[str, Callable[[Outcome], None]] = {
    "latency": check_latency,
    "throttle": check_throttle,
    "stall": check_stall,
    "reset": check_reset,
    "fin": check_fin,
    "header": check_header,
    "utf8": check_utf8,
    "payload": check_payload,
    "inject": check_inject,
    "upgrade": check_upgrade,
}


def _cases() -> list[object]:
    cases = []
    for provider in ("alpaca", "polygon"):
        for row in ROWS:
            reason = DEFECTS.get((provider, row.name))
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            cases.append(pytest.param(provider, row, marks=marks, id=f"{provider}-{row.name}"))
    return cases


def test_every_row_has_a_check() -> None:
    assert {row.name for row in ROWS} == set(CHECKS)


@pytest.mark.parametrize(("provider", "row"), _cases())
async def test_fault_matrix(provider: str, row: object, autojump_clock: MockClock) -> None:
    outcome = await run_row(provider, row)  # type: ignore[arg-type]
    CHECKS[outcome.row](outcome)


async def test_the_matrix_table_shows_each_measurement(autojump_clock: MockClock) -> None:
    reset = next(row for row in ROWS if row.name == "reset")
    outcome = await run_row("polygon", reset)
    text = table([outcome])
    line = next(line for line in text.splitlines() if line.startswith("RST "))
    assert "polygon" in line and "ConnectionLost 1006" in line and "yes" in line
    assert f"{outcome.recover:.2f} s" in line
