"""The fault proxy of puffin_trio.testing: each fault as it shows on the wire.

The upstream is a tiny real WebSocket server (trio-websocket) on 127.0.0.1
that echoes, and sends ``n`` numbered messages when asked ``send n``. The
client is wsproto over a plain trio stream that keeps every byte it receives,
so each fault is checked byte for byte, and so is what the proxy says it
forwarded intact. Most tests run on trio's autojump ``MockClock``; the last
ones run in real time.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial

import attrs
import pytest
import trio
import wsproto
import wsproto.events as wse
from hypothesis import given
from hypothesis import strategies as st
from trio.testing import MockClock
from trio_websocket import ConnectionClosed, WebSocketRequest, WebSocketServer, serve_websocket
from wsproto.frame_protocol import FrameProtocol

from puffin_trio.errors import ConfigurationError
from puffin_trio.testing import (
    ProxyControl,
    ProxyFault,
    ProxyFaultKind,
    ProxyPlan,
    serve_fault_proxy,
)
from puffin_trio.testing._wsframes import (
    BINARY,
    TEXT,
    encode_frame,
    mask_payload,
    parse_header,
)

#: Padding of the numbered messages: long enough for a 16-bit length field.
PAD = "x" * 150


def numbered(i: int) -> str:
    return f"message {i:04d} {PAD}"


@attrs.define
class Upstream:
    """What the upstream server saw."""

    port: int = 0
    connections: int = 0
    received: list[str | bytes] = attrs.Factory(list)
    closed: list[int | None] = attrs.Factory(list)
    ended: trio.Event = attrs.Factory(trio.Event)


@asynccontextmanager
async def upstream_server() -> AsyncIterator[Upstream]:
    state = Upstream()

    async def handler(request: WebSocketRequest) -> None:
        state.connections += 1
        ws = await request.accept()
        try:
            while True:
                message = await ws.get_message()
                state.received.append(message)
                if isinstance(message, str) and message.startswith("send "):
                    for i in range(int(message.split()[1])):
                        await ws.send_message(numbered(i))
                else:
                    await ws.send_message(message)
        except ConnectionClosed as exc:
            state.closed.append(exc.reason.code if exc.reason else None)
            state.ended.set()

    async with trio.open_nursery() as nursery:
        server: WebSocketServer = await nursery.start(
            partial(serve_websocket, handler, "127.0.0.1", 0, None)
        )
        state.port = server.port
        yield state
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def proxied(
    plan: ProxyPlan | None = None,
) -> AsyncIterator[tuple[int, ProxyControl, Upstream]]:
    """Upstream server + proxy in front of it: (proxy port, control, upstream)."""
    control = ProxyControl()
    async with upstream_server() as upstream, trio.open_nursery() as nursery:
        port = await nursery.start(
            partial(
                serve_fault_proxy, "127.0.0.1", upstream.port, plan=plan or (), control=control
            )
        )
        yield port, control, upstream
        nursery.cancel_scope.cancel()


class RawClient:
    """A WebSocket client that keeps every byte: wsproto over a plain trio stream."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
        self.head = bytearray()
        self.raw = bytearray()  # every byte after the upgrade response
        self.events: list[wse.Event] = []
        self.eof = False
        self.reset = False

    @classmethod
    @asynccontextmanager
    async def connect(cls, port: int, target: str = "/") -> AsyncIterator[RawClient]:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        client = cls(stream)
        try:
            await stream.send_all(
                client.ws.send(wse.Request(host=f"127.0.0.1:{port}", target=target))
            )
            yield client
        finally:
            await trio.aclose_forcefully(stream)

    async def upgrade(self) -> None:
        await self.until(lambda: any(isinstance(e, wse.AcceptConnection) for e in self.events))

    async def pump(self) -> None:
        """One read: bytes into ``raw`` (after the head) and into wsproto."""
        try:
            data = await self.stream.receive_some(65536)
        except trio.BrokenResourceError as exc:
            assert isinstance(exc.__cause__, ConnectionResetError)
            self.reset = True
            return
        if not data:
            self.eof = True
            self.ws.receive_data(None)
        else:
            if b"\r\n\r\n" not in self.head:
                self.head += data
                if b"\r\n\r\n" in self.head:
                    head, _, rest = bytes(self.head).partition(b"\r\n\r\n")
                    self.head = bytearray(head + b"\r\n\r\n")
                    self.raw += rest
            else:
                self.raw += data
            self.ws.receive_data(data)
        for event in self.ws.events():
            self.events.append(event)
            if isinstance(event, wse.Ping):
                await self.stream.send_all(self.ws.send(event.response()))

    async def until(self, done: Callable[[], bool], *, seconds: float = 30.0) -> None:
        with trio.fail_after(seconds):
            while not done():
                if self.eof or self.reset:
                    raise AssertionError("the connection ended first")
                await self.pump()

    async def until_end(self, *, seconds: float = 30.0) -> None:
        with trio.fail_after(seconds):
            while not (self.eof or self.reset):
                await self.pump()

    async def send(self, message: str | bytes) -> None:
        await self.stream.send_all(self.ws.send(wse.Message(data=message)))

    def texts(self) -> list[str]:
        out, parts = [], []
        for event in self.events:
            if isinstance(event, wse.TextMessage):
                parts.append(event.data)
                if event.message_finished:
                    out.append("".join(parts))
                    parts = []
        return out

    def close_code(self) -> int | None:
        for event in self.events:
            if isinstance(event, wse.CloseConnection):
                return event.code
        return None


