"""Benchmarks (``make bench`` → ``python -m bench.run``): heavy scale runs live here, never in tests.

Each ``bench/<name>.py`` that defines ``run(results)`` is one benchmark; it records its figures in its own
section of ``docs/benchmarks.md`` and in ``results[<name>]``.
"""
