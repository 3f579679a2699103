"""The client side of Trystero's self-hosted WebSocket relay (wire notes §3.7).

A :class:`WsRelay` is one :class:`~peermesh._signalling.websocket.ReconnectingWebSocket` to
one ws-relay server, implementing :class:`~peermesh._signalling.TopicRelay`. It is shared by
every room of the process: :func:`acquire_ws_relay` returns the instance for a URL (one use
per call) and :meth:`WsRelay.release` gives a use back; the last release closes it.

Frames, all compact JSON text:

- client → server: ``{"type":"subscribe","topic":T}`` for the first local handler of a
  topic, ``{"type":"unsubscribe","topic":T}`` when its last handler goes, and
  ``{"type":"publish","topic":T,"payload":<text>}`` (the signalling message of §2.2 travels
  as a JSON *string*, so it is encoded twice);
- server → client: ``{"topic":T,"payload":…}``, to every subscriber including the sender.

Every outgoing frame goes through one FIFO drained by a writer task, so frames reach the
server in the order they were asked for (a ``subscribe`` issued before a ``publish`` is on
the wire first). After every (re)connection all current subscriptions are sent again, and
only once they are written are the :meth:`WsRelay.on_ready` callbacks called.

Incoming frames that are not a JSON object with a string ``topic`` and a string (or, as
Trystero's own client accepts, object) ``payload`` are dropped, logged at DEBUG and counted
in ``messages_dropped``; frames above ``max_message_size`` bytes close the connection (a
reconnect follows). Frames for topics nobody here subscribes to (in flight while we
unsubscribed) are ignored without counting. A handler that raises is logged and does not
affect the socket or the other handlers.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from .._limits import log_once
from . import (
    ReadyCallbacks,
    RelayHealth,
    RelayState,
    TopicHandler,
    TopicRelay,
    call_logged,
    register_relay,
)
from .websocket import Backoff, OrderedSender, ReconnectingWebSocket, SocketState

__all__ = ["DEFAULT_MAX_MESSAGE_SIZE", "WsRelay", "acquire_ws_relay"]

logger = logging.getLogger(__name__)

#: Largest frame accepted from a relay, in bytes (Trystero's reference server allows 1 MiB
#: frames from clients; signalling messages are a few kilobytes).
DEFAULT_MAX_MESSAGE_SIZE = 256 * 1024
#: Publishes waiting to be written before further ones are refused (``publish`` → False).
MAX_PENDING_PUBLISHES = 256


def _encode(frame: dict[str, str]) -> str:
    return json.dumps(frame, separators=(",", ":"))


class WsRelay:
    """One shared connection to a ws-relay server. See the module docstring.

    Create it with :func:`acquire_ws_relay` (shared per URL); the constructor makes an
    unshared instance holding one use, which tests use to get two clients of one server.
    Must be created inside a running event loop.
    """

    def __init__(
        self,
        url: str,
        *,
        backoff: Backoff | None = None,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        on_closed: Callable[[WsRelay], None] | None = None,
    ) -> None:
        self.url = url
        self._handlers: dict[str, list[TopicHandler]] = {}
        self._ready_callbacks = ReadyCallbacks(url)
        self._ready = False
        self._uses = 1
        self._closed = False
        self._on_closed = on_closed
        self._messages_dropped = 0
        self._logged: set[str] = set()  # kinds of dropped input already logged
        self._loop = asyncio.get_running_loop()
        self._sender = OrderedSender(
            url, self._send, self._became_ready, max_pending=MAX_PENDING_PUBLISHES
        )
        self._socket = ReconnectingWebSocket(
            url,
            on_open=self._opened,
            on_message=self._received,
            max_size=max_message_size,
            backoff=backoff,
        )
        register_relay(self)  # visible to relay_health() while alive

    def __repr__(self) -> str:
        return f"<WsRelay {self.url} {self.health().state.value}>"

    # -- TopicRelay -------------------------------------------------------------------------

    def subscribe(self, topic: str, handler: TopicHandler) -> None:
        handlers = self._handlers.get(topic)
        if handlers is None:
            self._handlers[topic] = [handler]
            if self._socket.is_open:
                self._sender.enqueue(_encode({"type": "subscribe", "topic": topic}))
        elif handler not in handlers:
            handlers.append(handler)

    def unsubscribe(self, topic: str, handler: TopicHandler) -> None:
        handlers = self._handlers.get(topic)
        if handlers is None or handler not in handlers:
            return
        handlers.remove(handler)
        if not handlers:
            del self._handlers[topic]
            if self._socket.is_open:
                self._sender.enqueue(_encode({"type": "unsubscribe", "topic": topic}))

    async def publish(self, topic: str, text: str) -> bool:
        if self._closed or not self._socket.is_open:
            return False
        return await self._sender.send(
            _encode({"type": "publish", "topic": topic, "payload": text})
        )

    def on_ready(self, callback: Callable[[], None]) -> Callable[[], None]:
        return self._ready_callbacks.add(callback, ready_now=self.is_ready)

    def health(self) -> RelayHealth:
        socket = self._socket
        state: RelayState
        if self._closed:
            state = RelayState.CLOSED
        elif socket.state is SocketState.CLOSED:
            state = RelayState.RETIRED  # gave up by itself (an invalid URL) while in use
        else:
            state = RelayState(socket.state.value)
        return RelayHealth(
            url=self.url,
            state=state,
            last_error=socket.last_error,
            messages_sent=socket.messages_sent,
            messages_received=socket.messages_received,
            messages_dropped=self._messages_dropped,
        )

    async def release(self) -> None:
        if self._closed:
            return
        self._uses -= 1
        if self._uses > 0:
            return
        await self._close()

    # -- sharing ----------------------------------------------------------------------------

    def _acquire(self) -> None:
        self._uses += 1

    @property
    def is_ready(self) -> bool:
        """Whether the connection is open and its subscriptions have been written."""
        return self._ready and self._socket.is_open

    @property
    def is_closed(self) -> bool:
        return self._closed

    @property
    def topics(self) -> frozenset[str]:
        """The topics with at least one local handler."""
        return frozenset(self._handlers)

    async def _close(self) -> None:
        self._closed = True
        self._ready = False
        if self._on_closed is not None:
            self._on_closed(self)
        await self._sender.close()
        await self._socket.close()
        self._handlers.clear()
        self._ready_callbacks.clear()

    # -- outgoing ---------------------------------------------------------------------------

    async def _send(self, text: str) -> bool:
        return await self._socket.send(text)

    def _became_ready(self) -> None:
        self._ready = True
        self._ready_callbacks.fire()

    def _opened(self) -> None:
        # A new connection: whatever was queued for the old one is stale (subscriptions
        # are re-sent in full below), and nothing is ready until they are written.
        self._sender.new_connection()
        self._ready = False
        for topic in self._handlers:
            self._sender.enqueue(_encode({"type": "subscribe", "topic": topic}))
        self._sender.mark_ready()

    # -- incoming ---------------------------------------------------------------------------

    def _received(self, text: str) -> None:
        try:
            frame = json.loads(text)
        except (ValueError, RecursionError) as exc:
            self._drop("not JSON: %s", exc)
            return
        if not isinstance(frame, dict):
            self._drop("not a JSON object: %.80r", text)
            return
        topic = frame.get("topic")
        payload = frame.get("payload")
        if not isinstance(topic, str):
            self._drop("no string topic: %.80r", text)
            return
        if isinstance(payload, dict):  # Trystero's client accepts an object payload too
            try:
                payload = json.dumps(payload, separators=(",", ":"))
            except (ValueError, RecursionError) as exc:
                self._drop("unencodable payload: %s", exc)
                return
        elif not isinstance(payload, str):
            self._drop("payload is neither a string nor an object: %.80r", text)
            return
        handlers = self._handlers.get(topic)
        if not handlers:
            logger.debug("%s: message for topic %.64r we are not subscribed to", self.url, topic)
            return
        for handler in list(handlers):
            call_logged(self.url, handler, topic, payload)

    def _drop(self, why: str, *args: object) -> None:
        self._messages_dropped += 1
        log_once(
            logger,
            self._logged,
            "message",
            "%s: dropped a malformed relay message: " + why,
            self.url,
            *args,
        )


if TYPE_CHECKING:

    def _implements_topic_relay(relay: WsRelay) -> TopicRelay:
        return relay  # mypy checks that WsRelay satisfies the protocol


_relays: dict[str, WsRelay] = {}


def acquire_ws_relay(url: str) -> WsRelay:
    """The shared :class:`WsRelay` for ``url``, created on first use; each call is one use,
    to be given back with :meth:`WsRelay.release`. Must be called inside a running loop."""
    relay = _relays.get(url)
    # (An instance left behind by an event loop that has since ended is replaced.)
    if relay is not None and not relay.is_closed and relay._loop is asyncio.get_running_loop():
        relay._acquire()
        return relay
    relay = _relays[url] = WsRelay(url, on_closed=_forget)
    return relay


def _forget(relay: WsRelay) -> None:
    if _relays.get(relay.url) is relay:
        del _relays[relay.url]
