"""#18 Rule governance on the real store: a what-if of a pricing-tolerance change shows exactly
the orders that flip and writes nothing outside its own tables; promote and rollback are for
the rule_approver role only (a refusal changes nothing but its audited row), audited, and
every decision afterwards records the hash of the version it used.

The module's store is its own (``store_url``); the tests run in file order: the what-if
first, against the shipped files; then promotion and rollback, which end where they started.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import psycopg
import pytest
import yaml
from click.testing import CliRunner

from orderflow import governance, processing, rules
from orderflow.domain.models import Address, Channel, Order, OrderLine, Provenance
from orderflow.processing import RunContext
from orderflow.settings import DAGS_DIR
from orderflow.store import db, intake

pytestmark = [pytest.mark.db]

CTX = RunContext(dag_id="test_rule_governance", run_id="manual__gov", task_id="stage")
WINDOW = (datetime(2026, 10, 5, tzinfo=UTC), datetime(2026, 10, 6, tzinfo=UTC))
CONTRACT_PRICE = Decimal("100.00")
OLD_TOL, NEW_TOL = Decimal("1.0"), Decimal("3.0")
ROLES = {
    "rita.rules": ["rule_approver"],
    "olga": ["operations_manager"],  # everything on the desk, but not rule changes
    "pat.pricing": ["pricing"],
}


@pytest.fixture(autouse=True)
def roles(tmp_path, monkeypatch):
    path = tmp_path / "roles.yaml"
    path.write_text(json.dumps({"users": ROLES}))
    monkeypatch.setenv("ORDERFLOW_ROLES_FILE", str(path))


@pytest.fixture(scope="module")
def candidate_file(tmp_path_factory):
    """pricing 2026.12.9: the default contract tolerance from 1 % to 3 %."""
    shipped = yaml.safe_load((rules.rules_dir() / "pricing" / "2026.11.1.yaml").read_text())
    assert Decimal(str(shipped["default_contract_tolerance_pct"])) == OLD_TOL
    shipped.update(version="2026.12.9", default_contract_tolerance_pct=float(NEW_TOL))
    path = tmp_path_factory.mktemp("candidates") / "pricing" / "2026.12.9.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(shipped))
    return path


# ---------------------------------------------------------------------------- seeding


@pytest.fixture(scope="module")
def seeded(store_url):
    """One customer with contracts (no tolerance of their own on ITEM-A/ITEM-B, 1 % of its
    own on ITEM-K), plenty of stock, DCs and carriers; orders in the window and outside it.
    Returns the orders in the window as {order_id: [(item, price), ...]}."""
    tag = uuid.uuid4().hex[:6].upper()
    cid = f"C-GOV-{tag}"
    items = {k: f"ITM-GOV-{tag}-{k}" for k in ("A", "B", "K", "L")}
    conn = db.connect()
    with db.transaction(conn):
        conn.execute(
            """
            INSERT INTO orderflow.distribution_center
                (dc_id, name, region, timezone, zones, postal_code, country)
            VALUES ('DC-EAST', 'East DC', 'NJ', 'America/New_York', '{Z1,Z2,Z3}', '08817', 'US'),
                   ('DC-WEST', 'West DC', 'CA', 'America/Los_Angeles', '{Z6,Z7,Z8}', '91761', 'US')
            ON CONFLICT DO NOTHING
            """
        )
        conn.execute(
            """
            INSERT INTO orderflow.carrier_service (carrier_id, service_code, mode, transit_days,
                max_weight_kg, hazmat_allowed, active, base_rate, per_kg)
            VALUES ('UPSN', 'GND', 'parcel', 3, 68, false, true, 9.50, 0.85),
                   ('ODFL', 'LTL', 'ltl', 4, 9000, true, true, 120.00, 0.22)
            ON CONFLICT DO NOTHING
            """
        )
        conn.execute(
            "INSERT INTO orderflow.customer (customer_id, name, tier, payment_terms, active, "
            "ship_complete, accepts_substitutes, dq_passed) "
            "VALUES (%s, %s, 'standard', 'NET30', true, false, false, true)",
            (cid, f"Customer {cid}"),
        )
        conn.execute(
            "INSERT INTO orderflow.ship_to (ship_to_id, customer_id, name, address_line1, city, "
            "region, postal_code, country, zone, dq_passed) "
            "VALUES (%s, %s, %s, '1 Main St', 'Albany', 'NY', '12207', 'US', 'Z3', true)",
            (f"{cid}-ST1", cid, f"{cid} Albany"),
        )
        conn.execute(
            "INSERT INTO orderflow.credit_account (customer_id, credit_limit, open_ar, on_hold) "
            "VALUES (%s, 10000000, 0, false)",
            (cid,),
        )
        for key, item in items.items():
            conn.execute(
                "INSERT INTO orderflow.item (item_id, description, uom, pack_size, weight_kg, "
                "list_price, unit_cost, dq_passed) VALUES (%s, %s, 'EA', 1, 0.5, %s, 40, true)",
                (item, f"Widget {key}", CONTRACT_PRICE),
            )
            conn.execute(
                "INSERT INTO orderflow.inventory_position (item_id, dc_id, on_hand) "
                "VALUES (%s, 'DC-EAST', 100000), (%s, 'DC-WEST', 100000)",
                (item, item),
            )
            if key != "L":  # ITEM-L: no contract, priced from the list
                conn.execute(
                    "INSERT INTO orderflow.price_contract (contract_id, customer_id, item_id, "
                    "unit_price, uom, effective_from, expires_on, tolerance_pct) "
                    "VALUES (%s, %s, %s, %s, 'EA', '2025-01-01', NULL, %s)",
                    (f"K-{tag}-{key}", cid, item, CONTRACT_PRICE, 1.0 if key == "K" else None),
                )

    def price(pct: str) -> Decimal:
        return (CONTRACT_PRICE * (1 + Decimal(pct) / 100)).quantize(Decimal("0.0001"))

    # (line items with their deviation from the contract/list price in %)
    shapes = [
        [("A", "0")],
        [("A", "0.5")],
        [("A", "1.0")],
        [("A", "1.5")],  # flips
        [("B", "-2.0")],  # flips
        [("A", "2.99")],  # flips
        [("A", "3.0")],  # flips (at the tolerance is within)
        [("A", "3.01")],
        [("A", "5")],
        [("A", "0.5"), ("B", "2.5")],  # flips: its worst line comes within
        [("A", "2.0"), ("B", "4.0")],  # held either way
        [("K", "2.0")],  # the contract's own 1 %: held either way
        [("L", "2.0")],  # list price (tolerance 0): held either way
        [("K", "0.2"), ("A", "1.2")],  # flips
    ]
    at = WINDOW[0] + timedelta(hours=8)
    orders, inside = [], {}
    for n, shape in enumerate(shapes):
        oid = f"O-GOV-{tag}-{n:02d}"
        lines = [(items[k], price(p)) for k, p in shape]
        orders.append(_order(oid, cid, lines, at + timedelta(minutes=n)))
        inside[oid] = [(k, Decimal(p)) for k, p in shape]
    # Outside the window (before and at its end): would flip too, must not be replayed.
    for n, when in enumerate((WINDOW[0] - timedelta(seconds=1), WINDOW[1])):
        orders.append(_order(f"O-GOV-{tag}-X{n}", cid, [(items["A"], price("2.0"))], when))
    with db.transaction(conn):
        intake.insert_orders(conn, orders, message_id=None, actor_id="test.intake")
    conn.close()
    return inside


def _order(order_id, cid, lines, received_at) -> Order:
    return Order(
        order_id=order_id,
        po_number=f"PO-{order_id}",
        customer_id=cid,
        ship_to=Address(
            name=f"{cid} Albany",
            party_id=f"{cid}-ST1",
            address_lines=["1 Main St"],
            city="Albany",
            region="NY",
            postal_code="12207",
            country="US",
        ),
        lines=[
            OrderLine(line_no=n, item_id=item, quantity=Decimal(2), uom="EA", unit_price=p)
            for n, (item, p) in enumerate(lines, start=1)
        ],
        provenance=Provenance(channel=Channel.API, partner_id=f"P-{cid}", received_at=received_at),
    )


def _expected_flips(inside: dict[str, list[tuple[str, Decimal]]]) -> set[str]:
    """Independently of the rules code: an order flips when every line is within the new
    default tolerance and some line is beyond the old one — lines on a contract without a
    tolerance of its own only (K has its own 1 %, L is priced from the list at 0 %)."""

    def ok(key: str, pct: Decimal, default: Decimal) -> bool:
        tol = {"K": OLD_TOL, "L": Decimal("0")}.get(key, default)
        return abs(pct) <= tol

    return {
        oid
        for oid, lines in inside.items()
        if not all(ok(k, p, OLD_TOL) for k, p in lines) and all(ok(k, p, NEW_TOL) for k, p in lines)
    }


def _snapshot(conn) -> dict[str, tuple]:
    """Row count and a checksum of the content of every table of the store but whatif_*."""
    tables = [
        r[0]
        for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'orderflow' "
            "AND table_type = 'BASE TABLE' AND table_name NOT LIKE 'whatif%%' ORDER BY 1"
        )
    ]
    assert {"order", "order_event", "audit_log", "rule_set_version"} <= set(tables)
    out = {}
    for t in tables:
        out[t] = conn.execute(
            f"SELECT count(*), md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) "
            f'FROM orderflow."{t}" x'
        ).fetchone()
    return out


# ---------------------------------------------------------------------------- what-if


def test_pricing_tolerance_whatif_shows_exactly_the_orders_that_flip(store, seeded, candidate_file):
    expected = _expected_flips(seeded)
    assert len(expected) == 6  # the test data means what it says
    before = _snapshot(store)
    version, source = governance.candidate(store, str(candidate_file))
    assert (version.name, version.version) == ("pricing", "2026.12.9")

    result = governance.whatif(store, [version], *WINDOW, requested_by="tess", sources=[source])

    assert _snapshot(store) == before  # nothing written outside the what-if's own tables
    assert result.totals["current"]["orders"] == len(seeded)  # the window's orders only
    assert {d["order_id"] for d in result.diffs} == expected
    for d in result.diffs:
        cur, cand = d["current"], d["candidate"]
        assert (cur["status"], cur["holds"]) == ("ON_HOLD", ["pricing_mismatch"])
        assert (cand["status"], cand["holds"]) == ("READY", [])
        assert set(d["changed"]) == {"status", "holds", "dcs", "carriers", "freight_cost"}
        assert cand["dcs"] == ["DC-WEST"] or cand["dcs"] == ["DC-EAST"]
        assert cand["carriers"] == ["UPSN/GND"] and Decimal(cand["freight_cost"]) > 0
        assert cur["amount"] == cand["amount"]  # charged the contract price either way
    cur, cand = result.totals["current"], result.totals["candidate"]
    assert cand["first_pass"] - cur["first_pass"] == len(expected)
    assert cur["held"]["pricing_mismatch"] - cand["held"]["pricing_mismatch"] == len(expected)
    assert Decimal(result.totals["freight_cost_change"]) == sum(
        Decimal(d["candidate"]["freight_cost"]) for d in result.diffs
    )

    report = governance.whatif_report(store, result.run_id)
    assert report["changed"] == len(expected) and report["orders"] == len(seeded)
    assert {d["order_id"] for d in report["diffs"]} == expected
    assert report["candidates"][0]["sha256"] == version.sha256
    assert report["current_versions"]["pricing"]["sha256"] == rules.load().pricing.sha256


def test_whatif_of_the_version_in_force_changes_nothing(store, seeded):
    same = rules.load().pricing
    result = governance.whatif(store, [same], *WINDOW, requested_by="tess", store=False)
    assert result.diffs == [] and result.run_id is None
    assert result.totals["current"] == result.totals["candidate"]


def test_whatif_refuses_file_managed_sets_and_bad_windows(store):
    with pytest.raises(governance.GovernanceRefused, match="not a rule set that decides"):
        governance.whatif(store, [rules.load().routing], *WINDOW, requested_by="tess")
    with pytest.raises(governance.GovernanceRefused, match="ends before"):
        governance.whatif(store, [rules.load().pricing], WINDOW[1], WINDOW[0], requested_by="t")


def test_whatif_cli_prints_the_flips(store, seeded, candidate_file):
    from orderflow.governance_cli import rules as group

    out = CliRunner().invoke(
        group,
        [
            "whatif",
            "--candidate",
            str(candidate_file),
            "--from",
            WINDOW[0].isoformat(),
            "--to",
            WINDOW[1].isoformat(),
            "--actor",
            "tess",
        ],
    )
    assert out.exit_code == 0, out.output
    assert f"{len(_expected_flips(seeded))} differ" in out.output
    assert "first-pass rate" in out.output and "freight cost" in out.output
    for oid in _expected_flips(seeded):
        assert f"{oid}: status ON_HOLD -> READY" in out.output


def test_rule_whatif_dag_replays_the_candidate_from_its_form(
    store, seeded, candidate_file, airflow_db
):
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(str(DAGS_DIR / "rule_whatif.py")).get_dag("rule_whatif")
    before = _snapshot(store)
    run = dag.test(
        run_conf={
            "candidate": str(candidate_file),
            "window_from": WINDOW[0].isoformat(),
            "window_to": WINDOW[1].isoformat(),
        }
    )
    assert run.state == "success"
    assert _snapshot(store) == before
    row = store.execute(
        "SELECT whatif_run_id, requested_by, changed, orders FROM orderflow.whatif_run "
        "WHERE dag_id = 'rule_whatif' AND run_id = %s",
        (run.run_id,),
    ).fetchone()
    assert row[1:] == ("dag_test", len(_expected_flips(seeded)), len(seeded))
    report = governance.whatif_report(store, row[0])
    assert {d["order_id"] for d in report["diffs"]} == _expected_flips(seeded)


# ---------------------------------------------------------------------------- promote


def _governance_state(conn) -> tuple:
    return (
        conn.execute("SELECT count(*) FROM orderflow.rule_set_activation").fetchone()[0],
        conn.execute("SELECT count(*) FROM orderflow.rule_set_version").fetchone()[0],
        rules.load(conn=conn).tag(),
    )


def _audits(conn, action: str) -> list[tuple]:
    return conn.execute(
        "SELECT actor, actor_role, object_id, before, after, reason FROM orderflow.audit_log "
        "WHERE action = %s ORDER BY audit_id",
        (action,),
    ).fetchall()


@pytest.mark.parametrize("user", ["olga", "pat.pricing", "nobody"])
def test_promote_without_the_approver_role_is_refused_and_changes_nothing(
    store, candidate_file, user
):
    version, _ = governance.candidate(store, str(candidate_file))
    state = _governance_state(store)
    with pytest.raises(governance.GovernanceRefused, match="needs the rule_approver role"):
        governance.promote(store, version, actor=user, reason="looser tolerance")
    assert _governance_state(store) == state
    refused = [a for a in _audits(store, "rule_promote_refused") if a[0] == user]
    assert len(refused) == 1
    assert refused[0][2] == "pricing" and refused[0][4]["sha256"] == version.sha256


def test_rollback_without_the_approver_role_is_refused(store):
    state = _governance_state(store)
    with pytest.raises(governance.GovernanceRefused, match="needs the rule_approver role"):
        governance.rollback(store, "pricing", actor="olga", reason="undo")
    assert _governance_state(store) == state
    assert [a[0] for a in _audits(store, "rule_rollback_refused")] == ["olga"]


def test_promote_and_rollback_by_an_approver_are_audited_and_decisions_record_the_hash(
    store, seeded, candidate_file
):
    shipped = rules.load().pricing
    version, _ = governance.candidate(store, str(candidate_file))
    run = governance.whatif(store, [version], *WINDOW, requested_by="tess")
    with pytest.raises(governance.GovernanceRefused, match="no promotion of pricing to roll back"):
        governance.rollback(store, "pricing", actor="rita.rules", reason="undo")
    with pytest.raises(governance.GovernanceRefused, match="say why"):
        governance.promote(store, version, actor="rita.rules", reason=" ")

    done = governance.promote(
        store, version, actor="rita.rules", reason="3 % agreed", whatif_run_id=run.run_id
    )
    assert done["from"]["sha256"] == shipped.sha256
    assert done["to"]["sha256"] == version.sha256
    assert rules.load(conn=store).pricing == version
    assert rules.load().pricing == shipped  # the files are unchanged: the store overrides
    (audit,) = _audits(store, "rule_promote")
    assert audit[:3] == ("rita.rules", "rule_approver", "pricing")
    assert audit[3] == {"version": "2026.11.1", "sha256": shipped.sha256}
    assert audit[4]["sha256"] == version.sha256 and audit[4]["whatif_run_id"] == run.run_id
    assert audit[5] == "3 % agreed"
    with pytest.raises(governance.GovernanceRefused, match="already in force"):
        governance.promote(store, version, actor="rita.rules", reason="again")

    # A decision now: an order of the window that flips passes validation, and its event
    # names the promoted version's hash, whose content the store keeps.
    flip = sorted(_expected_flips(seeded))[0]
    out = processing.validate(store, [flip], CTX, rules.load(conn=None))
    assert (out.passed, out.held) == (1, {})
    tag = store.execute(
        "SELECT rule_set_version FROM orderflow.order_event WHERE order_id = %s "
        "ORDER BY event_id DESC LIMIT 1",
        (flip,),
    ).fetchone()[0]
    assert f"pricing@2026.12.9#{version.sha256[:12]}" in tag.split(",")
    stored = store.execute(
        "SELECT content, source FROM orderflow.rule_set_version "
        "WHERE rule_set = 'pricing' AND content_sha256 = %s",
        (version.sha256,),
    ).fetchone()
    assert rules.parse("pricing", stored[0]) == version and stored[1] == "candidate"
    for pinned in tag.split(","):  # every version the decision names is stored
        name, rest = pinned.split("@")
        ver, sha = rest.split("#")
        assert store.execute(
            "SELECT 1 FROM orderflow.rule_set_version WHERE rule_set = %s AND version = %s "
            "AND content_sha256 LIKE %s",
            (name, ver, sha + "%"),
        ).fetchone(), f"{name}@{ver}#{sha} is not stored"

    # Roll back: the shipped version is in force again; the log keeps both steps.
    back = governance.rollback(store, "pricing", actor="rita.rules", reason="too loose")
    assert back["to"]["sha256"] == shipped.sha256
    assert rules.load(conn=store).pricing == shipped
    (audit,) = _audits(store, "rule_rollback")
    assert audit[:3] == ("rita.rules", "rule_approver", "pricing")
    assert audit[3]["sha256"] == version.sha256 and audit[4]["sha256"] == shipped.sha256
    with pytest.raises(governance.GovernanceRefused, match="no promotion of pricing"):
        governance.rollback(store, "pricing", actor="rita.rules", reason="again")
    listed = {v["rule_set"]: v for v in governance.versions(store)}
    assert [a["action"] for a in listed["pricing"]["activations"]] == ["rollback", "promote"]
    assert listed["pricing"]["version"] == "2026.11.1"
    from orderflow.governance_cli import rules as group

    shown = CliRunner().invoke(group, ["versions"])
    assert shown.exit_code == 0, shown.output
    assert f"pricing       2026.11.1    #{shipped.sha256[:12]}  file" in shown.output
    assert "rollback 2026.11.1" in shown.output and "by rita.rules: too loose" in shown.output

    # The log of promotions is append-only.
    with pytest.raises(psycopg.Error):
        store.execute("UPDATE orderflow.rule_set_activation SET actor = 'someone else'")


def test_promote_refuses_a_version_string_reused_with_other_content(store, tmp_path):
    clash = rules.load().pricing.content() | {"list_price_tolerance_pct": "0.5"}
    path = tmp_path / "pricing" / "2026.11.1.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(clash))
    version, _ = governance.candidate(store, str(path))
    with pytest.raises(governance.GovernanceRefused, match="already exists with other content"):
        governance.promote(store, version, actor="rita.rules", reason="reuse")


def test_promote_cli_refuses_and_names_the_role(store, candidate_file):
    from orderflow.governance_cli import rules as group

    out = CliRunner().invoke(
        group,
        ["promote", "--candidate", str(candidate_file), "--reason", "x", "--actor", "olga"],
    )
    assert out.exit_code != 0 and "rule_approver" in out.output


# ---------------------------------------------------------------------------- DAG


def test_rule_whatif_dag_parses_with_its_form():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS_DIR / "rule_whatif.py"))
    assert bag.import_errors == {}
    dag = bag.dags["rule_whatif"]
    assert set(dag.params) == {"candidate", "candidate_yaml", "window_from", "window_to"}
    assert dag.params.get_param("window_from").schema["format"] == "date-time"
    assert [t.task_id for t in dag.tasks] == ["replay_candidate"]
