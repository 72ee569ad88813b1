"""The lifecycle table, checked against an independent hand-written copy (no database)."""

from __future__ import annotations

from collections import deque

import pytest

from store.lifecycle import (
    NO_OPS,
    TRANSITIONS,
    RevisionConflict,
    TransitionNotAllowed,
    is_allowed,
    target_of,
)
from store.states import POLLED_STATUSES, RESUBMITTABLE_STATUSES, DocumentStatus, Event

# Written by hand from the design (docs/LIFECYCLE.md) and the brief, NOT derived from
# TRANSITIONS, so a typo in either one fails the comparison.
EXPECTED: set[tuple[str, str, str]] = {
    ("draft", "claim", "pushing"),
    ("draft", "withdraw", "withdrawn"),
    ("draft", "absent", "draft"),
    ("draft", "replay", "draft"),
    ("pushing", "accepted", "pushed"),
    ("pushing", "refused", "rejected"),
    ("pushing", "unsure", "in_doubt"),
    ("pushing", "give_up", "failed"),
    ("pushing", "retry", "draft"),
    ("in_doubt", "accepted", "pushed"),
    ("in_doubt", "absent", "draft"),
    ("in_doubt", "give_up", "failed"),
    ("in_doubt", "unsure", "in_doubt"),
    ("pushed", "issued_all", "invoiced"),
    ("pushed", "issued_some", "partially_invoiced"),
    ("pushed", "issue_failed", "invoice_failed"),
    ("pushed", "withdraw", "withdrawing"),
    ("pushed", "returned", "returned"),
    ("pushed", "accepted", "pushed"),
    ("partially_invoiced", "issued_all", "invoiced"),
    ("partially_invoiced", "issued_some", "partially_invoiced"),
    ("partially_invoiced", "issue_failed", "partially_invoiced"),
    ("partially_invoiced", "accepted", "partially_invoiced"),
    ("partially_invoiced", "reversed_all", "partially_invoiced"),
    ("invoiced", "issued_all", "invoiced"),
    ("invoiced", "issued_some", "invoiced"),
    ("invoiced", "issue_failed", "invoiced"),
    ("invoiced", "accepted", "invoiced"),
    ("invoiced", "reversed_all", "reversed"),
    ("reversed", "issued_all", "reversed"),
    ("reversed", "issued_some", "reversed"),
    ("reversed", "issue_failed", "reversed"),
    ("reversed", "accepted", "reversed"),
    ("reversed", "reversed_all", "reversed"),
    ("invoice_failed", "issued_all", "invoiced"),
    ("invoice_failed", "issued_some", "partially_invoiced"),
    ("invoice_failed", "withdraw", "withdrawing"),
    ("invoice_failed", "returned", "returned"),
    ("invoice_failed", "issue_failed", "invoice_failed"),
    ("invoice_failed", "accepted", "invoice_failed"),
    ("rejected", "resubmit", "draft"),
    ("rejected", "replay", "draft"),
    ("rejected", "refused", "rejected"),
    ("failed", "replay", "draft"),
    ("failed", "resubmit", "draft"),
    ("failed", "withdraw", "withdrawing"),
    ("failed", "give_up", "failed"),
    ("withdrawing", "withdrawn_ok", "withdrawn"),
    ("withdrawing", "withdraw_refused", "pushed"),
    ("withdrawing", "issued_all", "invoiced"),
    ("withdrawing", "issued_some", "partially_invoiced"),
    ("withdrawing", "issue_failed", "invoice_failed"),
    ("withdrawing", "returned", "returned"),
    ("withdrawing", "withdraw", "withdrawing"),
    ("withdrawn", "resubmit", "draft"),
    ("withdrawn", "withdraw", "withdrawn"),
    ("withdrawn", "withdrawn_ok", "withdrawn"),
    ("returned", "resubmit", "draft"),
    ("returned", "returned", "returned"),
}

