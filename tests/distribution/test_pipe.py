"""The hot commands' lean connection against a real redis-server: replies, errors, failures."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import coredis.exceptions as redis_errors
import pytest
import trio
import trio.testing
import trustme

from puffin_trio.redis._pipe import Pipe, script_sha
from tests.distribution.conftest import RedisServer, free_port
from tests.distribution.support import data, make_events, publish, read_all, wait_until

#: Generous bounds for a real server that answers in well under a millisecond.
CONNECT = 5.0
REPLY = 5.0


def pipe_to(url: str, *, reply_timeout: float = REPLY) -> Pipe:
    return Pipe(url, connect_timeout=CONNECT, reply_timeout=reply_timeout, client_name="pipe-test")


async def test_replies_come_back_as_resp2_values_on_one_connection(
    redis_server: RedisServer,
) -> None:
    pipe = pipe_to(redis_server.url)
    try:
        assert await pipe.call(b"PING") == b"PONG"
        ident = await pipe.call(b"XADD", b"s", b"1-1", b"a", b"1", b"b", b"x" * 100_000)
        assert ident == b"1-1"
        reply = await pipe.call(b"XREAD", b"COUNT", 10, b"STREAMS", b"s", b"0-0")
        assert reply == [[b"s", [[b"1-1", [b"a", b"1", b"b", b"x" * 100_000]]]]]
        assert await pipe.call(b"XREAD", b"COUNT", 10, b"STREAMS", b"s", b"1-1") is None
        assert await pipe.call(b"CLIENT", b"GETNAME") == b"pipe-test"
        assert (pipe.connects, pipe.commands) == (1, 5)
    finally:
        pipe.close()


async def test_an_error_reply_is_coredis_s_exception_and_the_connection_stays_usable(
    redis_server: RedisServer,
) -> None:
    pipe = pipe_to(redis_server.url)
    try:
        await pipe.call(b"SET", b"plain", b"value")
        with pytest.raises(redis_errors.WrongTypeError):
            await pipe.call(b"XADD", b"plain", b"*", b"a", b"1")
        with pytest.raises(redis_errors.UnknownCommandError):
            await pipe.call(b"NOSUCHCOMMAND")
        with pytest.raises(redis_errors.ResponseError, match="DUPLICATE-ish"):
            await pipe.call(b"EVAL", b"return redis.error_reply('DUPLICATE-ish refusal')", 0)
        assert await pipe.call(b"GET", b"plain") == b"value"
        assert pipe.connects == 1
    finally:
        pipe.close()


async def test_a_script_the_server_forgot_is_sent_again_whole(redis_server: RedisServer) -> None:
    source = "return {KEYS[1], ARGV[1]}"
    pipe = pipe_to(redis_server.url)
    try:
        assert await pipe.script(script_sha(source), source, [b"k"], [b"v"]) == [b"k", b"v"]
        await pipe.call(b"SCRIPT", b"FLUSH")
        assert await pipe.script(script_sha(source), source, [b"k"], [b"w"]) == [b"k", b"w"]
        assert await pipe.call(b"SCRIPT", b"EXISTS", script_sha(source)) == [1]
    finally:
        pipe.close()


async def test_a_server_killed_mid_command_is_a_connection_error_then_it_reconnects(
    redis_server: RedisServer,
) -> None:
    pipe = pipe_to(redis_server.url)
    try:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                failed = trio.Event()

                async def blocked_read() -> None:
                    with pytest.raises(redis_errors.ConnectionError):
                        await pipe.call(
                            b"XREAD", b"BLOCK", 5000, b"STREAMS", b"s", b"$", blocking=5.0
                        )
                    failed.set()

                nursery.start_soon(blocked_read)
                await wait_until(lambda: pipe.connects == 1)
                redis_server.stop()
                await failed.wait()
            with pytest.raises(redis_errors.ConnectionError):
                await pipe.call(b"PING")
            redis_server.start()
            assert await pipe.call(b"PING") == b"PONG"
        assert pipe.connects == 2
    finally:
        pipe.close()


async def test_a_connection_reset_by_the_server_fails_one_command_then_reconnects(
    redis_server: RedisServer,
) -> None:
    pipe = pipe_to(redis_server.url)
    killer = pipe_to(redis_server.url)
    try:
        await pipe.call(b"PING")
        killed = await killer.call(b"CLIENT", b"KILL", b"SKIPME", b"YES", b"TYPE", b"normal")
        assert killed == 1
        with pytest.raises(redis_errors.ConnectionError):
            await pipe.call(b"PING")
        assert await pipe.call(b"PING") == b"PONG"
        assert pipe.connects == 2
    finally:
        pipe.close()
        killer.close()


async def test_a_cancelled_command_never_leaves_its_reply_for_the_next_one(
    redis_server: RedisServer,
) -> None:
    pipe = pipe_to(redis_server.url)
    writer = pipe_to(redis_server.url)
    try:
        with trio.move_on_after(0.2):
            await pipe.call(b"XREAD", b"BLOCK", 5000, b"STREAMS", b"s", b"$", blocking=5.0)
        # Had the connection been kept, this XADD would wake the abandoned XREAD and
        # its reply would be read as GET's.
        await writer.call(b"XADD", b"s", b"*", b"a", b"1")
        await writer.call(b"SET", b"k", b"v")
        assert await pipe.call(b"GET", b"k") == b"v"
        assert pipe.connects == 2
    finally:
        pipe.close()
        writer.close()


async def test_a_server_that_stops_answering_is_a_timeout(autojump_clock: object) -> None:
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    pipe = pipe_to(f"redis://127.0.0.1:{port}/0", reply_timeout=2.0)
    try:
        with pytest.raises(TimeoutError, match="cannot connect"):
            await pipe.call(b"PING")  # accepted by the kernel, never answered
        assert pipe.connects == 0
    finally:
        pipe.close()
        listener.close()


async def test_a_peer_that_is_not_redis_is_a_connection_error(nursery: trio.Nursery) -> None:
    async def http(stream: trio.SocketStream) -> None:
        await stream.receive_some(1024)
        await stream.send_all(b"HTTP/1.1 400 Bad Request\r\n\r\n")

    listeners = await nursery.start(partial(trio.serve_tcp, http, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    pipe = pipe_to(f"redis://127.0.0.1:{port}/0")
    with pytest.raises(redis_errors.ConnectionError, match="cannot connect"):
        await pipe.call(b"PING")
    pipe.close()


async def test_nothing_listening_is_a_connection_error() -> None:
    pipe = pipe_to(f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(redis_errors.ConnectionError, match="cannot connect"):
        await pipe.call(b"PING")


async def test_a_password_and_a_database_number_hold_for_the_hot_commands(
    tmp_path: object,
) -> None:
    server = RedisServer(tmp_path, password="s3cret")  # type: ignore[arg-type]
    server.start()
    url = f"redis://:s3cret@127.0.0.1:{server.port}/3"
    events = make_events(300)
    try:
        await publish(url, events, prefix="p")
        assert data(await read_all(url, len(events), prefix="p")) == events
        in_db3 = pipe_to(url)
        in_db0 = pipe_to(f"redis://:s3cret@127.0.0.1:{server.port}/0")
        try:
            assert await in_db3.call(b"EXISTS", b"p:clock") == 1
            assert await in_db0.call(b"EXISTS", b"p:clock") == 0
        finally:
            in_db3.close()
            in_db0.close()
        with pytest.raises(redis_errors.AuthenticationFailureError):
            await pipe_to(f"redis://:wrong@127.0.0.1:{server.port}/3").call(b"PING")
    finally:
        server.stop()


async def test_a_tls_server_is_reached_with_coredis_s_own_certificate_options(
    tmp_path: Path,
) -> None:
    authority = trustme.CA()
    authority.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(
        tmp_path / "server.pem"
    )
    authority.cert_pem.write_to_path(tmp_path / "ca.pem")
    tls_port = free_port()
    server = RedisServer(
        tmp_path,
        extra=["--port", "0", "--tls-port", str(tls_port),
               "--tls-cert-file", str(tmp_path / "server.pem"),
               "--tls-key-file", str(tmp_path / "server.pem"),
               "--tls-auth-clients", "no"],
    )  # fmt: skip
    server.start()
    url = f"rediss://127.0.0.1:{tls_port}/0?ssl_ca_certs={tmp_path / 'ca.pem'}"
    events = make_events(200)
    try:
        # Plain TCP is off (--port 0): what arrives came over TLS, verified by our CA.
        await publish(url, events, prefix="tls")
        assert data(await read_all(url, len(events), prefix="tls")) == events
        with pytest.raises(redis_errors.ConnectionError, match="cannot connect"):
            await pipe_to(f"rediss://127.0.0.1:{tls_port}/0").call(b"PING")  # system CAs
    finally:
        server.stop()