def wire(*messages: str) -> bytes:
    """How the upstream server sends these text messages: unmasked, one frame each."""
    return b"".join(encode_frame(TEXT, m.encode()) for m in messages)


# --------------------------------------------------------------------------- relaying


async def test_relays_both_ways_byte_for_byte_and_records_every_frame_intact(
    autojump_clock: MockClock,
) -> None:
    async with proxied() as (port, control, upstream), RawClient.connect(port, "/feed") as c:
        await c.upgrade()
        await c.send("hello")
        await c.send(b"\x00\x01binary")
        await c.send("send 3")
        await c.until(lambda: len(c.texts()) == 4)
        assert bytes(c.raw) == wire("hello") + encode_frame(BINARY, b"\x00\x01binary") + wire(
            *(numbered(i) for i in range(3))
        )
    record = control.connection(1)
    assert record.target == "/feed" and record.status == 101
    assert record.messages() == ["hello", b"\x00\x01binary", *(numbered(i) for i in range(3))]
    assert record.messages("to_server") == ["hello", b"\x00\x01binary", "send 3"]
    assert all(f.intact and not f.injected for f in record.to_client + record.to_server)
    assert upstream.received == ["hello", b"\x00\x01binary", "send 3"]
    assert record.faults == []


async def test_control_frames_are_recorded_but_not_counted_as_data(
    autojump_clock: MockClock,
) -> None:
    async with proxied() as (port, control, _), RawClient.connect(port) as c:
        await c.upgrade()
        await c.stream.send_all(c.ws.send(wse.Ping(payload=b"are you there")))
        await c.until(lambda: any(isinstance(e, wse.Pong) for e in c.events))
    record = control.connection(1)
    assert [(f.opcode, f.payload) for f in record.to_server] == [(0x9, b"are you there")]
    assert [(f.opcode, f.payload) for f in record.to_client] == [(0xA, b"are you there")]
    assert record.frames() == [] and record.messages() == []


async def test_a_rejected_upgrade_is_relayed_as_plain_bytes(autojump_clock: MockClock) -> None:
    async def refuse(request: WebSocketRequest) -> None:
        await request.reject(404, body=b"no such feed")

    control = ProxyControl()
    async with trio.open_nursery() as nursery:
        server: WebSocketServer = await nursery.start(
            partial(serve_websocket, refuse, "127.0.0.1", 0, None)
        )
        port = await nursery.start(
            partial(serve_fault_proxy, "127.0.0.1", server.port, control=control)
        )
        async with RawClient.connect(port) as c:
            await c.until(
                lambda: any(isinstance(e, wse.RejectData) and e.body_finished for e in c.events)
            )
        nursery.cancel_scope.cancel()
    body = b"".join(e.data for e in c.events if isinstance(e, wse.RejectData))
    assert body == b"no such feed"
    record = control.connection(1)
    assert record.status == 404 and record.upgraded_at is None
    assert record.to_client == []


