"""Processing decisions on hand-built master data: validation, credit, allocation, planning.

Pure: no database, no network; the shipped rule files supply the policy."""

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from orderflow.domain.allocation import Reservation, allocate, priority
from orderflow.domain.credit import CreditAccount, decide
from orderflow.domain.planning import (
    CarrierService,
    choose_service,
    next_service,
    plan_shipments,
    promise_days,
    rate,
    screening_hold,
)
from orderflow.domain.reference import (
    Contract,
    Customer,
    Item,
    LineView,
    OrderView,
    PriorOrder,
    ReferenceData,
    ShipTo,
)
from orderflow.domain.validation import resolve_item, signature, validate
from orderflow.rules import load

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)  # a Friday
TODAY = NOW.date()
BOOK = load(at=NOW)
D = Decimal


def line(n=1, qty="2", uom="EA", price="9.00", **kw) -> LineView:
    return LineView(n, D(qty), uom, None if price is None else D(price), **kw)


def order(*lines, oid="O-1", customer="C1", ship_to="ST1", po="PO-1", received=NOW, **kw):
    return OrderView(
        order_id=oid,
        status="RECEIVED",
        channel="edi",
        customer_id=customer,
        ship_to_id=ship_to,
        po_number=po,
        po_date=TODAY,
        received_at=received,
        requested_ship_date=kw.pop("requested_ship_date", None),
        requested_delivery_date=None,
        currency="USD",
        lines=lines or (line(item_id="I1"),),
        **kw,
    )


# --- validation ---------------------------------------------------------------------------


def ref() -> ReferenceData:
    return ReferenceData(
        customers={
            "C1": Customer("C1", "Acme"),
            "C0": Customer("C0", "Gone Inc", active=False),
        },
        ship_tos={
            "ST1": ShipTo("ST1", "C1", "Acme", "1 Main St", "Fresno", "CA", "93650", "US"),
            "ST2": ShipTo("ST2", "C1", "Annex", "2 Main St", "Fresno", "CA", None, "US"),
        },
        items={
            "I1": Item("I1", "EA", D("10.00"), upc="012345678905", vendor_part="VP-100"),
            "I2": Item("I2", "EA", D("20.00")),
            "I4": Item("I4", "EA", D("5.00")),
        },
        xref={("C1", "CP-1"): "I1"},
        contracts={
            ("C1", "I1"): [
                Contract("K1", "C1", "I1", D("9.00"), "EA", date(2026, 1, 1), None, None)
            ],
            ("C1", "I2"): [
                Contract(
                    "K2", "C1", "I2", D("18.00"), "EA", date(2025, 1, 1), date(2026, 6, 30), None
                )
            ],
        },
    )


def check(o: OrderView, r: ReferenceData | None = None):
    return validate([o], r or ref(), BOOK.validation, BOOK.pricing)[0]


def cats(result) -> list[str]:
    return [h.category for h in result.holds]


def test_clean_order_passes_with_item_and_contract_price():
    v = check(order(line(customer_part_number="CP-1", price="9.00")))
    assert v.ok, v.holds
    ln = v.order.lines[0]
    assert (ln.item_id, ln.contract_id, ln.contract_price) == ("I1", "K1", D("9.00"))
    assert v.order.amount() == D("18.00")


@pytest.mark.parametrize(("customer", "why"), [("C9", "is not on file"), ("C0", "is not active")])
def test_unknown_or_inactive_customer(customer, why):
    v = check(order(customer=customer))
    assert cats(v) == ["unknown_customer"]
    assert f"customer {customer} {why}" in v.holds[0].reason


def test_ship_to_not_on_file_vs_incomplete_address():
    missing = check(order(ship_to="ST9"))
    incomplete = check(order(ship_to="ST2"))
    assert cats(missing) == cats(incomplete) == ["ship_to_incomplete"]
    assert "ship-to ST9 is not on file for customer C1" in missing.holds[0].reason
    assert "ship-to ST2 has no postal code" in incomplete.holds[0].reason
    assert incomplete.holds[0].details["missing"] == ["postal code"]


