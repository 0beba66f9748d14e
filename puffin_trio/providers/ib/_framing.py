"""The TWS API's length-prefixed framing: a 4-byte big-endian length, then the payload.

This module owns both directions of the framing, sans-IO: :func:`encode_frame`
(what the IB protocol uses to build wire-ready messages) and
:class:`FrameDecoder` (what the TCP transport uses to cut a byte stream into
payloads). It lives with the protocol, not the transport, so that the
protocol imports no I/O library. It must not parse payloads or do I/O.

Why the default limit: ``max_frame_size`` 0xFFFFFF (16 MiB - 1) is the
official ``ibapi`` client's ``MAX_MSG_LEN``, so every message TWS can
legitimately send its own client is accepted. Market data messages are tens
of bytes and contract details a few KiB; the cap exists so that a corrupt or
hostile length prefix (four bytes of text read as a length: ``b"1\\x002\\x00"``
is 822 MiB) fails at once with :class:`~puffin_trio.errors.ProtocolError`
instead of making us buffer gigabytes. A zero length is refused too: no TWS
message is empty (even ``102`` carries its id), so a zero means the stream is
out of step.
"""

from __future__ import annotations

import struct

from puffin_trio.errors import ConfigurationError, ProtocolError

__all__ = ["DEFAULT_MAX_FRAME_SIZE", "FrameDecoder", "check_frame_size", "encode_frame"]

DEFAULT_MAX_FRAME_SIZE = 0xFFFFFF

_PREFIX = struct.Struct(">I")
_PREFIX_SIZE = _PREFIX.size


def encode_frame(payload: bytes) -> bytes:
    """``payload`` with its 4-byte big-endian length prefix."""
    return _PREFIX.pack(len(payload)) + payload


class FrameDecoder:
    """Sans-IO de-framer: feed it bytes as they arrive, get complete payloads back.

    Partial prefixes and payloads are kept in a ``bytearray`` until the rest
    arrives. A length of 0 or above ``max_frame_size`` raises
    :class:`ProtocolError` as soon as its 4 bytes are in (before any payload
    is buffered); the decoder is then unusable, as is the stream.

    Cost: when nothing is pending (the common case) payloads are sliced
    straight out of the chunk just read and only its incomplete tail is
    copied into the buffer; otherwise the chunk is appended and the consumed
    head dropped once per :meth:`feed`. Each payload is one ``bytes`` copy.
    """

    __slots__ = ("_buffer", "max_frame_size")

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        check_frame_size(max_frame_size)
        self.max_frame_size = max_frame_size
        self._buffer = bytearray()

    @property
    def buffered(self) -> int:
        """Bytes held back: the start of a message whose rest has not arrived."""
        return len(self._buffer)

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Every payload completed by ``data``, in order (possibly none)."""
        buffer = self._buffer
        if buffer:
            buffer += data
            frames, used = self._split(buffer)
            del buffer[:used]
            return frames
        frames, used = self._split(data)
        if used < len(data):
            buffer += memoryview(data)[used:]
        return frames

    def _split(self, source: bytes | bytearray | memoryview) -> tuple[list[bytes], int]:
        frames: list[bytes] = []
        limit = self.max_frame_size
        unpack = _PREFIX.unpack_from
        end = len(source)
        pos = 0
        with memoryview(source) as view:
            while end - pos >= _PREFIX_SIZE:
                (length,) = unpack(view, pos)
                if length == 0 or length > limit:
                    raise ProtocolError(_bad_length(length, limit))
                stop = pos + _PREFIX_SIZE + length
                if stop > end:
                    break
                frames.append(bytes(view[pos + _PREFIX_SIZE : stop]))
                pos = stop
        return frames, pos


def _bad_length(length: int, limit: int) -> str:
    if length == 0:
        return "received a zero-length message: the byte stream is out of step"
    return (
        f"received a message length of {length} bytes, over the {limit}-byte limit: "
        "the byte stream is corrupt or out of step"
    )


def check_frame_size(max_frame_size: object) -> None:
    """Raise :class:`ConfigurationError` unless ``max_frame_size`` fits a 4-byte prefix."""
    if (
        isinstance(max_frame_size, bool)
        or not isinstance(max_frame_size, int)
        or not 1 <= max_frame_size <= 0xFFFFFFFF
    ):
        raise ConfigurationError(
            "max_frame_size must be an integer number of bytes between 1 and 2**32 - 1, "
            f"not {max_frame_size!r}"
        )
