"""Publisher and consumers in separate processes, against a real redis-server.

Consumers run ``tests/distribution/consumer_process.py`` (one JSON line per
event, flushed), so a test can SIGKILL one at any point and know exactly what
it had processed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from functools import partial
from typing import Any

import orjson
import trio

from puffin_trio import (
    Event,
    FanOut,
    RestartPolicy,
    Supervisor,
    codec,
    open_redis_publisher,
)
from puffin_trio.providers import AlpacaProvider, IBProvider, PolygonProvider
from puffin_trio.sim import serve_alpaca, serve_ib, serve_polygon
from tests.distribution.conftest import RedisServer
from tests.distribution.support import data, make_events, publish, wait_until

CONSUMER = [sys.executable, "-m", "tests.distribution.consumer_process"]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Consumer:
    """A consumer process and the lines it printed so far."""

    def __init__(self, url: str, *args: str) -> None:
        self.process = subprocess.Popen(
            [*CONSUMER, url, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=ROOT,
        )
        self.buffer = b""
        self.lines: list[dict[str, Any]] = []

    async def pump(self) -> None:
        """Read stdout until it closes (run as a task)."""
        assert self.process.stdout is not None
        stream = trio.lowlevel.FdStream(os.dup(self.process.stdout.fileno()))
        async with stream:
            while chunk := await stream.receive_some(1 << 16):
                self.buffer += chunk
                *complete, self.buffer = self.buffer.split(b"\n")
                self.lines.extend(orjson.loads(line) for line in complete)

    def events(self) -> list[Event]:
        return [codec.loads(orjson.dumps(line["event"])) for line in self.lines if "event" in line]

    def statistics(self) -> dict[str, Any]:
        return next(line["statistics"] for line in self.lines if "statistics" in line)

    def ready(self) -> bool:
        return any("ready" in line for line in self.lines)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=20)

    def close_stdin(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()

    def wait(self) -> int:
        return self.process.wait(timeout=60)




async def start_consumers(nursery: trio.Nursery, consumers: Sequence[Consumer]) -> None:
    for consumer in consumers:
        nursery.start_soon(consumer.pump)
    await wait_until(lambda: all(c.ready() for c in consumers))


async def test_three_consumer_processes_get_exactly_what_the_publishers_channel_got(
    redis_server: RedisServer,
) -> None:
    """The simulators feed a supervisor; the publisher takes one sup.events() channel,
    a recorder another; three consumer processes each get the recorder's list."""
    url = redis_server.url
    consumers = [Consumer(url) for _ in range(3)]
    recorded: list[Event] = []

    async def record(sup: Supervisor, *, task_status: trio.TaskStatus[None]) -> None:
        async with sup.events(capacity=4096, name="recorder") as channel:
            task_status.started()
            async for event in channel:
                recorded.append(event)

    async def publish_channel(sup: Supervisor, publisher: Any, *, task_status: Any) -> None:
        async with sup.events(capacity=4096, name="publisher") as channel:
            task_status.started()
            await publisher.publish(channel)

    symbols = ["AAPL", "MSFT", "NVDA"]
    async with trio.open_nursery() as nursery:
        await start_consumers(nursery, consumers)
        alpaca = await nursery.start(
            partial(serve_alpaca, symbols=symbols, rate=2000, batch=10, key="k", secret="s")
        )
        polygon = await nursery.start(
            partial(serve_polygon, symbols=symbols, rate=2000, batch=10, key="k")
        )
        ib = await nursery.start(partial(serve_ib, symbols=symbols, rate=1000))
        async with open_redis_publisher(url) as publisher, trio.open_nursery() as tasks:
            async with Supervisor.open(restart=RestartPolicy(initial=0.1)) as sup:
                # Both channels are registered before any session starts.
                await tasks.start(record, sup)
                await tasks.start(publish_channel, sup, publisher)
                sup.add(
                    AlpacaProvider(key="k", secret="s", url=f"ws://127.0.0.1:{alpaca}/v2/iex"),
                    trades=symbols, quotes=symbols,
                )
                sup.add(
                    PolygonProvider(key="k", url=f"ws://127.0.0.1:{polygon}/stocks"),
                    trades=symbols, quotes=symbols,
                )
                sup.add(IBProvider(port=ib), trades=symbols, quotes=symbols)
                await wait_until(lambda: len(recorded) >= 4000)
        # the supervisor has closed: both channels ended; the publisher wrote "stopped"
        await trio.to_thread.run_sync(lambda: [c.wait() for c in consumers])
        nursery.cancel_scope.cancel()
    providers = {e.provider for e in recorded}
    assert {"alpaca", "polygon", "ib"} <= providers
    for consumer in consumers:
        assert consumer.process.returncode == 0
        assert data(consumer.events()) == recorded


async def test_a_consumer_killed_with_sigkill_resumes_without_loss_or_duplicate(
    redis_server: RedisServer,
) -> None:
    url = redis_server.url
    first, second = make_events(3000), make_events(3000, start=3000)
    killed = Consumer(url, "--delay", "0.0005")
    fanout = FanOut()
    async with trio.open_nursery() as nursery:
        async with (
            fanout.consumer(capacity=4096) as channel,
            open_redis_publisher(url) as publisher,
            trio.open_nursery() as publishing,
        ):
            publishing.start_soon(publisher.publish, channel)
            await fanout.publish_batch(first)
            await start_consumers(nursery, [killed])
            await fanout.publish_batch(second)  # while it consumes
            fanout.close()
            await wait_until(lambda: len(killed.lines) > 1500)
            killed.kill()
    done = killed.events()
    position = killed.lines[-1]["position"]
    assert position is not None and len(done) < len(first) + len(second)
    resumed = Consumer(url, "--start", position)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(resumed.pump)
        await trio.to_thread.run_sync(resumed.wait)
    everything = done + resumed.events()
    assert data(everything) == first + second
    # the publisher's own "started" and "stopped" came through once each as well
    assert len(everything) == len(first) + len(second) + 2


async def test_a_killed_group_member_leaves_nothing_unprocessed(redis_server: RedisServer) -> None:
    """Two members share the work; one is SIGKILLed with entries in hand; after
    ``claim_idle`` the other claims them: every event is processed at least once,
    and what was claimed is counted."""
    url = redis_server.url
    sent = make_events(3000)
    options = ("--group", "workers", "--claim-idle", "1.0")
    # The victim is slow (20 ms per event), so when it is killed its channel still
    # holds events of entries it read: they are pending in Redis, unacknowledged.
    victim = Consumer(url, *options, "--consumer", "victim", "--delay", "0.02")
    survivor = Consumer(url, *options, "--consumer", "survivor", "--delay", "0.001")
    expected = {repr(e) for e in sent}

    def processed() -> set[str]:
        return {repr(e) for e in data(victim.events() + survivor.events())}

    async with trio.open_nursery() as nursery:
        await start_consumers(nursery, [victim, survivor])
        nursery.start_soon(publish, url, sent)
        await wait_until(lambda: len(victim.lines) > 20)
        victim.kill()
        killed_at = len(victim.events())
        await wait_until(lambda: expected <= processed())
        survivor.close_stdin()
        await trio.to_thread.run_sync(survivor.wait)
    statistics = survivor.statistics()
    assert killed_at < len(sent)
    assert statistics["reclaimed"] > 0 and statistics["reclaimed_events"] > 0
    assert statistics["acked"] > 0
    # at least once: whatever the victim had taken but not finished came again
    duplicates = len(data(victim.events() + survivor.events())) - len(sent)
    assert duplicates >= 0
