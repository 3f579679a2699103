"""Real packet loss on loopback, with nftables, for the fault tests and the benchmarks.

::

    with drop_udp(5) as rule:      # the kernel drops 5 % of UDP datagrams on lo
        ...
        rule.dropped()             # datagrams dropped so far
    with drop_udp(100):            # all UDP blocked
        ...

Each use adds its own table — one ``ingress`` chain on ``lo`` with one counted rule,
``meta l4proto udp numgen random mod 100 < N drop`` (a plain ``drop`` for 100 %) — and
deletes it on exit, whatever happened.

Every datagram is a separate draw. peermesh sends a run of datagrams in one ``sendmsg``
with ``UDP_SEGMENT`` (``peermesh._datapath``), and netfilter sees such a run as one packet
until the device cuts it into datagrams, which ``lo`` never does: it hands the whole run
to the receiving socket. So while the rule is in place ``lo``'s ``gso_max_segs`` is 1,
which makes the kernel cut every run before ``lo`` receives it (the datagrams on the wire
are the same); the ingress hook then sees each datagram once.

Only inside a loopback-only network namespace (``scripts/isolated``, where the process is
root of its own user namespace, as under ``make test`` and ``make bench``): anywhere with
another interface, or without ``nft`` (``make test`` installs it), :func:`udp_drop` raises
:class:`NftUnavailable` rather than touch the host's network, and :func:`drop_udp` (or
:func:`skip_unless_available`) skips the test with that reason. An ``nft`` that is there
but fails is an error.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator

__all__ = ["NftUnavailable", "UdpDrop", "drop_udp", "skip_unless_available", "udp_drop"]


class NftUnavailable(RuntimeError):
    """No ``nft`` here, or not inside a loopback-only network namespace."""


def _run(*argv: str, stdin: str | None = None) -> str:
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr.strip()}")
    return done.stdout


def _nft() -> str:
    """The ``nft`` executable; :class:`NftUnavailable` where it must not or cannot run."""
    path = shutil.which("nft") or next(
        (p for p in ("/usr/sbin/nft", "/sbin/nft") if os.access(p, os.X_OK)), None
    )
    if path is None:
        raise NftUnavailable("nft is not installed (`make test` installs nftables with apt-get)")
    interfaces = sorted(name for _, name in socket.if_nameindex())
    if interfaces != ["lo"]:
        raise NftUnavailable(
            f"not in a loopback-only network namespace (interfaces {interfaces}): run "
            "through scripts/isolated; this host's network is left alone"
        )
    return path


def _gso_max_segs() -> int:
    (lo,) = json.loads(_run("ip", "-j", "-d", "link", "show", "lo"))
    return int(lo["gso_max_segs"])


def _set_gso_max_segs(segments: int) -> None:
    _run("ip", "link", "set", "dev", "lo", "gso_max_segs", str(segments))


class UdpDrop:
    """The nftables table of one :func:`udp_drop`."""

    def __init__(self, nft: str, percent: int) -> None:
        self.nft = nft
        self.table = f"peermesh_faults_{os.getpid()}"
        match = "" if percent >= 100 else f"numgen random mod 100 < {percent} "
        self.ruleset = (
            f"table netdev {self.table} {{\n"
            "  chain in {\n"
            '    type filter hook ingress device "lo" priority 0; policy accept;\n'
            f"    meta l4proto udp {match}counter drop\n"
            "  }\n"
            "}\n"
        )

    def dropped(self) -> int:
        """Datagrams dropped so far."""
        listing = json.loads(_run(self.nft, "-j", "list", "table", "netdev", self.table))
        return sum(
            expr["counter"]["packets"]
            for item in listing["nftables"]
            if "rule" in item
            for expr in item["rule"]["expr"]
            if "counter" in expr
        )


@contextlib.contextmanager
def udp_drop(percent: int) -> Iterator[UdpDrop]:
    """Drop ``percent`` % (1–100) of UDP datagrams on ``lo`` while the block runs; raises
    :class:`NftUnavailable` where that cannot be done safely."""
    if not 1 <= percent <= 100:
        raise ValueError(f"percent must be 1-100, not {percent}")
    rule = UdpDrop(_nft(), percent)
    segments = _gso_max_segs()
    _set_gso_max_segs(1)
    try:
        _run(rule.nft, "-f", "-", stdin=rule.ruleset)
        try:
            yield rule
        finally:
            _run(rule.nft, "delete", "table", "netdev", rule.table)
    finally:
        _set_gso_max_segs(segments)


def skip_unless_available() -> None:
    """Skip the calling test where :class:`NftUnavailable`."""
    import pytest

    try:
        _nft()
    except NftUnavailable as exc:
        pytest.skip(str(exc))


@contextlib.contextmanager
def drop_udp(percent: int) -> Iterator[UdpDrop]:
    """:func:`udp_drop` in a test, which is skipped where :class:`NftUnavailable`."""
    skip_unless_available()
    with udp_drop(percent) as rule:
        yield rule
