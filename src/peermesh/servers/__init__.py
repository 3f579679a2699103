"""Embedded signalling servers peermesh can run itself (also used by the ``peermesh`` CLI).

- :func:`serve_tracker` -- a WebTorrent (WebSocket) tracker for Trystero's torrent strategy
  and bittorrent-tracker clients; see :mod:`peermesh.servers.tracker`.
- :func:`serve_relay` -- a ws-relay (topic pub/sub WebSocket) server for Trystero's
  ws-relay strategy and :mod:`peermesh.relay`; see :mod:`peermesh.servers.relay`.
"""

from __future__ import annotations

from peermesh.servers.relay import RelayServer, RelayStats, serve_relay
from peermesh.servers.tracker import TrackerServer, TrackerStats, serve_tracker

__all__ = [
    "RelayServer",
    "RelayStats",
    "TrackerServer",
    "TrackerStats",
    "serve_relay",
    "serve_tracker",
]