@pytest.mark.parametrize(
    ("kw", "item", "how"),
    [
        ({"customer_part_number": "CP-1"}, "I1", "customer part CP-1"),
        ({"product_ids": (("BP", "CP-1"),)}, "I1", "customer part CP-1"),
        ({"product_ids": (("VP", "vp-100"),)}, "I1", "VP vp-100"),
        ({"product_ids": (("UP", "012345678905"),)}, "I1", "UP 012345678905"),
        ({"product_ids": (("EN", "0012345678905"),)}, "I1", "EN 0012345678905"),
        ({"product_ids": (("VN", "I2"),)}, "I2", "VN I2"),
        ({"item_id": "I2"}, "I2", "item id"),
    ],
)
def test_item_resolution(kw, item, how):
    ln = line(**kw)
    assert resolve_item(order(ln), ln, ref()) == (item, how)


def test_unknown_item_names_what_was_tried():
    ln = line(customer_part_number="CP-9", product_ids=(("UP", "999999999999"),))
    assert resolve_item(order(ln), ln, ref()) == (None, "customer part CP-9, UP 999999999999")
    v = check(order(ln))
    assert cats(v) == ["unknown_item"]
    assert "no item matches customer part CP-9, UP 999999999999" in v.holds[0].reason
    assert v.holds[0].line_no == 1


def test_item_with_open_dq_failure_holds_naming_the_item():
    r = ref()
    r.dq_failures[("item", "I1")] = "weight missing"
    v = check(order(line(item_id="I1")), r)
    assert cats(v) == ["master_data_quality"]
    assert v.holds[0].details == {"entity_type": "item", "entity_id": "I1"}
    assert "item I1 failed master-data checks (weight missing)" in v.holds[0].reason


@pytest.mark.parametrize(
    ("price", "holds"),
    [("9.09", []), ("8.91", []), ("9.10", ["pricing_mismatch"]), ("8.90", ["pricing_mismatch"])],
)
def test_contract_price_tolerance(price, holds):
    v = check(order(line(item_id="I1", price=price)))
    assert cats(v) == holds
    if holds:
        d = v.holds[0].details
        assert (d["reference_price"], d["contract_id"], d["tolerance_pct"]) == ("9.00", "K1", "1.0")


def test_expired_contract_is_distinct_from_pricing_mismatch():
    expired = check(order(line(item_id="I2", price="18.00")))
    assert cats(expired) == ["expired_contract"]
    d = expired.holds[0].details
    assert (d["contract_id"], d["contract_expires_on"], d["reference_price"]) == (
        "K2",
        "2026-06-30",
        "20.00",
    )
    no_contract = check(order(line(item_id="I4", price="4.00")))
    assert cats(no_contract) == ["pricing_mismatch"]
    assert no_contract.holds[0].details["contract_id"] is None


@pytest.mark.parametrize(("item", "price"), [("I4", "5.00"), ("I2", "20.00")])
def test_list_priced_line_at_exact_list_price_passes(item, price):
    v = check(order(line(item_id=item, price=price)))
    assert v.ok, v.holds
    assert (v.order.lines[0].contract_id, v.order.lines[0].contract_price) == (None, D(price))


@pytest.mark.parametrize("uom", ["CS", "XX"])
def test_uom_mismatch(uom):
    v = check(order(line(item_id="I1", uom=uom)))
    assert cats(v) == ["uom_invalid"]
    assert v.holds[0].details == {"uom": uom, "item_uom": "EA"}


def test_same_customer_and_po_as_prior_order_is_duplicate():
    r = ref()
    r.prior_orders = [PriorOrder("O-0", "C1", "PO-1", "ST1", NOW - timedelta(days=30), ())]
    v = check(order(), r)
    assert cats(v) == ["duplicate_suspect"]
    assert v.holds[0].details == {"duplicate_of": "O-0", "match": "po_number"}


def test_same_po_of_another_customer_is_not_duplicate():
    r = ref()
    r.prior_orders = [PriorOrder("O-0", "C2", "PO-1", "ST1", NOW, ())]
    assert check(order(), r).ok


THREE = (
    line(1, item_id="I1", price="9.00"),
    line(2, item_id="I4", price="5.00"),
    line(3, qty="10", item_id="I2", price="20.00"),
)


@pytest.mark.parametrize(("hours_ago", "holds"), [(47, ["duplicate_suspect"]), (49, [])])
def test_near_identical_lines_within_window(hours_ago, holds):
    r = ref()
    prior = order(*THREE, oid="O-0", po="PO-0")
    r.prior_orders = [
        PriorOrder("O-0", "C1", "PO-0", "ST1", NOW - timedelta(hours=hours_ago), signature(prior))
    ]
    v = check(order(*THREE), r)
    assert cats(v) == holds
    if holds:
        assert v.holds[0].details == {"duplicate_of": "O-0", "match": "identical_lines"}


