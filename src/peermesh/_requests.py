"""Request/response actions (Trystero's ``makeAction(name, {kind: 'request'})``).

Wire format (wire notes §6.5, Trystero 0.25.4 ``actions.mjs``):

- a request is an ordinary message on the action's own type, whose chunk metadata is
  ``{"r": <20-char request id>}`` or ``{"r": id, "m": <user metadata>}``;
- the reply travels on the internal action ``@_response`` with metadata ``{"r": id}`` and
  the reply value as payload, or metadata ``{"r": id, "e": "error text"}`` and payload
  ``null`` for an error;
- a request that finds no handler within 500 ms is answered with the error
  ``"request handler unavailable"``.

Differences from Trystero, all deliberate:

- A handler returning Python ``None`` replies JSON ``null``. (Trystero treats a handler
  returning ``undefined`` as an error; a JS handler returning ``null`` replies ``null``.)
- Incoming requests are bounded per room and shared fairly between peers, so that one
  peer's flood neither starves the other peers' requests nor gets them refused:

  - at most :attr:`Limits.max_running_requests` handler executions run at once, at most
    :attr:`Limits.max_running_requests_per_peer` of them for one peer;
  - a request that cannot run yet (its action has no handler, or no handler slot is free
    for its peer) waits, at most :attr:`Limits.max_waiting_requests` in all. A free slot goes to the
    waiting peer with the fewest handlers running, ties round-robin, each peer's requests
    in arrival order. One waiting for a handler is answered ``"request handler
    unavailable"`` after :data:`REQUEST_HANDLER_WAIT` (as Trystero); one waiting for a slot
    waits until it runs or its peer leaves;
  - when :attr:`Limits.max_waiting_requests` are waiting, a new request is refused at once if its
    peer already has at least as many waiting as every other peer; otherwise the newest
    waiting request of the peer with the most is refused to make room. A peer with fewer
    waiting than its share (the limit divided by the peers with requests waiting) is never
    refused for lack of room;
  - a refused request is answered, to its own peer only, with the error ``"too many
    concurrent requests"``, or ``"request handler unavailable"`` if its action has no
    handler.
- Requests have a finite default timeout, :data:`DEFAULT_REQUEST_TIMEOUT` (Trystero waits
  forever unless ``timeoutMs`` is given); pass ``timeout=None`` to wait until the peer
  replies or leaves.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from ._wire import actions as wire
from ._wire.fair_queue import FairQueue
from ._wire.topics import gen_id
from .errors import (
    PeerError,
    PeerTimeoutError,
    PeerUnavailableError,
    RequestError,
    RoomClosedError,
    UsageError,
)

if TYPE_CHECKING:
    from ._limits import MemoryBudget
    from ._room import Room

__all__ = [
    "DEFAULT_REQUEST_TIMEOUT",
    "HANDLER_UNAVAILABLE",
    "MAX_OUTSTANDING_REQUESTS",
    "REQUEST_HANDLER_WAIT",
    "TOO_MANY_REQUESTS",
    "RequestAction",
    "RequestHandler",
    "RequestManager",
    "RequestMany",
]

logger = logging.getLogger(__name__)

#: Default seconds :meth:`RequestAction.request` waits for a reply once the request has
#: been fully sent.
DEFAULT_REQUEST_TIMEOUT = 60.0
#: Seconds a request waits for a handler to be set before it is answered with
#: :data:`HANDLER_UNAVAILABLE` (Trystero: 500 ms).
REQUEST_HANDLER_WAIT = 0.5
#: Requests of ours awaiting a reply per room; more raise :class:`UsageError`.
MAX_OUTSTANDING_REQUESTS = 4096
#: Length of a request id (Trystero: ``genId(20)``).
REQUEST_ID_LENGTH = 20

HANDLER_UNAVAILABLE = "request handler unavailable"
TOO_MANY_REQUESTS = "too many concurrent requests"

#: ``handler(data, peer_id, metadata)``, sync or async; its return value is the reply.
RequestHandler = Callable[[Any, str, Any], Any]
H = TypeVar("H", bound=RequestHandler)
P = TypeVar("P", bound=Callable[..., Any])

#: The id of the peer whose request is being handled (see ``peermesh.caller_id``).
CALLER: contextvars.ContextVar[str] = contextvars.ContextVar("peermesh_caller")


def _request_metadata(metadata: object) -> tuple[str, object] | None:
    """``(request id, user metadata)`` from a request's chunk metadata, as Trystero's
    ``getRequestMetadata``; ``None`` if it is not request metadata."""
    if isinstance(metadata, dict) and isinstance(metadata.get("r"), str):
        return metadata["r"], metadata.get("m")
    return None


def _response_metadata(metadata: object) -> tuple[str, str | None] | None:
    """``(request id, error text or None)`` from ``@_response`` metadata, as Trystero's
    ``getResponseMetadata`` (an ``e`` that is not a string means success)."""
    if isinstance(metadata, dict) and isinstance(metadata.get("r"), str):
        error = metadata.get("e")
        return metadata["r"], error if isinstance(error, str) else None
    return None


@dataclass(eq=False)
class _Waiter:
    peer_id: str
    future: asyncio.Future[Any]


@dataclass(eq=False)
class _Held:
    """An incoming request waiting for its action's handler or a free handler slot;
    ``timer`` is set while it waits for a handler."""

    action: RequestAction
    peer_id: str
    request_id: str
    data: object
    metadata: object
    #: Bytes charged to ``peer_id`` in the memory budget until the request is done.
    size: int = 0
    timer: asyncio.TimerHandle | None = field(default=None)


class RequestManager:
    """Per-room request state: our outstanding requests, incoming requests waiting for a
    handler or a free handler slot, handler executions in flight, and the ``@_response``
    sender.

    Its bounds are the room's :class:`~peermesh.Limits`; what waiting and running requests
    hold is charged to their peers in ``budget``. Owned by :class:`~peermesh._room.Room`;
    not a public API.
    """

    def __init__(self, room: Room, budget: MemoryBudget) -> None:
        self._room = room
        self._budget = budget
        self._type_field = wire.encode_action_type(wire.RESPONSE)
        self._nonce = 0
        self._waiters: dict[str, _Waiter] = {}
        self._limits = room.limits
        self._waiting: FairQueue[_Held] = FairQueue(self._limits.max_waiting_requests)
        self.running = 0
        self._running: dict[str, int] = {}  # per peer, only peers with handlers running
        self.max_outstanding = MAX_OUTSTANDING_REQUESTS

    @property
    def outstanding(self) -> int:
        """Requests of ours awaiting a reply."""
        return len(self._waiters)

    @property
    def held(self) -> int:
        """Incoming requests waiting for a handler or a free handler slot."""
        return len(self._waiting)

    # -- outgoing -----------------------------------------------------------------------------

    def _register(self, peer_id: str) -> tuple[str, asyncio.Future[Any]]:
        if len(self._waiters) >= self.max_outstanding:
            raise UsageError(
                f"{self.max_outstanding} requests are already awaiting replies in {self._room!r}"
            )
        request_id = gen_id(REQUEST_ID_LENGTH)
        while request_id in self._waiters:  # pragma: no cover - 62**20 ids
            request_id = gen_id(REQUEST_ID_LENGTH)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiters[request_id] = _Waiter(peer_id, future)
        return request_id, future

    def _forget(self, request_id: str) -> None:
        self._waiters.pop(request_id, None)

    def on_response(self, event: wire.MessageReceived) -> None:
        """A complete ``@_response`` message arrived: settle the matching request. Replies
        with malformed metadata, unknown ids, or from a peer other than the one asked are
        dropped (debug log, counted)."""
        counters = self._room.counters
        parsed = _response_metadata(event.metadata)
        if parsed is None:
            counters.malformed_responses += 1
            logger.debug(
                "%r: @_response from %s without request metadata", self._room, event.peer_id
            )
            return
        request_id, error = parsed
        waiter = self._waiters.get(request_id)
        if waiter is None or waiter.peer_id != event.peer_id:
            counters.unmatched_responses += 1
            logger.debug(
                "%r: dropped a reply from %s to unknown request %r",
                self._room,
                event.peer_id,
                request_id,
            )
            return
        del self._waiters[request_id]
        if waiter.future.done():
            return
        if error is not None:
            waiter.future.set_exception(RequestError(error, peer_id=event.peer_id))
        else:
            waiter.future.set_result(event.data)

    # -- incoming -----------------------------------------------------------------------------

    def incoming(
        self,
        action: RequestAction,
        peer_id: str,
        request_id: str,
        data: object,
        metadata: object,
        size: int,
    ) -> None:
        """A complete request for ``action`` arrived: run its handler now if a slot is free
        for ``peer_id``, else let it wait or refuse it (see the module docstring). Its
        ``size`` is charged to the peer in the memory budget until it is done; a request
        that does not fit is refused."""
        held = _Held(action, peer_id, request_id, data, metadata, size)
        if not self._budget.charge(peer_id, size):
            held.size = 0
            self._refuse(held)
            return
        if self._may_run(held):
            self._start(held)
            return
        left_out = self._waiting.push(peer_id, held)
        if left_out is not held and action.handler is None:
            loop = asyncio.get_running_loop()
            held.timer = loop.call_later(REQUEST_HANDLER_WAIT, self._expire, held)
        if left_out is not None:
            self._refuse(left_out)

    def _may_run(self, held: _Held) -> bool:
        """``held`` has a handler and a free handler slot, in the room and for its peer."""
        return (
            held.action.handler is not None
            and self.running < self._limits.max_running_requests
            and self._running.get(held.peer_id, 0) < self._limits.max_running_requests_per_peer
        )

    def refuse(self, peer_id: str, request_id: str, error: str = TOO_MANY_REQUESTS) -> None:
        """Answer a request that could not be taken with ``error``."""
        logger.debug("%r: refusing a request from %s: %s", self._room, peer_id, error)
        self._reply_error(peer_id, request_id, error)

    def _refuse(self, held: _Held) -> None:
        self._done(held)
        error = HANDLER_UNAVAILABLE if held.action.handler is None else TOO_MANY_REQUESTS
        self.refuse(held.peer_id, held.request_id, error)

    def _expire(self, held: _Held) -> None:
        if self._waiting.remove(held.peer_id, held):
            self._done(held)
            self._reply_error(held.peer_id, held.request_id, HANDLER_UNAVAILABLE)

    def _done(self, held: _Held) -> None:
        """``held`` ran or was dropped: release what it was charged, stop its timer."""
        if held.timer is not None:
            held.timer.cancel()
            held.timer = None
        self._budget.release(held.peer_id, held.size)
        held.size = 0

    def flush(self, action: RequestAction) -> None:
        """``action`` got a handler: its waiting requests now wait only for a slot."""
        if action.handler is None:
            return
        for held in self._waiting:
            if held.action is action and held.timer is not None:
                held.timer.cancel()
                held.timer = None
        self._pump()

    def _pump(self) -> None:
        """Start waiting requests while handler slots are free, fairly between peers."""
        while (held := self._waiting.pop(self._may_run, self._running)) is not None:
            self._start(held)

    def _start(self, held: _Held) -> None:
        handler = held.action.handler
        assert handler is not None
        peer_id = held.peer_id
        self.running += 1
        self._running[peer_id] = self._running.get(peer_id, 0) + 1
        self._room._spawn(self._handle(handler, held))

    async def _handle(self, handler: RequestHandler, held: _Held) -> None:
        peer_id, request_id = held.peer_id, held.request_id
        # A task runs in its own copy of the context: this does not leak to other tasks.
        CALLER.set(peer_id)
        try:
            try:
                result = handler(held.data, peer_id, held.metadata)
                if inspect.isawaitable(result):
                    result = await result
                kind, payload = wire.encode_payload(result)
            except Exception as exc:
                logger.debug(
                    "%r: request handler %r failed for %s",
                    self._room,
                    handler,
                    peer_id,
                    exc_info=True,
                )
                await self._send_reply(peer_id, request_id, None, str(exc) or type(exc).__name__)
                return
            await self._send_reply(peer_id, request_id, (kind, payload), None)
        finally:
            self._done(held)
            self.running -= 1
            self._running[peer_id] -= 1
            if not self._running[peer_id]:
                del self._running[peer_id]
            self._pump()

    def _reply_error(self, peer_id: str, request_id: str, error: str) -> None:
        self._room._spawn(self._send_reply(peer_id, request_id, None, error))

    async def _send_reply(
        self,
        peer_id: str,
        request_id: str,
        encoded: tuple[wire.PayloadKind, bytes] | None,
        error: str | None,
    ) -> None:
        if encoded is None:
            encoded = wire.encode_payload(None)
        meta: dict[str, str] = {"r": request_id}
        if error is not None:
            meta["e"] = error
        nonce = self._nonce
        self._nonce = wire.next_nonce(nonce)
        kind, payload = encoded
        try:
            await self._room._send_encoded(
                self._type_field,
                nonce,
                kind,
                payload,
                wire.encode_metadata(meta),
                None,
                None,
                peer_id,
            )
        except (PeerError, RoomClosedError) as exc:
            logger.debug("%r: could not reply to %s: %s", self._room, peer_id, exc)

    # -- lifecycle ----------------------------------------------------------------------------

    def peer_gone(self, peer_id: str, reason: str) -> None:
        """Fail our requests to ``peer_id`` and drop its waiting requests."""
        for request_id, waiter in list(self._waiters.items()):
            if waiter.peer_id == peer_id:
                del self._waiters[request_id]
                if not waiter.future.done():
                    waiter.future.set_exception(PeerUnavailableError(f"{peer_id} left: {reason}"))
        for held in self._waiting.drop(peer_id):
            self._done(held)

    def close(self) -> None:
        """The room is being left: fail every outstanding request with
        :class:`RoomClosedError` and drop waiting requests."""
        waiters = list(self._waiters.values())
        self._waiters.clear()
        for waiter in waiters:
            if not waiter.future.done():
                waiter.future.set_exception(RoomClosedError(f"{self._room!r} has been left"))
        for held in self._waiting.clear():
            self._done(held)


class RequestAction:
    """A named request/response channel in a room (``room.make_action(name,
    kind="request")``), wire-compatible with Trystero's request actions.

    Set a handler with :meth:`on_request`; ask a peer with :meth:`request` or several with
    :meth:`request_many`. Payloads map as for message actions: ``str`` travels as text,
    ``bytes``-like as binary (received as ``bytes``), anything else as JSON.
    """

    def __init__(self, room: Room, name: str) -> None:
        self.name = name
        self._room = room
        self._manager = room._requests
        self._type_field = wire.encode_action_type(name)
        self._nonce = 0
        self._handler: RequestHandler | None = None
        self._on_progress: list[Callable[..., Any]] = []

    def __repr__(self) -> str:
        return f"<RequestAction {self.name!r}>"

    @property
    def handler(self) -> RequestHandler | None:
        """The current request handler, or ``None``."""
        return self._handler

    def on_request(self, handler: H) -> H:
        """Answer requests with ``handler(data, peer_id, metadata)`` (sync or async),
        replacing any previous handler; returns ``handler``, so it works as a decorator.

        The return value is the reply (``None`` replies JSON ``null``, unlike Trystero,
        where returning ``undefined`` is an error). An exception, or a return value that
        cannot be encoded, replies an error with ``str(exception)`` (the class name if that
        is empty); it is logged at DEBUG and not raised. ``peermesh.caller_id()`` returns
        the requesting peer's id inside the handler. Requests that arrived up to
        :data:`REQUEST_HANDLER_WAIT` seconds before the handler was set are handled by it.
        """
        self._handler = handler
        self._manager.flush(self)
        return handler

    def on_receive_progress(self, callback: P) -> P:
        """Call ``callback(fraction, peer_id, metadata)`` as chunks of a request arrive;
        ``metadata`` is the requester's metadata (the request envelope is removed)."""
        self._on_progress.append(callback)
        return callback

    async def request(
        self,
        data: object,
        target: str,
        *,
        metadata: object = None,
        timeout: float | None = DEFAULT_REQUEST_TIMEOUT,
        on_progress: Callable[..., Any] | None = None,
    ) -> Any:
        """Send ``data`` to peer ``target`` and return its handler's reply.

        ``metadata`` is any JSON value delivered to the handler. ``on_progress(fraction,
        peer_id, metadata)`` is called after each chunk sent. ``timeout`` counts seconds
        from when the request has been fully sent (as Trystero's ``timeoutMs``); ``None``
        waits until the peer replies or leaves.

        Raises ``TypeError`` (before sending) if ``data`` or ``metadata`` cannot be encoded;
        :class:`RequestError` if the peer replied with an error (``.remote_message``), e.g.
        ``"request handler unavailable"``; :class:`PeerTimeoutError` on timeout;
        :class:`PeerUnavailableError` if ``target`` is not an active peer or leaves before
        replying; :class:`RoomClosedError` if the room is (being) left; :class:`UsageError`
        if ``target`` is not a string or too many requests are outstanding. Cancelling the
        caller forgets the request; a late reply is dropped.
        """
        kind, payload = wire.encode_payload(data)
        if metadata is not None:
            wire.encode_metadata(metadata)  # TypeError now, before anything is sent
        return await self._request(kind, payload, metadata, target, timeout, on_progress)

    async def _request(
        self,
        kind: wire.PayloadKind,
        payload: bytes,
        metadata: object,
        target: str,
        timeout: float | None,
        on_progress: Callable[..., Any] | None,
    ) -> Any:
        if not isinstance(target, str):
            raise UsageError("request target must be one peer id (a str)")
        self._room._active_member(target)
        request_id, future = self._manager._register(target)
        try:
            envelope: dict[str, object] = {"r": request_id}
            if metadata is not None:
                envelope["m"] = metadata
            nonce = self._nonce
            self._nonce = wire.next_nonce(nonce)
            await self._room._send_encoded(
                self._type_field,
                nonce,
                kind,
                payload,
                wire.encode_metadata(envelope),
                metadata,
                on_progress,
                target,
            )
            if timeout is None:
                return await future
            try:
                async with asyncio.timeout(timeout) as scope:
                    return await future
            except TimeoutError:
                if scope.expired():
                    raise PeerTimeoutError(
                        f"{target} did not answer a {self.name!r} request in {timeout:g} s"
                    ) from None
                raise
        except asyncio.CancelledError:
            if not future.done():
                logger.debug("%r: request %s to %s cancelled", self._room, request_id, target)
            raise
        finally:
            self._manager._forget(request_id)

    def request_many(
        self,
        data: object,
        targets: Iterable[str] | None = None,
        *,
        metadata: object = None,
        timeout: float | None = DEFAULT_REQUEST_TIMEOUT,
        on_progress: Callable[..., Any] | None = None,
    ) -> RequestMany:
        """Send ``data`` to several peers at once: ``async for peer_id, outcome in
        action.request_many(data):``.

        ``targets=None`` means every active peer at the time of the call. Yields one
        ``(peer_id, outcome)`` per distinct target in arrival order; ``outcome`` is the
        reply, or the :class:`RequestError`, :class:`PeerTimeoutError` or
        :class:`PeerUnavailableError` instance for that peer. Arguments are as for
        :meth:`request`; ``TypeError`` for unencodable data and :class:`RoomClosedError` are
        raised by this call. If the room is left while iterating, the iteration raises
        :class:`RoomClosedError` (and :class:`UsageError` if too many requests are
        outstanding). Breaking out of the loop (or ``aclose()``) cancels the
        requests still waiting.
        """
        kind, payload = wire.encode_payload(data)
        if metadata is not None:
            wire.encode_metadata(metadata)
        if self._room.closed:
            raise RoomClosedError(f"{self._room!r} has been left")
        if targets is None:
            ids = list(self._room.get_peers())
        else:
            if isinstance(targets, str):
                raise UsageError("request_many targets must be a list of peer ids, not a str")
            ids = list(dict.fromkeys(targets))

        async def one(peer_id: str) -> tuple[str, object]:
            try:
                value = await self._request(kind, payload, metadata, peer_id, timeout, on_progress)
            except (PeerError, UsageError) as exc:
                return peer_id, exc
            return peer_id, value

        # Owned by the iterator, not the room: leaving the room fails them with
        # RoomClosedError (raised by the iteration) instead of cancelling them.
        return RequestMany([asyncio.ensure_future(one(pid)) for pid in ids])

    def _deliver(self, event: wire.MessageReceived) -> bool:
        parsed = _request_metadata(event.metadata)
        if parsed is None:
            self._room.counters.malformed_requests += 1
            self._room._malformed(
                event.peer_id, "request", f"no request metadata on action {self.name!r}"
            )
            return True
        request_id, user_metadata = parsed
        self._manager.incoming(
            self, event.peer_id, request_id, event.data, user_metadata, event.size
        )
        return True

    def _refuse(self, peer_id: str, metadata: object) -> None:
        """A request from ``peer_id`` was dropped for a limit before it was complete: answer
        it with :data:`TOO_MANY_REQUESTS` if its metadata (its request id) is known."""
        parsed = _request_metadata(metadata)
        if parsed is not None:
            self._manager.refuse(peer_id, parsed[0])

    def _progress(self, fraction: float, peer_id: str, metadata: object) -> None:
        parsed = _request_metadata(metadata)
        user_metadata = parsed[1] if parsed is not None else metadata
        for cb in self._on_progress:
            self._room._invoke(cb, fraction, peer_id, user_metadata)


