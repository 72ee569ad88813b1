"""producers: everything that creates work for fapiao-bridge.

| module | holds |
|---|---|
| ``producers.intake`` | ``submit()``, ``Intake``, ``SubmitResult``: validate, store, enqueue |
| ``producers.documents`` | lookups by bill number, the document view, withdraw and replay |
| ``producers.callbacks`` | the Kingdee callback receiver's storage step (dedupe, inbox) |
| ``producers.http`` | ``create_app(settings, ...)``: the FastAPI app (ERP hooks, callbacks) |
| ``producers.metrics`` | ``/metrics``: a per-app Prometheus registry fed from the database |
| ``producers.health`` | ``/healthz`` checks (database, Redis) |
| ``producers.json_schemas`` | JSON Schema of the ERP document and of the ERP notification |
| ``producers.bootstrap`` | ``Components``: the composition root of a producer process |
| ``producers.cli`` | the ``fapiao`` command line |

Importing this package builds nothing (no settings, engine, app or broker connection).
"""

from producers.intake import Intake, SubmitOutcome, SubmitResult, submit

__all__ = ["Intake", "SubmitOutcome", "SubmitResult", "submit"]
