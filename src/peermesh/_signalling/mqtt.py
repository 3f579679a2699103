"""MQTT brokers as topic relays (wire notes §3.3).

An :class:`MqttRelay` is one MQTT client connected to one broker, shared per URL by every
room of the process (:func:`acquire_mqtt_relay`). It behaves as Trystero's mqtt.js client:
MQTT 3.1.1 (5 on request), a clean session, a random client id, keepalive 60 s; every
topic is the hashed topic string itself, published with QoS 0 and not retained, and the
payload is the UTF-8 JSON text.

A supervising task connects, subscribes every topic that has handlers, runs the
:meth:`~MqttRelay.on_ready` callbacks, and dispatches incoming messages to the handlers. When
the connection fails it waits a jittered :class:`~.websocket.Backoff` delay and connects
again, re-subscribing everything (the callbacks then re-announce, as Trystero re-publishes
on every ``connect``). Unlike Trystero it never gives up while the relay is in use.

URLs: ``mqtt://host[:port]`` (1883), ``mqtts://`` (8883), ``ws://host[:port][/path]`` (80)
and ``wss://`` (443); the WebSocket path defaults to ``/`` as in mqtt.js. Credentials come
from the URL (``wss://public:public@public.cloud.shiftr.io``).

Incoming payloads that are not UTF-8 or larger than :data:`MAX_PAYLOAD` are dropped, counted
(``messages_dropped``) and logged at DEBUG; a handler that raises is logged and never stops
the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote, urlsplit

import aiomqtt
import paho.mqtt.client as paho
from aiomqtt import MqttError, ProtocolVersion

from .._limits import log_once
from ..errors import RelayProtocolError
from . import ReadyCallbacks, RelayHealth, RelayState, TopicHandler, register_relay
from .websocket import Backoff

__all__ = [
    "DEFAULT_MQTT_BROKERS",
    "DEFAULT_REDUNDANCY",
    "MAX_PAYLOAD",
    "MqttRelay",
    "MqttUrl",
    "acquire_mqtt_relay",
    "parse_mqtt_url",
    "payload_text",
]

logger = logging.getLogger(__name__)
#: paho-mqtt's packet-level DEBUG log, kept apart so that it can be silenced on its own.
_paho_logger = logger.getChild("paho")

#: Trystero 0.25.4's broker list (``wss://`` + host); the first four are used by default.
DEFAULT_MQTT_BROKERS: tuple[str, ...] = (
    "wss://test.mosquitto.org:8081/mqtt",
    "wss://broker.emqx.io:8084/mqtt",
    "wss://public:public@public.cloud.shiftr.io",
    "wss://broker-cn.emqx.io:8084/mqtt",
    "wss://broker.hivemq.com:8884/mqtt",
)
DEFAULT_REDUNDANCY = 4

#: Incoming payloads above this many bytes are dropped (signals are a few KiB at most).
MAX_PAYLOAD = 64 * 1024
#: Seconds allowed for connecting (TCP, TLS, WebSocket handshake, CONNACK) and for each
#: SUBSCRIBE/UNSUBSCRIBE/PUBLISH round.
OPERATION_TIMEOUT = 10.0
#: Longest a publish waits for subscriptions requested before it to reach the broker.
SUBSCRIBE_WAIT = 5.0
#: Shortest wait between two connection attempts, whatever the jittered backoff draws.
MIN_RETRY_DELAY = 0.1
#: Topics per SUBSCRIBE/UNSUBSCRIBE packet.
TOPICS_PER_PACKET = 100
KEEPALIVE = 60

_DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883, "ws": 80, "wss": 443}


@dataclass(frozen=True, slots=True)
class MqttUrl:
    """The parts of a broker URL that the client needs."""

    scheme: str
    host: str
    port: int
    path: str
    username: str | None
    password: str | None

    @property
    def transport(self) -> Literal["tcp", "websockets"]:
        return "websockets" if self.scheme in ("ws", "wss") else "tcp"

    @property
    def tls(self) -> bool:
        return self.scheme in ("mqtts", "wss")


def parse_mqtt_url(url: str) -> MqttUrl:
    """Split a broker URL; raise :class:`ValueError` when it cannot name a broker."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ValueError(f"not an MQTT broker URL (mqtt, mqtts, ws or wss): {url!r}")
    host = parts.hostname
    if not host:
        raise ValueError(f"MQTT broker URL without a host: {url!r}")
    try:
        port = parts.port or _DEFAULT_PORTS[scheme]
    except ValueError as exc:
        raise ValueError(f"bad port in MQTT broker URL {url!r}: {exc}") from None
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    username = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    return MqttUrl(scheme, host, port, path, username, password)


