"""The client side of a Nostr relay as Trystero 0.25.4 uses it (wire notes §3.1).

A :class:`NostrRelay` is one :class:`~peermesh._signalling.websocket.ReconnectingWebSocket`
to one Nostr relay, implementing :class:`~peermesh._signalling.TopicRelay`. It is shared by
every room of the process: :func:`acquire_nostr_relay` returns the instance for a URL (one
use per call) and :meth:`NostrRelay.release` gives a use back; the last release closes it.
Every relay signs with one process-wide key pair (:func:`process_key`), as Trystero does.

Subscriptions: all topics of a relay are batched into REQs of at most 250 topics, each
``{"kinds": [unique kinds], "since": now, "#x": [topics]}`` with a stable 64-character
subscription id. When the topic set changes the REQs are re-sent on the next loop tick (with
a fresh ``since``); surplus subscriptions are CLOSEd, and all of them once no topic is left.
After every (re)connection the REQs are sent again, and only once they are written are the
:meth:`NostrRelay.on_ready` callbacks called.

Publishing signs an event of the topic's kind with the tag ``["x", topic]``.

Incoming events are delivered (their ``content``) to the handlers of their ``x`` topic
**only if their id and BIP-340 signature verify** — Trystero does not check, we do; forgeries
are dropped, logged at DEBUG and counted (``forged_events``). Events are deduplicated by id
(the last :data:`MAX_SEEN_EVENTS`). Malformed relay messages are dropped and counted
(``malformed_messages``). A handler that raises is logged and affects nothing else.

Relay health, as in Trystero 0.25.4:

* ``["OK", id, false, "rate-limited: …"]`` backs the relay off: nothing is published for
  60 s, doubling on each further rate limit up to 15 min. An ``OK true`` for one of our
  events of the last 5.333 s ends the backoff and resets its period. (Trystero keeps sending
  non-announce signals while backed off; we hold every publish, since a rate-limiting relay
  would refuse them too and each refusal doubles the backoff.)
* ``CLOSED``, or ``OK false`` for any reason other than ``rate-limited:`` or
  ``duplicate:``, **retires** the relay: its socket is closed and it is not used again
  (:attr:`RelayState.RETIRED`) until every user has released it.
* ``NOTICE`` is logged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable

from .._limits import log_once
from .._wire.nostr import (
    MAX_MESSAGE_SIZE,
    MAX_TOPICS_PER_REQ,
    NostrKey,
    RelayClosed,
    RelayEose,
    RelayEvent,
    RelayNotice,
    RelayOk,
    build_event,
    encode_close,
    encode_event_message,
    encode_req,
    event_topic,
    parse_relay_message,
    verify_event,
)
from .._wire.topics import gen_id
from ..errors import RelayProtocolError
from . import ReadyCallbacks, RelayHealth, RelayState, TopicHandler, call_logged, register_relay
from .websocket import Backoff, OrderedSender, ReconnectingWebSocket, SocketState

__all__ = [
    "ACK_TIMEOUT",
    "MAX_RATE_LIMIT_BACKOFF",
    "MAX_SEEN_EVENTS",
    "RATE_LIMIT_BACKOFF",
    "NostrRelay",
    "acquire_nostr_relay",
    "process_key",
]

logger = logging.getLogger(__name__)

#: First rate-limit backoff, in seconds (Trystero: the steady announce interval).
RATE_LIMIT_BACKOFF = 60.0
#: Longest rate-limit backoff, in seconds.
MAX_RATE_LIMIT_BACKOFF = 15 * 60.0
#: How long an ``OK true`` for one of our events still ends a backoff (Trystero: 5333 ms).
ACK_TIMEOUT = 5.333
#: Event ids remembered for deduplication.
MAX_SEEN_EVENTS = 4096
#: Events awaiting their ``OK`` that we track at most.
MAX_PENDING_ACKS = 1024
#: Publishes waiting to be written before further ones are refused (``publish`` → False).
MAX_PENDING_PUBLISHES = 256
SUBSCRIPTION_ID_LENGTH = 64


_process_key: NostrKey | None = None


def process_key() -> NostrKey:
    """The key pair every :class:`NostrRelay` of this process signs with by default."""
    global _process_key
    if _process_key is None:
        _process_key = NostrKey.generate()
    return _process_key


class NostrRelay:
    """One shared connection to a Nostr relay. See the module docstring.

    Create it with :func:`acquire_nostr_relay` (shared per URL); the constructor makes an
    unshared instance holding one use, which tests use to get two clients of one relay.
    Must be created inside a running event loop. ``clock`` (monotonic) and ``wall_clock``
    (epoch seconds, for ``created_at`` and ``since``) are replaceable for tests, as are the
    rate-limit backoff bounds.
    """

    def __init__(
        self,
        url: str,
        *,
        key: NostrKey | None = None,
        backoff: Backoff | None = None,
        max_message_size: int = MAX_MESSAGE_SIZE,
        rate_limit_backoff: float = RATE_LIMIT_BACKOFF,
        max_rate_limit_backoff: float = MAX_RATE_LIMIT_BACKOFF,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        on_closed: Callable[[NostrRelay], None] | None = None,
    ) -> None:
        self.url = url
        self.key = key if key is not None else process_key()
        #: Events whose id or signature did not verify (dropped).
        self.forged_events = 0
        #: Relay messages that could not be parsed (dropped).
        self.malformed_messages = 0
        self._logged: set[str] = set()  # kinds of dropped input already logged
        #: Events received again (by id) and not delivered a second time.
        self.duplicate_events = 0
        self._topics: dict[str, list[TopicHandler]] = {}
        self._sub_ids: list[str] = []
        self._flush_scheduled = False
        self._ready_callbacks = ReadyCallbacks(url)
        self._loop = asyncio.get_running_loop()
        self._ready = False
        self._uses = 1
        self._closed = False
        self._retired: str | None = None
        self._retire_task: asyncio.Task[None] | None = None
        self._on_closed = on_closed
        self._clock = clock
        self._wall_clock = wall_clock
        self._rate_limit_backoff = rate_limit_backoff
        self._max_rate_limit_backoff = max_rate_limit_backoff
        self._backoff_delay = 0.0
        self._backoff_until = 0.0
        self._rate_limit_reason: str | None = None
        self._pending_acks: OrderedDict[str, float] = OrderedDict()
        self._seen: OrderedDict[str, None] = OrderedDict()
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
        register_relay(self)

    def __repr__(self) -> str:
        return f"<NostrRelay {self.url} {self.health().state.value}>"

    # -- TopicRelay -------------------------------------------------------------------------

    def subscribe(self, topic: str, handler: TopicHandler) -> None:
        handlers = self._topics.get(topic)
        if handlers is None:
            self._topics[topic] = [handler]
            self._schedule_flush()
        elif handler not in handlers:
            handlers.append(handler)

    def unsubscribe(self, topic: str, handler: TopicHandler) -> None:
        handlers = self._topics.get(topic)
        if handlers is None or handler not in handlers:
            return
        handlers.remove(handler)
        if not handlers:
            del self._topics[topic]
            self._schedule_flush()

    async def publish(self, topic: str, text: str) -> bool:
        if self._closed or self._retired is not None or not self._socket.is_open:
            return False
        if self.backing_off:
            logger.debug("%s: rate-limit backoff; not publishing", self.url)
            return False
        if self._sender.pending >= MAX_PENDING_PUBLISHES:
            logger.debug("%s: too many publishes waiting; refused one", self.url)
            return False
        try:
            event = build_event(
                self.key, topic=topic, content=text, created_at=int(self._wall_clock())
            )
            message = encode_event_message(event)
        except Exception as exc:  # pragma: no cover - defensive (unencodable input)
            logger.debug("%s: could not build an event: %r", self.url, exc)
            return False
        self._track_ack(event["id"])
        return await self._sender.send(message)

    def on_ready(self, callback: Callable[[], None]) -> Callable[[], None]:
        return self._ready_callbacks.add(callback, ready_now=self.is_ready)

    def health(self) -> RelayHealth:
        socket = self._socket
        state: RelayState
        last_error = socket.last_error
        if self._closed:
            state = RelayState.CLOSED
        elif self._retired is not None:
            state = RelayState.RETIRED
            last_error = self._retired
        elif socket.state is SocketState.CLOSED:
            state = RelayState.RETIRED  # gave up by itself (an invalid URL) while in use
        elif socket.state is SocketState.OPEN and self.backing_off:
            state = RelayState.BACKING_OFF
            last_error = self._rate_limit_reason
        else:
            state = RelayState(socket.state.value)
        return RelayHealth(
            url=self.url,
            state=state,
            last_error=last_error,
            messages_sent=socket.messages_sent,
            messages_received=socket.messages_received,
            messages_dropped=self.forged_events + self.malformed_messages,
        )

    async def release(self) -> None:
        if self._closed:
            return
        self._uses -= 1
        if self._uses > 0:
            return
        await self._close()

    # -- state ------------------------------------------------------------------------------

    def _acquire(self) -> None:
        self._uses += 1

    @property
    def is_ready(self) -> bool:
        """Whether the connection is open and its subscriptions have been written."""
        return self._ready and self._socket.is_open and self._retired is None

    @property
    def is_closed(self) -> bool:
        return self._closed

    @property
    def is_retired(self) -> bool:
        return self._retired is not None

    @property
    def backing_off(self) -> bool:
        """Whether a rate limit currently holds our publishes back."""
        return self._clock() < self._backoff_until

    @property
    def topics(self) -> frozenset[str]:
        """The topics with at least one local handler."""
        return frozenset(self._topics)

    @property
    def subscription_ids(self) -> tuple[str, ...]:
        """The subscription ids currently in use on the relay (one per 250 topics)."""
        return tuple(self._sub_ids)

    async def _close(self) -> None:
        self._closed = True
        self._ready = False
        if self._on_closed is not None:
            self._on_closed(self)
        await self._sender.close()
        if self._retire_task is not None:
            await asyncio.gather(self._retire_task, return_exceptions=True)
        await self._socket.close()
        self._topics.clear()
        self._ready_callbacks.clear()

    def _retire(self, reason: str) -> None:
        if self._retired is not None or self._closed:
            return
        logger.warning("%s: relay rejected us (%s); not using it any more", self.url, reason)
        self._retired = reason
        self._ready = False
        self._sender.new_connection()
        self._sender.fail_queued()
        self._pending_acks.clear()
        self._retire_task = asyncio.ensure_future(self._socket.close())

    # -- rate limits ------------------------------------------------------------------------

    def _track_ack(self, event_id: str) -> None:
        now = self._clock()
        acks = self._pending_acks
        while acks and (len(acks) >= MAX_PENDING_ACKS or next(iter(acks.values())) <= now):
            acks.popitem(last=False)
        acks[event_id] = now + ACK_TIMEOUT

    def _rate_limited(self, reason: str) -> None:
        if self._backoff_delay > 0:
            delay = max(self._rate_limit_backoff, self._backoff_delay * 2)
        else:
            delay = self._rate_limit_backoff
        self._backoff_delay = min(delay, self._max_rate_limit_backoff)
        self._backoff_until = self._clock() + self._backoff_delay
        self._rate_limit_reason = reason
        logger.warning(
            "%s: rate-limited (%s); pausing publishes for %.0f s",
            self.url,
            reason,
            self._backoff_delay,
        )

    def _acknowledged(self, event_id: str) -> None:
        expiry = self._pending_acks.pop(event_id, None)
        if expiry is not None and expiry > self._clock():
            self._backoff_delay = 0.0
            self._backoff_until = 0.0
            self._rate_limit_reason = None

    # -- subscriptions ----------------------------------------------------------------------

    def _schedule_flush(self) -> None:
        if self._flush_scheduled or self._closed:
            return
        self._flush_scheduled = True
        asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._closed or self._retired is not None:
            return
        if not self._socket.is_open:
            if not self._topics:
                self._sub_ids.clear()  # the relay forgot them with the connection
            return
        self._enqueue_subscriptions(close_surplus=True)

    def _enqueue_subscriptions(self, *, close_surplus: bool) -> None:
        topics = list(self._topics)
        chunks = [
            topics[i : i + MAX_TOPICS_PER_REQ] for i in range(0, len(topics), MAX_TOPICS_PER_REQ)
        ]
        while len(self._sub_ids) > len(chunks):
            sub_id = self._sub_ids.pop()
            if close_surplus:
                self._sender.enqueue(encode_close(sub_id))
        since = int(self._wall_clock())
        for i, chunk in enumerate(chunks):
            if i == len(self._sub_ids):
                self._sub_ids.append(gen_id(SUBSCRIPTION_ID_LENGTH))
            self._sender.enqueue(encode_req(self._sub_ids[i], chunk, since))

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
        if self._retired is not None:
            return
        self._enqueue_subscriptions(close_surplus=False)
        self._sender.mark_ready()

    # -- incoming ---------------------------------------------------------------------------

    def _received(self, text: str) -> None:
        if self._closed or self._retired is not None:
            return
        try:
            message = parse_relay_message(text)
        except RelayProtocolError as exc:
            self.malformed_messages += 1
            log_once(
                logger,
                self._logged,
                "message",
                "%s: dropped a malformed relay message: %s",
                self.url,
                exc,
            )
            return
        if isinstance(message, RelayEvent):
            self._event(message)
        elif isinstance(message, RelayOk):
            if message.accepted:
                self._acknowledged(message.event_id)
            elif message.rate_limited:
                self._pending_acks.pop(message.event_id, None)
                self._rate_limited(message.message)
            elif not message.duplicate:
                self._retire(f"OK false: {message.message}"[:500])
        elif isinstance(message, RelayClosed):
            self._retire(f"CLOSED: {message.message}"[:500])
        elif isinstance(message, RelayNotice):
            logger.warning("%s: relay notice: %.500s", self.url, message.message)
        elif isinstance(message, RelayEose):
            pass

    def _event(self, message: RelayEvent) -> None:
        if message.sub_id not in self._sub_ids:
            logger.debug("%s: event for a subscription we do not hold", self.url)
            return
        event = message.event
        eid: str = event["id"]
        if eid in self._seen:
            self.duplicate_events += 1
            self._seen.move_to_end(eid)
            return
        if not verify_event(event):
            self.forged_events += 1
            log_once(
                logger,
                self._logged,
                "event",
                "%s: dropped an event whose id or signature is invalid",
                self.url,
            )
            return
        self._seen[eid] = None
        if len(self._seen) > MAX_SEEN_EVENTS:
            self._seen.popitem(last=False)
        topic = event_topic(event)
        handlers = self._topics.get(topic) if topic is not None else None
        if not handlers:
            logger.debug("%s: event for a topic we are not subscribed to", self.url)
            return
        content: str = event["content"]
        for handler in list(handlers):
            call_logged(self.url, handler, topic, content)


_relays: dict[str, NostrRelay] = {}


def acquire_nostr_relay(url: str) -> NostrRelay:
    """The shared :class:`NostrRelay` for ``url``, created on first use; each call is one
    use, to be given back with :meth:`NostrRelay.release`. Must be called inside a running
    loop."""
    relay = _relays.get(url)
    # (An instance left behind by an event loop that has since ended is replaced.)
    if relay is not None and not relay.is_closed and relay._loop is asyncio.get_running_loop():
        relay._acquire()
        return relay
    relay = _relays[url] = NostrRelay(url, on_closed=_forget)
    return relay


def _forget(relay: NostrRelay) -> None:
    if _relays.get(relay.url) is relay:
        del _relays[relay.url]
