"""The WebSocket transport contract, kept by both transports (websockets and trio-websocket).

Every test runs once per transport (the ``ws_transport`` fixture) against a
scripted peer on a loopback port (``tests/_peer.py``), on trio's autojump
``MockClock`` where a deadline is involved: URL policy, TLS verification,
typed connection errors with their close codes, the socket closed whenever
the connection ends, aborts, prompt shutdown, and pings answered while the
consumer is slow, up to the documented bound.
"""

from __future__ import annotations

import gc
import ssl
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psutil
import pytest
import trio
import trustme
from trio.testing import MockClock

from puffin_trio.errors import ConfigurationError, ConnectionLost
from puffin_trio.transports.ws import (
    DEFAULT_CLOSE_TIMEOUT,
    DEFAULT_CONNECT_TIMEOUT,
    WsTransportName,
    check_ws_url,
    open_ws_transport,
)

from ._peer import Peer, frame, serve_peer


def our_sockets(port: int) -> list[Any]:
    """This process's TCP sockets connected to ``port`` (the client ends), in any state."""
    return [
        c
        for c in psutil.Process().net_connections(kind="tcp")
        if c.raddr and c.raddr.port == port
    ]


@contextmanager
def no_garbage_collection() -> Iterator[None]:
    """A socket must be closed by its owner, not by the garbage collector finding it later."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def stay_open(peer: Peer) -> None:
    """A peer that answers pings and echoes nothing until the client closes."""
    await peer.drain()


async def echo(peer: Peer) -> None:
    try:
        while True:
            message = await peer.receive()
            if isinstance(message, str):
                await peer.send_text(message)
            else:
                await peer.send_bytes(message)
    except trio.EndOfChannel:
        return


# --------------------------------------------------------------------------- URL policy


@pytest.mark.parametrize(
    "url",
    [
        "wss://stream.data.alpaca.markets/v2/iex",
        "ws://127.0.0.1:8765/v2/iex",
        "ws://localhost:1/",
        "ws://[::1]:80/",
    ],
)
def test_secure_and_loopback_urls_are_accepted(url: str) -> None:
    check_ws_url(url)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ws://stream.data.alpaca.markets/v2/iex", "refusing plain ws://"),
        ("ws://10.1.2.3:8765/", "refusing plain ws://"),
        ("http://127.0.0.1/", "bad WebSocket URL"),
        ("wss:///nohost", "bad WebSocket URL"),
        ("127.0.0.1:8765", "bad WebSocket URL"),
    ],
)
def test_insecure_or_malformed_urls_are_refused_before_connecting(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        check_ws_url(url)


def test_plain_ws_to_a_remote_host_is_allowed_only_when_asked_for() -> None:
    check_ws_url("ws://example.com/feed", allow_insecure=True)


def test_opening_refuses_plain_ws_to_a_remote_host_before_any_connection(
    ws_transport: WsTransportName,
) -> None:
    with pytest.raises(ConfigurationError, match="allow_insecure=True"):
        open_ws_transport("ws://10.1.2.3:8765/", transport=ws_transport)


def test_an_unknown_transport_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="'websockets', 'trio-websocket'"):
        open_ws_transport("ws://127.0.0.1:1/", transport="wsproto")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- streaming


async def test_frames_round_trip_in_order_and_are_counted(ws_transport: WsTransportName) -> None:
    async with serve_peer(echo) as server:
        async with open_ws_transport(server.url, transport=ws_transport) as ws:
            await ws.send_all(["hello", b"\x01\x02"])
            assert await ws.receive() == "hello"
            assert await ws.receive() == b"\x01\x02"
            await ws.ping()
            assert ws.frames_received == 2
            assert ws.bytes_received == 7


async def test_upgrade_headers_reach_the_server(ws_transport: WsTransportName) -> None:
    async with serve_peer(stay_open) as server:
        async with open_ws_transport(
            server.url, transport=ws_transport, headers=[("Content-Type", "application/json")]
        ):
            pass
    assert server.peers[0].headers["content-type"] == "application/json"


async def test_receive_nowait_takes_only_what_has_arrived(ws_transport: WsTransportName) -> None:
    async def burst(peer: Peer) -> None:
        for text in ("m1", "m2", "m3"):
            await peer.send_text(text)
        await peer.drain()

    async with serve_peer(burst) as server:
        async with open_ws_transport(server.url, transport=ws_transport) as ws:
            assert await ws.receive() == "m1"
            # The pong comes after m2 and m3 on the same stream: once it is in, so are they.
            await ws.ping()
            assert ws.receive_nowait() == "m2"
            assert ws.receive_nowait() == "m3"
            assert ws.receive_nowait() is None
            assert ws.frames_received == 3


async def test_a_fragmented_message_is_received_whole(ws_transport: WsTransportName) -> None:
    async def fragments(peer: Peer) -> None:
        await peer.send_raw(
            bytes([0x01, 2]) + b"he" + bytes([0x00, 2]) + b"ll" + bytes([0x80, 1]) + b"o"
        )
        await peer.send_text("after")
        await peer.drain()

    async with serve_peer(fragments) as server:
        async with open_ws_transport(server.url, transport=ws_transport) as ws:
            assert await ws.receive() == "hello"
            assert await ws.receive() == "after"


async def test_receive_is_cancellable_and_takes_nothing_when_cancelled(
    ws_transport: WsTransportName, autojump_clock: MockClock
) -> None:
    async def later(peer: Peer) -> None:
        await trio.sleep(5)
        await peer.send_text("late")
        await peer.drain()

    async with serve_peer(later) as server:
        async with open_ws_transport(server.url, transport=ws_transport) as ws:
            with trio.move_on_after(1) as scope:
                await ws.receive()
            assert scope.cancelled_caught
            assert await ws.receive() == "late"


# --------------------------------------------------------------------------- opening


async def test_a_refused_connection_fails_at_once_with_its_cause(
    ws_transport: WsTransportName, autojump_clock: MockClock
) -> None:
    async with serve_peer(stay_open) as server:
        port = server.port
    start = trio.current_time()
    refused = r"could not connect to 127\.0\.0\.1:\d+: connection refused"
    with pytest.raises(ConnectionLost, match=refused):
        async with open_ws_transport(f"ws://127.0.0.1:{port}/", transport=ws_transport):
            pass  # pragma: no cover
    assert trio.current_time() - start < 1.0


async def test_a_rejected_upgrade_reports_the_http_status(
    ws_transport: WsTransportName, autojump_clock: MockClock
) -> None:
    async with serve_peer(stay_open, upgrade="reject") as server:
        with pytest.raises(ConnectionLost, match="HTTP 403"):
            async with open_ws_transport(server.url, transport=ws_transport):
                pass  # pragma: no cover


async def test_a_reset_during_the_upgrade_fails_at_once_with_the_real_cause(
    ws_transport: WsTransportName, autojump_clock: MockClock
) -> None:
    """Issue 9 defect 7: not after the 10 s connect timeout, and it says "reset"."""
    async with serve_peer(stay_open, upgrade="reset") as server:
        start = trio.current_time()
        with pytest.raises(ConnectionLost) as caught:
            async with open_ws_transport(server.url, transport=ws_transport):
                pass  # pragma: no cover
        elapsed = trio.current_time() - start
    assert elapsed < 1.0, f"failed after {elapsed} s: {caught.value}"
    assert "reset" in str(caught.value), str(caught.value)


async def test_a_server_that_never_answers_the_upgrade_times_out_after_the_connect_timeout(
    ws_transport: WsTransportName, autojump_clock: MockClock
) -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    start = trio.current_time()
    with pytest.raises(ConnectionLost, match=f"within {DEFAULT_CONNECT_TIMEOUT} s"):
        async with open_ws_transport(f"ws://127.0.0.1:{port}/", transport=ws_transport):
            pass  # pragma: no cover
    assert trio.current_time() - start == pytest.approx(DEFAULT_CONNECT_TIMEOUT)
    assert our_sockets(port) == []
    for listener in listeners:
        await listener.aclose()


# --------------------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def certificate_authority() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_ssl_context(certificate_authority: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    certificate_authority.issue_cert("127.0.0.1").configure_cert(context)
    return context


async def test_wss_verifies_the_server_certificate_and_says_so_at_once(
    ws_transport: WsTransportName, server_ssl_context: ssl.SSLContext, autojump_clock: MockClock
) -> None:
    async with serve_peer(stay_open, ssl_context=server_ssl_context) as server:
        start = trio.current_time()
        with pytest.raises(ConnectionLost, match="TLS certificate verification failed"):
            async with open_ws_transport(server.url, transport=ws_transport):
                pass  # pragma: no cover
        assert trio.current_time() - start < 1.0


async def test_wss_connects_when_the_certificate_is_trusted(
    ws_transport: WsTransportName,
    server_ssl_context: ssl.SSLContext,
    certificate_authority: trustme.CA,
) -> None:
    client = ssl.create_default_context()
    certificate_authority.configure_trust(client)
    async with serve_peer(echo, ssl_context=server_ssl_context) as server:
        async with open_ws_transport(server.url, transport=ws_transport, ssl_context=client) as ws:
            await ws.send_all(["over tls"])
            assert await ws.receive() == "over tls"


# --------------------------------------------------------------------------- how it ends

#: Every way a peer can end the connection, and the close code receive() reports.
ENDINGS: dict[str, tuple[Callable[[Peer], Awaitable[None]], int]] = {
    "clean close 1000": (lambda peer: peer.close(1000, "bye"), 1000),
    "clean close 1000, TCP left open": (lambda peer: peer.close(1000, close_tcp=False), 1000),
    "close 1011 with a reason": (lambda peer: peer.close(1011, "internal error"), 1011),
    "FIN without a close frame": (lambda peer: peer.fin(), 1006),
    "reset": (lambda peer: peer.reset(), 1006),
    "protocol error 1002 (reserved bit)": (
        lambda peer: peer.send_raw(frame(0x1, b"x", rsv1=True)),
        1002,
    ),
    "protocol error 1007 (invalid UTF-8)": (lambda peer: peer.send_raw(frame(0x1, b"\xff")), 1007),
    "message over the size limit 1009": (lambda peer: peer.send_text("x" * 5000), 1009),
}


@pytest.mark.parametrize("ending", list(ENDINGS))
async def test_every_ending_is_a_typed_connection_lost_with_its_code_after_the_data(
    ws_transport: WsTransportName, ending: str, autojump_clock: MockClock
) -> None:
    end, code = ENDINGS[ending]

    async def script(peer: Peer) -> None:
        await peer.send_text("before")
        await end(peer)
        await peer.drain()

    async with serve_peer(script) as server:
        async with open_ws_transport(
            server.url, transport=ws_transport, max_message_size=1000
        ) as ws:
            assert await ws.receive() == "before"
            with pytest.raises(ConnectionLost) as caught:
                await ws.receive()
    assert caught.value.code == code, str(caught.value)
    if ending == "close 1011 with a reason":
        assert "internal error" in str(caught.value)
    if ending == "reset":
        assert "reset" in str(caught.value)


@pytest.mark.parametrize("ending", list(ENDINGS))
async def test_no_socket_of_ours_remains_after_server_initiated_closes(
    ws_transport: WsTransportName, ending: str, autojump_clock: MockClock
) -> None:
    """Issue 9 defect 1: the socket is closed when the connection ends, whoever ends it.

    Three times in a row the peer ends the connection; each time, within the
    close timeout (the peer's grace to close TCP) and before we leave the
    block, the transport has closed its socket itself.
    """
    end, _ = ENDINGS[ending]

    async def script(peer: Peer) -> None:
        await peer.send_text("before")
        await end(peer)
        await peer.drain()

    with no_garbage_collection():
        async with serve_peer(script) as server:
            for _ in range(3):
                async with open_ws_transport(
                    server.url, transport=ws_transport, max_message_size=1000
                ) as ws:
                    assert await ws.receive() == "before"
                    with pytest.raises(ConnectionLost):
                        await ws.receive()
                    # Once the close timeout has passed (its deadline ties with this
                    # sleep's at the same mock time, hence the extra millisecond).
                    await trio.sleep(DEFAULT_CLOSE_TIMEOUT + 0.001)
                    assert our_sockets(server.port) == []
            assert our_sockets(server.port) == []
    assert len(server.peers) == 3


async def test_after_an_abort_what_arrived_is_readable_and_leaving_takes_no_handshake(
    ws_transport: WsTransportName, autojump_clock: MockClock
) -> None:
    """Issue 9 defect 8's primitive: a link declared dead is dropped without a closing
    handshake (the deaf peer would never answer one); what reached us before that is
    still read first (issue 9 defect 9)."""

    async def burst_then_deaf(peer: Peer) -> None:
        for i in range(3):
            await peer.send_text(f"m{i}")
        await peer.answer_ping()
        await trio.sleep_forever()  # reads nothing more: a close frame would go unanswered

    with no_garbage_collection():
        async with serve_peer(burst_then_deaf) as server:
            async with open_ws_transport(server.url, transport=ws_transport) as ws:
                assert await ws.receive() == "m0"
                await ws.ping()  # m1 and m2 have arrived
                ws.abort()
                assert ws.receive_nowait() == "m1"
                assert await ws.receive() == "m2"
                start = trio.current_time()
            assert trio.current_time() - start < 0.01
            assert our_sockets(server.port) == []
            assert server.peers[0].client_close is None  # no closing handshake


async def test_a_ping_whose_connection_ends_raises_instead_of_waiting_forever(
    ws_transport: WsTransportName, autojump_clock: MockClock
) -> None:
    async def deaf_then_gone(peer: Peer) -> None:
        await trio.sleep(3)  # reads nothing, so answers no ping
        await peer.fin()

    async with serve_peer(deaf_then_gone) as server:
        async with open_ws_transport(server.url, transport=ws_transport) as ws:
            with trio.fail_after(10), pytest.raises(ConnectionLost):
                await ws.ping()


async def test_leaving_the_block_closes_cleanly_with_1000(ws_transport: WsTransportName) -> None:
    async with serve_peer(stay_open) as server:
        async with open_ws_transport(server.url, transport=ws_transport):
            pass
        with trio.fail_after(5):
            await server.finished[0].wait()
    assert server.peers[0].client_close == 1000
    assert our_sockets(server.port) == []


async def test_a_clean_close_to_a_deaf_peer_is_bounded_by_the_close_timeout(
    ws_transport: WsTransportName, autojump_clock: MockClock
) -> None:
    async def deaf(peer: Peer) -> None:
        await trio.sleep_forever()

    async with serve_peer(deaf) as server:
        async with open_ws_transport(server.url, transport=ws_transport):
            start = trio.current_time()
        assert trio.current_time() - start <= DEFAULT_CLOSE_TIMEOUT + 0.01
        assert our_sockets(server.port) == []


async def test_cancellation_ends_the_connection_at_once(
    ws_transport: WsTransportName, autojump_clock: MockClock
) -> None:
    async def deaf(peer: Peer) -> None:
        await trio.sleep_forever()

    async with serve_peer(deaf) as server:
        with trio.CancelScope() as scope:
            async with open_ws_transport(server.url, transport=ws_transport) as ws:
                start = trio.current_time()
                scope.cancel()
                await ws.receive()
        assert trio.current_time() - start < 0.01
        assert our_sockets(server.port) == []


async def test_big_writes_both_ways_at_once_do_not_deadlock(
    ws_transport: WsTransportName, autojump_clock: MockClock
) -> None:
    """Both sides write more than the socket buffers hold before reading (a large
    subscription that the server answers frame by frame): the transport keeps reading
    (into its queue, which holds them all) while its own write waits, so both complete."""
    chunk = b"x" * 60_000
    count = 200  # 12 MB each way: more than loopback's socket buffers, fewer messages than
    # the transport's queue (256)

    async def write_then_read(peer: Peer) -> None:
        for _ in range(count):
            await peer.send_bytes(chunk)
        for _ in range(count):
            await peer.receive()
        await peer.send_text("done")
        await peer.drain()

    async with serve_peer(write_then_read) as server:
        async with open_ws_transport(
            server.url, transport=ws_transport, max_message_size=1 << 20
        ) as ws:
            with trio.fail_after(60):
                await ws.send_all([chunk] * count)
                received = [await ws.receive() for _ in range(count + 1)]
    assert received[:count] == [chunk] * count
    assert received[-1] == "done"


# --------------------------------------------------------------------------- slow consumer


async def test_pings_are_answered_while_the_consumer_is_slow_up_to_the_queue_bound(
    ws_transport: WsTransportName, autojump_clock: MockClock
) -> None:
    """Nothing reads the transport: the library keeps answering the server's pings
    until ``message_queue_size`` messages wait, then stops; once the consumer
    catches up, the pong goes out and every message arrives in order."""
    bound = 8
    answered: list[bool] = []

    async def script(peer: Peer) -> None:
        for i in range(bound // 2):
            await peer.send_text(f"m{i}")
        await peer.ping()
        with trio.move_on_after(1):
            await peer.wait_pong()
        answered.append(peer.pongs == 1)
        for i in range(bound // 2, 4 * bound):
            await peer.send_text(f"m{i}")
        await peer.ping()
        with trio.move_on_after(1):
            await peer.wait_pong()
        answered.append(peer.pongs == 2)
        await peer.wait_pong()
        await peer.drain()

    async with serve_peer(script) as server:
        async with open_ws_transport(
            server.url, transport=ws_transport, message_queue_size=bound
        ) as ws:
            await trio.sleep(5)  # the slow consumer
            assert answered == [True, False]
            received = [await ws.receive() for _ in range(4 * bound)]
            assert received == [f"m{i}" for i in range(4 * bound)]
            await ws.ping()  # the stream is flowing again: the pong went out too


@pytest.mark.parametrize("how", ["abort", "leave the block"])
async def test_the_connection_ends_at_once_while_a_slow_consumer_holds_the_queue_full(
    ws_transport: WsTransportName, how: str, autojump_clock: MockClock
) -> None:
    """With reading paused behind a full queue, the library's reader waits for room,
    not on the socket: ending the connection must still end it, at once."""
    bound = 8

    async def flood(peer: Peer) -> None:
        for i in range(10 * bound):
            await peer.send_text(f"m{i}")
        await trio.sleep_forever()

    with no_garbage_collection():
        async with serve_peer(flood) as server:
            with trio.fail_after(5):
                async with open_ws_transport(
                    server.url, transport=ws_transport, message_queue_size=bound
                ) as ws:
                    await trio.sleep(1)  # the queue fills; the library stops reading
                    start = trio.current_time()
                    if how == "abort":
                        ws.abort()
                        assert ws.receive_nowait() == "m0"
                assert trio.current_time() - start < 0.01
            assert our_sockets(server.port) == []


# --------------------------------------------------------------------------- compression


async def test_compression_is_offered_by_default_where_the_library_has_it(
    ws_transport: WsTransportName, autojump_clock: MockClock
) -> None:
    """websockets offers permessage-deflate (the server accepts it here) and messages
    round-trip compressed; trio-websocket has none and offers nothing."""
    async with serve_peer(echo, deflate=True) as server:
        async with open_ws_transport(server.url, transport=ws_transport) as ws:
            await ws.send_all(["compressed " * 20])
            assert await ws.receive() == "compressed " * 20
    assert server.peers[0].deflate is (ws_transport == "websockets")


async def test_compression_can_be_turned_off(autojump_clock: MockClock) -> None:
    async with serve_peer(echo, deflate=True) as server:
        async with open_ws_transport(server.url, compression=False) as ws:
            await ws.send_all(["plain"])
            assert await ws.receive() == "plain"
    assert not server.peers[0].deflate


def test_trio_websocket_refuses_compression() -> None:
    with pytest.raises(ConfigurationError, match="no permessage-deflate"):
        open_ws_transport("ws://127.0.0.1:1/", transport="trio-websocket", compression=True)