def _check_topic(topic: str) -> None:
    # Hashed topics never break these rules; paho would raise deep inside the supervisor.
    if not topic or any(c in topic for c in "+#\0") or len(topic.encode()) > 65535:
        raise ValueError(f"not a usable MQTT topic name: {topic!r}")


def _random_client_id() -> str:
    # 21 characters: within MQTT 3.1.1's 23-character guarantee.
    return "peermesh_" + secrets.token_hex(6)


def payload_text(payload: object) -> str:
    """The text of a received message's payload, for the topic handlers. Pure.

    Raises :class:`~peermesh.errors.RelayProtocolError` for a payload of more than
    :data:`MAX_PAYLOAD` bytes, one that is not UTF-8, and one that is neither bytes nor
    text; nothing else.
    """
    if isinstance(payload, bytes | bytearray):
        if len(payload) > MAX_PAYLOAD:
            raise RelayProtocolError(f"oversize payload ({len(payload)} bytes)")
        try:
            return bytes(payload).decode("utf-8")
        except UnicodeDecodeError:
            raise RelayProtocolError("payload is not UTF-8") from None
    if isinstance(payload, str):
        return payload
    raise RelayProtocolError(f"unexpected payload type {type(payload).__name__}")


class MqttRelay:
    """One MQTT client to one broker; implements :class:`~peermesh._signalling.TopicRelay`.

    Construct directly for a private client (tests), or share one per URL through
    :func:`acquire_mqtt_relay`. The client connects as soon as it is constructed (inside a
    running event loop) and keeps reconnecting until :meth:`close` (or the last
    :meth:`release`). ``backoff`` replaces the default reconnection schedule (3.3 s doubling
    to 60 s, jittered); ``protocol=5`` selects MQTT 5.
    """

    def __init__(
        self,
        url: str,
        *,
        protocol: Literal[4, 5] = 4,
        backoff: Backoff | None = None,
        keepalive: int = KEEPALIVE,
        timeout: float = OPERATION_TIMEOUT,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self.url = url
        self._parsed = parse_mqtt_url(url)
        self._protocol = ProtocolVersion.V5 if protocol == 5 else ProtocolVersion.V311
        self._backoff = backoff or Backoff()
        self._keepalive = keepalive
        self._timeout = timeout
        self._tls_context = tls_context
        self.state = RelayState.CONNECTING
        self.last_error: str | None = None
        self.messages_sent = 0
        self.messages_received = 0
        self.messages_dropped = 0
        self._logged: set[str] = set()  # kinds of dropped input already logged
        #: Successful connections so far (the first one included).
        self.connections = 0
        self._handlers: dict[str, list[TopicHandler]] = {}
        self._ready_callbacks = ReadyCallbacks(url)
        self._client: aiomqtt.Client | None = None
        self._subscribed: set[str] = set()
        self._dirty = asyncio.Event()
        self._synced = asyncio.Event()
        self._stop = asyncio.Event()
        self._uses = 0
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._run())
        register_relay(self)

    def __repr__(self) -> str:
        return f"<MqttRelay {self.url} {self.state.value}>"

    @property
    def is_open(self) -> bool:
        return self._client is not None and self.state is RelayState.OPEN

    @property
    def subscribed_topics(self) -> frozenset[str]:
        """The topics the broker has acknowledged on the current connection."""
        return frozenset(self._subscribed) if self._client is not None else frozenset()

    @property
    def synced(self) -> bool:
        """Connected, and the broker has acknowledged every (un)subscription asked so far."""
        return self.is_open and self._synced.is_set()

    # -- TopicRelay -----------------------------------------------------------------------------

    def subscribe(self, topic: str, handler: TopicHandler) -> None:
        _check_topic(topic)
        handlers = self._handlers.setdefault(topic, [])
        if handler in handlers:
            return
        handlers.append(handler)
        if topic not in self._subscribed:
            self._changed()

    def unsubscribe(self, topic: str, handler: TopicHandler) -> None:
        handlers = self._handlers.get(topic)
        if handlers is None or handler not in handlers:
            return
        handlers.remove(handler)
        if not handlers:
            del self._handlers[topic]
            self._changed()

    async def publish(self, topic: str, text: str) -> bool:
        _check_topic(topic)
        client = self._client
        if client is None or self.state is not RelayState.OPEN:
            return False
        if not self._synced.is_set():
            # Let SUBSCRIBEs requested before this publish reach the broker first, so that
            # replies to it (an announce, say) are not missed.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._synced.wait(), SUBSCRIBE_WAIT)
            if client is not self._client:
                return False
        try:
            await client.publish(
                topic, text.encode("utf-8"), qos=0, retain=False, timeout=self._timeout
            )
        except MqttError as exc:
            self.last_error = f"publish failed: {exc}"
            logger.debug("%s: %s", self.url, self.last_error)
            return False
        self.messages_sent += 1
        return True

    def on_ready(self, callback: Callable[[], None]) -> Callable[[], None]:
        return self._ready_callbacks.add(callback, ready_now=self.is_open)

    def health(self) -> RelayHealth:
        return RelayHealth(
            url=self.url,
            state=self.state,
            last_error=self.last_error,
            messages_sent=self.messages_sent,
            messages_received=self.messages_received,
            messages_dropped=self.messages_dropped,
        )

    async def release(self) -> None:
        self._uses -= 1
        if self._uses <= 0:
            _forget(self)
            await self.close()

    async def close(self) -> None:
        """Disconnect for good (gracefully when connected). Idempotent."""
        if self.state is RelayState.CLOSED and self._task.done():
            return
        self._stop.set()
        self._synced.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), self._timeout)
        except TimeoutError:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        except asyncio.CancelledError:
            self._task.cancel()
            raise
        self.state = RelayState.CLOSED

    # -- the supervisor -------------------------------------------------------------------------

    def _changed(self) -> None:
        self._synced.clear()
        self._dirty.set()

    def _new_client(self) -> aiomqtt.Client:
        url = self._parsed
        tls_context = self._tls_context
        if url.tls and tls_context is None:
            tls_context = ssl.create_default_context()
        v5 = self._protocol is ProtocolVersion.V5
        return aiomqtt.Client(
            url.host,
            url.port,
            username=url.username,
            password=url.password,
            identifier=_random_client_id(),
            protocol=self._protocol,
            clean_session=None if v5 else True,
            clean_start=True if v5 else paho.MQTT_CLEAN_START_FIRST_ONLY,
            transport=url.transport,
            timeout=self._timeout,
            keepalive=self._keepalive,
            tls_context=tls_context if url.tls else None,
            websocket_path=url.path if url.transport == "websockets" else None,
            logger=_paho_logger,
        )

    async def _run(self) -> None:
        while not self._stop.is_set():
            self.state = RelayState.CONNECTING
            try:
                client = self._new_client()
                if await self._connect(client):
                    try:
                        await self._serve(client)
                    finally:
                        self._client = None
                        self._subscribed.clear()
                        await self._disconnect(client)
            except (MqttError, OSError) as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                logger.debug("%s: %s", self.url, self.last_error)
            except Exception as exc:
                # Never let the supervisor die: whatever went wrong, back off and retry.
                self.last_error = f"{type(exc).__name__}: {exc}"
                logger.warning("%s: unexpected error", self.url, exc_info=True)
            if self._stop.is_set():
                break
            self.state = RelayState.BACKING_OFF
            delay = max(self._backoff.next_delay(), MIN_RETRY_DELAY)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
        self.state = RelayState.CLOSED

    async def _connect(self, client: aiomqtt.Client) -> bool:
        """Connect ``client``; False when stopped meanwhile (the attempt is then abandoned in
        the background: aiomqtt connects in a thread that cannot be interrupted)."""
        enter = asyncio.ensure_future(client.__aenter__())
        stop = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({enter, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if enter.done() and not self._stop.is_set():
            if enter.exception() is not None:
                _close_socket(client)
            enter.result()  # raises MqttError when the attempt failed
            return True
        enter.add_done_callback(_make_abandon(client))
        return False

    async def _serve(self, client: aiomqtt.Client) -> None:
        self._synced.clear()
        await self._sync(client)
        self._client = client
        self.connections += 1
        self._backoff.reset()
        self.state = RelayState.OPEN
        self.last_error = None
        logger.debug("%s: connected, %d topic(s) subscribed", self.url, len(self._subscribed))
        self._ready_callbacks.fire()
        reader = asyncio.ensure_future(self._read(client))
        syncer = asyncio.ensure_future(self._keep_synced(client))
        stop = asyncio.ensure_future(self._stop.wait())
        tasks = {reader, syncer, stop}
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            error = None if task.cancelled() else task.exception()
            if error is not None:
                raise error
        if stop not in done:
            raise MqttError("the connection ended")

    async def _disconnect(self, client: aiomqtt.Client) -> None:
        try:
            await client.__aexit__(None, None, None)
        except (MqttError, OSError) as exc:
            logger.debug("%s: disconnecting: %s", self.url, exc)

    async def _keep_synced(self, client: aiomqtt.Client) -> None:
        while True:
            await self._dirty.wait()
            await self._sync(client)

    async def _sync(self, client: aiomqtt.Client) -> None:
        """Bring the broker's subscriptions in line with the topics that have handlers."""
        while True:
            self._dirty.clear()
            wanted = set(self._handlers)
            new = sorted(wanted - self._subscribed)
            gone = sorted(self._subscribed - wanted)
            if not new and not gone:
                self._synced.set()
                return
            for i in range(0, len(new), TOPICS_PER_PACKET):
                batch = new[i : i + TOPICS_PER_PACKET]
                await client.subscribe([(topic, 0) for topic in batch], timeout=self._timeout)
                self._subscribed.update(batch)
            for i in range(0, len(gone), TOPICS_PER_PACKET):
                batch = gone[i : i + TOPICS_PER_PACKET]
                # Forget first: a topic re-wanted meanwhile is then subscribed again.
                self._subscribed.difference_update(batch)
                await client.unsubscribe(batch, timeout=self._timeout)

    async def _read(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            self._dispatch(message)

    def _dispatch(self, message: aiomqtt.Message) -> None:
        self.messages_received += 1
        topic = message.topic.value
        try:
            text = payload_text(message.payload)
        except RelayProtocolError as exc:
            self._drop(topic, str(exc))
            return
        for handler in list(self._handlers.get(topic, ())):
            try:
                handler(topic, text)
            except Exception:
                logger.exception("%s: handler %r raised for topic %s", self.url, handler, topic)

    def _drop(self, topic: str, reason: str) -> None:
        self.messages_dropped += 1
        log_once(
            logger,
            self._logged,
            "message",
            "%s: dropped a message on %s: %s",
            self.url,
            topic,
            reason,
        )


_background: set[asyncio.Task[None]] = set()


def _make_abandon(
    client: aiomqtt.Client,
) -> Callable[[asyncio.Future[aiomqtt.Client]], None]:
    """A done-callback for an abandoned connection attempt: disconnect if it succeeded."""

    def abandon(enter: asyncio.Future[aiomqtt.Client]) -> None:
        if enter.cancelled() or enter.exception() is not None:
            _close_socket(client)
            return
        task = asyncio.ensure_future(_quiet_exit(client))
        _background.add(task)
        task.add_done_callback(_background.discard)

    return abandon


async def _quiet_exit(client: aiomqtt.Client) -> None:
    try:
        await client.__aexit__(None, None, None)
    except (MqttError, OSError):
        _close_socket(client)


def _close_socket(client: aiomqtt.Client) -> None:
    # aiomqtt leaves paho's socket open when CONNACK never came; close it ourselves.
    with contextlib.suppress(Exception):
        client._client._sock_close()


_relays: dict[str, MqttRelay] = {}


def acquire_mqtt_relay(url: str) -> MqttRelay:
    """The process's shared client for ``url`` (created on first use). Each call is one use,
    given back with :meth:`MqttRelay.release`; the last release disconnects."""
    relay = _relays.get(url)
    if (
        relay is None
        or relay.state is RelayState.CLOSED
        or relay._loop is not asyncio.get_running_loop()
    ):
        relay = _relays[url] = MqttRelay(url)
    relay._uses += 1
    return relay


def _forget(relay: MqttRelay) -> None:
    if _relays.get(relay.url) is relay:
        del _relays[relay.url]
