"""The Redis feed against a real redis-server: same events, positions, trimming, bad input."""

from __future__ import annotations

import logging

import coredis
import pytest
import trio

from puffin_trio import (
    ConfigurationError,
    Event,
    FanOut,
    Gap,
    GapReason,
    RedisAuthenticationError,
    RedisConnectionError,
    RedisError,
    Status,
    open_redis_feed,
    open_redis_publisher,
)
from puffin_trio.redis._layout import FAMILY_OF, Layout, entry_id, shard_of
from tests.distribution.conftest import RedisServer, free_port
from tests.distribution.support import (
    collect,
    data,
    make_events,
    publish,
    read_all,
    same_gaps,
    take,
)


async def test_a_consumer_gets_the_same_events_in_the_same_order(
    redis_server: RedisServer,
) -> None:
    sent = make_events(3000)
    await publish(redis_server.url, sent)
    got = await read_all(redis_server.url, len(sent))
    assert data(got) == sent
    announcements = [e for e in got if e.provider == "puffin"]
    assert isinstance(announcements[0], Status) and announcements[0].detail == "publisher started"


class _ReceiveOnly(trio.abc.ReceiveChannel[Event]):
    """A channel that can only ``receive()`` (no ``receive_nowait``)."""

    def __init__(self, inner: trio.MemoryReceiveChannel[Event]) -> None:
        self._inner = inner

    async def receive(self) -> Event:
        return await self._inner.receive()

    async def aclose(self) -> None:
        await self._inner.aclose()


@pytest.mark.parametrize("receive_only", [False, True], ids=["memory channel", "receive only"])
async def test_any_receive_channel_is_published_whole_and_in_order(
    redis_server: RedisServer, receive_only: bool
) -> None:
    """Everything queued before the pump runs is taken at once (a memory channel can say
    what it holds), or one event at a time from a channel that can only wait; either way
    through a buffer far smaller than the backlog (the pump waits for room)."""
    sent = make_events(1500)
    send, receive = trio.open_memory_channel[Event](len(sent))
    for event in sent:
        send.send_nowait(event)
    send.close()
    channel: trio.abc.ReceiveChannel[Event] = _ReceiveOnly(receive) if receive_only else receive
    async with open_redis_publisher(redis_server.url, buffer=64) as publisher:
        await publisher.publish(channel)
        statistics = publisher.statistics()
        assert (statistics.received, statistics.lost) == (len(sent), 0)
        assert statistics.max_buffered <= 64
    assert data(await read_all(redis_server.url, len(sent))) == sent


async def test_filters_select_providers_symbols_and_kinds_in_order(
    redis_server: RedisServer,
) -> None:
    sent = make_events(2000)
    await publish(redis_server.url, sent)

    def wanted(e: object) -> bool:
        if isinstance(e, Status | Gap):
            return e.provider == "polygon" and e.symbol in ("", "MSFT", "BTC/USD")
        return (
            e.provider == "polygon"  # type: ignore[attr-defined]
            and e.symbol in ("MSFT", "BTC/USD")  # type: ignore[attr-defined]
            and FAMILY_OF[type(e)] in ("trades", "books")
        )

    expected = [e for e in sent if wanted(e)]
    async with open_redis_feed(
        redis_server.url,
        start="earliest",
        providers=["polygon"],
        symbols=["MSFT", "BTC/USD"],
        kinds=["trades", "books"],
    ) as feed:
        got = await collect(feed, len(expected))
    assert data(got) == expected


async def test_resuming_from_a_position_loses_nothing_and_repeats_nothing(
    redis_server: RedisServer,
) -> None:
    """For cut points everywhere (inside a transaction, at its edge, at 0 and at the end),
    what was taken before the position plus what comes after it is exactly the stream."""
    sent = make_events(1500)
    await publish(redis_server.url, sent)
    total = len(sent) + 2  # the publisher's "started" and "stopped" announcements
    async with open_redis_feed(redis_server.url, start="earliest") as feed:
        everything = await take(feed, total)
    assert data(everything) == sent
    for cut in (0, 1, 2, 17, 255, 256, 257, 700, total - 1, total):
        async with open_redis_feed(redis_server.url, start="earliest") as feed:
            before = await take(feed, cut)
            position = feed.position()
        async with open_redis_feed(redis_server.url, start=position) as feed:
            rest = await take(feed, total - cut)
            with trio.move_on_after(0.3):
                extra = await feed.receive()
                pytest.fail(f"cut {cut}: received {extra} after the end")
        assert before + rest == everything, cut


