"""Named remote procedure calls on top of one request action, ``"peermesh.rpc"``.

Every room answers calls on the request action :data:`RPC_ACTION`: ``room.expose(fn)``
registers a function, ``await room.call(peer_id, "fn", *args, **kwargs)`` runs one on a
peer. The request payload is the JSON object ``{"f": name, "a": [args], "k": {kwargs}}``
(``a`` and ``k`` may be omitted) and the reply is the function's return value, encoded as
any action payload (``str`` as text, ``bytes`` as binary, anything else as JSON).

A failing call is answered with an error, raised by :meth:`Room.call` as
:class:`~peermesh.errors.RequestError` with the text:

- ``"no such function: <name>"`` for a name nobody exposed;
- ``"<ExceptionClass>: <message>"`` when the function raised;
- ``"malformed RPC call"`` for a payload that is not of the form above.

JavaScript interop: a Trystero peer can call exposed functions with::

    const rpc = room.makeAction('peermesh.rpc', {kind: 'request'})
    const result = await rpc.request({f: 'add', a: [1, 2], k: {}}, {target: peerId})

and failures reject with the error text above.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from ._requests import CALLER, DEFAULT_REQUEST_TIMEOUT, RequestAction
from .errors import UsageError

if TYPE_CHECKING:
    from ._room import Room

__all__ = ["RPC_ACTION", "Rpc", "caller_id"]

logger = logging.getLogger(__name__)

#: The request action that carries calls.
RPC_ACTION = "peermesh.rpc"
#: Functions one room may expose.
MAX_EXPOSED = 1024

F = TypeVar("F", bound=Callable[..., Any])


def caller_id() -> str:
    """The id of the peer whose call (or request) is being handled.

    Valid inside a function exposed with ``Room.expose`` and inside any ``on_request``
    handler, including code they await; the value is per call (a context variable), so
    concurrent calls each see their own caller. Raises :class:`UsageError` elsewhere.
    """
    try:
        return CALLER.get()
    except LookupError:
        raise UsageError("caller_id() is only available while handling a request") from None


class _CallFailed(Exception):
    """Raised inside the RPC handler; its text is the error sent back."""


class Rpc:
    """A room's function registry and its ``"peermesh.rpc"`` request action."""

    def __init__(self, room: Room) -> None:
        self._functions: dict[str, Callable[..., Any]] = {}
        self.action: RequestAction = room.make_action(RPC_ACTION, kind="request")
        self.action.on_request(self._handle)

    def expose(self, fn: F, name: str | None = None) -> F:
        """Register ``fn`` under ``name`` (default ``fn.__name__``), replacing any function
        of that name. Raises :class:`UsageError` for a non-callable ``fn``, an empty name,
        or more than :data:`MAX_EXPOSED` functions."""
        if not callable(fn):
            raise UsageError(f"cannot expose {fn!r}: it is not callable")
        key = name if name is not None else getattr(fn, "__name__", None)
        if not isinstance(key, str) or not key:
            raise UsageError("an exposed function needs a non-empty str name")
        if key not in self._functions and len(self._functions) >= MAX_EXPOSED:
            raise UsageError(f"a room can expose at most {MAX_EXPOSED} functions")
        self._functions[key] = fn
        return fn

    async def call(
        self,
        peer_id: str,
        name: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout: float | None = DEFAULT_REQUEST_TIMEOUT,
    ) -> Any:
        """Run ``name(*args, **kwargs)`` on ``peer_id``; see ``Room.call``."""
        return await self.action.request(
            {"f": name, "a": list(args), "k": kwargs}, peer_id, timeout=timeout
        )

    async def _handle(self, data: object, peer_id: str, metadata: object) -> Any:
        if not isinstance(data, dict):
            raise _CallFailed("malformed RPC call")
        name = data.get("f")
        args = data.get("a", [])
        kwargs = data.get("k", {})
        if not isinstance(name, str) or not isinstance(args, list) or not isinstance(kwargs, dict):
            raise _CallFailed("malformed RPC call")
        fn = self._functions.get(name)
        if fn is None:
            raise _CallFailed(f"no such function: {name}")
        try:
            result = fn(*args, **kwargs)
            if inspect.isawaitable(result):
                result = await result
        except Exception as exc:
            logger.debug("exposed function %r failed for %s", name, peer_id, exc_info=True)
            raise _CallFailed(f"{type(exc).__name__}: {exc}") from exc
        return result
