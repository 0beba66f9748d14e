"""What the fault proxy does to a connection, as values: faults and plans of faults.

This module owns :class:`ProxyFaultKind`, :class:`ProxyFault` (one fault:
what, on which connection, in which direction, and when) and
:class:`ProxyPlan` (the faults a proxy injects, built up with ``+``), in the
manner of the simulators' ``FaultPlan``. It must not do I/O: *how* a fault
is put on the wire is :mod:`puffin_trio.testing._proxy`'s business.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterator
from typing import Literal

import attrs

from puffin_trio.errors import ConfigurationError
from puffin_trio.testing._wsframes import MAX_HEADER_LENGTH

__all__ = [
    "DEFAULT_XOR",
    "FRAME_KINDS",
    "STREAM_KINDS",
    "Direction",
    "ProxyFault",
    "ProxyFaultKind",
    "ProxyPlan",
]

#: Which way a fault acts: frames the upstream server sends to the client, the
#: client's frames to the server, or (stream faults only) both.
Direction = Literal["to_client", "to_server", "both"]


class ProxyFaultKind(enum.StrEnum):
    """What the proxy does to a connection. The parameters each kind reads are in brackets."""

    #: Each byte waits ``delay`` seconds before it is forwarded (throughput is
    #: kept), for ``duration`` seconds (``None``: the rest of the connection).
    LATENCY = "latency"
    #: At most ``rate`` bytes per second are forwarded, for ``duration`` seconds.
    THROTTLE = "throttle"
    #: Half-open: nothing is forwarded or read, nothing is closed, for
    #: ``duration`` seconds (``None``: until the proxy stops).
    STALL = "stall"
    #: Both sockets are closed with ``SO_LINGER`` 0: each peer gets an RST.
    RESET = "reset"
    #: The next data frame is forwarded up to ``offset`` bytes (default: its
    #: header and half its payload), then the receiving peer gets a FIN.
    FIN_MID_FRAME = "fin_mid_frame"
    #: Header byte ``offset`` (default 0) of the next data frame is XORed with
    #: ``value`` (default 0x40: the reserved bit RSV1, a protocol error).
    CORRUPT_HEADER = "corrupt_header"
    #: Payload byte ``offset`` (default 0) of the next data frame long enough
    #: is XORed with ``value`` (default 0x01: ASCII stays ASCII, so a text
    #: frame stays valid UTF-8 and only its content is damaged).
    CORRUPT_PAYLOAD = "corrupt_payload"
    #: Payload byte ``offset`` (default 0) of the next text frame long enough
    #: becomes 0xFF, which is never valid UTF-8.
    INVALID_UTF8 = "invalid_utf8"
    #: A frame of the proxy's own, ``payload`` with ``opcode`` (default: text
    #: for a ``str``, binary for ``bytes``), between two frames.
    INJECT_FRAME = "inject_frame"
    #: The client gets an RST as soon as its upgrade request has arrived; the
    #: upstream server is never contacted.
    RESET_DURING_UPGRADE = "reset_during_upgrade"


#: Kinds that shape a direction (or both) for a while.
STREAM_KINDS = frozenset({ProxyFaultKind.LATENCY, ProxyFaultKind.THROTTLE, ProxyFaultKind.STALL})
#: Kinds that hit one frame.
FRAME_KINDS = frozenset(
    {
        ProxyFaultKind.FIN_MID_FRAME,
        ProxyFaultKind.CORRUPT_HEADER,
        ProxyFaultKind.CORRUPT_PAYLOAD,
        ProxyFaultKind.INVALID_UTF8,
    }
)
#: What a damaging fault XORs into its byte unless told otherwise.
DEFAULT_XOR = {ProxyFaultKind.CORRUPT_HEADER: 0x40, ProxyFaultKind.CORRUPT_PAYLOAD: 0x01}
DIRECTIONS = ("to_client", "to_server", "both")


@attrs.frozen
class ProxyFault:
    """One fault: ``kind`` on connection ``connection`` (``None``: every one), when due.

    When it is due (at most one of these; none means right after the upgrade):

    * ``after_frames``: once that many data frames (text, binary,
      continuation; control frames do not count) have passed in
      ``direction`` (``"both"``: counted towards the client);
    * ``after_seconds``: that many seconds (trio time) after the upgrade;
    * ``at``: at that ``trio.current_time()``.

    Frame faults (:data:`ProxyFaultKind.CORRUPT_HEADER`, ...) hit the first
    suitable data frame that starts once they are due; the others act at once.
    Only the parameters a kind reads (see :class:`ProxyFaultKind`) may be set.
    Raises :class:`~puffin_trio.errors.ConfigurationError` for a fault that
    cannot work.
    """

    kind: ProxyFaultKind
    connection: int | None = 1
    after_frames: int | None = None
    after_seconds: float | None = None
    at: float | None = None
    direction: Direction = "to_client"
    delay: float = 0.0
    rate: float = 0.0
    duration: float | None = None
    offset: int | None = None
    value: int | None = None
    payload: bytes | str | None = None
    opcode: int | None = None

    def __attrs_post_init__(self) -> None:
        kind = self.kind
        if not isinstance(kind, ProxyFaultKind):
            raise ConfigurationError(f"kind must be a ProxyFaultKind, got {kind!r}")
        when = [w for w in (self.after_frames, self.after_seconds, self.at) if w is not None]
        if len(when) > 1:
            raise ConfigurationError("give at most one of after_frames, after_seconds and at")
        if self.after_frames is not None and self.after_frames < 0:
            raise ConfigurationError(f"after_frames must be >= 0, got {self.after_frames}")
        if self.after_seconds is not None and not self.after_seconds >= 0:
            raise ConfigurationError(f"after_seconds must be >= 0, got {self.after_seconds}")
        if kind is ProxyFaultKind.RESET_DURING_UPGRADE and when:
            raise ConfigurationError("reset_during_upgrade fires at the upgrade; give no time")
        if self.connection is not None and self.connection < 1:
            raise ConfigurationError(
                f"connection numbers start at 1 (None: every connection), got {self.connection}"
            )
        if self.direction not in DIRECTIONS:
            raise ConfigurationError(
                f"direction must be one of {', '.join(DIRECTIONS)}, got {self.direction!r}"
            )
        if self.direction == "both" and kind not in STREAM_KINDS:
            raise ConfigurationError(f"{kind} acts on one direction; 'both' is for stream faults")
        if self.duration is not None and not self.duration > 0:
            raise ConfigurationError(
                f"duration must be > 0 seconds (None: for good), got {self.duration}"
            )
        if kind is ProxyFaultKind.LATENCY and not (self.delay > 0 and math.isfinite(self.delay)):
            raise ConfigurationError(f"latency needs a finite delay > 0 seconds, got {self.delay}")
        if kind is ProxyFaultKind.THROTTLE and not (self.rate > 0 and math.isfinite(self.rate)):
            raise ConfigurationError(f"throttle needs a finite rate > 0 bytes/s, got {self.rate}")
        if self.offset is not None and self.offset < 0:
            raise ConfigurationError(f"offset must be >= 0 bytes, got {self.offset}")
        if kind is ProxyFaultKind.CORRUPT_HEADER and (self.offset or 0) >= MAX_HEADER_LENGTH:
            raise ConfigurationError(f"a frame header has at most {MAX_HEADER_LENGTH} bytes")
        if self.value is not None and not 1 <= self.value <= 255:
            raise ConfigurationError(f"value is a byte to XOR with, 1..255, got {self.value}")
        if kind is ProxyFaultKind.INJECT_FRAME:
            if self.payload is None:
                raise ConfigurationError("inject_frame needs a payload (str: text, bytes: binary)")
            if self.opcode is not None and not 0 <= self.opcode <= 0xF:
                raise ConfigurationError(f"opcode must be 0..15, got {self.opcode}")

    def applies_to(self, connection: int) -> bool:
        """Whether this fault is planned for connection number ``connection``."""
        return self.connection is None or self.connection == connection

    @property
    def timed(self) -> bool:
        """Due at a time (``after_seconds``/``at``) rather than after frames."""
        return self.after_seconds is not None or self.at is not None


@attrs.frozen
class ProxyPlan:
    """The faults a proxy injects, as a value: ``ProxyPlan.reset(after_frames=5) + ...``.

    The class methods build one-fault plans; ``+`` joins plans. Each fault
    fires at most once per connection it applies to.
    """

    faults: tuple[ProxyFault, ...] = ()

    def __add__(self, other: ProxyPlan) -> ProxyPlan:
        return ProxyPlan(self.faults + other.faults)

    def __iter__(self) -> Iterator[ProxyFault]:
        return iter(self.faults)

    def __len__(self) -> int:
        return len(self.faults)

    @classmethod
    def of(cls, kind: ProxyFaultKind, **parameters: object) -> ProxyPlan:
        """A plan of one ``ProxyFault(kind, **parameters)``."""
        return cls((ProxyFault(kind, **parameters),))  # type: ignore[arg-type]

    @classmethod
    def latency(cls, delay: float, *, direction: Direction = "both", **when: object) -> ProxyPlan:
        """Delay every byte by ``delay`` seconds (``duration=``, ``after_frames=``, ...)."""
        return cls.of(ProxyFaultKind.LATENCY, delay=delay, direction=direction, **when)

    @classmethod
    def throttle(
        cls, rate: float, *, direction: Direction = "to_client", **when: object
    ) -> ProxyPlan:
        """Forward at most ``rate`` bytes per second."""
        return cls.of(ProxyFaultKind.THROTTLE, rate=rate, direction=direction, **when)

    @classmethod
    def stall(cls, *, direction: Direction = "both", **when: object) -> ProxyPlan:
        """Stop forwarding, without closing (``duration=None``: for good)."""
        return cls.of(ProxyFaultKind.STALL, direction=direction, **when)

    @classmethod
    def reset(cls, **when: object) -> ProxyPlan:
        """Close both sockets with an RST."""
        return cls.of(ProxyFaultKind.RESET, **when)

    @classmethod
    def fin_mid_frame(cls, *, direction: Direction = "to_client", **when: object) -> ProxyPlan:
        """Cut the next data frame short and send a FIN."""
        return cls.of(ProxyFaultKind.FIN_MID_FRAME, direction=direction, **when)

    @classmethod
    def corrupt_header(cls, *, direction: Direction = "to_client", **when: object) -> ProxyPlan:
        """Damage a header byte of the next data frame (default: set RSV1)."""
        return cls.of(ProxyFaultKind.CORRUPT_HEADER, direction=direction, **when)

    @classmethod
    def corrupt_payload(cls, *, direction: Direction = "to_client", **when: object) -> ProxyPlan:
        """Damage a payload byte of the next data frame (default: flip bit 0 of byte 0)."""
        return cls.of(ProxyFaultKind.CORRUPT_PAYLOAD, direction=direction, **when)

    @classmethod
    def invalid_utf8(cls, *, direction: Direction = "to_client", **when: object) -> ProxyPlan:
        """Put a 0xFF byte into the next text frame."""
        return cls.of(ProxyFaultKind.INVALID_UTF8, direction=direction, **when)

    @classmethod
    def inject_frame(
        cls, payload: bytes | str, *, direction: Direction = "to_client", **when: object
    ) -> ProxyPlan:
        """Send a frame of the proxy's own between two frames."""
        return cls.of(ProxyFaultKind.INJECT_FRAME, payload=payload, direction=direction, **when)

    @classmethod
    def reset_during_upgrade(cls, *, connection: int | None = 1) -> ProxyPlan:
        """RST the client once its upgrade request has arrived."""
        return cls.of(ProxyFaultKind.RESET_DURING_UPGRADE, connection=connection)
