"""An embedded ws-relay server: the topic pub/sub WebSocket relay of Trystero's
``@trystero-p2p/ws-relay`` strategy (wire notes §3.7), usable by peermesh's
:mod:`peermesh.relay` rooms and by Trystero peers.

Usage::

    async with await serve_relay(port=0) as relay:
        print(relay.url)              # ws://127.0.0.1:<bound port>
        ...                           # join_room(..., relay_urls=[relay.url])

or, to run until cancelled::

    relay = await serve_relay(port=8080)
    await relay.serve_forever()

Protocol (as Trystero's reference ``createWsRelayServer``): clients send JSON text frames

- ``{"type":"subscribe","topic":T}`` — receive what is published on ``T`` (idempotent);
- ``{"type":"unsubscribe","topic":T}`` — stop receiving ``T``;
- ``{"type":"publish","topic":T,"payload":P}`` — ``P`` is any JSON value (Trystero sends a
  string); the server sends ``{"topic":T,"payload":P}`` to *every* socket subscribed to
  ``T``, the sender included. Publishing does not require being subscribed.

A socket's subscriptions end when it closes. Nothing is stored: a message published while
nobody is subscribed is lost.

Limits: frames above ``max_message_size`` bytes close *that* connection (code 1009); a
topic longer than ``max_topic_length`` characters or a subscription beyond
``max_topics_per_connection`` closes that connection with code 1008 (as the reference
server); a subscription to a topic that already has ``max_subscribers_per_topic``
subscribers is refused (not recorded) and counted; handshakes beyond ``max_connections``
open connections are answered with HTTP 503. Malformed frames (not JSON, not an object, an
unknown ``type``, a non-string ``topic``, a publish without ``payload``) are dropped, counted
and logged at DEBUG; the connection stays open, as with the reference server. Each
connection has a bounded outgoing queue drained by its own writer task, so a slow reader
never stalls anyone else: when its queue is full, further messages *to it* are dropped and
counted.

Compatibility note: this follows the protocol of ``@trystero-p2p/ws-relay`` as read from
Trystero's git sources (0.25.3, ``packages/ws-relay``). That package is not published on
npm, so unlike the tracker this server has not been exercised against Trystero's real
ws-relay client here; it is tested against peermesh's own client and raw WebSocket frames.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.frames import CloseCode
from websockets.http11 import Request, Response

from peermesh.errors import UsageError

from ._websocket_server import Client, WebSocketServer

__all__ = ["RelayServer", "RelayStats", "serve_relay"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RelayStats:
    """A snapshot of a :class:`RelayServer`'s state and counters since it started."""

    connections: int
    """Open WebSocket connections."""
    topics: int
    """Topics with at least one subscriber."""
    subscriptions: int
    """(connection, topic) subscriptions across all topics."""
    messages_in: int
    """Frames received, including malformed ones."""
    messages_out: int
    """Frames written to a socket."""
    published: int
    """Valid ``publish`` frames received (whether or not anyone was subscribed)."""
    delivered: int
    """Copies of published messages queued for subscribers."""
    dropped_malformed: int
    """Frames that failed validation (dropped; the connection stays open)."""
    dropped_oversize: int
    """Connections closed because a frame exceeded ``max_message_size``."""
    dropped_backpressure: int
    """Outgoing messages dropped because the receiving connection's queue was full."""
    rejected_subscriptions: int
    """Subscriptions refused because the topic had ``max_subscribers_per_topic``."""
    closed_for_limits: int
    """Connections closed (1008) for a too-long topic or too many subscriptions."""
    rejected_connections: int
    """Handshakes refused (HTTP 503) because ``max_connections`` were open."""


class _Connection(Client):
    def __init__(self, ws: ServerConnection) -> None:
        super().__init__(ws)
        self.topics: set[str] = set()


class _Malformed(Exception):
    pass