def test_near_identical_needs_min_lines_and_same_ship_to():
    r = ref()
    two = order(*THREE[:2], oid="O-0", po="PO-0")
    r.prior_orders = [
        PriorOrder("O-0", "C1", "PO-0", "ST1", NOW, signature(two)),
        PriorOrder("O-00", "C1", "PO-00", "ST2", NOW, signature(order(*THREE))),
    ]
    assert check(order(*THREE[:2]), r).ok
    assert check(order(*THREE), r).ok


def test_second_order_with_same_po_in_partition_is_duplicate():
    first, second = validate(
        [order(oid="O-1"), order(oid="O-2")], ref(), BOOK.validation, BOOK.pricing
    )
    assert first.ok
    assert cats(second) == ["duplicate_suspect"]
    assert second.holds[0].details["duplicate_of"] == "O-1"


# --- credit -------------------------------------------------------------------------------

CUSTOMERS = {
    "C1": Customer("C1", "Acme"),
    "C2": Customer("C2", "Big", tier="platinum"),
    "C3": Customer("C3", "Subs OK", accepts_substitutes=True),
    "C4": Customer("C4", "Complete", ship_complete=True),
}
ACCOUNTS = {c: CreditAccount(c, D("1000"), D("200"), False) for c in ("C1", "C2")}


def priced(total: str, oid="O-1", customer="C1", **kw) -> OrderView:
    return order(line(qty="1", price=total, item_id="I1"), oid=oid, customer=customer, **kw)


def credit(orders, accounts=ACCOUNTS, open_orders=None, service=None):
    return decide(orders, CUSTOMERS, accounts, open_orders or {}, service or {}, BOOK.credit)


def test_account_on_hold_is_credit_hold():
    accounts = {"C1": CreditAccount("C1", D("1000"), D("0"), True, "90 days past due")}
    (d,) = credit([priced("10")], accounts)
    assert not d.approved
    assert d.hold.category == "credit_hold"
    assert d.hold.details["hold_reason"] == "90 days past due"


def test_exposure_over_limit_is_credit_limit_with_numbers():
    (d,) = credit([priced("600.00")], open_orders={"C1": D("300")})
    assert not d.approved
    assert (d.exposure_after, d.limit) == (D("1100"), D("1000"))
    assert d.hold.category == "credit_limit"
    assert d.hold.details == {
        "exposure_after": "1100.00",
        "limit": "1000.0",
        "open_ar": "200",
        "order_amount": "600.00",
    }
    assert "exposure would be 1100.00 against a limit of 1000.00" in d.hold.reason


def test_exposure_exactly_at_limit_passes():
    (d,) = credit([priced("500.00")], open_orders={"C1": D("300")})
    assert d.approved and d.hold is None


def test_platinum_multiplier_lets_through_what_standard_fails():
    standard, platinum = credit([priced("850", "O-1", "C1"), priced("850", "O-2", "C2")])
    assert not standard.approved and standard.hold.category == "credit_limit"
    assert platinum.approved
    assert platinum.limit == D("1100")


def test_approved_orders_accumulate_exposure():
    first, second = credit([priced("500", "O-1"), priced("500", "O-2")])
    assert first.approved and first.exposure_after == D("700")
    assert not second.approved
    assert second.exposure_after == D("1200")
    assert second.hold.category == "credit_limit"


@pytest.mark.parametrize(
    ("answer", "category"), [("decline", "credit_hold"), ("refer", "credit_limit")]
)
def test_credit_service_answer(answer, category):
    (d,) = credit([priced("10")], service={"C1": {"decision": answer, "reason": "watch list"}})
    assert not d.approved
    assert d.hold.category == category


def test_service_approve_within_limit_passes():
    (d,) = credit([priced("10")], service={"C1": {"decision": "approve"}})
    assert d.approved


def test_prepaid_terms_are_credit_hold():
    (d,) = credit([priced("10", payment_terms="CIA")])
    assert d.hold.category == "credit_hold"
    assert d.hold.details == {"terms": "CIA"}


def test_no_credit_account_is_credit_hold():
    (d,) = credit([priced("10", customer="C3")])
    assert not d.approved
    assert d.hold.category == "credit_hold"
    assert "has no credit account" in d.hold.reason


# --- allocation ---------------------------------------------------------------------------