# --------------------------------------------------------------------------- stream faults


async def test_latency_delays_each_frame_by_the_delay(autojump_clock: MockClock) -> None:
    async with proxied(ProxyPlan.latency(0.25, direction="to_client")) as (port, control, _):
        async with RawClient.connect(port) as c:
            await c.upgrade()
            sent = trio.current_time()
            await c.send("ping me")
            await c.until(lambda: c.texts() == ["ping me"])
            assert trio.current_time() - sent == pytest.approx(0.25, abs=1e-6)
    assert [f.fault.kind for f in control.connection(1).faults] == [ProxyFaultKind.LATENCY]


async def test_throttle_limits_the_byte_rate(autojump_clock: MockClock) -> None:
    rate = 2000.0
    async with proxied(ProxyPlan.throttle(rate)) as (port, _, _), RawClient.connect(port) as c:
        await c.upgrade()
        start = trio.current_time()
        await c.send("send 40")
        await c.until(lambda: len(c.texts()) == 40)
        elapsed = trio.current_time() - start
    expected = len(wire(*(numbered(i) for i in range(40)))) / rate
    assert expected * 0.95 <= elapsed <= expected * 1.05 + 0.05


async def test_a_stall_forwards_nothing_and_closes_nothing_until_it_ends(
    autojump_clock: MockClock,
) -> None:
    plan = ProxyPlan.stall(after_frames=2, duration=30.0)
    async with proxied(plan) as (port, control, upstream), RawClient.connect(port) as c:
        await c.upgrade()
        await c.send("send 5")
        await c.until(lambda: len(c.texts()) == 2)
        stalled_at = trio.current_time()
        with trio.move_on_after(29.0):
            await c.until(lambda: len(c.texts()) > 2, seconds=100)
        assert len(c.texts()) == 2 and not (c.eof or c.reset)
        await c.send("after")  # held too: nothing goes upstream during the stall
        await trio.sleep(0.5)
        assert upstream.received == ["send 5"]
        await c.until(lambda: len(c.texts()) == 6)
        assert trio.current_time() - stalled_at == pytest.approx(30.0, abs=0.01)
    assert control.connection(1).faults[0].frames_before == 2


async def test_a_stall_without_duration_holds_the_connection_open_for_good(
    autojump_clock: MockClock,
) -> None:
    async with proxied(ProxyPlan.stall()) as (port, _, upstream), RawClient.connect(port) as c:
        await c.upgrade()
        await c.send("send 1")
        with trio.move_on_after(3600):
            await c.until(lambda: bool(c.texts()) or c.eof, seconds=7200)
        assert c.texts() == [] and not c.eof and not c.reset
        assert upstream.received == []


# --------------------------------------------------------------------------- ends


async def test_reset_after_n_frames_sends_an_rst_after_exactly_n_frames(
    autojump_clock: MockClock,
) -> None:
    async with proxied(ProxyPlan.reset(after_frames=3)) as (port, control, upstream):
        async with RawClient.connect(port) as c:
            await c.upgrade()
            await c.send("send 10")
            await c.until_end()
            assert c.reset and not c.eof
            assert bytes(c.raw) == wire(*(numbered(i) for i in range(3)))
        with trio.fail_after(5):
            await upstream.ended.wait()
    record = control.connection(1)
    assert record.end == "reset"
    assert record.messages() == [numbered(i) for i in range(3)]


async def test_fin_mid_frame_cuts_the_frame_in_half_then_ends_the_stream(
    autojump_clock: MockClock,
) -> None:
    async with proxied(ProxyPlan.fin_mid_frame(after_frames=2)) as (port, control, _):
        async with RawClient.connect(port) as c:
            await c.upgrade()
            await c.send("send 5")
            await c.until_end()
            assert c.eof and not c.reset
            third = encode_frame(TEXT, numbered(2).encode())
            header = parse_header(third)
            assert header is not None
            cut = header.header_length + header.payload_length // 2
            assert bytes(c.raw) == wire(numbered(0), numbered(1)) + third[:cut]
    record = control.connection(1)
    assert record.end == "fin"
    assert record.messages() == [numbered(0), numbered(1)]
    assert [f.intact for f in record.frames(intact=None)] == [True, True, False]


