"""``puffin-trio record`` and ``replay``, run as a user would: real processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from puffin_trio import Event, Gap, GapReason, SessionState, Status, Trade, codec, open_replay

CLI = [sys.executable, "-m", "puffin_trio.cli"]


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=timeout, env=env, check=False
    )


async def replay_all(path: Path, **filters: object) -> list[Event]:
    async with open_replay(path, **filters) as events:  # type: ignore[arg-type]
        return [event async for event in events]


@pytest.fixture(scope="module")
def sim_recording(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """``record sim`` for 5 s, flushed every 0.25 s. The Alpaca simulator drops its
    first connection after 600 messages: at 600 messages/s, about a second in."""
    out = tmp_path_factory.mktemp("cli") / "recording"
    result = run_cli(
        "record", "sim", "--out", str(out), "--duration", "5", "--rate", "600",
        "--symbols", "AAPL,MSFT", "--flush-interval", "0.25",
    )  # fmt: skip
    return out, result


def test_record_sim_writes_a_recording_and_shows_progress(
    sim_recording: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    out, result = sim_recording
    assert result.returncode == 0, result.stderr
    progress = [line for line in result.stderr.splitlines() if "events written" in line]
    assert len(progress) >= 2
    for part in ("files", "MiB on disk", "events/s", "last flush"):
        assert part in progress[-1]
    assert f"into {out}" in result.stdout
    events = trio.run(replay_all, out)
    assert {(e.provider, e.symbol) for e in events if isinstance(e, Trade)} == {
        (p, s) for p in ("alpaca", "polygon", "ib") for s in ("AAPL", "MSFT")
    }
    recorded = int(result.stdout.split("recorded ")[1].split()[0])
    assert recorded == len(events)


def test_record_survives_a_reconnect_without_a_new_file(
    sim_recording: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    out, _ = sim_recording
    events = trio.run(replay_all, out)
    reconnecting = [
        e for e in events if isinstance(e, Status) and e.state is SessionState.RECONNECTING
    ]
    gaps = [e for e in events if isinstance(e, Gap) and e.reason is GapReason.RECONNECT]
    assert [e.provider for e in reconnecting] == ["alpaca"]
    assert [e.provider for e in gaps] == ["alpaca"]
    trades = [e for e in events if isinstance(e, Trade) and e.provider == "alpaca"]
    assert trades[0].ts_recv < gaps[0].ts_recv < trades[-1].ts_recv  # before and after
    files = list((out / "provider=alpaca" / "kind=trade").rglob("*.parquet"))
    assert len(files) == 1


def test_replay_print_writes_the_recorded_events_as_json_lines(
    sim_recording: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    out, _ = sim_recording
    result = run_cli("replay", str(out), "--print")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [codec.loads(line) for line in lines] == trio.run(replay_all, out)


def test_replay_print_filters_by_symbol_and_kind(
    sim_recording: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    out, _ = sim_recording
    result = run_cli("replay", str(out), "--print", "--symbols", "MSFT", "--kinds", "trade")
    assert result.returncode == 0, result.stderr
    replayed = [codec.loads(line) for line in result.stdout.splitlines()]
    assert replayed == [
        e for e in trio.run(replay_all, out) if isinstance(e, Trade) and e.symbol == "MSFT"
    ]


def test_replay_drives_the_demo_view(
    sim_recording: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    out, _ = sim_recording
    result = run_cli("replay", str(out), "--speed", "20")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert f"puffin_trio replay: {out}" in text
    for name in ("alpaca", "polygon", "ib", "AAPL", "MSFT"):
        assert name in text
    assert "gap on alpaca: reconnect" in text
    total = len(trio.run(replay_all, out))
    assert f"replayed {total} events" in text


def test_replay_of_a_missing_directory_fails_with_a_clear_message(tmp_path: Path) -> None:
    result = run_cli("replay", str(tmp_path / "nothing"), "--print")
    assert result.returncode == 1
    assert "ReplayError" in result.stderr and "no recording at" in result.stderr
    assert "Traceback" not in result.stderr


def test_record_into_a_path_that_is_a_file_fails_naming_it(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("")
    result = run_cli("record", "sim", "--out", str(target), "--duration", "1")
    assert result.returncode == 1
    assert "RecordingError" in result.stderr and str(target) in result.stderr
    assert "Traceback" not in result.stderr


def test_record_of_a_real_feed_needs_symbols_and_keys(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APCA_")}
    result = run_cli("record", "alpaca", "--out", str(tmp_path), env=env)
    assert result.returncode == 2 and "needs --symbols" in result.stderr
    result = run_cli("record", "alpaca", "--symbols", "AAPL", "--out", str(tmp_path), env=env)
    assert result.returncode == 2 and "APCA_API_KEY_ID" in result.stderr
    assert "Traceback" not in result.stderr
