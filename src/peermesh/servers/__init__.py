"""Embedded signalling servers peermesh can run itself (also used by the ``peermesh`` CLI).

- :func:`serve_tracker` -- a WebTorrent (WebSocket) tracker for Trystero's torrent strategy
  and bittorrent-tracker clients; see :mod:`peermesh.servers.tracker`.
"""

from __future__ import annotations

from peermesh.servers.tracker import TrackerServer, TrackerStats, serve_tracker

__all__ = ["TrackerServer", "TrackerStats", "serve_tracker"]