async def test_a_filtered_position_resumes_exactly_too(redis_server: RedisServer) -> None:
    sent = make_events(1200)
    await publish(redis_server.url, sent)
    options = {"symbols": ["NVDA"]}
    async with open_redis_feed(redis_server.url, start="earliest", **options) as feed:
        everything = await collect(feed, sum(getattr(e, "symbol", "") == "NVDA" for e in sent)
                                   + sum(1 for e in sent if isinstance(e, Status | Gap)
                                         and e.symbol in ("", "NVDA")))
        everything += await take(feed, 1)  # the publisher's "stopped"
    for cut in (1, 5, 40, 90):
        async with open_redis_feed(redis_server.url, start="earliest", **options) as feed:
            before = await take(feed, cut)
            position = feed.position()
        async with open_redis_feed(redis_server.url, start=position, **options) as feed:
            rest = await take(feed, len(everything) - cut)
        assert before + rest == everything


async def test_latest_starts_after_what_is_already_published(redis_server: RedisServer) -> None:
    first, second = make_events(300), make_events(300, start=300)
    await publish(redis_server.url, first)
    async with open_redis_feed(redis_server.url, start="latest") as feed:
        await publish(redis_server.url, second)
        got = await collect(feed, len(second))
    assert data(got) == second


async def test_a_consumer_behind_the_trimmed_history_gets_the_exact_count(
    redis_server: RedisServer,
) -> None:
    """Every event is either received or counted in an overflow Gap, stream by stream."""
    sent = make_events(20_000)
    async with open_redis_feed(redis_server.url, start="earliest") as feed:
        # The consumer reads nothing while 20,000 events go through a 1,000-event history.
        await publish(redis_server.url, sent, maxlen=1000)
        got: list[Event] = []
        accounted = 0
        with trio.fail_after(20):
            while accounted < len(sent):
                event = await feed.receive()
                got.append(event)
                if event.provider != "puffin":
                    accounted += 1
                elif isinstance(event, Gap):
                    accounted += event.missing
        statistics = feed.feed_statistics()
    gaps = [e for e in got if isinstance(e, Gap) and e.provider == "puffin"]
    received = data(got)
    assert gaps and all(g.reason is GapReason.OVERFLOW for g in gaps)
    assert accounted == len(sent)
    assert statistics.missing == sum(g.missing for g in gaps) == len(sent) - len(received)
    # what did arrive is a subsequence of what was sent, in order, ending with the last
    remaining = iter(sent)
    assert all(any(e == s for s in remaining) for e in received)
    assert received[-1] == sent[-1]


