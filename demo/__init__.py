"""demo: ``make demo`` — fapiao-bridge end to end on one machine (``python -m demo``).

Starts Redis (or uses yours), migrates an SQLite database, starts the simulated Kingdee cloud,
the HTTP app, a Celery worker, beat and Flower (basic auth) as child processes on free
loopback ports, submits the sample set of ``demo/samples/`` (several seller tax ids, all seven
invoice types, a bill split into several invoices, one the cloud refuses with 价税合计金额不对,
one withdrawn, a token expiry and a dropped callback along the way), shows live progress until
everything settles, prints the final table by state and where to look next, and stops
everything it started.

| module | public API |
|---|---|
| ``demo.samples`` | ``load_samples(dir) -> SampleSet``, ``SampleDocument``, ``Outcome`` |
| ``demo.stack`` | ``running_stack(DemoOptions) -> ContextManager[DemoStack]`` |
| ``demo.scenario`` | ``run_scenario(stack, samples, observer) -> DemoReport`` |
| ``demo.display`` | ``LiveDisplay``, ``PlainDisplay``, ``render_final``, ``render_where_next`` |
| ``demo.redis_source`` | ``redis_for_demo(...)``: configured Redis, redis-server, or fakeredis |
| ``demo.processes`` | ``ProcessGroup``, ``free_port``, ``wait_http``, ``wait_for_log`` |
| ``demo.__main__`` | ``main(argv) -> exit code`` (``--headless``, ``--keep-running``, …) |

Importing ``demo`` starts nothing.
"""

from __future__ import annotations

__all__: list[str] = []
