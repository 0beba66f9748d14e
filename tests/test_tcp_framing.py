"""The framed TCP transport: de-framing, pacing, and the trio connection around them."""

from __future__ import annotations

import itertools
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st
from trio.testing import MockClock

from puffin_trio.errors import ConfigurationError, ConnectionLost, ProtocolError
from puffin_trio.transports import tcp
from puffin_trio.transports.tcp import (
    DEFAULT_MAX_FRAME_SIZE,
    FrameDecoder,
    Pacer,
    TcpTransport,
    encode_frame,
    open_tcp_transport,
)

payloads = st.lists(st.binary(min_size=1, max_size=300), max_size=30)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` split at the (sorted, deduplicated) cut points."""
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


# --------------------------------------------------------------------------- FrameDecoder


@given(payloads, st.lists(st.integers(min_value=0), max_size=40))
def test_any_chunking_of_a_stream_yields_every_payload_in_order(
    messages: list[bytes], cuts: list[int]
) -> None:
    """However the byte stream is split into reads (mid-prefix, mid-payload, many
    messages per read, empty reads), the decoder returns exactly the payloads sent,
    in order, and holds nothing back at the end."""
    stream = b"".join(encode_frame(m) for m in messages)
    decoder = FrameDecoder()
    out: list[bytes] = []
    for chunk in chunked(stream, cuts):
        out.extend(decoder.feed(chunk))
    assert out == messages
    assert decoder.buffered == 0


@given(payloads, st.binary(min_size=1, max_size=300), st.data())
def test_a_stream_cut_short_returns_the_complete_messages_and_holds_the_rest(
    messages: list[bytes], last: bytes, data: st.DataObject
) -> None:
    """A stream that stops inside its last message yields every complete message
    before it, and exactly the bytes of the unfinished one stay buffered."""
    complete = b"".join(encode_frame(m) for m in messages)
    partial = encode_frame(last)[: data.draw(st.integers(1, len(last) + 3))]
    decoder = FrameDecoder()
    assert decoder.feed(bytearray(complete + partial)) == messages
    assert decoder.buffered == len(partial)


def test_a_zero_length_is_refused() -> None:
    with pytest.raises(ProtocolError, match="zero-length"):
        FrameDecoder().feed(encode_frame(b"9\x001\x00") + b"\x00\x00\x00\x00")


def test_an_oversized_length_is_refused_before_its_payload_arrives() -> None:
    decoder = FrameDecoder(max_frame_size=1024)
    assert decoder.feed(encode_frame(b"x" * 1024)) == [b"x" * 1024]
    with pytest.raises(ProtocolError, match="1025 bytes, over the 1024-byte limit"):
        decoder.feed(struct.pack(">I", 1025))


def test_text_read_as_a_length_prefix_is_refused_by_the_default_limit() -> None:
    # A stream out of step: b"1\x002\x00" read as a length is 822 MiB.
    assert DEFAULT_MAX_FRAME_SIZE == 0xFFFFFF
    with pytest.raises(ProtocolError, match="corrupt or out of step"):
        FrameDecoder().feed(b"1\x002\x00")


@pytest.mark.parametrize("bad", [0, -1, 2**32, 1.5, True, "16"])
def test_a_bad_frame_size_limit_is_a_configuration_error(bad: object) -> None:
    with pytest.raises(ConfigurationError, match="max_frame_size"):
        FrameDecoder(max_frame_size=bad)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- Pacer


@given(
    st.integers(1, 50),
    st.floats(0.1, 2.0),
    st.lists(st.floats(0.0, 0.5), min_size=1, max_size=200),
)
def test_pacer_never_lets_more_than_rate_sends_into_any_window(
    rate: int, period: float, gaps: list[float]
) -> None:
    """Senders arriving with arbitrary gaps, each waiting what the pacer asks, never
    put more than ``rate`` sends into any window of ``period`` seconds, and nobody
    waits while the window still has room."""
    pacer = Pacer(rate, period)
    now = 0.0
    sent: list[float] = []
    for gap in gaps:
        now += gap
        at = pacer.ready_at(now)
        in_window = [t for t in sent if t + period > now]
        assert (at == now) == (len(in_window) < rate)
        now = at
        pacer.record(now)
        sent.append(now)
    for i, start in enumerate(sent):
        assert sum(1 for t in sent[i:] if t < start + period) <= rate


@pytest.mark.parametrize(("rate", "period"), [(0, 1.0), (1.5, 1.0), (10, 0.0), (10, -1.0)])
def test_a_bad_pacer_setting_is_a_configuration_error(rate: object, period: object) -> None:
    with pytest.raises(ConfigurationError):
        Pacer(rate, period)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- TcpTransport


@asynccontextmanager
async def transport_pair(
    **kwargs: int | None,
) -> AsyncIterator[tuple[TcpTransport, trio.abc.Stream]]:
    """A TcpTransport over one end of an in-memory stream pair; yields (transport, peer)."""
    ours, peer = trio.testing.memory_stream_pair()
    transport = TcpTransport(ours, **kwargs)  # type: ignore[arg-type]
    yield transport, peer
    await transport.aclose()


async def test_receive_returns_one_payload_per_call_from_split_and_coalesced_writes() -> None:
    async with transport_pair() as (transport, peer):
        wire = encode_frame(b"1\x00a\x00") + encode_frame(b"2\x00") + encode_frame(b"3\x00")
        await peer.send_all(wire[:3])
        await peer.send_all(wire[3:])
        assert [await transport.receive() for _ in range(3)] == [b"1\x00a\x00", b"2\x00", b"3\x00"]
        assert transport.frames_received == 3
        assert transport.bytes_received == len(wire)


async def test_send_writes_the_bytes_exactly_as_given() -> None:
    async with transport_pair() as (transport, peer):
        await transport.send_all([b"API\x00", encode_frame(b"v157..178")])
        assert await peer.receive_some() == b"API\x00\x00\x00\x00\tv157..178"
        assert transport.messages_sent == 2


async def test_send_refuses_text() -> None:
    async with transport_pair() as (transport, _):
        with pytest.raises(TypeError, match="bytes"):
            await transport.send("49\x001\x00")


async def test_peer_close_is_connection_lost_after_the_last_complete_message() -> None:
    async with transport_pair() as (transport, peer):
        await peer.send_all(encode_frame(b"9\x001\x001\x00") + encode_frame(b"15\x00")[:5])
        await peer.aclose()
        assert await transport.receive() == b"9\x001\x001\x00"
        with pytest.raises(ConnectionLost, match=r"in the middle of a message \(5 bytes"):
            await transport.receive()


async def test_sending_on_a_closed_connection_is_connection_lost() -> None:
    async with transport_pair() as (transport, peer):
        await peer.aclose()
        with pytest.raises(ConnectionLost, match="while sending"):
            await transport.send(b"x")


async def test_ping_is_refused_because_tcp_has_none() -> None:
    async with transport_pair() as (transport, _):
        with pytest.raises(ProtocolError, match="application-level heartbeat"):
            await transport.ping()


async def test_concurrent_senders_each_get_their_frames_out_whole(
    autojump_clock: MockClock,
) -> None:
    frames = [encode_frame(f"{i}\x00".encode() * 50) for i in range(20)]
    async with transport_pair(max_messages_per_second=5) as (transport, peer):
        async with trio.open_nursery() as nursery:
            for frame in frames:
                nursery.start_soon(transport.send, frame)
        received = bytearray()
        while len(received) < sum(map(len, frames)):
            received += await peer.receive_some()
    decoded = FrameDecoder().feed(received)
    assert sorted(decoded) == sorted(f[4:] for f in frames)


async def test_sends_are_paced_to_the_rate_per_second(autojump_clock: MockClock) -> None:
    sent_at: list[float] = []
    async with transport_pair(max_messages_per_second=45) as (transport, peer):
        start = trio.current_time()
        async with trio.open_nursery() as nursery:

            async def drain() -> None:
                while await peer.receive_some():
                    pass

            nursery.start_soon(drain)
            for i in range(100):
                await transport.send(encode_frame(str(i).encode()))
                sent_at.append(trio.current_time() - start)
            nursery.cancel_scope.cancel()
        assert transport.paced_seconds == pytest.approx(2.0)
    assert sent_at[44] == 0.0 and sent_at[45] == pytest.approx(1.0)
    assert sent_at[-1] == pytest.approx(2.0)
    for i, t in enumerate(sent_at):
        assert sum(1 for u in sent_at[i:] if u < t + 1.0) <= 45


# --------------------------------------------------------------------------- open_tcp_transport


async def test_open_tcp_transport_connects_and_closes_the_socket(
    autojump_clock: MockClock,
) -> None:
    saw_close = trio.Event()

    async def handler(stream: trio.SocketStream) -> None:
        await stream.send_all(encode_frame(b"176\x00now\x00"))
        assert await stream.receive_some() == b"API\x00"
        assert await stream.receive_some() == b""  # our side closed on leaving the block
        saw_close.set()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(trio.serve_tcp, handler, 0)
        port = listeners[0].socket.getsockname()[1]
        async with open_tcp_transport("127.0.0.1", port) as transport:
            assert await transport.receive() == b"176\x00now\x00"
            await transport.send(b"API\x00")
        with trio.fail_after(5):
            await saw_close.wait()
        nursery.cancel_scope.cancel()


async def test_a_refused_connection_is_connection_lost_with_the_hint() -> None:
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # nothing listens there now
    with pytest.raises(ConnectionLost, match=f"127.0.0.1:{port}.*is TWS running"):
        async with open_tcp_transport("127.0.0.1", port, connect_hint="is TWS running?"):
            pass  # pragma: no cover


async def test_a_connect_that_hangs_times_out_as_connection_lost(
    monkeypatch: pytest.MonkeyPatch, autojump_clock: MockClock
) -> None:
    async def black_hole(host: str, port: int) -> trio.SocketStream:
        await trio.sleep_forever()
        raise AssertionError("unreachable")  # pragma: no cover

    monkeypatch.setattr(tcp.trio, "open_tcp_stream", black_hole)
    start = trio.current_time()
    with pytest.raises(ConnectionLost, match=r"within 3\.0 s"):
        async with open_tcp_transport("192.0.2.1", 7497, connect_timeout=3.0):
            pass  # pragma: no cover
    assert trio.current_time() - start == pytest.approx(3.0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"host": ""}, "host"),
        ({"port": 0}, "port"),
        ({"port": 70000}, "port"),
        ({"connect_timeout": 0}, "connect_timeout"),
        ({"max_frame_size": 0}, "max_frame_size"),
        ({"receive_size": 0}, "receive_size"),
    ],
)
async def test_bad_connection_settings_fail_before_connecting(
    kwargs: dict[str, object], match: str
) -> None:
    args: dict[str, object] = {"host": "127.0.0.1", "port": 7497, **kwargs}
    with pytest.raises(ConfigurationError, match=match):
        async with open_tcp_transport(**args):  # type: ignore[arg-type]
            pass  # pragma: no cover
