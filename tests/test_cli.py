"""The ``puffin-trio`` command line, run as a user would: a real process."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from functools import partial

import pytest
import trio
from rich.console import Console

from puffin_trio.cli import build_parser, run_demo

CLI = [sys.executable, "-m", "puffin_trio.cli"]


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=timeout, env=env, check=False
    )


def test_demo_streams_through_the_pipeline_and_shows_the_reconnect() -> None:
    """A short demo run (no TTY): all three providers' symbols, a reconnect and its gap."""
    result = run_cli("demo", "--duration", "6", "--rate", "600")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for name in ("alpaca", "polygon", "ib", "AAPL", "MSFT", "NVDA", "AMZN", "TSLA"):
        assert name in out
    assert "reconnecting" in out
    assert "gap on alpaca: reconnect" in out
    # The outage's trades were recovered from the simulator's historical endpoint.
    assert re.search(r"gap on alpaca: reconnect, \d+ ms, [1-9]\d* trades backfilled", out)
    assert "streamed" in out


async def test_demo_view_receives_trades_quotes_and_bars() -> None:
    view = await run_demo(
        duration=3.0,
        symbols=["AAPL", "MSFT"],
        rate=400.0,
        chaos=False,
        console=Console(file=io.StringIO()),
        live=False,
    )
    assert set(view.symbols) == {
        (provider, symbol)
        for provider in ("alpaca", "polygon", "ib")
        for symbol in ("AAPL", "MSFT")
    }
    for symbol in view.symbols.values():
        assert symbol.last is not None and symbol.bid is not None and symbol.ask is not None
        assert symbol.bid < symbol.ask
        assert symbol.bar is not None
    assert view.status == {"alpaca": "streaming", "polygon": "streaming", "ib": "streaming"}
    assert view.gaps == 0


def test_stream_without_keys_fails_fast_with_what_to_do() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APCA_")}
    result = run_cli("stream", "alpaca", "--symbols", "AAPL", env=env)
    assert result.returncode == 2
    assert "APCA_API_KEY_ID" in result.stderr
    assert "Traceback" not in result.stderr


def test_stream_refuses_plain_ws_to_a_remote_host() -> None:
    result = run_cli(
        "stream",
        "alpaca",
        "--symbols",
        "AAPL",
        "--url",
        "ws://example.com/v2/iex",
        env={**os.environ, "APCA_API_KEY_ID": "k", "APCA_API_SECRET_KEY": "s"},
    )
    assert result.returncode == 2
    assert "refusing plain ws://" in result.stderr


async def test_sim_command_serves_alpaca_on_the_given_port() -> None:
    with trio.socket.socket() as probe:
        await probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with trio.open_nursery() as nursery:
        process: trio.Process = await nursery.start(
            partial(
                trio.run_process,
                [*CLI, "sim", "alpaca", "--port", str(port)],
                stdout=subprocess.PIPE,
                check=False,
            )
        )
        assert process.stdout is not None
        with trio.fail_after(20):
            line = b""
            while b"\n" not in line:
                line += await process.stdout.receive_some(4096)
        assert f"ws://127.0.0.1:{port}/v2/iex".encode() in line
        process.terminate()


def test_unknown_command_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["frobnicate"])
    assert info.value.code == 2
