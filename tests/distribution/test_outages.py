"""Redis going away under a running publisher and feed: nothing is lost silently."""

from __future__ import annotations

import trio

from puffin_trio import (
    Event,
    FanOut,
    Gap,
    GapReason,
    SessionState,
    Status,
    open_redis_feed,
    open_redis_publisher,
)
from tests.distribution.conftest import RedisServer
from tests.distribution.support import data, make_events, take, wait_until


async def account(feed: object, total: int) -> list[Event]:
    """Receive until every sent event is either received or counted in a Gap."""
    got: list[Event] = []
    accounted = 0
    with trio.fail_after(30):
        while accounted < total:
            event = await feed.receive()  # type: ignore[attr-defined]
            got.append(event)
            if event.provider != "puffin":
                accounted += 1
            elif isinstance(event, Gap):
                accounted += event.missing
    assert accounted == total
    return got


async def test_a_redis_restart_loses_only_what_the_gaps_count(redis_server: RedisServer) -> None:
    """Redis (no persistence) is killed mid-stream and restarted.

    The publisher survives; what Redis held and the consumer had not read is
    announced by the consumer with the exact count per stream; what arrived
    while Redis was down and did not fit the publisher's buffer is announced
    by the publisher's Gap, right after what it buffered; every event is
    received or counted, once.
    """
    url = redis_server.url
    a1, a2 = make_events(100), make_events(2000, start=100)
    b, c = make_events(2000, start=2100), make_events(500, start=4100)
    sent_total = sum(map(len, (a1, a2, b, c)))
    fanout = FanOut()
    async with (
        open_redis_feed(url, start="earliest", capacity=16) as feed,
        fanout.consumer(capacity=4096) as channel,
        open_redis_publisher(url, buffer=500) as publisher,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(publisher.publish, channel)
        await fanout.publish_batch(a1)
        await wait_until(lambda: publisher.statistics().received == len(a1))
        await publisher.flush()
        first = await take(feed, 2)  # the reader has read a1 and is held by the full channel
        await fanout.publish_batch(a2)
        await wait_until(lambda: publisher.statistics().received == len(a1) + len(a2))
        await publisher.flush()  # a2 is in Redis, unread
        redis_server.stop()  # ... and lost
        await fanout.publish_batch(b)  # the feed keeps running: nothing blocks
        await wait_until(lambda: publisher.statistics().received == len(a1) + len(a2) + len(b))
        assert not publisher.statistics().connected
        redis_server.start()
        await wait_until(lambda: publisher.statistics().connected)
        await fanout.publish_batch(c)
        await publisher.flush()
        statistics = publisher.statistics()
        got = first + await account(feed, sent_total - len(data(first)))
        fanout.close()
    assert statistics.reconnects == 1 and statistics.lost > 0
    # bounded: the buffer, plus the outage's three announcements (Status, Gap, Status)
    assert 500 <= statistics.max_buffered <= 503
    gaps = [e for e in got if isinstance(e, Gap) and e.provider == "puffin"]
    publisher_gaps = [g for g in gaps if g.stream == "redis-publisher:puffin"]
    stream_gaps = [g for g in gaps if g.stream != "redis-publisher:puffin"]
    assert [g.missing for g in publisher_gaps] == [statistics.lost]
    assert publisher_gaps[0].reason is GapReason.OVERFLOW
    assert publisher_gaps[0].window_start is not None and publisher_gaps[0].window_end is not None
    received = data(got)
    # Redis lost what the reader had not read yet: whole transactions, so a tail of
    # a1 + a2, and the consumer's gaps count exactly that tail.
    before_kill = a1 + a2
    kept = [e for e in received if e in before_kill]
    assert kept == before_kill[: len(kept)]
    assert len(kept) < len(before_kill)
    assert sum(g.missing for g in stream_gaps) == len(before_kill) - len(kept)
    kept_b = [e for e in received if e in b]
    assert kept_b == b[: len(kept_b)]  # the buffered prefix of b
    assert received[-len(c) :] == c
    # the publisher's Gap sits exactly where the drops happened: after what it buffered
    assert got.index(publisher_gaps[0]) > got.index(kept_b[-1])
    assert got.index(publisher_gaps[0]) < got.index(c[0])
    states = [e.state for e in got if isinstance(e, Status) and e.provider == "puffin"]
    assert SessionState.RECONNECTING in states
    assert states.index(SessionState.RECONNECTING) < len(states) - 1


async def test_with_appendonly_a_restart_loses_nothing_acknowledged(
    redis_aof: RedisServer,
) -> None:
    """Redis with ``appendonly yes`` is killed (SIGKILL) mid-stream and restarted.

    Everything the publisher had written before is still there, nothing is
    announced missing, and the feed and the publisher carry on.
    """
    url = redis_aof.url
    a, b = make_events(3000), make_events(1000, start=3000)
    fanout = FanOut()
    async with (
        open_redis_feed(url, start="earliest", capacity=32) as feed,
        fanout.consumer(capacity=4096) as channel,
        open_redis_publisher(url) as publisher,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(publisher.publish, channel)
        await fanout.publish_batch(a)
        await wait_until(lambda: publisher.statistics().received == len(a))
        await publisher.flush()
        acknowledged = publisher.statistics().published
        first = await take(feed, 10)
        redis_aof.restart()  # SIGKILL, then start again on the same files
        await fanout.publish_batch(b)
        await publisher.flush()
        rest = await account(feed, len(a) + len(b) - len(data(first)))
        fanout.close()
    got = first + rest
    assert acknowledged >= len(a)
    assert data(got) == a + b
    assert not [e for e in got if isinstance(e, Gap) and e.provider == "puffin"]
    assert publisher.statistics().lost == 0
