import itertools

import pytest

from orderflow.domain.lifecycle import (
    ALLOWED,
    TERMINAL,
    IllegalTransition,
    OrderStatus,
    transition,
)


def test_happy_path_is_allowed_in_order():
    path = [
        "RECEIVED",
        "VALIDATED",
        "CREDIT_OK",
        "ALLOCATED",
        "READY",
        "RELEASED",
        "PICKED",
        "SHIPPED",
        "DELIVERED",
        "INVOICED",
        "CLOSED",
    ]
    for cur, nxt in itertools.pairwise(path):
        t = transition("O-1", cur, nxt, actor_type="system", actor_id="test")
        assert (t.from_status, t.to_status) == (OrderStatus(cur), OrderStatus(nxt))


def test_backwards_move_is_refused_with_what_is_allowed():
    with pytest.raises(
        IllegalTransition, match=r"order O-9: cannot move SHIPPED → RELEASED.*DELIVERED"
    ):
        transition("O-9", "SHIPPED", "RELEASED", actor_type="system", actor_id="test")


def test_hold_returns_only_to_pre_release_stages():
    assert OrderStatus.RELEASED not in ALLOWED[OrderStatus.ON_HOLD]
    transition("O-2", "ON_HOLD", "CREDIT_OK", actor_type="user", actor_id="jane")


def test_terminal_states_allow_nothing_and_every_other_can_cancel():
    for status in OrderStatus:
        if status in TERMINAL:
            assert ALLOWED[status] == frozenset()
        else:
            assert OrderStatus.CANCELLED in ALLOWED[status]


def test_transition_records_rule_version_and_reasons():
    t = transition(
        "O-3",
        "RECEIVED",
        "ON_HOLD",
        actor_type="system",
        actor_id="validate_orders",
        reason_codes=("pricing_mismatch",),
        rule_set_version="pricing@2026.11.1",
    )
    assert t.reason_codes == ("pricing_mismatch",)
    assert t.rule_set_version == "pricing@2026.11.1"