async def test_reset_during_upgrade_resets_the_client_before_any_reply(
    autojump_clock: MockClock,
) -> None:
    plan = ProxyPlan.reset_during_upgrade()
    async with proxied(plan) as (port, control, upstream), RawClient.connect(port) as c:
        await c.until_end()
        assert c.reset and c.head == b""
        async with RawClient.connect(port) as second:  # connection 2 is not planned
            await second.upgrade()
    assert upstream.connections == 1
    assert control.connection(1).end == "reset"
    assert control.connection(1).upgraded_at is None


# --------------------------------------------------------------------------- damage


async def test_corrupt_header_damages_exactly_one_header_byte(autojump_clock: MockClock) -> None:
    async with proxied(ProxyPlan.corrupt_header(after_frames=1)) as (port, control, _):
        async with RawClient.connect(port) as c:
            await c.upgrade()
            await c.send("send 3")
            await c.until(lambda: c.close_code() is not None)
            expected = bytearray(wire(*(numbered(i) for i in range(3))))
            second = len(wire(numbered(0)))
            expected[second] ^= 0x40  # RSV1
            await c.until(lambda: len(c.raw) >= len(expected))
            assert bytes(c.raw[: len(expected)]) == bytes(expected)
            assert c.close_code() == 1002
    record = control.connection(1)
    assert [f.intact for f in record.frames(intact=None)] == [True, False, True]
    assert record.messages() == [numbered(0), numbered(2)]
    assert record.faults[0].frames_before == 1


async def test_corrupt_payload_damages_exactly_one_payload_byte(autojump_clock: MockClock) -> None:
    plan = ProxyPlan.corrupt_payload(after_frames=1, offset=5, value=0x20)
    async with proxied(plan) as (port, control, _), RawClient.connect(port) as c:
        await c.upgrade()
        await c.send("send 3")
        await c.until(lambda: len(c.texts()) == 3)
        assert c.texts()[1] == numbered(1)[:5] + chr(ord(numbered(1)[5]) ^ 0x20) + numbered(1)[6:]
        assert c.texts()[0] == numbered(0) and c.texts()[2] == numbered(2)
    record = control.connection(1)
    assert record.messages() == [numbered(0), numbered(2)]
    damaged = record.frames(intact=False)
    assert [f.payload for f in damaged] == [numbered(1).encode()]  # what the sender meant


async def test_invalid_utf8_makes_the_client_fail_the_connection_with_1007(
    autojump_clock: MockClock,
) -> None:
    async with proxied(ProxyPlan.invalid_utf8(after_frames=0, offset=3)) as (port, _, _):
        async with RawClient.connect(port) as c:
            await c.upgrade()
            await c.send("send 1")
            await c.until(lambda: c.close_code() is not None)
            header = parse_header(c.raw)
            assert header is not None
            assert c.raw[header.header_length + 3] == 0xFF
            assert c.close_code() == 1007


async def test_client_frames_are_damaged_through_their_mask(autojump_clock: MockClock) -> None:
    """Masked frames: the server receives the plaintext with exactly the one byte changed."""
    plan = ProxyPlan.corrupt_payload(direction="to_server", after_frames=1, offset=2, value=0x01)
    async with proxied(plan) as (port, control, upstream), RawClient.connect(port) as c:
        await c.upgrade()
        await c.send("aaaa")
        await c.send("bbbb")
        await c.send("cccc")
        await c.until(lambda: len(c.texts()) == 3)
    assert upstream.received == ["aaaa", "bbcb", "cccc"]
    assert control.connection(1).messages("to_server") == ["aaaa", "cccc"]


