"""Bad configuration fails at once, typed and actionable, and is never retried.

Issue 9, defect 10: every bad argument the probe found accepted (and then
retried forever), or refused with a raw ``TypeError`` or ``AttributeError``,
raises :class:`~puffin_trio.errors.ConfigurationError` at construction or at
``sup.add``, before any connection, with a message that names what to fix.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import pytest
import trio
from trio.testing import MockClock

from puffin_trio import ConfigurationError, RestartPolicy, Supervisor, Trade
from puffin_trio.providers import AlpacaProvider, IBProvider, PolygonProvider
from puffin_trio.sim import AlpacaSimRecorder, serve_alpaca

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


@pytest.mark.parametrize("case", list(CASES))
async def test_a_bad_argument_is_a_configuration_error_naming_it(case: str) -> None:
    action, word = CASES[case]
    with pytest.raises(ConfigurationError) as caught:
        await action()
    assert word in str(caught.value).lower(), str(caught.value)


@pytest.mark.parametrize("make", [alpaca, polygon], ids=["alpaca", "polygon"])
def test_the_plain_ws_refusal_gives_advice_that_works(make: Callable[..., object]) -> None:
    """The non-loopback refusal advises ``allow_insecure=True``: the provider must take it."""
    with pytest.raises(ConfigurationError) as caught:
        make(url="ws://example.com/feed")
    if "allow_insecure" in str(caught.value):
        make(url="ws://example.com/feed", allow_insecure=True)


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


# --------------------------------------------------------------------------- symbols


@pytest.mark.parametrize(
    ("provider", "asked", "subscribed"),
    [
        (alpaca(), "brk.b", "BRK.B"),
        (alpaca(feed="crypto", url=f"{NOWHERE}/v1beta3/crypto/us"), "btc/usd", "BTC/USD"),
        (polygon(), "BACpL", "BACpL"),
        (polygon(market="crypto", url=f"{NOWHERE}/crypto"), "btc-usd", "BTC-USD"),
        (ib(), "aapl", "aapl"),
        (alpaca(), "*", "*"),
        (polygon(), "*", "*"),
    ],
    ids=["alpaca", "alpaca crypto", "polygon keeps case", "polygon crypto", "ib keeps case",
         "alpaca wildcard", "polygon wildcard"],
)  # fmt: skip
def test_a_symbol_is_normalised_where_its_spelling_is_unambiguous(
    provider: Any, asked: str, subscribed: str
) -> None:
    assert provider.normalize({"trades": [asked]}) == {"trades": frozenset({subscribed})}


@pytest.mark.parametrize(
    ("provider", "symbol", "advice"),
    [
        (alpaca(), "BTC/USD", "feed='crypto'"),
        (alpaca(), "A" * 17, "1 to 16"),
        (alpaca(), "AAPL!", "letters, digits, '.' or '-'"),
        (alpaca(feed="crypto", url=f"{NOWHERE}/v1beta3/crypto/us"), "BTC-USD", "slash"),
        (alpaca(feed="crypto", url=f"{NOWHERE}/v1beta3/crypto/us"), "BTCUSD", "BASE/QUOTE"),
        (polygon(), "aapl", "did you mean 'AAPL'"),
        (polygon(), "X:BTC-USD", "market='crypto'"),
        (polygon(market="crypto", url=f"{NOWHERE}/crypto"), "X:BTC-USD", "no 'X:' prefix"),
        (polygon(market="crypto", url=f"{NOWHERE}/crypto"), "BTC/USD", "FROM-TO"),
        (ib(), "*", "no wildcard"),
        (ib(), "A" * 33, "1 to 32"),
        (ib(), "ÄPFEL", "printable ASCII"),
    ],
)
def test_a_symbol_the_server_would_refuse_is_refused_with_advice(
    provider: Any, symbol: str, advice: str
) -> None:
    with pytest.raises(ConfigurationError, match=r"symbol|pairs|wildcard") as caught:
        provider.normalize({"quotes": [symbol]})
    assert advice in str(caught.value), str(caught.value)


def test_a_refused_long_symbol_is_shown_shortened() -> None:
    with pytest.raises(ConfigurationError) as caught:
        alpaca().normalize({"trades": [LONG]})
    assert "(5000 characters)" in str(caught.value) and len(str(caught.value)) < 300


def test_an_ib_contracts_key_follows_the_symbol_rule() -> None:
    from puffin_trio.providers import IBContract

    with pytest.raises(ConfigurationError, match="1 to 32"):
        IBProvider(contracts={"X" * 40: IBContract("AAPL")})


async def test_the_normalised_symbol_is_what_is_subscribed_and_what_the_events_say(
    autojump_clock: MockClock,
) -> None:
    recorder = AlpacaSimRecorder()
    async with trio.open_nursery() as nursery:
        port = await nursery.start(
            partial(serve_alpaca, key="k", secret="s", symbols=["BRK.B"], recorder=recorder)
        )
        provider = AlpacaProvider(key="k", secret="s", url=f"ws://127.0.0.1:{port}/v2/iex")
        async with Supervisor.open() as sup:
            sup.add(provider, trades=["brk.b"])
            async with sup.events() as events:
                with trio.fail_after(60):
                    async for event in events:
                        if isinstance(event, Trade):
                            break
        nursery.cancel_scope.cancel()
    assert event.symbol == "BRK.B"
    assert recorder.connections[0].actions("subscribe")[0]["trades"] == ["BRK.B"]


async def test_a_bad_channel_value_in_a_live_subscribe_is_a_configuration_error(
    autojump_clock: MockClock,
) -> None:
    async with Supervisor.open() as sup:
        sup.add(alpaca(), trades=["AAPL"])
        with pytest.raises(ConfigurationError, match="quotes= takes a list of symbols"):
            await sup.subscribe("alpaca", quotes=None)


# --------------------------------------------------------------------------- urls


@pytest.mark.parametrize(
    "url",
    [f"{PORT_99999}/v2/iex", f"{PORT_ABC}/v2/iex", "ws://127.0.0.1:0/v2/iex", "wss://h.example:-1/v2"],
)
def test_a_url_with_a_bad_port_is_refused_naming_the_port(url: str) -> None:
    with pytest.raises(ConfigurationError, match="the port must be a number from 1 to 65535"):
        alpaca(url=url)


def test_a_url_with_the_default_port_left_out_is_accepted() -> None:
    assert alpaca(url="wss://stream.data.alpaca.markets/v2/iex").url.endswith("/v2/iex")


@pytest.mark.parametrize("make", [alpaca, polygon], ids=["alpaca", "polygon"])
def test_allow_insecure_must_be_true_or_false(make: Callable[..., object]) -> None:
    with pytest.raises(ConfigurationError, match="allow_insecure must be True or False"):
        make(allow_insecure="yes")


@pytest.mark.parametrize("make", [alpaca, polygon], ids=["alpaca", "polygon"])
def test_allow_insecure_reaches_the_transport(
    make: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The provider hands the permission to the transport, which checks the URL again."""
    from puffin_trio.transports import ws

    opened: list[dict[str, Any]] = []
    monkeypatch.setattr(ws, "open_ws_transport", lambda url, **kw: opened.append(kw))
    make(url="ws://example.com/feed", allow_insecure=True).open_transport()
    make().open_transport()
    assert [kw["allow_insecure"] for kw in opened] == [True, False]


