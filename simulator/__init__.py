"""A faithful, fault-injecting Kingdee Invoice Cloud (金蝶发票云) for development and tests.

Modules (each lists its public API in ``__all__``)

| module | holds |
|---|---|
| ``simulator.cli`` | ``fapiao simulator`` (Typer command ``simulator``), ``python -m simulator`` |
| ``simulator.app`` | ``create_app(tenants, config)``: the ASGI app; route table in its docstring |
| ``simulator.cloud`` | ``SimulatedCloud``: tokens, gateway, issuance, operator actions, 作废/红冲 |
| ``simulator.config`` | ``SimulatorConfig``: every knob |
| ``simulator.faults`` | ``FaultPlan``, ``FaultDice``: the fault table |
| ``simulator.bills`` | bill states, invoices (作废/红冲 bookkeeping), double-issue detection |
| ``simulator.quota`` | ``QuotaBook``: credit quota (授信额度) per tenant; ``SimClock`` (offset) |
| ``simulator.issuance`` | splitting bills into invoices, numbers, callback/query items |
| ``simulator.callbacks`` | ``CallbackSender``: POST, ACK check, retry schedule |
| ``simulator.tokens`` | ``TokenBook``: app/access tokens that really expire |
| ``simulator.persistence`` | ``StateFile``: ``--state-file`` in SQLite |
| ``simulator.documents`` | placeholder PDF / OFD / XML invoice files |
| ``simulator.tenancy`` | the tenants served, by base-URL path |
| ``simulator.stats`` | call, token and callback counters |
| ``simulator.testing`` | ``running_simulator(...)`` for other test suites |

Only ``schemas`` is imported from the project (docs/ARCHITECTURE.md, rooms). Importing this
package builds nothing.
"""

__all__: list[str] = []
