"""Benchmarks, chaos runs, fuzzing of the bridge (docs/PERFORMANCE.md, docs/RELIABILITY.md).

Every harness is a command with ``--help``, prints its figures (``--json`` for machines),
exits non-zero when an invariant breaks, and with ``--strict`` when a target is missed.
Each starts its own PostgreSQL cluster and redis-server on free loopback ports.

| ``python -m …`` | measures / proves |
|---|---|
| ``bench.throughput`` | documents/s submit → invoiced vs raw Celery no-ops vs a naive loop |
| ``bench.ingest`` | ``POST /v1/documents`` documents/s (10,000 in batches of 1,000) |
| ``bench.latency`` | p50/p99 submit → pushed under a steady rate |
| ``bench.scale`` | claim queries at 10,000 vs 1,000,000 documents, plans, worker RSS |
| ``bench.chaos`` | faults, SIGKILLed workers, Redis flush, PostgreSQL restart; invariants |
| ``bench.fuzz`` | malformed documents and callbacks: no 5xx, no change from refused input |
| ``bench.invariants`` | the reusable invariant checker (database + simulator) |
| ``bench.profile_worker`` | cProfile of a solo worker while documents are invoiced |
| ``bench.simulator_push`` | the simulator alone (BILL.PUSH calls/s) |

Support modules: ``bench.stack`` (the processes), ``bench.pgcluster`` (private PostgreSQL),
``bench.workload`` (bills, batches, /proc CPU and RSS), ``bench.naive``, ``bench.noop_app``.
"""
