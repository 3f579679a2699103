"""peermesh benchmarks: ``make bench`` (or ``python -m bench --help``).

They print figures next to ratios against anchors measured in the same run (Trystero on
Node.js, pinned in ``tests/interop``); nothing asserts a wall-clock time. Results, with
every raw sample and the machine they ran on, go to ``bench/results/<date>T<time>.json``.

- :mod:`bench.peers` -- peer processes (``py_peer.py``, ``js_peer.mjs``), their protocol and
  the clock;
- :mod:`bench.scenarios` -- what is measured between two peers, and how (the definitions
  of the join, throughput, bulk and ping figures);
- :mod:`bench.groups` -- memory per connected peer, full mesh of N peers, late joiner per
  strategy, and the local signalling servers they use;
- :mod:`bench.model` -- pairs, figures and samples;
- :mod:`bench.report` -- the table, the JSON file and the machine information.
"""
