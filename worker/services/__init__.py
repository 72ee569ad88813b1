"""Services behind the thin tasks: each takes a ``Runtime`` and an id and returns an outcome
with the follow-up messages to send after its transactions committed.

| module        | entry point                       | task                          |
|---------------|-----------------------------------|-------------------------------|
| ``push``      | ``push_document(rt, id)``         | ``fapiao.push``               |
| ``in_doubt``  | ``resolve_in_doubt(rt, id)``      | ``fapiao.resolve_in_doubt``   |
| ``poll``      | ``poll_document``, ``poll_due``   | ``fapiao.poll``, ``.poll_due``|
| ``reconcile`` | ``reconcile_callback(rt, inbox)`` | ``fapiao.reconcile``          |
| ``withdraw``  | ``withdraw_document(rt, id)``     | ``fapiao.withdraw``           |
| ``notify``    | ``notify_erp(rt, outbox_id)``     | ``fapiao.notify_erp``         |
| ``sweep``     | ``sweep(rt)``                     | ``fapiao.sweep``              |
| ``refresh``   | ``refresh_tokens(rt)``            | ``fapiao.refresh_tokens``     |
| ``query``     | ``query_bill`` (shared)           | —                             |
| ``invoices``  | ``apply_invoices`` (shared)       | —                             |
| ``common``    | ``call_with_token``, outbox, pause| —                             |
"""