# How far along the road to an invoice a state is. Answers from the cloud never lower it.
RANK = {
    "draft": 0,
    "pushing": 1,
    "in_doubt": 1,
    "pushed": 2,
    "withdrawing": 2,
    "invoice_failed": 3,
    "partially_invoiced": 4,
    "invoiced": 5,
    "rejected": 5,
    "failed": 5,
    "withdrawn": 5,
    "returned": 5,
    "reversed": 6,  # after invoiced: voids and red-letter invoices come later
}
# Commands from people (or the ERP), which may legitimately send a document back.
COMMANDS = {"replay", "resubmit", "withdraw", "claim"}
# The only answers allowed to go back, each for a stated reason.
DELIBERATE_RETREATS = {
    ("pushing", "retry"): "the request was never sent: push again",
    ("in_doubt", "absent"): "a query proved the bill never arrived: push again",
}

ARCHITECTURE_EXITS = {
    # The design's "leaves by" column, state by state (docs/LIFECYCLE.md, States).
    "draft": {("claim", "pushing"), ("withdraw", "withdrawn")},
    "pushing": {
        ("accepted", "pushed"),
        ("refused", "rejected"),
        ("unsure", "in_doubt"),
        ("give_up", "failed"),
    },
    "in_doubt": {("accepted", "pushed"), ("absent", "draft"), ("give_up", "failed")},
    "pushed": {
        ("issued_all", "invoiced"),
        ("issued_some", "partially_invoiced"),
        ("issue_failed", "invoice_failed"),
        ("withdraw", "withdrawing"),
        ("returned", "returned"),
    },
    "partially_invoiced": {("issued_all", "invoiced")},
    "invoiced": {("reversed_all", "reversed")},
    "invoice_failed": {
        ("issued_all", "invoiced"),
        ("issued_some", "partially_invoiced"),
        ("withdraw", "withdrawing"),
        ("returned", "returned"),
    },
    "rejected": {("resubmit", "draft"), ("replay", "draft")},
    "failed": {("replay", "draft"), ("resubmit", "draft"), ("withdraw", "withdrawing")},
    "withdrawing": {("withdrawn_ok", "withdrawn")},
    "withdrawn": {("resubmit", "draft")},
    "returned": {("resubmit", "draft")},
    "reversed": set(),
}


def test_state_words_are_the_contract() -> None:
    assert [s.value for s in DocumentStatus] == [
        "draft",
        "pushing",
        "in_doubt",
        "pushed",
        "partially_invoiced",
        "invoiced",
        "invoice_failed",
        "rejected",
        "failed",
        "withdrawing",
        "withdrawn",
        "returned",
        "reversed",
    ]


def test_event_words() -> None:
    required = {
        "claim",
        "accepted",
        "refused",
        "unsure",
        "give_up",
        "retry",
        "absent",
        "issued_all",
        "issued_some",
        "issue_failed",
        "withdraw",
        "withdrawn_ok",
        "withdraw_refused",
        "returned",
        "resubmit",
        "replay",
        "reversed_all",
    }
    assert required <= {e.value for e in Event}


def test_table_matches_the_hand_written_expectation() -> None:
    actual = {(s.value, e.value, t.value) for (s, e), t in TRANSITIONS.items()}
    assert actual - EXPECTED == set(), "rows in TRANSITIONS that nobody expected"
    assert EXPECTED - actual == set(), "expected rows missing from TRANSITIONS"


def test_keys_and_values_are_enum_members() -> None:
    for (state, event), target in TRANSITIONS.items():
        assert type(state) is DocumentStatus
        assert type(event) is Event
        assert type(target) is DocumentStatus


@pytest.mark.parametrize("state", [s.value for s in DocumentStatus])
def test_every_exit_in_the_architecture_table_is_allowed(state: str) -> None:
    for event, target in ARCHITECTURE_EXITS[state]:
        assert target_of(state, event) == DocumentStatus(target), (state, event)


@pytest.mark.parametrize("state", [s.value for s in DocumentStatus])
def test_real_exits_are_exactly_the_architecture_ones_plus_documented_extras(state: str) -> None:
    extras = {
        ("pushing", "retry", "draft"),  # the brief: transient failure before sending
        ("withdrawing", "withdraw_refused", "pushed"),  # "back to what the query shows"
        ("withdrawing", "issued_all", "invoiced"),
        ("withdrawing", "issued_some", "partially_invoiced"),
        ("withdrawing", "issue_failed", "invoice_failed"),
        ("withdrawing", "returned", "returned"),
    }
    real = {(e.value, t.value) for (s, e), t in TRANSITIONS.items() if s.value == state and s != t}
    allowed = ARCHITECTURE_EXITS[state] | {(e, t) for s, e, t in extras if s == state}
    assert real == allowed


