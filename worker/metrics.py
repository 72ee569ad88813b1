"""Prometheus counters of the worker (exported by whichever process serves ``/metrics``).

| metric                             | labels             | counts                              |
|------------------------------------|--------------------|-------------------------------------|
| ``fapiao_token_refreshes_total``   | tenant             | tokens fetched (getAppToken+login)  |
| ``fapiao_cloud_calls_total``       | interface, outcome | calls to Kingdee by outcome class   |
| ``fapiao_rate_limited_total``      | tenant             | calls that waited for the rate limit|
| ``fapiao_stuck_documents_total``   | status             | age alerts raised by the sweeper    |
| ``fapiao_erp_notifications_total`` | result             | webhook delivered / retry / parked  |
| ``fapiao_tenant_pauses_total``     | tenant             | tenants paused for config/auth      |

Counters are created once per process on first use, in the default registry.
"""

from __future__ import annotations

from functools import cache

from prometheus_client import Counter

__all__ = [
    "cloud_calls",
    "erp_notifications",
    "rate_limited",
    "stuck_documents",
    "tenant_pauses",
    "token_refreshes",
]


@cache
def token_refreshes() -> Counter:
    return Counter("fapiao_token_refreshes_total", "Access tokens fetched from Kingdee", ["tenant"])


@cache
def cloud_calls() -> Counter:
    return Counter(
        "fapiao_cloud_calls_total", "Calls to Kingdee by outcome class", ["interface", "outcome"]
    )


@cache
def rate_limited() -> Counter:
    return Counter(
        "fapiao_rate_limited_total", "Calls delayed by the per-tenant rate limit", ["tenant"]
    )


@cache
def stuck_documents() -> Counter:
    return Counter(
        "fapiao_stuck_documents_total", "Documents too long in one state (alerts)", ["status"]
    )


@cache
def erp_notifications() -> Counter:
    return Counter("fapiao_erp_notifications_total", "ERP webhook deliveries", ["result"])


@cache
def tenant_pauses() -> Counter:
    return Counter("fapiao_tenant_pauses_total", "Tenants paused by the worker", ["tenant"])
