"""ICE configuration: ``rtc_config`` conversion and the ``ice_addresses`` host-candidate
restriction, with real aiortc connections gathering on loopback."""

from __future__ import annotations

import asyncio
import re
import socket

import pytest
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection

from peermesh import UsageError
from peermesh._ice import (
    DEFAULT_ICE_SERVERS,
    host_addresses,
    normalise_ice_addresses,
    to_rtc_configuration,
)
from tests.rooms import JoinFactory, connected_pair

LOOPBACK_ONLY = [name for _, name in socket.if_nameindex()] == ["lo"]
needs_loopback_only = pytest.mark.skipif(
    not LOOPBACK_ONLY,
    reason="needs a host whose only interface is loopback (run under scripts/isolated)",
)

_CANDIDATE = re.compile(r"^a=candidate:\S+ \d+ \S+ \d+ (\S+) \d+ typ (\S+)", re.MULTILINE)


async def gathered_addresses(addresses: tuple[str, ...] | None) -> list[tuple[str, str]]:
    """(address, type) of every candidate in an offer gathered under ``addresses``."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.createDataChannel("data")
        with host_addresses(addresses):
            await pc.setLocalDescription(await pc.createOffer())
        return _CANDIDATE.findall(pc.localDescription.sdp)
    finally:
        await pc.close()


# -- normalise_ice_addresses ----------------------------------------------------------------


def test_normalise_ice_addresses_accepts_ip_addresses() -> None:
    assert normalise_ice_addresses(None) is None
    assert normalise_ice_addresses(["127.0.0.1"]) == ("127.0.0.1",)
    assert normalise_ice_addresses(("::1", "192.168.1.20")) == ("::1", "192.168.1.20")
    assert normalise_ice_addresses(["0:0:0:0:0:0:0:1"]) == ("::1",)  # canonical form


@pytest.mark.parametrize(
    "bad",
    [
        [],
        (),
        "127.0.0.1",
        ["localhost"],
        ["256.1.1.1"],
        ["127.0.0.1", "not-an-ip"],
        ["127.0.0.1/8"],
        [""],
        [2130706433],  # an int is not an address string, even if ipaddress would take it
        [b"\x7f\x00\x00\x01"],
        [None],
    ],
)
def test_normalise_ice_addresses_rejects_everything_else(bad: object) -> None:
    with pytest.raises(UsageError):
        normalise_ice_addresses(bad)  # type: ignore[arg-type]


# -- to_rtc_configuration ---------------------------------------------------------------------


def test_default_configuration_uses_trystero_stun_servers() -> None:
    for given in (None, {}):
        config = to_rtc_configuration(given)
        assert isinstance(config, RTCConfiguration)
        (server,) = config.iceServers
        assert server.urls == list(DEFAULT_ICE_SERVERS)
        assert all(url.startswith("stun:") for url in server.urls)


def test_empty_ice_servers_means_none() -> None:
    assert to_rtc_configuration({"iceServers": []}).iceServers == []


def test_mapping_entries_are_converted() -> None:
    config = to_rtc_configuration(
        {
            "iceServers": [
                {"urls": "stun:stun.example.org:3478"},
                {
                    "urls": ["turn:turn.example.org:3478", "turns:turn.example.org:5349"],
                    "username": "user",
                    "credential": "secret",
                },
                RTCIceServer(urls=["stun:other.example.org"]),
            ]
        }
    )
    first, second, third = config.iceServers
    assert first.urls == ["stun:stun.example.org:3478"]
    assert (first.username, first.credential) == (None, None)
    assert second.urls == ["turn:turn.example.org:3478", "turns:turn.example.org:5349"]
    assert (second.username, second.credential) == ("user", "secret")
    assert third.urls == ["stun:other.example.org"]
    # aiortc accepts the result.
    RTCPeerConnection(config)


def test_rtc_configuration_passes_through() -> None:
    config = RTCConfiguration(iceServers=[RTCIceServer(urls=["stun:x.example"])])
    assert to_rtc_configuration(config) is config


@pytest.mark.parametrize(
    "bad",
    [
        "stun:stun.example.org",
        ["stun:stun.example.org"],
        {"iceServers": "stun:stun.example.org"},
        {"iceServers": None},
        {"iceServers": [42]},
        {"iceServers": ["stun:stun.example.org"]},
        {"iceServers": [{"url": "stun:stun.example.org"}]},
        {"iceServers": [{"urls": []}]},
        {"iceServers": [{"urls": [3478]}]},
        {"iceServers": [{"urls": "turn:t.example", "username": 5, "credential": "x"}]},
        {"iceServers": [{"urls": "turn:t.example", "username": "u", "credential": ["x"]}]},
    ],
)
def test_malformed_rtc_config_is_a_usage_error(bad: object) -> None:
    with pytest.raises(UsageError):
        to_rtc_configuration(bad)  # type: ignore[arg-type]


# -- host candidate restriction -------------------------------------------------------------


async def test_restriction_to_loopback_gathers_only_loopback() -> None:
    candidates = await gathered_addresses(("127.0.0.1",))
    assert candidates
    assert {address for address, _ in candidates} == {"127.0.0.1"}
    assert {kind for _, kind in candidates} == {"host"}


async def test_restrictions_apply_per_connection_even_concurrently() -> None:
    v4, v6, v4_again = await asyncio.gather(
        gathered_addresses(("127.0.0.1",)),
        gathered_addresses(("::1",)),
        gathered_addresses(("127.0.0.1",)),
    )
    assert {address for address, _ in v4} == {"127.0.0.1"}
    assert {address for address, _ in v6} == {"::1"}
    assert {address for address, _ in v4_again} == {"127.0.0.1"}


async def test_restriction_ends_with_the_block() -> None:
    import aioice.ice

    with host_addresses(("127.0.0.1",)):
        assert aioice.ice.get_host_addresses(True, True) == ["127.0.0.1"]
        assert aioice.ice.get_host_addresses(False, True) == []
        with host_addresses(("::1", "127.0.0.1")):
            assert aioice.ice.get_host_addresses(True, True) == ["::1", "127.0.0.1"]
            assert aioice.ice.get_host_addresses(True, False) == ["127.0.0.1"]
        assert aioice.ice.get_host_addresses(True, True) == ["127.0.0.1"]
    unrestricted = aioice.ice.get_host_addresses(True, True)
    if not LOOPBACK_ONLY:
        assert "127.0.0.1" not in unrestricted  # aioice's own behaviour is kept


@needs_loopback_only
async def test_loopback_only_host_offers_loopback_without_restriction() -> None:
    candidates = await gathered_addresses(None)
    assert ("127.0.0.1", "host") in candidates


@needs_loopback_only
async def test_peers_without_ice_addresses_connect_on_a_loopback_only_host(
    join: JoinFactory,
) -> None:
    a, b = await connected_pair(join, ice_addresses=None)
    assert 0 < await a.ping(b.self_id) < 1000
    pc = a.get_peers()[b.self_id]
    assert pc.connectionState == "connected"
    assert pc.sctp is not None
    nominated = pc.sctp.transport.transport._connection._nominated
    addresses = {(p.local_candidate.host, p.remote_candidate.host) for p in nominated.values()}
    assert addresses == {("127.0.0.1", "127.0.0.1")}