def test_no_ops_are_exactly_the_rows_that_stay() -> None:
    expected_no_ops = {(s, e) for s, e, t in EXPECTED if s == t}
    assert {(s.value, e.value) for s, e in NO_OPS} == expected_no_ops
    for must in [
        ("invoiced", "issued_all"),
        ("in_doubt", "unsure"),
        ("pushed", "accepted"),
        ("invoiced", "issued_some"),
        ("withdrawn", "withdrawn_ok"),
    ]:
        assert must in expected_no_ops


def test_invoiced_leaves_only_when_every_invoice_is_reversed() -> None:
    exits = {(e, t) for (s, e), t in TRANSITIONS.items() if s == "invoiced" and t != s}
    assert exits == {(Event.reversed_all, DocumentStatus.reversed)}


def test_reversed_is_terminal() -> None:
    assert all(t == DocumentStatus.reversed for (s, _), t in TRANSITIONS.items() if s == "reversed")
    assert (DocumentStatus.reversed, Event.issued_all) in NO_OPS  # a late INVOICE.OPEN


def test_a_reversal_while_invoices_are_owed_keeps_partially_invoiced() -> None:
    assert target_of("partially_invoiced", "reversed_all") == DocumentStatus.partially_invoiced


def test_answers_never_move_a_document_backwards() -> None:
    for (state, event), target in TRANSITIONS.items():
        if event.value in COMMANDS or (state.value, event.value) in DELIBERATE_RETREATS:
            continue
        assert RANK[target.value] >= RANK[state.value], (
            f"{state} --{event}--> {target} goes backwards"
        )


def test_the_deliberate_retreats_are_in_the_table() -> None:
    for state, event in DELIBERATE_RETREATS:
        assert RANK[TRANSITIONS[(DocumentStatus(state), Event(event))].value] < RANK[state]


def test_submit_is_never_a_transition() -> None:
    assert all(event is not Event.submit for _, event in TRANSITIONS)


def test_resubmit_exactly_from_the_dead_ends() -> None:
    from_states = {s for (s, e) in TRANSITIONS if e is Event.resubmit}
    assert from_states == set(RESUBMITTABLE_STATUSES)
    assert {s.value for s in from_states} == {"rejected", "failed", "withdrawn", "returned"}


def test_every_state_is_reachable_from_draft() -> None:
    seen = {DocumentStatus.draft}
    queue = deque([DocumentStatus.draft])
    while queue:
        state = queue.popleft()
        for (source, _), target in TRANSITIONS.items():
            if source == state and target not in seen:
                seen.add(target)
                queue.append(target)
    assert seen == set(DocumentStatus)


def test_polled_states() -> None:
    assert {s.value for s in POLLED_STATUSES} == {
        "in_doubt",
        "pushed",
        "partially_invoiced",
        "invoice_failed",
    }


@pytest.mark.parametrize("state", list(DocumentStatus))
def test_forbidden_pairs_are_reported_as_forbidden(state: DocumentStatus) -> None:
    for event in Event:
        expected = (state.value, event.value) in {(s, e) for s, e, _ in EXPECTED}
        assert is_allowed(state, event) is expected
        assert (target_of(state, event) is None) is not expected


def test_transition_not_allowed_names_state_event_and_bill() -> None:
    error = TransitionNotAllowed(DocumentStatus.invoiced, Event.withdraw, 42, "SO-2024-001")
    text = str(error)
    assert "'invoiced'" in text
    assert "'withdraw'" in text
    assert "#42" in text
    assert "SO-2024-001" in text
    assert "不允许" in text  # the Chinese half for operators


def test_revision_conflict_names_the_state_in_both_languages() -> None:
    text = str(RevisionConflict(document_id=7, bill_no="SO-9", status="pushed", revision=2))
    assert "'pushed'" in text
    assert "SO-9" in text
    assert "revision 2" in text
    assert "已存在" in text
