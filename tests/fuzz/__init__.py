"""Coverage-guided fuzzing of every decoder that takes bytes from outside (issue 13).

- :mod:`.harness` runs one input through a target and checks the limits every target
  shares: at most :data:`~.harness.TIME_LIMIT` per input, memory bounded per input;
- :mod:`.targets` holds the targets, one function ``(data: bytes) -> None`` each, whose
  docstring states what it checks; it raises only when an invariant breaks;
- ``python -m tests.fuzz TARGET|all --runs N`` fuzzes with atheris (libFuzzer), from the
  seed corpora in ``tests/fuzz/corpus/<target>/`` (made by ``python -m tests.fuzz.seeds``);
- ``test_fuzz_smoke.py`` replays the seeds and a few thousand mutants of them in-process.

Only :mod:`.targets` imports peermesh, and the runner imports it under atheris'
instrumentation.
"""