class RelayServer(WebSocketServer[_Connection]):
    """A running ws-relay server. Create it with :func:`serve_relay`.

    It is an async context manager that closes the server on exit. All state lives in
    memory and is lost on :meth:`close`.
    """

    def __init__(
        self,
        *,
        host: str,
        max_message_size: int,
        max_topics_per_connection: int,
        max_subscribers_per_topic: int,
        max_connections: int,
        max_topic_length: int,
    ) -> None:
        """Internal: use :func:`serve_relay`, which validates the arguments and starts it."""
        super().__init__(host=host, max_message_size=max_message_size)
        self._max_topics_per_connection = max_topics_per_connection
        self._max_subscribers_per_topic = max_subscribers_per_topic
        self._max_connections = max_connections
        self._max_topic_length = max_topic_length
        self._topics: dict[str, set[_Connection]] = {}
        self._subscriptions = 0
        self._published = 0
        self._delivered = 0
        self._dropped_malformed = 0
        self._rejected_subscriptions = 0
        self._closed_for_limits = 0
        self._rejected_connections = 0

    # ------------------------------------------------------------------ public face

    def stats(self) -> RelayStats:
        """A consistent snapshot of the counters (O(1))."""
        return RelayStats(
            connections=len(self._connections),
            topics=len(self._topics),
            subscriptions=self._subscriptions,
            messages_in=self._messages_in,
            messages_out=self._messages_out,
            published=self._published,
            delivered=self._delivered,
            dropped_malformed=self._dropped_malformed,
            dropped_oversize=self._dropped_oversize,
            dropped_backpressure=self._dropped_backpressure,
            rejected_subscriptions=self._rejected_subscriptions,
            closed_for_limits=self._closed_for_limits,
            rejected_connections=self._rejected_connections,
        )

    def subscriber_count(self, topic: str) -> int:
        """How many connections are subscribed to ``topic``."""
        return len(self._topics.get(topic, ()))

    # ------------------------------------------------------------------ lifecycle

    kind = "relay"

    async def _start(self, port: int) -> None:
        await self._listen(port, process_request=self._admit)

    def _new_client(self, ws: ServerConnection) -> _Connection:
        return _Connection(ws)

    def _on_closed(self) -> None:
        self._topics.clear()
        self._subscriptions = 0

    def _send(self, conn: _Connection, text: str) -> bool:
        queued = super()._send(conn, text)
        if queued:
            self._delivered += 1
        return queued

    def _admit(self, connection: ServerConnection, request: Request) -> Response | None:
        if len(self._connections) < self._max_connections:
            return None
        self._rejected_connections += 1
        _log.debug("refused a connection: %d already open", len(self._connections))
        return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "relay is full\n")

    # ------------------------------------------------------------------ message handling

    def _on_message(self, conn: _Connection, message: str | bytes) -> None:
        if conn.closed:
            return
        try:
            kind, topic, payload = self._parse(message)
        except _Malformed as exc:
            self._dropped_malformed += 1
            _log.debug("malformed message on %s: %s", conn.ws.id, exc)
            return
        if len(topic) > self._max_topic_length:
            self._close_for_limit(conn, "topic too long")
            return
        if kind == "subscribe":
            self._subscribe(conn, topic)
        elif kind == "unsubscribe":
            self._unsubscribe(conn, topic)
        else:
            self._publish(topic, payload)

    @staticmethod
    def _parse(message: str | bytes) -> tuple[str, str, Any]:
        if isinstance(message, bytes):
            try:
                message = message.decode("utf-8")
            except UnicodeDecodeError:
                raise _Malformed("binary frame is not UTF-8") from None
        try:
            frame = json.loads(message)
        except (ValueError, RecursionError) as exc:
            raise _Malformed(f"not JSON: {exc}") from None
        if not isinstance(frame, dict):
            raise _Malformed("not a JSON object")
        kind, topic = frame.get("type"), frame.get("topic")
        if not isinstance(topic, str):
            raise _Malformed("topic is not a string")
        if kind in ("subscribe", "unsubscribe"):
            return kind, topic, None
        if kind == "publish":
            if "payload" not in frame:
                raise _Malformed("publish without a payload")
            return kind, topic, frame["payload"]
        raise _Malformed(f"unknown type {kind!r:.40}")

    def _subscribe(self, conn: _Connection, topic: str) -> None:
        if topic in conn.topics:
            return
        if len(conn.topics) >= self._max_topics_per_connection:
            self._close_for_limit(conn, "subscription limit exceeded")
            return
        subscribers = self._topics.get(topic)
        if subscribers is not None and len(subscribers) >= self._max_subscribers_per_topic:
            self._rejected_subscriptions += 1
            _log.debug("subscription of %s to a full topic refused", conn.ws.id)
            return
        if subscribers is None:
            subscribers = self._topics[topic] = set()
        subscribers.add(conn)
        conn.topics.add(topic)
        self._subscriptions += 1

    def _unsubscribe(self, conn: _Connection, topic: str) -> None:
        if topic not in conn.topics:
            return
        conn.topics.discard(topic)
        self._subscriptions -= 1
        subscribers = self._topics.get(topic)
        if subscribers is None:
            return
        subscribers.discard(conn)
        if not subscribers:
            del self._topics[topic]

    def _publish(self, topic: str, payload: Any) -> None:
        self._published += 1
        subscribers = self._topics.get(topic)
        if not subscribers:
            return
        try:
            text = json.dumps({"topic": topic, "payload": payload}, separators=(",", ":"))
        except (ValueError, RecursionError) as exc:  # pragma: no cover - parsed JSON re-encodes
            self._dropped_malformed += 1
            _log.debug("could not re-encode a payload: %s", exc)
            return
        for subscriber in list(subscribers):
            self._send(subscriber, text)

    def _close_for_limit(self, conn: _Connection, reason: str) -> None:
        self._closed_for_limits += 1
        _log.debug("closing %s: %s", conn.ws.id, reason)
        conn.closed = True
        self._forget_connection(conn)
        task = asyncio.ensure_future(conn.ws.close(CloseCode.POLICY_VIOLATION, reason))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    def _forget_connection(self, conn: _Connection) -> None:
        for topic in list(conn.topics):
            self._unsubscribe(conn, topic)