ITEMS = {
    "A": Item("A", "EA", D("10"), substitutes=("S",)),
    "B": Item("B", "EA", D("10")),
    "S": Item("S", "EA", D("12")),
    "X": Item("X", "EA", D("10"), discontinued=True, substitutes=("S",)),
}
W, E = "DC-WEST", "DC-EAST"


def stock(**by_key) -> dict[tuple[str, str], Decimal]:
    """stock(A_W=3, A_E=5) -> {(A, DC-WEST): 3, (A, DC-EAST): 5}"""
    return {(k[:-2], W if k.endswith("_W") else E): D(v) for k, v in by_key.items()}


def item_line(n, item, qty) -> LineView:
    return line(n, qty=str(qty), price="10", item_id=item)


def alloc(orders, available, region="CA"):
    return allocate(
        orders,
        CUSTOMERS,
        ITEMS,
        {o.order_id: region for o in orders},
        available,
        BOOK.sourcing,
        BOOK.substitution,
        TODAY,
    )


@pytest.mark.parametrize(("region", "dc"), [("CA", W), ("NY", E), (None, E)])
def test_single_dc_fill_from_preferred_dc(region, dc):
    available = stock(A_W=10, A_E=10)
    (a,) = alloc([order(item_line(1, "A", 5))], available, region)
    assert a.hold is None
    assert a.reservations == [Reservation(1, "A", dc, D("5"))]
    assert available[("A", dc)] == D("5")


def test_other_dc_when_preferred_cannot_fill_everything():
    available = stock(A_W=2, A_E=10)
    (a,) = alloc([order(item_line(1, "A", 5))], available)
    assert a.reservations == [Reservation(1, "A", E, D("5"))]
    assert available == stock(A_W=2, A_E=5)


def test_split_across_dcs_when_neither_fills_alone():
    available = stock(A_W=3, A_E=3)
    (a,) = alloc([order(item_line(1, "A", 5))], available)
    assert a.hold is None
    assert a.reservations == [Reservation(1, "A", W, D("3")), Reservation(1, "A", E, D("2"))]
    assert a.dcs == [E, W]
    assert available == stock(A_W=0, A_E=1)
    assert all(v >= 0 for v in available.values())


def test_split_refused_when_rules_allow_one_dc():
    sourcing = BOOK.sourcing.model_copy(update={"max_split_dcs": 1})
    available = stock(A_W=3, A_E=3)
    (a,) = allocate(
        [order(item_line(1, "A", 5))],
        CUSTOMERS,
        ITEMS,
        {"O-1": "CA"},
        available,
        sourcing,
        BOOK.substitution,
        TODAY,
    )
    assert a.hold.category == "short_stock"
    assert a.reservations == []
    assert available == stock(A_W=3, A_E=3)


def test_substitute_with_consent_is_reserved():
    available = stock(A_W=0, S_W=10)
    (a,) = alloc([order(item_line(1, "A", 5), customer="C3")], available)
    assert a.hold is None
    assert a.substitutions == [{"line_no": 1, "item_id": "A", "substitute_item_id": "S"}]
    assert a.reservations == [Reservation(1, "S", W, D("5"), is_substitute=True)]
    assert available[("S", W)] == D("5")


def test_substitute_without_consent_holds_and_consumes_nothing():
    available = stock(A_W=0, S_W=10, B_W=10)
    (a,) = alloc([order(item_line(1, "B", 2), item_line(2, "A", 5))], available)
    assert a.hold.category == "substitution_needed"
    assert "line 2: A → S" in a.hold.reason
    assert a.reservations == []
    assert available == stock(A_W=0, S_W=10, B_W=10)


def test_short_line_back_orders_and_other_lines_reserve():
    available = stock(A_W=10, B_W=0)
    (a,) = alloc([order(item_line(1, "A", 5), item_line(2, "B", 5))], available)
    assert a.hold is None
    assert a.reservations == [Reservation(1, "A", W, D("5"))]
    assert a.backorders == [
        {"line_no": 2, "item_id": "B", "quantity": "5", "available": "0", "discontinued": False}
    ]
    assert available == stock(A_W=5, B_W=0)


def test_ship_complete_customer_short_line_holds_short_stock():
    available = stock(A_W=10, B_W=0)
    (a,) = alloc([order(item_line(1, "A", 5), item_line(2, "B", 5), customer="C4")], available)
    assert a.hold.category == "short_stock"
    assert "ships complete only" in a.hold.reason
    assert (a.reservations, a.backorders) == ([], [])
    assert available == stock(A_W=10, B_W=0)