async def test_injected_frame_arrives_between_frame_n_and_n_plus_1(
    autojump_clock: MockClock,
) -> None:
    plan = ProxyPlan.inject_frame('{"made":"up"}', after_frames=2)
    async with proxied(plan) as (port, control, _), RawClient.connect(port) as c:
        await c.upgrade()
        await c.send("send 4")
        await c.until(lambda: len(c.texts()) == 5)
        assert c.texts() == [numbered(0), numbered(1), '{"made":"up"}', numbered(2), numbered(3)]
    record = control.connection(1)
    assert [f.injected for f in record.frames()] == [False, False, True, False, False]
    assert len(record.frames()) == 5


# --------------------------------------------------------------------------- scheduling


async def test_faults_fire_at_a_trio_time_and_after_seconds(autojump_clock: MockClock) -> None:
    start = trio.current_time()
    plan = ProxyPlan.inject_frame("at", at=start + 5.0) + ProxyPlan.inject_frame(
        "after", after_seconds=7.0
    )
    async with proxied(plan) as (port, control, _), RawClient.connect(port) as c:
        await c.upgrade()
        await c.until(lambda: c.texts() == ["at", "after"])
    fired = control.connection(1).faults
    upgraded = control.connection(1).upgraded_at
    assert upgraded is not None
    assert [f.at for f in fired] == [pytest.approx(start + 5.0), pytest.approx(upgraded + 7.0)]


async def test_a_live_trigger_hits_the_newest_connection_at_once(
    autojump_clock: MockClock,
) -> None:
    async with proxied() as (port, control, _):
        async with RawClient.connect(port) as first, RawClient.connect(port) as second:
            await first.upgrade()
            await second.upgrade()
            control.trigger(ProxyFault(ProxyFaultKind.INJECT_FRAME, payload="live"))
            await second.until(lambda: second.texts() == ["live"])
            control.trigger(ProxyFault(ProxyFaultKind.RESET), connection=1)
            await first.until_end()
            assert first.reset
            control.trigger(ProxyFault(ProxyFaultKind.CORRUPT_HEADER))
            await second.send("send 1")
            await second.until(lambda: second.close_code() == 1002)
    with pytest.raises(ConfigurationError, match="no live proxy connection"):
        control.trigger(ProxyFault(ProxyFaultKind.RESET))


