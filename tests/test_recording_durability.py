"""What a crash and a failing disk do to a recording, in real processes.

* SIGKILL mid-stream: every file left is readable, and what is missing is at
  most the last ``flush_interval`` + 1 s of the stream.
* A full disk (a 1 MiB tmpfs: ENOSPC; or RLIMIT_FSIZE: EFBIG), a read-only
  directory (a read-only bind mount: EROFS; or ``chmod`` while recording,
  EACCES) raise RecordingError naming the path, and damage nothing closed.

The mounts need a private mount namespace (``unshare``: root, or unprivileged
user namespaces); ``chmod`` does not stop root, so as root the child drops
the capabilities that bypass file permissions (``setpriv``). A test whose
mechanism the machine lacks is skipped with the reason.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import trio

from puffin_trio import Trade, open_recorder, open_replay

CHILD = Path(__file__).with_name("recording_child.py")
REPO = Path(__file__).resolve().parents[1]
NS = 1_000_000_000


def _works(command: list[str]) -> bool:
    if shutil.which(command[0]) is None:
        return False
    return subprocess.run(command, capture_output=True, timeout=30, check=False).returncode == 0


#: A private mount namespace in which we may mount (as root, or as a mapped root).
UNSHARE = ["unshare", "--user", "--map-root-user", "--mount"]
HAVE_MOUNTS = _works([*UNSHARE, "sh", "-c", "mount -t tmpfs tmpfs /mnt"])
needs_mounts = pytest.mark.skipif(
    not HAVE_MOUNTS, reason="cannot mount in a private namespace here (unshare --user --mount)"
)
#: As root, drop the capabilities that ignore file permissions, so chmod binds.
DROP_DAC = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"]
PERMISSIONS_BIND = os.geteuid() != 0 or _works([*DROP_DAC, "true"])


def run_child(*args: str, prefix: list[str] | None = None) -> dict[str, Any]:
    """Run the child in MODE; its JSON report."""
    command = [*(prefix or []), sys.executable, str(CHILD), *args]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=120, cwd=REPO, check=False
    )
    assert result.returncode == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return report


def in_namespace(script: str, directory: Path, *args: str) -> list[str]:
    """A command prefix: run ``script`` (sh, with $1 = directory) in a private mount
    namespace, then exec the child (``"$@"`` after the directory)."""
    return [*UNSHARE, "sh", "-c", f'{script} && shift && exec "$@"', "sh", str(directory), *args]


# --------------------------------------------------------------------------- SIGKILL


def test_sigkill_mid_stream_leaves_readable_files_and_loses_at_most_the_last_flush(
    tmp_path: Path,
) -> None:
    """A child records a gap-free stream (2,000 events/s, flushed every 0.5 s, files
    finished every 1.5 s) and is killed after four seconds of it."""
    flush, rotate, rate = 0.5, 1.5, 2000
    process = subprocess.Popen(
        [sys.executable, str(CHILD), "stream", str(tmp_path), str(flush), str(rotate), str(rate)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    generated: list[tuple[int, int]] = []  # (seq, ts) as the child reported them
    enough = threading.Event()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            kind, *values = line.split()
            if kind == "gen":
                generated.append((int(values[0]), int(values[1])))
                if generated[-1][0] >= 4 * rate:
                    enough.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert enough.wait(timeout=60), process.stderr.read() if process.stderr else ""
        killed_at = time.time_ns()
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    reader.join(timeout=30)
    assert process.returncode == -signal.SIGKILL

    left = [p for p in tmp_path.rglob("*") if p.is_file()]
    data = [p for p in left if p.name.endswith(".parquet")]
    assert data
    for path in data:
        pq.read_table(path)  # every file left behind is complete and valid
    assert all(p.name.startswith(".") and p.name.endswith(".tmp") for p in left if p not in data)

    async def replay() -> list[Trade]:
        async with open_replay(tmp_path) as events:
            return [e async for e in events]  # type: ignore[misc]

    seqs = [t.seq for t in trio.run(replay)]
    assert seqs == list(range(len(seqs)))  # nothing missing but the tail, nothing twice
    bound = killed_at - int((flush + 1.0) * NS)
    due = [seq for seq, ts in generated if ts <= bound]
    assert due and max(due) < len(seqs)


# --------------------------------------------------------------------------- full disk


def _check_disk_full(report: dict[str, Any], directory: str, code: int) -> None:
    assert report["error"] == "RecordingError", report
    assert report["errno"] == code
    assert report["path"].startswith(directory)
    assert report["path"] in report["message"]
    assert report["rows"] == report["flushed"] >= 1000  # everything closed is intact
    assert report["temporary"] == []


@needs_mounts
def test_a_full_disk_raises_naming_the_file_and_damages_nothing_closed(tmp_path: Path) -> None:
    """A 1 MiB tmpfs: a real ENOSPC from the kernel."""
    directory = tmp_path / "small"
    directory.mkdir()
    prefix = in_namespace('mount -t tmpfs -o size=1m tmpfs "$1"', directory)
    report = run_child("fill", str(directory), "20000", prefix=prefix)
    _check_disk_full(report, str(directory), errno.ENOSPC)
    assert "no space left on the device" in report["message"]


def test_a_file_size_limit_raises_naming_the_file_and_damages_nothing_closed(
    tmp_path: Path,
) -> None:
    """RLIMIT_FSIZE of 256 KiB (SIGXFSZ ignored): a real EFBIG from the kernel."""
    report = run_child("fill", str(tmp_path), "20000", str(256 * 1024))
    _check_disk_full(report, str(tmp_path), errno.EFBIG)


# --------------------------------------------------------------------------- read-only


def _record_some(directory: Path) -> list[Trade]:
    events = [
        Trade(provider="sim", symbol="AAPL", ts_event=i, ts_recv=10**18 + i, price=1.0, size=1.0)
        for i in range(100)
    ]

    async def record() -> None:
        async with open_recorder(directory) as recorder:
            for event in events:
                await recorder.write(event)

    trio.run(record)
    return events


def _replayed(directory: Path) -> list[object]:
    async def replay() -> list[object]:
        async with open_replay(directory) as events:
            return [e async for e in events]

    return trio.run(replay)


@needs_mounts
def test_a_read_only_directory_is_refused_on_entry_naming_it(tmp_path: Path) -> None:
    """A read-only bind mount over a recording: a real EROFS, and the recording intact."""
    events = _record_some(tmp_path)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*.parquet")}
    prefix = in_namespace('mount --bind "$1" "$1" && mount -o remount,bind,ro "$1"', tmp_path)
    report = run_child("readonly-entry", str(tmp_path), prefix=prefix)
    assert report["error"] == "RecordingError", report
    assert report["errno"] == errno.EROFS
    assert report["path"] == str(tmp_path) and str(tmp_path) in report["message"]
    assert "read-only" in report["message"]
    assert {p: p.read_bytes() for p in tmp_path.rglob("*.parquet")} == before
    assert _replayed(tmp_path) == events


@pytest.mark.skipif(not PERMISSIONS_BIND, reason="running as root without setpriv")
def test_a_directory_made_read_only_while_recording_raises_naming_it(tmp_path: Path) -> None:
    """``chmod 555`` on every directory of a live recording (EACCES); what was
    flushed before stays intact."""
    directory = tmp_path / "recording"
    prefix = DROP_DAC if os.geteuid() == 0 else []
    try:
        report = run_child("readonly-midway", str(directory), prefix=prefix)
    finally:
        for path in [directory, *directory.rglob("*")]:
            if path.is_dir():
                path.chmod(0o755)
    assert report["error"] == "RecordingError", report
    assert report["errno"] == errno.EACCES
    assert report["path"].startswith(str(directory)) and report["path"] in report["message"]
    assert report["rows"] == report["flushed"] == 500
    assert report["temporary"] == []