def test_all_lines_short_holds_short_stock():
    available = stock(B_W=1, B_E=1)
    (a,) = alloc([order(item_line(1, "B", 5))], available)
    assert a.hold.category == "short_stock"
    assert "has nothing else to ship" in a.hold.reason
    assert a.hold.details["short"][0]["available"] == "2"


def test_discontinued_item_ships_its_substitute():
    available = stock(X_W=10, S_W=10)
    (a,) = alloc([order(item_line(1, "X", 4), customer="C3")], available)
    assert a.substitutions == [{"line_no": 1, "item_id": "X", "substitute_item_id": "S"}]
    assert a.reservations == [Reservation(1, "S", W, D("4"), is_substitute=True)]
    assert available == stock(X_W=10, S_W=6)


def test_platinum_order_wins_short_stock_even_when_later():
    early_standard = order(item_line(1, "B", 5), oid="O-STD", received=NOW - timedelta(hours=1))
    late_platinum = order(item_line(1, "B", 5), oid="O-PLAT", customer="C2")
    available = stock(B_W=5, B_E=0)
    out = {a.order_id: a for a in alloc([early_standard, late_platinum], available)}
    assert out["O-PLAT"].reservations == [Reservation(1, "B", W, D("5"))]
    assert out["O-STD"].hold.category == "short_stock"
    assert out["O-PLAT"].priority > out["O-STD"].priority
    assert available[("B", W)] == D("0")


def test_priority_score_adds_tier_urgency_and_margin():
    items = {"B": Item("B", "EA", D("10"), unit_cost=D("6"))}
    o = order(item_line(1, "B", 500), requested_ship_date=TODAY)  # margin 4 * 500 = 2000
    assert priority(o, CUSTOMERS["C2"], items, TODAY, BOOK.sourcing) == pytest.approx(40 + 20 + 2)


def test_same_item_on_two_lines_is_split_not_over_reserved():
    available = stock(A_W=4, A_E=4)
    (a,) = alloc([order(item_line(1, "A", 3), item_line(2, "A", 3))], available)
    assert a.hold is None
    assert sum(r.quantity for r in a.reservations) == D("6")
    assert a.reservations == [
        Reservation(1, "A", W, D("3")),
        Reservation(2, "A", W, D("1")),
        Reservation(2, "A", E, D("2")),
    ]
    assert available == stock(A_W=0, A_E=2)


def test_same_item_on_two_lines_beyond_stock_reserves_nothing():
    available = stock(B_W=4)
    (a,) = alloc([order(item_line(1, "B", 3), item_line(2, "B", 3))], available)
    assert a.hold.category == "short_stock"
    assert a.reservations == []
    assert available == stock(B_W=4)


# --- planning -----------------------------------------------------------------------------

GROUND = CarrierService("UPS", "GND", "parcel", 4, D("68"), False, D("8.00"), D("0.50"))
TWO_DAY = CarrierService("FDX", "2DAY", "parcel", 2, D("68"), True, D("15.00"), D("1.00"))
FREIGHT = CarrierService("ODFL", "LTL", "ltl", 5, None, True, D("120.00"), D("0.20"))
SERVICES = (GROUND, TWO_DAY, FREIGHT)
CARRIER = BOOK.carrier


def choose(weight, hazmat=False, promise=5, customer="C1", rules=CARRIER, zone=2):
    return choose_service(SERVICES, D(weight), hazmat, zone, promise, customer, rules)


def test_rate_applies_zone_surcharge():
    assert rate(GROUND, D("10"), 2, CARRIER) == D("13.80")  # 8 + 0.5 * 10 * 1.16


@pytest.mark.parametrize(("weight", "service"), [("10", GROUND), ("68", GROUND), ("100", FREIGHT)])
def test_parcel_vs_ltl_by_weight(weight, service):
    assert choose(weight)[0] == service


def test_hazmat_excludes_non_hazmat_services():
    s, r, met = choose("10", hazmat=True)
    assert (s, r, met) == (TWO_DAY, D("26.60"), True)


def test_cheapest_in_time_service_is_chosen():
    assert choose("10", promise=5) == (GROUND, D("13.80"), True)
    assert choose("10", promise=3) == (TWO_DAY, D("26.60"), True)


def test_far_zone_adds_a_transit_day():
    assert choose("10", promise=4, zone=6)[0] == TWO_DAY
    assert choose("10", promise=4, zone=5)[0] == GROUND


