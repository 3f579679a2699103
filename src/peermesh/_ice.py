"""ICE configuration: which servers and which local addresses a connection may use.

Two knobs, both per connection:

* ``rtc_config`` — Trystero's shape (``{"iceServers": [...]}``), an aiortc
  :class:`~aiortc.RTCConfiguration`, or ``None`` for Trystero's default public STUN servers.
  ``{"iceServers": []}`` means no STUN/TURN at all (tests, LAN-only use).
* ``ice_addresses`` — limits the host candidates offered to these IP addresses.
  aioice never offers loopback on its own; listing ``"127.0.0.1"`` adds it. On a host whose
  only interface is loopback (a network namespace with just ``lo``), loopback is used
  automatically so that local peers still meet.

aioice looks up its host addresses through a module-level function at gathering time, with
no per-connection hook. We wrap that function once, and the wrapper reads a
:class:`~contextvars.ContextVar` that :func:`host_addresses` sets around the gathering call.
Because gathering happens inside ``setLocalDescription`` in the calling task, the restriction
applies exactly to the connection being described and to nothing else.
"""

from __future__ import annotations

import contextlib
import contextvars
import ipaddress
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import aioice.ice
from aiortc import RTCConfiguration, RTCIceServer

from .errors import UsageError

__all__ = [
    "DEFAULT_ICE_SERVERS",
    "RtcConfigLike",
    "host_addresses",
    "normalise_ice_addresses",
    "to_rtc_configuration",
]

logger = logging.getLogger(__name__)

RtcConfigLike = RTCConfiguration | Mapping[str, Any] | None

#: Trystero 0.25's default STUN servers (wire notes §5.1). aiortc uses the first STUN entry.
DEFAULT_ICE_SERVERS: tuple[str, ...] = (
    "stun:stun.l.google.com:19302",
    "stun:stun1.l.google.com:19302",
    "stun:stun2.l.google.com:19302",
    "stun:stun.cloudflare.com:3478",
)

_LOOPBACK = ("127.0.0.1", "::1")
_allowed: contextvars.ContextVar[tuple[str, ...] | None] = contextvars.ContextVar(
    "peermesh_ice_addresses", default=None
)
_original_get_host_addresses = aioice.ice.get_host_addresses


def _get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    allowed = _allowed.get()
    if allowed is None:
        found = _original_get_host_addresses(use_ipv4, use_ipv6)
        # A machine (or namespace) with nothing but loopback: offer loopback, otherwise no
        # candidate at all would be gathered and no local peer could ever connect.
        if not found and use_ipv4:
            return ["127.0.0.1"]
        return found
    result = []
    for address in allowed:
        is_v6 = ":" in address
        if (is_v6 and use_ipv6) or (not is_v6 and use_ipv4):
            result.append(address)
    return result


aioice.ice.get_host_addresses = _get_host_addresses


def normalise_ice_addresses(addresses: Sequence[str] | None) -> tuple[str, ...] | None:
    """Validate ``ice_addresses`` as given by a user.

    Returns ``None`` (no restriction) for ``None``. Raises :class:`UsageError` for an empty
    list, a string instead of a list, or an entry that is not an IP address.
    """
    if addresses is None:
        return None
    if isinstance(addresses, str):
        raise UsageError("ice_addresses must be a list of IP addresses, not a string")
    result = []
    for address in addresses:
        if not isinstance(address, str):
            # ipaddress would also take an int or packed bytes and silently turn them into
            # some address.
            raise UsageError(f"ice_addresses: {address!r} is not an IP address string")
        try:
            result.append(str(ipaddress.ip_address(address)))
        except ValueError:
            raise UsageError(f"ice_addresses: {address!r} is not an IP address") from None
    if not result:
        raise UsageError("ice_addresses must name at least one address")
    return tuple(result)


@contextlib.contextmanager
def host_addresses(addresses: tuple[str, ...] | None) -> Iterator[None]:
    """Restrict host candidates gathered inside this block to ``addresses``."""
    token = _allowed.set(addresses)
    try:
        yield
    finally:
        _allowed.reset(token)


def _ice_server(entry: object) -> RTCIceServer:
    if isinstance(entry, RTCIceServer):
        return entry
    if not isinstance(entry, Mapping):
        raise UsageError(f"rtc_config: ICE server entries must be mappings, got {entry!r}")
    urls = entry.get("urls")
    if isinstance(urls, str):
        urls = [urls]
    if not isinstance(urls, list) or not urls or not all(isinstance(u, str) for u in urls):
        raise UsageError(f"rtc_config: ICE server needs 'urls', got {entry!r}")
    username = entry.get("username")
    credential = entry.get("credential")
    if not isinstance(username, str | None) or not isinstance(credential, str | None):
        raise UsageError(
            f"rtc_config: ICE server username and credential must be strings, got {entry!r}"
        )
    return RTCIceServer(urls=urls, username=username, credential=credential)


def to_rtc_configuration(rtc_config: RtcConfigLike) -> RTCConfiguration:
    """Turn ``rtc_config`` (see the module docstring) into an aiortc configuration.

    Raises :class:`UsageError` for a malformed mapping.
    """
    if isinstance(rtc_config, RTCConfiguration):
        return rtc_config
    if rtc_config is None:
        return RTCConfiguration(iceServers=[RTCIceServer(urls=list(DEFAULT_ICE_SERVERS))])
    if not isinstance(rtc_config, Mapping):
        raise UsageError("rtc_config must be a mapping like {'iceServers': [...]}")
    servers = rtc_config.get("iceServers", [RTCIceServer(urls=list(DEFAULT_ICE_SERVERS))])
    if not isinstance(servers, list):
        raise UsageError("rtc_config['iceServers'] must be a list")
    return RTCConfiguration(iceServers=[_ice_server(s) for s in servers])
