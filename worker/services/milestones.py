"""The submit→pushed and submit→invoiced histograms, observed from applied transitions.

``worker.services.erp_outbox.owe_notification`` hands every transition a service applies to
``observe_milestones``, so the latency a document's submitter sees is measured from the
columns the transition already read (no extra statement).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Final

from store.lifecycle import TransitionResult
from store.states import DocumentStatus
from worker import metrics

__all__ = ["observe_milestones"]

# A first acceptance (withdrawing → pushed after a refused withdrawal is not one).
_FIRST_PUSHED: Final = frozenset({DocumentStatus.pushing, DocumentStatus.in_doubt})


def observe_milestones(results: Sequence[TransitionResult], now: datetime) -> None:
    """Submit→pushed / submit→invoiced, once per document: only the applied transition into
    the state counts (invoiced is terminal; pushed is reached from pushing or in_doubt once).
    Observed before the caller commits: a commit that then fails leaves one stray sample."""
    for result in results:
        if not result.applied or result.created_at is None:
            continue
        if result.to_status is DocumentStatus.pushed and result.from_status in _FIRST_PUSHED:
            histogram = metrics.submit_to_pushed()
        elif result.to_status is DocumentStatus.invoiced:
            histogram = metrics.submit_to_invoiced()
        else:
            continue
        seconds = max(0.0, (now - result.created_at).total_seconds())
        histogram.labels(tenant=result.tenant).observe(seconds)
