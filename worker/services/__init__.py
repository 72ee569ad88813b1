"""Services behind the thin tasks: each takes a ``Runtime`` and ids and returns outcomes
with the follow-up messages to send after its transactions committed.

| module        | entry point                         | task                          |
|---------------|-------------------------------------|-------------------------------|
| ``push``      | ``push_documents(rt, ids)``         | ``fapiao.push`` (one id),     |
|               |                                     | ``fapiao.push_batch``         |
| ``in_doubt``  | ``resolve_in_doubt(rt, id)``        | ``fapiao.resolve_in_doubt``   |
| ``poll``      | ``poll_document``, ``poll_due``     | ``fapiao.poll``, ``.poll_due``|
| ``reconcile`` | ``reconcile_callbacks(rt, inboxes)``| ``fapiao.reconcile``          |
| ``withdraw``  | ``withdraw_document(rt, id)``       | ``fapiao.withdraw``           |
| ``notify``    | ``notify_erp(rt, outbox_id)``       | ``fapiao.notify_erp``         |
| ``sweep``     | ``sweep(rt)``                       | ``fapiao.sweep``              |
| ``refresh``   | ``refresh_tokens(rt)``              | ``fapiao.refresh_tokens``     |

Shared by the services above (no task of their own):

| module         | holds                                                                  |
|----------------|------------------------------------------------------------------------|
| ``query``      | ``query_bill``: BILL.INVOICE.QUERY reduced to present / absent / …     |
| ``invoices``   | ``apply_invoices``: reported invoices → rows → verdict → a transition  |
| ``cloud_call`` | ``call_with_token``: a cloud call, its token refreshed once if refused |
| ``tenancy``    | tenant pauses: ``is_tenant_paused``, ``documents_and_pauses``,         |
|                | ``document_and_pause``, ``is_paused_from``, ``pause_tenant``           |
| ``erp_outbox`` | ``owe_notification``: the ``erp_outbox`` row a transition owes         |
|                | (``NOTIFIED`` states), sent later by ``notify``                        |
| ``milestones`` | ``observe_milestones``: submit→pushed / submit→invoiced histograms     |
| ``quota``      | the credit quota (授信额度): ``observe_biz_control`` (callbacks),      |
|                | ``quota_failure`` (授信额度不足); the hold is in ``push``             |
"""
