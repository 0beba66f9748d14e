"""RFC 6455 frames seen as bytes: header parsing, masking and encoding for the fault proxy.

This module owns the byte-level view of a WebSocket frame that
:mod:`puffin_trio.testing._proxy` needs to count frames, find the offset of a
header or payload byte in a particular frame and damage it, cut a frame in
the middle, or put a frame of its own on the wire. wsproto parses frames too,
but into events that hide the offsets; here every field keeps its position.

It must not do I/O, and it must not validate beyond what it takes to find the
frame boundaries: a proxy forwards what it is given, garbage included (a
reserved bit, an unknown opcode or a non-minimal length are reported in the
header, not refused).
"""

from __future__ import annotations

import attrs

__all__ = [
    "BINARY",
    "CLOSE",
    "CONTINUATION",
    "DATA_OPCODES",
    "MAX_HEADER_LENGTH",
    "PING",
    "PONG",
    "TEXT",
    "FrameHeader",
    "encode_frame",
    "mask_payload",
    "parse_header",
]

CONTINUATION = 0x0
TEXT = 0x1
BINARY = 0x2
CLOSE = 0x8
PING = 0x9
PONG = 0xA
#: Opcodes of frames that carry message data (control frames are 0x8 and up).
DATA_OPCODES = frozenset({CONTINUATION, TEXT, BINARY})
#: 2 bytes of flags and length, 8 of extended length, 4 of mask.
MAX_HEADER_LENGTH = 14


@attrs.frozen
class FrameHeader:
    """One frame's header as it was on the wire.

    ``header_length`` is how many bytes the header took (2 to 14), so the
    payload is the next ``payload_length`` bytes. ``mask`` is the 4-byte
    masking key of a masked (client-to-server) frame, else ``b""``.
    """

    fin: bool
    rsv: int
    opcode: int
    mask: bytes
    payload_length: int
    header_length: int

    @property
    def masked(self) -> bool:
        """Whether the payload is masked (frames a client sends must be)."""
        return bool(self.mask)

    @property
    def is_data(self) -> bool:
        """A text, binary or continuation frame (part of a message)."""
        return self.opcode in DATA_OPCODES

    @property
    def frame_length(self) -> int:
        """Header plus payload, in bytes."""
        return self.header_length + self.payload_length


def parse_header(buffer: bytes | bytearray, offset: int = 0) -> FrameHeader | None:
    """The header of the frame starting at ``buffer[offset]``, or ``None`` if it is incomplete.

    Never raises on any bytes: a frame is delimited by its length field alone.
    """
    available = len(buffer) - offset
    if available < 2:
        return None
    first = buffer[offset]
    second = buffer[offset + 1]
    length = second & 0x7F
    masked = bool(second & 0x80)
    header_length = 2
    if length == 126:
        header_length = 4
        if available < header_length:
            return None
        length = int.from_bytes(buffer[offset + 2 : offset + 4], "big")
    elif length == 127:
        header_length = 10
        if available < header_length:
            return None
        length = int.from_bytes(buffer[offset + 2 : offset + 10], "big")
    mask = b""
    if masked:
        if available < header_length + 4:
            return None
        mask = bytes(buffer[offset + header_length : offset + header_length + 4])
        header_length += 4
    return FrameHeader(
        fin=bool(first & 0x80),
        rsv=(first >> 4) & 0x7,
        opcode=first & 0x0F,
        mask=mask,
        payload_length=length,
        header_length=header_length,
    )


def mask_payload(data: bytes | bytearray, mask: bytes, start: int = 0) -> bytes:
    """XOR ``data`` with the masking key, as if it began at payload offset ``start``.

    Masking is its own inverse, so this both masks and unmasks. An empty
    ``mask`` returns the data unchanged.
    """
    if not mask or not data:
        return bytes(data)
    shift = start % 4
    key = (mask[shift:] + mask[:shift]) * (len(data) // 4 + 1)
    n = len(data)
    value = int.from_bytes(data, "big") ^ int.from_bytes(key[:n], "big")
    return value.to_bytes(n, "big")


def encode_frame(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bytes = b"",
) -> bytes:
    """One frame on the wire: the minimal length encoding, masked if ``mask`` is 4 bytes."""
    if not 0 <= opcode <= 0xF or not 0 <= rsv <= 7:
        raise ValueError(f"opcode must be 0..15 and rsv 0..7, got {opcode} and {rsv}")
    if mask and len(mask) != 4:
        raise ValueError(f"a masking key is 4 bytes, got {len(mask)}")
    head = bytearray([(0x80 if fin else 0) | (rsv << 4) | opcode])
    bit = 0x80 if mask else 0
    n = len(payload)
    if n < 126:
        head.append(bit | n)
    elif n < 1 << 16:
        head.append(bit | 126)
        head += n.to_bytes(2, "big")
    else:
        head.append(bit | 127)
        head += n.to_bytes(8, "big")
    return bytes(head) + mask + mask_payload(payload, mask)