async def test_an_undecodable_entry_is_counted_logged_and_skipped(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    first, second = make_events(200), make_events(200, start=200)
    url = redis_server.url
    await publish(url, first)
    layout = Layout("puffin")
    name = f"t{shard_of('AAPL'):02d}"
    async with coredis.Redis.from_url(url) as client:
        last = await client.xrevrange(layout.clock, count=1)
        epoch = int(last[0].identifier.split(b"-")[0])
        g = int(last[0].field_values[b"e"])
        count_before = await client.xrevrange(layout.key(name), count=1)
        n = int(count_before[0].field_values[b"n"]) + int(count_before[0].field_values[b"c"])
        garbage = b"\xc1 this is not msgpack " + b"x" * 5000
        await client.xadd(
            layout.key(name),
            {b"n": b"%d" % n, b"c": b"3", b"x": b"", b"d": garbage},
            identifier=entry_id(epoch, g),
        )
        await client.xadd(layout.clock, {b"e": b"%d" % (g + 3), b"k": name.encode()},
                          identifier=entry_id(epoch, g))
    await publish(url, second)
    with caplog.at_level(logging.WARNING, logger="puffin_trio.redis.feed"):
        async with open_redis_feed(url, start="earliest") as feed:
            got = await collect(feed, len(first) + len(second))
            statistics = feed.feed_statistics()
    assert data(got) == first + second
    gaps = [e for e in got if isinstance(e, Gap) and e.provider == "puffin"]
    assert [(g.reason, g.missing, g.stream) for g in gaps] == [
        (GapReason.SEQUENCE, 3, layout.key(name))
    ]
    # announced where the entry was: after everything published before it
    assert got.index(gaps[0]) > max(got.index(e) for e in data(got)[: len(first)])
    assert statistics.undecodable == 1
    messages = [r.getMessage() for r in caplog.records if "undecodable" in r.getMessage()]
    assert len(messages) == 1 and len(messages[0]) < 600 and "chars)" in messages[0]


async def test_a_malformed_url_is_a_configuration_error_before_any_connection() -> None:
    for url in ("http://127.0.0.1:6379", "redis://", "redis://127.0.0.1:6379/zero", "", "x"):
        with pytest.raises(ConfigurationError):
            async with open_redis_feed(url):
                pytest.fail("opened")
        with pytest.raises(ConfigurationError):
            async with open_redis_publisher(url):
                pytest.fail("opened")


async def test_an_unreachable_server_is_a_typed_error_before_streaming() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    with pytest.raises(RedisConnectionError, match="cannot reach Redis"):
        async with open_redis_feed(url, connect_timeout=2):
            pytest.fail("opened")
    with pytest.raises(RedisConnectionError):
        async with open_redis_publisher(url, connect_timeout=2):
            pytest.fail("opened")


async def test_a_wrong_password_is_a_typed_error_that_does_not_show_it(tmp_path: object) -> None:
    server = RedisServer(tmp_path, password="right-secret")  # type: ignore[arg-type]
    server.start()
    try:
        for password in ("wrong-secret", None):
            auth = f":{password}@" if password else ""
            url = f"redis://{auth}127.0.0.1:{server.port}/0"
            with pytest.raises(RedisAuthenticationError) as info:
                async with open_redis_feed(url):
                    pytest.fail("opened")
            assert "wrong-secret" not in str(info.value)
            with pytest.raises(RedisAuthenticationError):
                async with open_redis_publisher(url):
                    pytest.fail("opened")
        async with open_redis_publisher(server.url) as publisher:
            assert publisher.statistics().connected
    finally:
        server.stop()


async def test_bad_arguments_are_configuration_errors(redis_server: RedisServer) -> None:
    url = redis_server.url
    for options in (
        {"kinds": ["trade"]},
        {"symbols": "AAPL"},
        {"symbols": []},
        {"start": "yesterday"},
        {"start": "p1:1:2:zz=3"},
        {"group": "g", "start": "p1:1:2:"},
        {"consumer": "c1"},
        {"prefix": "has space"},
        {"capacity": 0},
        {"overflow": "drop_newest"},
    ):
        with pytest.raises(ConfigurationError):
            async with open_redis_feed(url, **options):  # type: ignore[arg-type]
                pytest.fail(f"opened with {options}")
    for options in ({"maxlen": 0}, {"buffer": 0}, {"prefix": ""}):
        with pytest.raises(ConfigurationError):
            async with open_redis_publisher(url, **options):  # type: ignore[arg-type]
                pytest.fail(f"opened with {options}")


async def test_a_position_taken_around_a_gap_announces_it_exactly_once(
    redis_server: RedisServer,
) -> None:
    """Cut just before, at and after a trimming Gap: before + after the resume hold it once."""
    url = redis_server.url
    second = make_events(6000, start=50)
    await publish(url, make_events(50))
    async with open_redis_feed(url, start="earliest", capacity=4) as feed:
        first = await take(feed, 3)  # the reader now holds its first round, the rest waits
        await publish(url, second, maxlen=500)
        position = feed.position()
    async with open_redis_feed(url, start=position) as feed:
        tail: list[Event] = []
        with trio.fail_after(20):
            while not tail or tail[-1] != second[-1]:
                tail.append(await feed.receive())
            tail.append(await feed.receive())  # the publisher's "stopped"
    everything = first + tail
    gap_at = [i for i, e in enumerate(everything) if isinstance(e, Gap) and e.provider == "puffin"]
    assert gap_at
    cuts = {gap_at[0] - 1, gap_at[0], gap_at[0] + 1, gap_at[1], gap_at[-1] + 1}
    for cut in sorted(c for c in cuts if c >= len(first)):
        async with open_redis_feed(url, start=position) as feed:
            before = await take(feed, cut - len(first))
            middle = feed.position()
        async with open_redis_feed(url, start=middle) as feed:
            after = await take(feed, len(everything) - cut)
        assert same_gaps(first + before + after) == same_gaps(everything), cut


async def test_a_publisher_restart_is_announced_and_the_stream_carries_on(
    redis_server: RedisServer,
) -> None:
    """A second publisher on the same prefix continues the counts: consumers see the
    first one stop and the second start (Status events), and nothing missing."""
    first, second = make_events(400), make_events(400, start=400)
    url = redis_server.url
    async with open_redis_feed(url, start="latest") as feed:
        await publish(url, first)
        await publish(url, second)
        got = await take(feed, len(first) + len(second) + 4)
        statistics = feed.feed_statistics()
    assert data(got) == first + second
    announcements = [(e.state.value, e.detail) for e in got if isinstance(e, Status)
                     and e.provider == "puffin"]  # fmt: skip
    assert announcements == [
        ("streaming", "publisher started"),
        ("closed", "publisher stopped"),
        ("streaming", "publisher started"),
        ("closed", "publisher stopped"),
    ]
    assert statistics.gaps == 0 and statistics.resets == 0


async def test_two_publishers_on_one_prefix_is_a_typed_error(redis_server: RedisServer) -> None:
    url = redis_server.url
    fanout = FanOut()
    with pytest.raises(RedisError, match="one publisher per prefix"):
        async with (
            fanout.consumer() as channel,
            open_redis_publisher(url) as slow,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(slow.publish, channel)
            await publish(url, make_events(50))  # another publisher writes meanwhile
            await fanout.publish_batch(make_events(10))
            await slow.flush()


async def test_a_prefix_written_by_another_layout_or_holding_other_data_is_refused(
    redis_server: RedisServer,
) -> None:
    url = redis_server.url
    async with coredis.Redis.from_url(url) as client:
        await client.hset("old:layout", {"version": "0", "shards": "16", "epoch": "5"})
        await client.set("taken:control", "a string, not a stream")
    with pytest.raises(RedisError, match="layout version 0"):
        async with open_redis_feed(url, prefix="old"):
            pytest.fail("opened")
    with pytest.raises(RedisError, match="layout version 0"):
        async with open_redis_publisher(url, prefix="old"):
            pytest.fail("opened")
    with pytest.raises(RedisError, match="not a stream"):
        await publish(url, make_events(5), prefix="taken")


async def test_a_consumer_that_keeps_up_reads_small_transactions_from_the_clock_alone(
    redis_server: RedisServer,
) -> None:
    """One blocking read per round when transactions are small: the same events either way."""
    url = redis_server.url
    sent = make_events(60)
    fanout = FanOut()
    async with (
        open_redis_feed(url, start="latest") as feed,
        fanout.consumer() as channel,
        open_redis_publisher(url) as publisher,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(publisher.publish, channel)
        got = []
        for event in sent:  # one event at a time: every transaction is small
            await fanout.publish(event)
            got.extend(await collect(feed, 1))
        statistics = feed.feed_statistics()
        fanout.close()
    assert data(got) == sent
    assert statistics.inline_rounds >= len(sent) // 2