# --------------------------------------------------------------------------- supervisor


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"factor": 0.5}, "factor"),
        ({"initial": 10.0, "max_delay": 5.0}, "max_delay"),
        ({"jitter": -0.1}, "jitter"),
        ({"stable_after": -1}, "stable_after"),
        ({"period": 0}, "period"),
        ({"intensity": 1.5}, "intensity"),
        ({"intensity": True}, "intensity"),
        ({"initial": float("nan")}, "initial"),
        ({"max_delay": float("inf")}, "max_delay"),
        ({"initial": "1"}, "initial"),
    ],
)
def test_a_restart_policy_that_cannot_work_is_refused_naming_the_argument(
    kwargs: dict[str, Any], word: str
) -> None:
    with pytest.raises(ConfigurationError, match=f"RestartPolicy: {word} must be"):
        RestartPolicy(**kwargs)


def test_the_edges_of_a_restart_policy_are_accepted() -> None:
    RestartPolicy(initial=0.0, factor=1.0, max_delay=0.0, jitter=0.0, stable_after=0.0,
                  intensity=0)  # fmt: skip
    RestartPolicy(jitter=1.0)


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [({"fail_fast": "yes"}, "fail_fast"), ({"timeouts": 5.0}, "timeouts")],
)
async def test_supervisor_open_refuses_arguments_of_the_wrong_type(
    kwargs: dict[str, Any], word: str
) -> None:
    with pytest.raises(ConfigurationError, match=f"Supervisor.open: {word} must be"):
        await open_with(**kwargs)


class LateConfigurationProvider(AlpacaProvider):
    """A provider whose configuration proves bad only when a session starts a connection."""

    def protocol(self) -> Any:
        raise ConfigurationError("alpaca: this configuration cannot work; fix it")


async def test_a_configuration_error_from_a_running_session_fails_it_without_a_retry(
    autojump_clock: MockClock,
) -> None:
    recorder = AlpacaSimRecorder()
    async with trio.open_nursery() as nursery:
        port = await nursery.start(partial(serve_alpaca, key="k", secret="s", recorder=recorder))
        provider = LateConfigurationProvider(
            key="k", secret="s", url=f"ws://127.0.0.1:{port}/v2/iex"
        )
        statuses: list[Any] = []
        with pytest.raises(ConfigurationError, match="fix it"), trio.fail_after(3600):
            async with Supervisor.open() as sup:
                sup.add(provider, trades=["AAPL"])
                async with sup.events() as events:
                    async for event in events:
                        statuses.append(event.state)
        nursery.cancel_scope.cancel()
    assert statuses == ["failed"]
    assert recorder.accepted == 0


@pytest.mark.parametrize("name", ["", 7])
async def test_a_session_name_must_be_a_non_empty_string(name: object) -> None:
    with pytest.raises(ConfigurationError, match="name must be a non-empty string"):
        await add(alpaca, name=name, trades=["AAPL"])