def test_no_service_in_time_picks_fastest_and_says_so():
    s, _, met = choose("10", promise=1)
    assert (s, met) == (TWO_DAY, False)


def test_routing_guide_restricts_carriers():
    rules = CARRIER.model_copy(update={"routing_guides": {"C1": ("FDX",)}})
    assert choose("10", rules=rules)[0] == TWO_DAY
    assert choose("10", customer="C2", rules=rules)[0] == GROUND  # no guide of its own


def test_a_refused_tender_replans_with_the_next_best_service():
    refused = {("UPS", "GND")}
    assert next_service(SERVICES, refused, D("10"), False, 2, 5, "C1", CARRIER) == (
        TWO_DAY,
        D("26.60"),
        True,
    )
    # the routing guide still applies: nothing of the customer's carriers left
    rules = CARRIER.model_copy(update={"routing_guides": {"C1": ("UPS",)}})
    assert next_service(SERVICES, refused, D("10"), False, 2, 5, "C1", rules) is None
    # every permitted service refused: nothing left
    everything = {(s.carrier_id, s.service_code) for s in SERVICES}
    assert next_service(SERVICES, everything, D("10"), False, 2, 5, "C1", CARRIER) is None


def test_promise_days_of_a_replanned_shipment():
    assert promise_days(date(2026, 12, 7), date(2026, 12, 10), CARRIER) == 3
    assert promise_days(date(2026, 12, 7), None, CARRIER) == CARRIER.default_promise_days


PLAN_ITEMS = {
    "A": Item("A", "EA", D("10"), weight_kg=D("2.5")),
    "H": Item("H", "EA", D("10"), weight_kg=D("1"), hazmat=True),
}


def plan(lines_by_dc, services=SERVICES, delivery=None):
    return plan_shipments(
        "O-1", "C1", lines_by_dc, PLAN_ITEMS, "Z2", None, delivery, TODAY, services, CARRIER
    )


def test_plan_one_shipment_per_dc():
    p = plan({W: [("A", D("4"))], E: [("A", D("40"))]})
    assert p.hold is None
    east, west = p.shipments
    assert (east.dc_id, east.weight_kg, east.mode, east.service_code) == (
        E,
        D("100.000"),
        "ltl",
        "LTL",
    )
    assert (west.dc_id, west.weight_kg, west.carrier_id, west.rate) == (
        W,
        D("10.000"),
        "UPS",
        D("13.80"),
    )
    assert west.ship_date == TODAY and west.promise_met


def test_no_eligible_service_holds_no_carrier_service():
    p = plan({W: [("H", D("2"))]}, services=(GROUND,))
    assert p.shipments == []
    assert p.hold.category == "no_carrier_service"
    assert p.hold.details == {"dc_id": W, "weight_kg": "2.000", "hazmat": True}


def test_promise_counts_business_days():
    p = plan({W: [("A", D("4"))]}, services=(TWO_DAY,), delivery=date(2026, 11, 30))
    assert p.shipments[0].promise_met is False


def test_screening_hold_on_review_only():
    hold = screening_hold("ship-to ST1", {"status": "review", "hits": [{"name": "ACME TRADING"}]})
    assert hold.category == "compliance_review"
    assert "ship-to ST1 matches the restricted-party list (ACME TRADING)" in hold.reason
    assert screening_hold("ship-to ST1", {"status": "clear", "hits": []}) is None


def test_a_late_plan_records_the_expedited_freight_it_costs():
    # Delivery promised for Wednesday 2 Dec. Planned on the day it arrived (Mon 23 Nov)
    # ground (4 days) makes it; planned today (Fri 27 Nov, after a hold) only two-day does.
    lines = {W: [("A", D("4"))]}
    args = ("O-1", "C1", lines, PLAN_ITEMS, "Z2", None, date(2026, 12, 2), TODAY, SERVICES)
    late = plan_shipments(*args, CARRIER, arrived=date(2026, 11, 23))
    (s,) = late.shipments
    assert (s.service_code, s.baseline_service) == ("2DAY", "UPS/GND")
    assert s.expedite_cost == s.rate - rate(GROUND, D("10"), 2, CARRIER) > 0
    on_time = plan_shipments(*args, CARRIER, arrived=TODAY)
    assert on_time.shipments[0].expedite_cost == 0
    assert on_time.shipments[0].baseline_service is None
