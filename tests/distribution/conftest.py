"""A real redis-server for the distribution tests: one per test, on a free loopback port.

Each server gets its own temporary directory (its AOF/RDB files live there,
so a restart with ``appendonly yes`` finds them), listens on 127.0.0.1 only,
and is killed at the end of the test. Readiness is the server's own
"Ready to accept connections" log line, read with a deadline.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

#: Seconds a redis-server has to start (it takes ~50 ms; a loaded CI machine more).
START_TIMEOUT = 20.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class RedisServer:
    """One redis-server process, restartable on the same port and directory."""

    def __init__(
        self,
        directory: Path,
        *,
        appendonly: bool = False,
        password: str | None = None,
        extra: Sequence[str] = (),
    ) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail(
                "redis-server is not installed: the distribution tests need a real one "
                "(Debian/Ubuntu: apt-get install -y redis-server; .ci/run does it)"
            )
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.appendonly = appendonly
        self.password = password
        #: More redis-server arguments (they override the ones above: the last wins).
        self.extra = list(extra)
        self.process: subprocess.Popen[bytes] | None = None
        self.log = directory / "redis.log"
        self.starts = 0

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [
            self.binary,
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.directory),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "everysec",
            "--daemonize", "no",
            "--loglevel", "notice",
            "--logfile", str(self.log),
        ]
        if self.password:
            args += ["--requirepass", self.password]
        args += self.extra
        self.starts += 1
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, cwd=self.directory)
        deadline = time.monotonic() + START_TIMEOUT
        while self._ready_lines() < self.starts:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not start: {self._log_tail()}")
            time.sleep(0.01)

    def _ready_lines(self) -> int:
        try:
            return self.log.read_bytes().count(b"Ready to accept connections")
        except FileNotFoundError:
            return 0

    def _log_tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-2000:]
        except FileNotFoundError:
            return "(no log)"

    def stop(self, sig: int = signal.SIGKILL) -> None:
        """Stop the server (SIGKILL by default: a crash, nothing flushed on the way out)."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(sig)
        process.wait(timeout=START_TIMEOUT)

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_aof(tmp_path: Path) -> Iterator[RedisServer]:
    """A server with ``appendonly yes``: what it acknowledged survives a kill."""
    server = RedisServer(tmp_path, appendonly=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()
