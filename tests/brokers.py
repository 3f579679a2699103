"""A real mosquitto broker on loopback, for the MQTT tests.

``async with start_mosquitto() as broker:`` runs ``mosquitto -c <temp config>`` as a child
process with a plain MQTT listener and (by default) a WebSocket listener, each on a free
127.0.0.1 port, anonymous access, no persistence, logging to stderr. ``broker.stop()`` and
``broker.restart()`` (same ports) serve the fault tests; the process is always killed on
exit. When mosquitto is not installed the test fails: ``make test`` installs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import socket
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

__all__ = ["MosquittoBroker", "free_port", "live_server", "start_mosquitto"]

STARTUP_TIMEOUT = 10.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _find_mosquitto() -> str:
    path = shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.access(p, os.X_OK)),
        None,
    )
    if path is None:
        pytest.fail(
            "mosquitto is not installed: run `make test` (it installs it with apt-get), "
            "or `apt-get install mosquitto`",
            pytrace=False,
        )
    return path


class MosquittoBroker:
    """One mosquitto process; see the module docstring."""

    def __init__(self, workdir: Path, *, websockets: bool) -> None:
        self.executable = _find_mosquitto()
        self.port = free_port()
        self.ws_port: int | None = free_port() if websockets else None
        self.mqtt_url = f"mqtt://127.0.0.1:{self.port}"
        self.ws_url: str | None = (
            f"ws://127.0.0.1:{self.ws_port}/" if self.ws_port is not None else None
        )
        self.config = workdir / "mosquitto.conf"
        self.log = workdir / "mosquitto.log"
        self._process: asyncio.subprocess.Process | None = None
        lines = [
            "per_listener_settings false",
            "allow_anonymous true",
            "persistence false",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            # mosquitto started as root switches to this user; inside the test namespace
            # only our own uid exists.
            f"user {pwd.getpwuid(os.getuid()).pw_name}",
            f"listener {self.port} 127.0.0.1",
            "protocol mqtt",
        ]
        if self.ws_port is not None:
            lines += [
                f"listener {self.ws_port} 127.0.0.1",
                "protocol websockets",
                "socket_domain ipv4",
                "bind_interface lo",
            ]
        self.config.write_text("\n".join(lines) + "\n")

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    def output(self) -> str:
        """What mosquitto logged so far."""
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    async def start(self) -> None:
        if self.running:
            return
        with self.log.open("ab") as log:
            self._process = await asyncio.create_subprocess_exec(
                self.executable,
                "-c",
                str(self.config),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        ports = [self.port] if self.ws_port is None else [self.port, self.ws_port]
        deadline = time.monotonic() + STARTUP_TIMEOUT
        for port in ports:
            while True:
                if self._process.returncode is not None:
                    raise RuntimeError(
                        f"mosquitto exited with {self._process.returncode}:\n{self.output()}"
                    )
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                except OSError:
                    if time.monotonic() > deadline:
                        await self.stop()
                        raise RuntimeError(
                            f"mosquitto did not listen on {port} within {STARTUP_TIMEOUT} s:\n"
                            f"{self.output()}"
                        ) from None
                    await asyncio.sleep(0.02)
                    continue
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
                break

    async def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL after 3 s); its ports close."""
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 3)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()

    async def restart(self) -> None:
        """Stop, then start again on the same ports."""
        await self.stop()
        await self.start()


@contextlib.asynccontextmanager
async def start_mosquitto(*, websockets: bool = True) -> AsyncIterator[MosquittoBroker]:
    """A running mosquitto on loopback; killed on exit whatever happens."""
    with tempfile.TemporaryDirectory(prefix="peermesh-mosquitto-") as tmp:
        broker = MosquittoBroker(Path(tmp), websockets=websockets)
        try:
            await broker.start()
            yield broker
        finally:
            await broker.stop()


@contextlib.asynccontextmanager
async def live_server(strategy: str) -> AsyncIterator[str]:
    """A real signalling server for ``strategy`` ("torrent", "relay", "nostr" or "mqtt") on
    loopback; yields its URL."""
    from peermesh.servers import serve_relay
    from peermesh.servers.tracker import serve_tracker
    from tests.interop.nostr_relay import NostrRelaySetupError, start_nostr_relay

    if strategy == "torrent":
        async with await serve_tracker("127.0.0.1", 0, interval=10) as tracker:
            yield tracker.url
    elif strategy == "relay":
        async with await serve_relay(port=0) as server:
            yield server.url
    elif strategy == "nostr":
        try:
            async with start_nostr_relay() as url:
                yield url
        except NostrRelaySetupError as exc:
            pytest.fail(str(exc), pytrace=False)
    else:
        async with start_mosquitto(websockets=False) as broker:
            yield broker.mqtt_url
