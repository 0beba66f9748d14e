"""serve_metrics scraped over real HTTP, parsed with prometheus_client's own parser."""

from __future__ import annotations

import http.client
from functools import partial
from pathlib import Path

import pytest
import trio
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from puffin_trio import (
    ConfigurationError,
    RestartPolicy,
    Supervisor,
    open_recorder,
    open_redis_feed,
    open_redis_publisher,
    serve_metrics,
)
from puffin_trio.providers import AlpacaProvider
from puffin_trio.sim import FaultPlan, serve_alpaca
from tests.distribution.conftest import RedisServer
from tests.distribution.support import wait_until


def request(port: int, method: str = "GET", path: str = "/metrics") -> tuple[int, str, str]:
    """One HTTP request with the standard library's client (run in a worker thread)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, response.getheader("content-type") or "", response.read().decode()
    finally:
        connection.close()


def samples(text: str) -> dict[str, list[Sample]]:
    parsed: dict[str, list[Sample]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            parsed.setdefault(sample.name, []).append(sample)
    return parsed


def value(parsed: dict[str, list[Sample]], name: str, **labels: str) -> float:
    matches = [
        s.value for s in parsed[name] if all(s.labels.get(k) == v for k, v in labels.items())
    ]
    assert len(matches) == 1, (name, labels, parsed.get(name))
    return matches[0]




async def test_a_scrape_exports_sessions_consumers_the_publisher_and_a_feed(
    redis_server: RedisServer,
) -> None:
    url = redis_server.url
    async with trio.open_nursery() as nursery:
        sim = await nursery.start(
            partial(
                serve_alpaca, symbols=["AAPL", "MSFT"], rate=2000, batch=5, key="k", secret="s",
                faults=FaultPlan.drop_after(300, connection=1),
            )
        )
        async with (
            Supervisor.open(restart=RestartPolicy(initial=0.05)) as sup,
            open_redis_publisher(url) as publisher,
            open_redis_feed(url, symbols=["AAPL"]) as feed,
        ):
            async with (
                sup.events(capacity=4096, name="to-redis") as channel,
                trio.open_nursery() as tasks,
            ):
                tasks.start_soon(publisher.publish, channel)
                sup.add(
                    AlpacaProvider(key="k", secret="s", url=f"ws://127.0.0.1:{sim}/v2/iex"),
                    trades=["AAPL", "MSFT"], quotes=["AAPL", "MSFT"],
                )
                port = await tasks.start(
                    partial(
                        serve_metrics, sup, port=0,
                        sources=[publisher.statistics, feed.feed_statistics],
                    )
                )
                received = 0
                with trio.fail_after(20):
                    async for _ in feed:
                        received += 1
                        if received >= 500 and sup.statistics().sessions["alpaca"].reconnects:
                            break
                status, content_type, text = await trio.to_thread.run_sync(request, port)
                tasks.cancel_scope.cancel()
        nursery.cancel_scope.cancel()
    assert status == 200 and content_type == CONTENT_TYPE_LATEST
    parsed = samples(text)
    session = {"session": "alpaca", "provider": "alpaca"}
    assert value(parsed, "puffin_session_messages_total", **session) > 500
    assert value(parsed, "puffin_session_frames_total", **session) > 0
    assert value(parsed, "puffin_session_bytes_total", **session) > 0
    assert value(parsed, "puffin_session_reconnects_total", **session) >= 1
    assert value(parsed, "puffin_session_state", state="streaming", **session) == 1.0
    assert value(parsed, "puffin_session_state", state="failed", **session) == 0.0
    for name in ("puffin_session_gaps_total", "puffin_session_duplicates_total"):
        assert value(parsed, name, **session) >= 0
    lag_count = value(parsed, "puffin_session_lag_seconds_count", **session)
    assert lag_count > 0
    assert value(parsed, "puffin_session_lag_seconds_bucket", le="+Inf", **session) == lag_count
    consumer = {"consumer": "to-redis", "policy": "block"}
    assert value(parsed, "puffin_consumer_queued", **consumer) >= 0
    assert value(parsed, "puffin_consumer_capacity", **consumer) == 4096
    assert value(parsed, "puffin_consumer_dropped_total", **consumer) == 0
    assert value(parsed, "puffin_redis_publisher_published_total", prefix="puffin") > 500
    assert value(parsed, "puffin_redis_publisher_lost_total", prefix="puffin") == 0
    assert value(parsed, "puffin_redis_publisher_connected", prefix="puffin") == 1.0
    assert value(parsed, "puffin_redis_feed_events_total", prefix="puffin") >= 500
    assert value(parsed, "puffin_redis_feed_channel_queued", prefix="puffin") >= 0
    assert value(parsed, "puffin_redis_feed_lag_seconds_count", prefix="puffin") > 0
    assert "password" not in text


async def test_other_paths_methods_and_keep_alive() -> None:
    async with trio.open_nursery() as nursery:
        port = await nursery.start(partial(serve_metrics, None, port=0))
        assert (await trio.to_thread.run_sync(request, port, "GET", "/"))[0] == 404
        assert (await trio.to_thread.run_sync(request, port, "POST", "/metrics"))[0] == 405
        head = await trio.to_thread.run_sync(request, port, "HEAD", "/metrics")
        assert head[0] == 200 and head[2] == ""

        def two_on_one_connection() -> list[int]:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                statuses = []
                for _ in range(2):
                    connection.request("GET", "/metrics")
                    response = connection.getresponse()
                    response.read()
                    statuses.append(response.status)
                return statuses
            finally:
                connection.close()

        assert await trio.to_thread.run_sync(two_on_one_connection) == [200, 200]
        with trio.fail_after(10):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                await stream.send_all(b"GARBAGE\r\n\r\n")
                reply = await stream.receive_some(4096)
        assert reply.startswith(b"HTTP/1.1 400")
        nursery.cancel_scope.cancel()


async def test_a_source_that_is_not_statistics_is_refused() -> None:
    with pytest.raises(ConfigurationError):
        await serve_metrics(None, port=0, sources=[lambda: 42])


async def test_the_redis_password_never_reaches_the_metrics(tmp_path: object) -> None:
    server = RedisServer(tmp_path, password="s3cret-pw")  # type: ignore[arg-type]
    server.start()
    try:
        async with (
            open_redis_publisher(server.url) as publisher,
            open_redis_feed(server.url) as feed,
            trio.open_nursery() as nursery,
        ):
            port = await nursery.start(
                partial(serve_metrics, port=0, sources=[publisher.statistics, feed.feed_statistics])
            )
            status, _, text = await trio.to_thread.run_sync(request, port)
            nursery.cancel_scope.cancel()
    finally:
        server.stop()
    assert status == 200
    assert "s3cret-pw" not in text
    assert f'server="redis://:***@127.0.0.1:{server.port}/0"' in text


async def test_the_recorders_counters_are_exported_when_it_runs(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        sim = await nursery.start(
            partial(serve_alpaca, symbols=["AAPL"], rate=2000, batch=5, key="k", secret="s")
        )
        async with (
            Supervisor.open() as sup,
            open_recorder(tmp_path / "data", flush_interval=0.2) as recorder,
        ):
            async with (
                sup.events(capacity=4096, name="recorder") as events,
                trio.open_nursery() as tasks,
            ):
                tasks.start_soon(recorder.record, events)
                sup.add(
                    AlpacaProvider(key="k", secret="s", url=f"ws://127.0.0.1:{sim}/v2/iex"),
                    trades=["AAPL"], quotes=["AAPL"],
                )
                port = await tasks.start(
                    partial(serve_metrics, sup, port=0, sources=[recorder.statistics])
                )
                await wait_until(lambda: recorder.statistics().events > 200)
                status, _, text = await trio.to_thread.run_sync(request, port)
                tasks.cancel_scope.cancel()
        nursery.cancel_scope.cancel()
    assert status == 200
    parsed = samples(text)
    assert value(parsed, "puffin_recorder_events_total") > 200
    assert value(parsed, "puffin_recorder_bytes_total") > 0
    assert value(parsed, "puffin_recorder_queued") >= 0
    assert value(parsed, "puffin_consumer_delivered_total", consumer="recorder", policy="block") > 0
