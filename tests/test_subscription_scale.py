"""Subscriptions at scale: 10,000 symbols x (trades, quotes), and Polygon's ``*``.

Against the simulators over loopback, on both WebSocket transports: a session
subscribes 20,000 topics when it connects (split into many frames, confirmed
by Alpaca as growing complete sets and by Polygon one topic at a time),
reaches ``streaming`` once every one is confirmed, unsubscribes half of them
live, and its confirmed set follows the server's exactly. The speed of it
(CPU per confirmation, cost per message from 10 to 10,000 symbols) is
measured in ``benchmarks/bench_subscriptions.py``; these tests check the
bookkeeping. :class:`SubscriptionState`'s incremental rules are checked
against a plain model with Hypothesis.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st
from trio.testing import MockClock

from puffin_trio import Quote, SessionState, Status, Supervisor, Trade
from puffin_trio.providers import AlpacaProvider, PolygonProvider
from puffin_trio.subscriptions import SubscriptionState

from ._support import KEY, POLYGON_KEY, SECRET, alpaca_sim, collect_until, polygon_sim, transport

SYMBOLS = [f"S{n:04d}" for n in range(10_000)]
KEPT, DROPPED = SYMBOLS[:5_000], SYMBOLS[5_000:]


def streaming(seen: list[Any]) -> bool:
    last = seen[-1]
    return isinstance(last, Status) and last.state is SessionState.STREAMING


def topics(*symbols: list[str]) -> dict[str, frozenset[str]]:
    return {"trades": frozenset(symbols[0]), "quotes": frozenset(symbols[0])}


@pytest.mark.usefixtures("ws_transport")
async def test_alpaca_confirms_ten_thousand_symbols_and_unsubscribes_half(
    autojump_clock: MockClock,
) -> None:
    async with alpaca_sim(symbols=["AAPL"], rate=200.0) as (url, recorder, wall):
        provider = AlpacaProvider(
            key=KEY, secret=SECRET, url=url, encoding="json", transport=transport()
        )
        async with Supervisor.open(wall_clock=wall) as sup:
            sup.add(provider, trades=SYMBOLS, quotes=SYMBOLS)
            async with sup.events(capacity=10_000) as events:
                await collect_until(events, streaming)
                stats = sup.statistics().sessions["alpaca"]
                assert stats.confirmed == topics(SYMBOLS)
                assert stats.desired == topics(SYMBOLS)
                assert await sup.unsubscribe("alpaca", trades=DROPPED, quotes=DROPPED) is True
                stats = sup.statistics().sessions["alpaca"]
                assert stats.confirmed == topics(KEPT) == stats.desired
                # What streams from now on is for the symbols kept.
                after = await collect_until(
                    events, lambda s: sum(isinstance(e, Trade | Quote) for e in s) >= 200
                )
    assert {e.symbol for e in after if isinstance(e, Trade | Quote)} <= set(KEPT)
    frames = recorder.connections[0].actions("subscribe")
    assert len(frames) > 10, "the subscription was split under the frame size limit"


@pytest.mark.usefixtures("ws_transport")
async def test_polygon_confirms_ten_thousand_symbols_one_topic_at_a_time(
    autojump_clock: MockClock,
) -> None:
    async with polygon_sim(symbols=["AAPL"], rate=200.0) as (url, _, wall):
        provider = PolygonProvider(key=POLYGON_KEY, url=url, transport=transport())
        async with Supervisor.open(wall_clock=wall) as sup:
            sup.add(provider, trades=SYMBOLS, quotes=SYMBOLS)
            async with sup.events(capacity=10_000) as events:
                await collect_until(events, streaming)
                stats = sup.statistics().sessions["polygon"]
                assert stats.confirmed == topics(SYMBOLS) == stats.desired
                assert await sup.unsubscribe("polygon", trades=DROPPED, quotes=DROPPED) is True
                stats = sup.statistics().sessions["polygon"]
                assert stats.confirmed == topics(KEPT) == stats.desired
                after = await collect_until(
                    events, lambda s: sum(isinstance(e, Trade | Quote) for e in s) >= 200
                )
    assert {e.symbol for e in after if isinstance(e, Trade | Quote)} <= set(KEPT)


@pytest.mark.usefixtures("ws_transport")
async def test_polygon_wildcard_is_confirmed_and_streams_every_symbol(
    autojump_clock: MockClock,
) -> None:
    market = ["AAPL", "MSFT", "NVDA", "TSLA"]
    async with polygon_sim(symbols=market, rate=400.0) as (url, _, wall):
        provider = PolygonProvider(key=POLYGON_KEY, url=url, transport=transport())
        async with Supervisor.open(wall_clock=wall) as sup:
            sup.add(provider, trades=["*"])
            async with sup.events() as events:
                await collect_until(events, streaming)
                assert sup.statistics().sessions["polygon"].confirmed == {
                    "trades": frozenset({"*"})
                }
                seen = await collect_until(
                    events, lambda s: {e.symbol for e in s if isinstance(e, Trade)} == set(market)
                )
                assert not any(isinstance(e, Quote) for e in seen)
                assert await sup.unsubscribe("polygon", trades=["*"]) is True
                assert sup.statistics().sessions["polygon"].confirmed == {}


# --------------------------------------------------------------------------- the state machine

_CHANNELS = ("trades", "quotes")
_SYMBOLS = ("A", "B", "C", "D")
_TOPICS = st.dictionaries(
    st.sampled_from(_CHANNELS), st.frozensets(st.sampled_from(_SYMBOLS), min_size=1), max_size=2
)
_STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("confirm"), _TOPICS),
        st.tuples(st.just("complete"), _TOPICS),
        st.tuples(st.just("unconfirm"), _TOPICS),
        st.tuples(st.just("lost"), st.just({})),
        st.tuples(st.just("expect"), _TOPICS),
        st.tuples(st.just("expect removed"), _TOPICS),
    ),
    max_size=40,
)


def _pairs(topics: Mapping[str, frozenset[str]]) -> set[tuple[str, str]]:
    return {(c, s) for c, symbols in topics.items() for s in symbols}


@given(_STEPS)
def test_incremental_confirmation_matches_the_plain_model(
    steps: list[tuple[str, dict[str, frozenset[str]]]],
) -> None:
    """Property: after any sequence of acks (incremental or complete), removals and
    resets, the confirmed set equals the plain model's, and each expectation is done
    exactly from the first moment its topics were all confirmed (or all gone)."""
    state = SubscriptionState()
    model: set[tuple[str, str]] = set()
    waits: list[tuple[Any, set[tuple[str, str]], bool, bool]] = []
    for action, given_topics in steps:
        pairs = _pairs(given_topics)
        if action == "confirm":
            state.confirm(given_topics, complete=False)
            model |= pairs
        elif action == "complete":
            state.confirm(given_topics, complete=True)
            model = set(pairs)
        elif action == "unconfirm":
            state.unconfirm(given_topics)
            model -= pairs
        elif action == "lost":
            state.connection_lost()
            model = set()
        else:
            removed = action == "expect removed"
            waits.append((state.expect(given_topics, removed=removed), pairs, removed, False))
        for i, (expectation, wanted, removed, done) in enumerate(waits):
            done = done or (not (wanted & model) if removed else wanted <= model)
            waits[i] = (expectation, wanted, removed, done)
            assert expectation.done is done
            assert expectation.event.is_set() is done
        expected: dict[str, frozenset[str]] = {}
        for channel, symbol in model:
            expected[channel] = expected.get(channel, frozenset()) | {symbol}
        assert state.confirmed == expected
        assert state.is_confirmed(given_topics) is (pairs <= model)


async def test_a_waiter_that_gives_up_is_no_longer_updated() -> None:
    state = SubscriptionState()
    with trio.move_on_after(0.01):
        await state.wait_confirmed({"trades": frozenset({"A"})})
    assert state._expectations == []
