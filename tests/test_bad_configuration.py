"""Bad configuration fails at once, typed and actionable, and is never retried.

Reproductions of issue 9, defect 10: every bad argument the probe found
accepted (and then retried forever), or refused with a raw ``TypeError`` or
``AttributeError``, must raise :class:`~puffin_trio.errors.ConfigurationError`
at construction or at ``sup.add``, before any connection, with a message that
names what to fix. Each case is ``xfail(strict=True)`` until the fix.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import pytest
import trio
from trio.testing import MockClock

from puffin_trio import ConfigurationError, RestartPolicy, Supervisor
from puffin_trio.providers import AlpacaProvider, IBProvider, PolygonProvider
from puffin_trio.sim import AlpacaSimRecorder, serve_alpaca

DEFECT_10 = "issue 9 defect 10: bad configuration fails late, untyped, or forever"
#: Nothing listens here: a case that tried to connect would fail differently.
NOWHERE = "ws://127.0.0.1:9"


def alpaca(**kwargs: Any) -> AlpacaProvider:
    kwargs.setdefault("url", f"{NOWHERE}/v2/iex")
    return AlpacaProvider(key="k", secret="s", **kwargs)


def polygon(**kwargs: Any) -> PolygonProvider:
    kwargs.setdefault("url", f"{NOWHERE}/stocks")
    return PolygonProvider(key="k", **kwargs)


def ib() -> IBProvider:
    return IBProvider(port=9)


async def add(provider: Callable[[], Any], **topics: Any) -> None:
    """``sup.add`` in a supervisor that ends at once (leaving it cancels every session)."""
    async with Supervisor.open() as sup:
        sup.add(provider(), **topics)


async def open_with(**kwargs: Any) -> None:
    async with Supervisor.open(**kwargs):
        pass


async def build(make: Callable[[], object]) -> None:
    await trio.lowlevel.checkpoint()
    make()


LONG = "A" * 5000
PORT_99999 = "ws://127.0.0.1:99999"
PORT_ABC = "ws://127.0.0.1:abc"

#: id -> (what to do, a word the error message must contain)
CASES: dict[str, tuple[Callable[[], Awaitable[None]], str]] = {
    "alpaca url port 99999": (partial(build, lambda: alpaca(url=f"{PORT_99999}/v2/iex")), "port"),
    "alpaca url port abc": (partial(build, lambda: alpaca(url=f"{PORT_ABC}/v2/iex")), "port"),
    "polygon url port 99999": (partial(build, lambda: polygon(url=f"{PORT_99999}/stocks")), "port"),
    "polygon url port abc": (partial(build, lambda: polygon(url=f"{PORT_ABC}/stocks")), "port"),
    "alpaca 5000-character symbol": (partial(add, alpaca, trades=[LONG]), "symbol"),
    "polygon 5000-character symbol": (partial(add, polygon, trades=[LONG]), "symbol"),
    "ib 5000-character symbol": (partial(add, ib, trades=[LONG]), "symbol"),
    "alpaca trades=None": (partial(add, alpaca, trades=None), "trades"),
    "alpaca trades=123": (partial(add, alpaca, trades=123), "trades"),
    "polygon trades=None": (partial(add, polygon, trades=None), "trades"),
    "ib trades=123": (partial(add, ib, trades=123), "trades"),
    "sup.add(None)": (partial(add, lambda: None), "provider"),
    "sup.add('alpaca')": (partial(add, lambda: "alpaca"), "provider"),
    "RestartPolicy(initial=-1)": (partial(build, lambda: RestartPolicy(initial=-1)), "initial"),
    "RestartPolicy(jitter=2)": (partial(build, lambda: RestartPolicy(jitter=2)), "jitter"),
    "RestartPolicy(intensity=-1)": (
        partial(build, lambda: RestartPolicy(intensity=-1)), "intensity"
    ),
    "Supervisor.open(restart='fast')": (partial(open_with, restart="fast"), "restart"),
}  # fmt: skip


@pytest.mark.xfail(strict=True, reason=DEFECT_10)
@pytest.mark.parametrize("case", list(CASES))
async def test_a_bad_argument_is_a_configuration_error_naming_it(case: str) -> None:
    action, word = CASES[case]
    with pytest.raises(ConfigurationError) as caught:
        await action()
    assert word in str(caught.value).lower(), str(caught.value)


@pytest.mark.xfail(strict=True, reason=DEFECT_10)
@pytest.mark.parametrize("make", [alpaca, polygon], ids=["alpaca", "polygon"])
def test_the_plain_ws_refusal_gives_advice_that_works(make: Callable[..., object]) -> None:
    """The non-loopback refusal advises ``allow_insecure=True``: the provider must take it."""
    with pytest.raises(ConfigurationError) as caught:
        make(url="ws://example.com/feed")
    if "allow_insecure" in str(caught.value):
        make(url="ws://example.com/feed", allow_insecure=True)


@pytest.mark.xfail(strict=True, reason=DEFECT_10)
async def test_a_configuration_error_is_never_retried(autojump_clock: MockClock) -> None:
    """A symbol too long for the subscribe frame is a configuration error: at ``add``, or at
    worst once, raised from ``Supervisor.open``; never a reconnect loop."""
    recorder = AlpacaSimRecorder()
    raised: BaseException | None = None
    async with trio.open_nursery() as nursery:
        port = await nursery.start(partial(serve_alpaca, key="k", secret="s", recorder=recorder))
        provider = AlpacaProvider(key="k", secret="s", url=f"ws://127.0.0.1:{port}/v2/iex")
        try:
            with trio.fail_after(3600):
                async with Supervisor.open() as sup:
                    sup.add(provider, trades=["A" * 4500])
                    await trio.sleep_forever()
        except Exception as exc:  # what escapes is the point of the test
            raised = exc
        nursery.cancel_scope.cancel()
    assert isinstance(raised, ConfigurationError), repr(raised)
    assert recorder.accepted <= 1