async def serve_relay(
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    max_message_size: int = 64 * 1024,
    max_topics_per_connection: int = 1024,
    max_subscribers_per_topic: int = 10_000,
    max_connections: int = 10_000,
    max_topic_length: int = 256,
) -> RelayServer:
    """Start a ws-relay server on ``ws://host:port`` and return it, already serving.

    ``port=0`` picks a free port (see :attr:`RelayServer.port`); 8080 is the reference
    server's default. Limits: ``max_message_size`` bytes per incoming frame (larger ones
    close that connection with code 1009); ``max_topics_per_connection`` subscriptions held
    by one WebSocket and ``max_topic_length`` characters per topic (exceeding either closes
    that connection with code 1008, as the reference server); ``max_subscribers_per_topic``
    (further subscriptions to that topic are refused); ``max_connections`` open WebSockets
    (further handshakes get HTTP 503). A peermesh or Trystero process uses one socket per
    relay URL for all its rooms, with two topics per room.

    Raises :class:`~peermesh.errors.UsageError` for non-positive limits, and ``OSError``
    if the address cannot be bound.
    """
    for name, value in (
        ("max_message_size", max_message_size),
        ("max_topics_per_connection", max_topics_per_connection),
        ("max_subscribers_per_topic", max_subscribers_per_topic),
        ("max_connections", max_connections),
        ("max_topic_length", max_topic_length),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise UsageError(f"{name} must be a positive int, got {value!r}")
    relay = RelayServer(
        host=host,
        max_message_size=max_message_size,
        max_topics_per_connection=max_topics_per_connection,
        max_subscribers_per_topic=max_subscribers_per_topic,
        max_connections=max_connections,
        max_topic_length=max_topic_length,
    )
    await relay._start(port)
    return relay
