"""``peermesh relays``: joins a room, prints one row per relay with its state, exits 0 when
at least one relay is open and 1 when none is; ``--watch`` repeats until SIGINT."""

from __future__ import annotations

import re
import sys

import pytest

from peermesh.servers import serve_relay

from ._run import run_peermesh, run_peermesh_async

pytestmark = pytest.mark.timeout(60)

#: Nothing listens on port 1 of loopback: connecting is refused at once.
DEAD_URL = "ws://127.0.0.1:1"
LOOPBACK_ARGS = ("--no-stun", "--ice-address", "127.0.0.1")


async def run_relays(*args: str, stop_after: float | None = None) -> tuple[int, str, str]:
    """``peermesh relays ARGS...`` on loopback; SIGINT after ``stop_after`` (``--watch``)."""
    return await run_peermesh_async(
        "relays", *LOOPBACK_ARGS, *args, stop_after=stop_after, timeout=40
    )


def row(output: str, url: str) -> str:
    """The table line for ``url``."""
    lines = [line for line in output.splitlines() if re.search(rf"\b{re.escape(url)}\b", line)]
    assert len(lines) == 1, output
    return lines[0]


async def test_one_open_and_one_dead_relay_exits_0() -> None:
    async with await serve_relay("127.0.0.1", 0) as relay:
        status, out, err = await run_relays(
            "--strategy", "relay", "--relay-url", relay.url, "--relay-url", DEAD_URL
        )
    assert status == 0, out + err
    assert "1 of 2 relays open" in out
    assert "│ open" in row(out, relay.url)
    dead = row(out, DEAD_URL)
    # Between two attempts it backs off; on a slow machine the snapshot may catch the next
    # attempt. Either way it is not open and shows why.
    assert re.search(r"│ (backing off|connecting) ", dead), out
    assert "refused" in dead.lower() or "connect call failed" in dead.lower()


async def test_only_dead_relays_exits_1() -> None:
    status, out, err = await run_relays(
        "--strategy", "relay", "--relay-url", DEAD_URL, "--relay-url", "ws://127.0.0.1:2",
        "--wait", "1",
    )  # fmt: skip
    assert status == 1, out + err
    assert "0 of 2 relays open" in out
    for url in (DEAD_URL, "ws://127.0.0.1:2"):
        assert re.search(r"│ (backing off|connecting) ", row(out, url)), out


async def test_default_strategy_prints_the_nostr_relays_it_uses() -> None:
    # The public relays are unreachable from the test's loopback-only namespace.
    status, out, _ = await run_relays("--wait", "0.5")
    assert "using the default nostr relays: wss://" in out
    assert status == 1
    assert "0 of 5 relays open" in out


@pytest.mark.skipif(sys.platform == "win32", reason="sends POSIX signals")
async def test_watch_repeats_until_sigint() -> None:
    async with await serve_relay("127.0.0.1", 0) as relay:
        status, out, err = await run_relays(
            "--strategy", "relay", "--relay-url", relay.url, "--wait", "0.5", "--watch", "0.5",
            stop_after=4.0,
        )  # fmt: skip
    assert status == 0, out + err
    assert out.count("1 of 1 relays open") >= 3


def test_relay_strategy_without_urls_is_a_one_line_error() -> None:
    result = run_peermesh("relays", "--strategy", "relay")
    assert result.returncode == 1
    assert "needs at least one --relay-url" in result.stderr


def test_help_lists_the_options() -> None:
    result = run_peermesh("relays", "--help")
    assert result.returncode == 0
    for option in ("--strategy", "--app-id", "--room", "--relay-url", "--wait", "--watch",
                   "--ice-address", "--no-stun"):  # fmt: skip
        assert option in result.stdout
    assert "relays" in run_peermesh("--help").stdout
