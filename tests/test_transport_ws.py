"""The WebSocket transport: URL policy, TLS verification, typed connection errors."""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio
import trustme
from trio.testing import MockClock
from trio_websocket import ConnectionClosed, WebSocketRequest, WebSocketServer, serve_websocket

from puffin_trio.errors import ConfigurationError, ConnectionLost
from puffin_trio.transports.ws import check_ws_url, open_ws_transport

Handler = Callable[[WebSocketRequest], Awaitable[None]]


@asynccontextmanager
async def ws_server(
    handler: Handler, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[int]:
    async with trio.open_nursery() as nursery:
        server: WebSocketServer = await nursery.start(
            partial(serve_websocket, handler, "127.0.0.1", 0, ssl_context)
        )
        yield server.port
        nursery.cancel_scope.cancel()


async def echo(request: WebSocketRequest) -> None:
    ws = await request.accept()
    with contextlib.suppress(ConnectionClosed):
        while True:
            await ws.send_message(await ws.get_message())


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


async def test_frames_round_trip_and_are_counted() -> None:
    async with ws_server(echo) as port, open_ws_transport(f"ws://127.0.0.1:{port}/") as ws:
        await ws.send_all(["hello", b"\x01\x02"])
        assert await ws.receive() == "hello"
        assert await ws.receive() == b"\x01\x02"
        await ws.ping()
        assert ws.frames_received == 2
        assert ws.bytes_received == 7


async def test_a_refused_connection_is_a_typed_connection_lost(autojump_clock: MockClock) -> None:
    async with ws_server(echo) as port:
        pass  # the port is closed again
    with pytest.raises(ConnectionLost, match="could not connect"):
        async with open_ws_transport(f"ws://127.0.0.1:{port}/"):
            pass  # pragma: no cover


async def test_a_rejected_upgrade_reports_the_http_status(autojump_clock: MockClock) -> None:
    async def reject(request: WebSocketRequest) -> None:
        await request.reject(401, body=b"no")

    async with ws_server(reject) as port:
        with pytest.raises(ConnectionLost, match="HTTP 401"):
            async with open_ws_transport(f"ws://127.0.0.1:{port}/"):
                pass  # pragma: no cover


async def test_a_peer_close_surfaces_its_code(autojump_clock: MockClock) -> None:
    async def close_1011(request: WebSocketRequest) -> None:
        ws = await request.accept()
        await ws.aclose(1011, "internal error")

    async with ws_server(close_1011) as port, open_ws_transport(f"ws://127.0.0.1:{port}/") as ws:
        with pytest.raises(ConnectionLost) as info:
            await ws.receive()
    assert info.value.code == 1011
    assert "internal error" in str(info.value)


async def test_a_message_over_the_size_limit_closes_with_1009(autojump_clock: MockClock) -> None:
    async def big(request: WebSocketRequest) -> None:
        ws = await request.accept()
        await ws.send_message("x" * 5000)
        await trio.sleep_forever()

    async with ws_server(big) as port:
        url = f"ws://127.0.0.1:{port}/"
        async with open_ws_transport(url, max_message_size=1000) as ws:
            with pytest.raises(ConnectionLost) as info:
                await ws.receive()
    assert info.value.code == 1009


@pytest.fixture(scope="module")
def certificate_authority() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_ssl_context(certificate_authority: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    certificate_authority.issue_cert("127.0.0.1").configure_cert(context)
    return context


async def test_wss_verifies_the_server_certificate_by_default(
    server_ssl_context: ssl.SSLContext,
) -> None:
    async with ws_server(echo, server_ssl_context) as port:
        with pytest.raises(ConnectionLost, match="CERTIFICATE_VERIFY_FAILED"):
            async with open_ws_transport(f"wss://127.0.0.1:{port}/"):
                pass  # pragma: no cover


async def test_wss_connects_when_the_certificate_is_trusted(
    server_ssl_context: ssl.SSLContext, certificate_authority: trustme.CA
) -> None:
    client = ssl.create_default_context()
    certificate_authority.configure_trust(client)
    async with ws_server(echo, server_ssl_context) as port:
        async with open_ws_transport(f"wss://127.0.0.1:{port}/", ssl_context=client) as ws:
            await ws.send("over tls")
            assert await ws.receive() == "over tls"


async def test_receive_nowait_takes_what_trio_websocket_already_queued() -> None:
    """Pins a private detail of trio-websocket: ``receive_nowait`` reads its message
    queue, ``WebSocketConnection._recv_channel`` (a trio memory channel), which has no
    public non-blocking read. If a trio-websocket release renames or changes it, this
    fails here, loudly, instead of the reader silently losing its batching."""

    async def burst(request: WebSocketRequest) -> None:
        ws = await request.accept()
        for text in ("m1", "m2", "m3"):
            await ws.send_message(text)
        with contextlib.suppress(ConnectionClosed):
            await ws.get_message()

    async with ws_server(burst) as port, open_ws_transport(f"ws://127.0.0.1:{port}/") as ws:
        channel = getattr(ws._ws, "_recv_channel", None)
        assert isinstance(channel, trio.MemoryReceiveChannel), (
            "trio-websocket no longer keeps its messages in _recv_channel: "
            "WebSocketTransport.receive_nowait must be adapted"
        )
        assert await ws.receive() == "m1"
        # The pong comes after m2 and m3 on the same stream: once it is in, so are they.
        await ws.ping()
        assert ws.receive_nowait() == "m2"
        assert ws.receive_nowait() == "m3"
        assert ws.receive_nowait() is None
        assert ws.frames_received == 3
