"""Which hosts are this machine: the one loopback check the package uses.

This module owns :func:`is_loopback`, read by the providers (plain ``ws://``
is allowed only to this machine) and by the simulators (they listen only
here). It must not resolve names or do any other I/O: ``localhost`` is the
only name it knows, everything else must be a literal address.
"""

from __future__ import annotations

import ipaddress

__all__ = ["is_loopback"]


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and for literal loopback addresses (``127.0.0.0/8``, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