class RequestMany:
    """The async iterator returned by :meth:`RequestAction.request_many`.

    Yields ``(peer_id, outcome)`` as replies arrive. :meth:`aclose`, leaving an ``async
    with`` block, or dropping the iterator cancels the requests still waiting.
    """

    def __init__(self, tasks: list[asyncio.Task[tuple[str, object]]]) -> None:
        self._tasks = tasks
        self._pending: set[asyncio.Future[tuple[str, object]]] = set(tasks)
        self._ready: list[tuple[str, object]] = []

    def __aiter__(self) -> AsyncIterator[tuple[str, object]]:
        return self

    async def __anext__(self) -> tuple[str, object]:
        while not self._ready:
            if not self._pending:
                raise StopAsyncIteration
            done, self._pending = await asyncio.wait(
                self._pending, return_when=asyncio.FIRST_COMPLETED
            )
            # Keep arrival order among tasks finishing in the same loop iteration stable.
            for task in self._tasks:
                if task in done:
                    self._ready.append(task.result())
        peer_id, outcome = self._ready.pop(0)
        if isinstance(outcome, UsageError):  # RoomClosedError included
            self.cancel()
            raise outcome
        return peer_id, outcome

    def cancel(self) -> None:
        """Cancel the requests still waiting for a reply."""
        for task in self._pending:
            task.cancel()
        self._pending = set()
        self._ready.clear()

    async def aclose(self) -> None:
        """Cancel the requests still waiting for a reply."""
        self.cancel()

    async def __aenter__(self) -> RequestMany:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cancel()

    def __del__(self) -> None:
        for task in self._pending:
            task.cancel()