async def test_faults_apply_only_to_their_connection(autojump_clock: MockClock) -> None:
    plan = ProxyPlan.inject_frame("second only", connection=2)
    async with proxied(plan) as (port, _, _):
        async with RawClient.connect(port) as first:
            await first.upgrade()
            await first.send("echo")
            await first.until(lambda: first.texts() == ["echo"])
        async with RawClient.connect(port) as second:
            await second.upgrade()
            await second.until(lambda: second.texts() == ["second only"])


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        (dict(kind=ProxyFaultKind.LATENCY), "latency needs a finite delay"),
        (dict(kind=ProxyFaultKind.THROTTLE, rate=-1.0), "throttle needs a finite rate"),
        (dict(kind=ProxyFaultKind.RESET, after_frames=1, at=3.0), "at most one of"),
        (dict(kind=ProxyFaultKind.RESET, after_frames=-1), "after_frames must be >= 0"),
        (dict(kind=ProxyFaultKind.CORRUPT_HEADER, direction="both"), "acts on one direction"),
        (dict(kind=ProxyFaultKind.CORRUPT_HEADER, offset=14), "at most 14 bytes"),
        (dict(kind=ProxyFaultKind.CORRUPT_PAYLOAD, value=256), "value is a byte"),
        (dict(kind=ProxyFaultKind.INJECT_FRAME), "needs a payload"),
        (dict(kind=ProxyFaultKind.RESET_DURING_UPGRADE, after_frames=1), "give no time"),
        (dict(kind=ProxyFaultKind.STALL, duration=0.0), "duration must be > 0"),
        (dict(kind=ProxyFaultKind.RESET, connection=0), "connection numbers start at 1"),
        (dict(kind="reset"), "kind must be a ProxyFaultKind"),
    ],
)
def test_impossible_faults_are_refused_when_built(fault: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        ProxyFault(**fault)  # type: ignore[arg-type]


async def test_the_proxy_listens_on_loopback_only() -> None:
    with pytest.raises(ConfigurationError, match="loopback"):
        await serve_fault_proxy("127.0.0.1", 1, host="0.0.0.0")


# --------------------------------------------------------------------------- real time


async def test_in_real_time_latency_and_a_reset_behave_as_under_the_mock_clock() -> None:
    plan = ProxyPlan.latency(0.05, direction="to_client") + ProxyPlan.reset(after_frames=2)
    async with proxied(plan) as (port, control, _), RawClient.connect(port) as c:
        await c.upgrade()
        sent = trio.current_time()
        await c.send("one")
        await c.until(lambda: c.texts() == ["one"], seconds=5)
        assert trio.current_time() - sent >= 0.05
        await c.send("two")
        await c.until_end(seconds=5)
        assert c.reset and c.texts() == ["one", "two"]
    assert control.connection(1).end == "reset"


async def test_in_real_time_a_stall_ends_after_its_duration() -> None:
    plan = ProxyPlan.stall(duration=0.2)
    async with proxied(plan) as (port, _, _), RawClient.connect(port) as c:
        await c.upgrade()
        sent = trio.current_time()
        await c.send("held")
        await c.until(lambda: c.texts() == ["held"], seconds=5)
        assert trio.current_time() - sent >= 0.15


# --------------------------------------------------------------------------- frames


frames = st.builds(
    lambda opcode, payload, fin, rsv, mask: (opcode, payload, fin, rsv, mask),
    st.sampled_from([0, 1, 2, 8, 9, 10]),
    st.binary(max_size=70_000) | st.binary(max_size=130),
    st.booleans(),
    st.integers(0, 7),
    st.sampled_from([b""]) | st.binary(min_size=4, max_size=4),
)


@given(frames, st.integers(1, 20))
def test_frame_headers_parse_what_encode_writes_at_any_split(
    frame: tuple[int, bytes, bool, int, bytes], cut: int
) -> None:
    """Property: parse_header reads back every field of an encoded frame, and returns
    None (never a wrong header) while the header is incomplete."""
    opcode, payload, fin, rsv, mask = frame
    data = encode_frame(opcode, payload, fin=fin, rsv=rsv, mask=mask)
    header = parse_header(data)
    assert header is not None
    assert (header.opcode, header.fin, header.rsv, header.mask) == (opcode, fin, rsv, mask)
    assert header.payload_length == len(payload) and header.frame_length == len(data)
    assert mask_payload(data[header.header_length :], mask) == payload
    prefix = data[: min(cut, header.header_length - 1)]
    assert parse_header(prefix) is None


@given(
    st.binary(max_size=70_000), st.sampled_from([TEXT, BINARY]), st.binary(min_size=4, max_size=4)
)
def test_wsproto_reads_the_frames_we_encode(payload: bytes, opcode: int, mask: bytes) -> None:
    """Property: an independent parser (wsproto's) decodes our masked frames to the payload."""
    if opcode == TEXT:
        payload = payload.decode("utf-8", "replace").encode()
    server = FrameProtocol(client=False, extensions=[])
    server.receive_bytes(encode_frame(opcode, payload, mask=mask))
    (received,) = list(server.received_frames())
    data = received.payload
    assert (data.encode() if isinstance(data, str) else data) == payload


@given(st.binary(max_size=300), st.integers(0, 3), st.binary(min_size=4, max_size=4))
def test_masking_from_any_offset_matches_masking_the_whole(
    data: bytes, start: int, mask: bytes
) -> None:
    """Property: masking a slice as if it began at ``start`` equals that slice of the whole."""
    whole = mask_payload(b"\0" * start + data, mask)
    assert mask_payload(data, mask, start) == whole[start:]


async def test_the_proxy_is_silent_about_garbage_it_cannot_frame(
    autojump_clock: MockClock,
) -> None:
    """Bytes that are not WebSocket frames still flow; a wrong length just shifts frames."""
    async with proxied() as (port, control, _), RawClient.connect(port) as c:
        await c.upgrade()
        await c.send("send 1")
        await c.until(lambda: len(c.texts()) == 1)
        with contextlib.suppress(trio.BrokenResourceError):
            await c.stream.send_all(b"\x81\xfe\x00")  # a header cut short, then nothing
        await trio.sleep(1)
    assert control.connection(1).messages("to_server") == ["send 1"]
