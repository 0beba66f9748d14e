"""The distribution commands run as a user would: real processes, a real redis-server."""

from __future__ import annotations

import os
import subprocess
import sys
from functools import partial
from pathlib import Path

import orjson
import trio
from prometheus_client.parser import text_string_to_metric_families

from puffin_trio import codec
from tests.distribution.conftest import RedisServer, free_port
from tests.distribution.support import data, make_events, publish
from tests.distribution.test_metrics import request

CLI = [sys.executable, "-m", "puffin_trio.cli"]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=timeout, check=False, cwd=ROOT
    )


async def test_publish_sim_shows_progress_and_serves_metrics(redis_server: RedisServer) -> None:
    async with trio.open_nursery() as nursery:
        process: trio.Process = await nursery.start(
            partial(
                trio.run_process,
                [*CLI, "publish", "sim", "--redis", redis_server.url, "--duration", "5",
                 "--rate", "400", "--symbols", "AAPL,MSFT", "--metrics-port", "0"],
                stderr=subprocess.PIPE, check=False, cwd=ROOT,
            )
        )
        assert process.stderr is not None
        output = b""
        with trio.fail_after(30):
            while b"metrics on http://127.0.0.1:" not in output or output.count(b"published") < 1:
                chunk = await process.stderr.receive_some(4096)
                assert chunk, output
                output += chunk
        port = int(output.split(b"metrics on http://127.0.0.1:")[1].split(b"/")[0])
        status, _, text = await trio.to_thread.run_sync(request, port)
        with trio.fail_after(30):
            while chunk := await process.stderr.receive_some(4096):
                output += chunk
        await process.wait()
    assert process.returncode == 0, output
    lines = output.decode().splitlines()
    assert any(line.startswith("published ") and "redis up" in line for line in lines)
    assert any("alpaca streaming" in line for line in lines)
    assert lines[-1].startswith("done: published ")
    assert status == 200
    names = {family.name for family in text_string_to_metric_families(text)}
    assert {"puffin_redis_publisher_published", "puffin_session_messages"} <= names


async def test_stream_prints_what_was_published_as_json_lines(redis_server: RedisServer) -> None:
    sent = make_events(500)
    await publish(redis_server.url, sent)
    result = await trio.to_thread.run_sync(
        lambda: run_cli("stream", redis_server.url, "--start", "earliest", "--duration", "3")
    )
    assert result.returncode == 0, result.stderr
    got = [codec.loads(line) for line in result.stdout.splitlines()]
    assert data(got) == sent
    symbols = await trio.to_thread.run_sync(
        lambda: run_cli(
            "stream", redis_server.url, "--start", "earliest", "--duration", "3",
            "--symbols", "AAPL", "--kinds", "trades",
        )
    )
    assert {orjson.loads(line)["type"] for line in symbols.stdout.splitlines()} <= {
        "trade", "status", "gap",
    }
    assert any(orjson.loads(line)["type"] == "trade" for line in symbols.stdout.splitlines())


async def test_demo_from_redis_shows_the_published_symbols(redis_server: RedisServer) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(
            partial(
                trio.run_process,
                [*CLI, "publish", "sim", "--redis", redis_server.url, "--duration", "8",
                 "--rate", "300", "--symbols", "AAPL,MSFT"],
                stderr=subprocess.DEVNULL, check=False, cwd=ROOT,
            )
        )
        result = await trio.to_thread.run_sync(
            lambda: run_cli("demo", "--redis", redis_server.url, "--duration", "4")
        )
    assert result.returncode == 0, result.stderr
    for name in ("alpaca", "polygon", "ib", "AAPL", "MSFT", "streamed"):
        assert name in result.stdout


def test_bad_redis_arguments_fail_fast_with_what_to_do() -> None:
    bad_url = run_cli("publish", "sim", "--redis", "http://127.0.0.1:6379")
    assert bad_url.returncode == 2 and "redis://" in bad_url.stderr
    assert "Traceback" not in bad_url.stderr
    down = run_cli("stream", f"redis://127.0.0.1:{free_port()}/0", "--duration", "1")
    assert down.returncode == 1 and "RedisConnectionError" in down.stderr
    assert "Traceback" not in down.stderr
    no_symbols = run_cli("publish", "alpaca", "--redis", "redis://127.0.0.1:1/0")
    assert no_symbols.returncode == 2 and "--symbols" in no_symbols.stderr


def test_publish_a_real_provider_without_keys_fails_fast_with_what_to_do(
    redis_server: RedisServer,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APCA_")}
    result = subprocess.run(
        [*CLI, "publish", "alpaca", "--symbols", "AAPL", "--redis", redis_server.url],
        capture_output=True, text=True, timeout=60, check=False, cwd=ROOT, env=env,
    )
    assert result.returncode == 2
    assert "APCA_API_KEY_ID" in result.stderr and "Traceback" not in result.stderr


async def test_record_sim_serves_the_recorders_metrics(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        process: trio.Process = await nursery.start(
            partial(
                trio.run_process,
                [*CLI, "record", "sim", "--out", str(tmp_path / "rec"), "--duration", "5",
                 "--rate", "300", "--no-chaos", "--metrics-port", "0",
                 "--flush-interval", "0.5"],
                stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, check=False, cwd=ROOT,
            )
        )
        assert process.stderr is not None
        output = b""

        def written() -> bool:
            """A progress line says events are on disk (``"1,234 events written, ..."``)."""
            return any(
                line.endswith(b"s ago") and not line.startswith(b"0 events")
                for line in output.splitlines()
            )

        with trio.fail_after(30):
            while b"metrics on http://127.0.0.1:" not in output or not written():
                chunk = await process.stderr.receive_some(4096)
                assert chunk, output
                output += chunk
        port = int(output.split(b"metrics on http://127.0.0.1:")[1].split(b"/")[0])
        status, _, text = await trio.to_thread.run_sync(request, port)
        with trio.fail_after(30):
            while await process.stderr.receive_some(4096):
                pass
        await process.wait()
    assert process.returncode == 0
    assert status == 200
    names = {family.name for family in text_string_to_metric_families(text)}
    assert {"puffin_recorder_events", "puffin_session_messages"} <= names
