"""A rule type from outside the core package is loaded, validated and applied, with no change
to core code (issue #19).

The plugin is ``tests/extensions/orderflow_key_accounts``: a package of its own whose
pyproject declares the rule type in the ``orderflow.rule_types`` entry-point group. The
``installed`` fixture installs it the way pip does as far as discovery is concerned — a
``.dist-info`` directory carrying that pyproject's entry points, on ``sys.path`` beside the
package — so ``importlib.metadata`` finds it exactly as it finds an installed package. Its
versions are read from a copy of ``include/rules`` with the plugin's example file added, and
the real validation stage applies it to orders in a real store.
"""

from __future__ import annotations

import shutil
import sys
import tomllib
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import ClassVar

import pytest

from orderflow import processing, rules
from orderflow.domain.models import Address, Channel, Order, OrderLine, Provenance
from orderflow.processing import RunContext
from orderflow.rules import RuleSetError, RuleType, RuleTypeError, registry
from orderflow.store import db, intake

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = ROOT / "tests" / "extensions" / "orderflow_key_accounts"
CTX = RunContext(dag_id="test_rule_type_plugin", run_id="manual__t", task_id="validate")


def _install(site: Path) -> Path:
    """What installing the plugin leaves for discovery: ``<name>-<version>.dist-info`` with
    METADATA and the pyproject's entry points (the same entry_points.txt pip writes)."""
    project = tomllib.loads((PLUGIN / "pyproject.toml").read_text())["project"]
    dist = site / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n"
    )
    lines = []
    for group, points in project["entry-points"].items():
        lines += [f"[{group}]", *(f"{name} = {ref}" for name, ref in points.items()), ""]
    (dist / "entry_points.txt").write_text("\n".join(lines))
    return dist


def _forget_plugin(paths: list[str]) -> None:
    for p in paths:
        if p in sys.path:
            sys.path.remove(p)
    for name in [m for m in sys.modules if m.split(".")[0] == "orderflow_key_accounts"]:
        del sys.modules[name]
    registry.reset()


@pytest.fixture
def installed(tmp_path):
    site = tmp_path / "site"
    _install(site)
    paths = [str(PLUGIN), str(site)]
    sys.path[:0] = paths
    registry.reset()
    yield
    _forget_plugin(paths)


@pytest.fixture
def rules_dir(tmp_path) -> Path:
    """The shipped rule files, the plugin's example version, and a route for its category
    (policy data in the routing rules: who owns the new exceptions)."""
    target = tmp_path / "rules"
    shutil.copytree(rules.rules_dir(), target)
    shutil.copytree(PLUGIN / "rules" / "key_accounts", target / "key_accounts")
    for path in (target / "routing").glob("*.yaml"):
        path.write_text(
            path.read_text().replace(
                "categories:\n",
                "categories:\n  allocation_cap_exceeded: {owner_role: sales_ops, sla_minutes: 60}\n"
                "  key_account_price: {owner_role: sales_ops, sla_minutes: 240}\n",
                1,
            )
        )
    return target


# ---------------------------------------------------------------------------- loaded


def test_without_the_package_there_is_no_such_rule_type():
    registry.reset()
    assert "key_accounts" not in registry.rule_types()
    assert list(registry.rule_types()) == list(rules.RULE_SETS)


def test_found_through_its_entry_point(installed):
    types = registry.rule_types()
    assert list(types)[: len(rules.RULE_SETS)] == list(rules.RULE_SETS)  # the core first
    found = types["key_accounts"]
    assert not found.core and found.applies
    assert found.source == (
        "entry point key_accounts = orderflow_key_accounts:RULE_TYPE "
        "(package orderflow-key-accounts)"
    )
    assert found.explains == {"pricing_mismatch"}
    assert [c.category for c in found.categories] == [
        "allocation_cap_exceeded",
        "key_account_price",
    ]


def test_found_through_the_setting(monkeypatch):
    monkeypatch.syspath_prepend(str(PLUGIN))
    monkeypatch.setenv("ORDERFLOW_RULE_TYPES", "orderflow_key_accounts:RULE_TYPE")
    registry.reset()
    try:
        found = registry.rule_types()["key_accounts"]
        assert found.source == "ORDERFLOW_RULE_TYPES orderflow_key_accounts:RULE_TYPE"
        monkeypatch.setenv("ORDERFLOW_RULE_TYPES", "orderflow_key_accounts:NO_SUCH_THING")
        registry.reset()
        with pytest.raises(RuleTypeError, match="NO_SUCH_THING does not load"):
            registry.rule_types()
    finally:
        monkeypatch.delenv("ORDERFLOW_RULE_TYPES")
        _forget_plugin([])


def test_its_versions_load_beside_the_core_ones(installed, rules_dir):
    book = rules.load(directory=rules_dir)
    ka = book.extensions["key_accounts"]
    assert (ka.version, ka.tiers, ka.max_open_quantity) == (
        "2026.12.1",
        frozenset({"platinum"}),
        {"KA-BOLT": Decimal("100")},
    )
    assert book.get("key_accounts") is ka
    assert f"key_accounts@2026.12.1#{ka.sha256[:12]}" in book.tag().split(",")
    assert rules.parse("key_accounts", ka.content()) == ka  # as a stored version is read back
    # It applies from its first version in effect: before that the book simply has none
    # (a core rule set with no version in effect is an error instead).
    before = rules.load(at=datetime(2026, 11, 30, tzinfo=UTC), directory=rules_dir)
    assert before.extensions == {}
    assert registry.checks(before) == []


# ---------------------------------------------------------------------------- validated


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            ("KA-BOLT: 100", "KA-BOLT: lots"),
            "field 'max_open_quantity.KA-BOLT': Input should be a valid decimal (got 'lots')",
        ),
        (("tiers: [platinum]\n", ""), "field 'tiers': Field required"),
        (
            ("price_tolerance_pct: 5.0", "price_tolerance_pct: 80"),
            "field 'price_tolerance_pct': Input should be less than or equal to 50 (got 80)",
        ),
        (
            ("price_tolerance_pct: 5.0", "price_tolerance: 5.0"),
            "field 'price_tolerance': Extra inputs are not permitted",
        ),
    ],
)
def test_a_bad_file_is_refused_naming_the_file_and_the_field(
    installed, rules_dir, change, expected
):
    good = (rules_dir / "key_accounts" / "2026.12.1.yaml").read_text()
    assert change[0] in good
    bad = rules_dir / "key_accounts" / "2026.12.2.yaml"
    bad.write_text(good.replace(*change).replace('"2026.12.1"', '"2026.12.2"'))
    with pytest.raises(RuleSetError) as err:
        rules.load(directory=rules_dir)
    assert str(err.value).startswith(f"rule set file {bad}: ")
    assert expected in str(err.value)


# ---------------------------------------------------------------------------- applied


def _seed(conn) -> None:
    with db.transaction(conn):
        for cid, tier in (("KA-C1", "platinum"), ("KA-C2", "standard")):
            conn.execute(
                "INSERT INTO orderflow.customer (customer_id, name, tier, payment_terms, active, "
                "ship_complete, accepts_substitutes, dq_passed) "
                "VALUES (%s, %s, %s, 'NET30', true, false, false, true)",
                (cid, f"Customer {cid}", tier),
            )
            conn.execute(
                "INSERT INTO orderflow.ship_to (ship_to_id, customer_id, name, address_line1, "
                "city, region, postal_code, country, zone, dq_passed) VALUES "
                "(%s, %s, %s, '1 Main St', 'Albany', 'NY', '12207', 'US', 'Z3', true)",
                (f"{cid}-ST1", cid, f"{cid} Albany"),
            )
            conn.execute(
                "INSERT INTO orderflow.price_contract (contract_id, customer_id, item_id, "
                "unit_price, uom, effective_from, expires_on, tolerance_pct) "
                "VALUES (%s, %s, 'KA-BOLT', 10.00, 'EA', '2025-01-01', NULL, 1.0)",
                (f"K-{cid}", cid),
            )
        conn.execute(
            "INSERT INTO orderflow.item (item_id, description, uom, pack_size, weight_kg, "
            "list_price, unit_cost, dq_passed) "
            "VALUES ('KA-BOLT', 'Bolt', 'EA', 1, 0.1, 12.00, 6.00, true)"
        )


def _order(order_id: str, cid: str, qty: int, price: str) -> Order:
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
            OrderLine(
                line_no=1, item_id="KA-BOLT", quantity=Decimal(qty), uom="EA", unit_price=price
            )
        ],
        provenance=Provenance(channel=Channel.API, partner_id=f"P-{cid}"),
    )


def _insert(conn, orders: list[Order]) -> list[str]:
    with db.transaction(conn):
        return intake.insert_orders(conn, orders, message_id=None, actor_id="test.intake")


def _statuses(conn, ids) -> dict[str, str]:
    return dict(
        conn.execute(
            'SELECT order_id, status FROM orderflow."order" WHERE order_id = ANY(%s)', (ids,)
        ).fetchall()
    )


@pytest.mark.db
def test_the_validation_stage_applies_it(installed, rules_dir, store):
    _seed(store)
    book = rules.load(directory=rules_dir)
    pinned = book.extensions["key_accounts"].pinned
    # A key account's first order: 60 of the capped 100, at the contract price.
    first = _insert(store, [_order("KA-A", "KA-C1", 60, "10.00")])
    assert processing.validate(store, first, CTX, book).passed == 1
    ids = _insert(
        store,
        [
            _order("KA-B", "KA-C1", 60, "10.00"),  # 60 open + 60 > 100: held by the plugin
            _order("KA-C", "KA-C1", 10, "10.40"),  # 4 % off the contract: the plugin explains
            _order("KA-D", "KA-C2", 500, "10.40"),  # not a key account: no cap, no tolerance
            _order("KA-E", "KA-C1", 5, "12.00"),  # 20 % off: held for the key-account team
        ],
    )
    result = processing.validate(store, ids, CTX, book)
    assert (result.orders, result.passed) == (4, 1)
    assert result.held == {
        "allocation_cap_exceeded": 1,
        "pricing_mismatch": 1,
        "key_account_price": 1,
    }
    assert _statuses(store, ["KA-A", *ids]) == {
        "KA-A": "VALIDATED",
        "KA-B": "ON_HOLD",
        "KA-C": "VALIDATED",
        "KA-D": "ON_HOLD",
        "KA-E": "ON_HOLD",
    }

    # Its hold: its own category (created in the store), routed by the routing rules, with
    # the version that decided it recorded.
    row = store.execute(
        "SELECT category, line_no, owner_role, stage, rule_set_version, details, reason "
        "FROM orderflow.order_exception WHERE order_id = 'KA-B'"
    ).fetchall()
    assert len(row) == 1
    category, line_no, owner, stage, version, details, reason = row[0]
    assert (category, line_no, owner, stage) == (
        "allocation_cap_exceeded",
        1,
        "sales_ops",
        "validate",
    )
    assert pinned in version.split(",")
    assert details == {
        "item_id": "KA-BOLT",
        "quantity": "60.000",
        "open_quantity": "60.000",
        "cap": "100",
    }
    assert "over the key-account cap of 100" in reason
    assert store.execute(
        "SELECT description, default_owner_role FROM orderflow.exception_category "
        "WHERE category = 'allocation_cap_exceeded'"
    ).fetchone() == ("Key account over its cap of a scarce item on open orders", "sales_ops")
    assert [
        r[0]
        for r in store.execute(
            "SELECT category FROM orderflow.order_exception WHERE order_id = 'KA-D'"
        )
    ] == ["pricing_mismatch"]

    # Its explanation: no hold, the customer's price charged, and why on the order's event.
    event = store.execute(
        "SELECT details, rule_set_version FROM orderflow.order_event "
        "WHERE order_id = 'KA-C' AND to_status = 'VALIDATED'"
    ).fetchone()
    assert event[0]["explained"] == [
        {
            "category": "pricing_mismatch",
            "line_no": 1,
            "by": pinned,
            "reason": "key account: price 10.4000 is within 5.0% of 10.0000",
            "charge_price": "10.4000",
            "instead": None,
        }
    ]
    assert pinned in event[1].split(",")
    assert store.execute(
        "SELECT contract_price FROM orderflow.order_line WHERE order_id = 'KA-C'"
    ).fetchone() == (Decimal("10.40"),)
    assert not store.execute(
        "SELECT 1 FROM orderflow.order_exception WHERE order_id = 'KA-C'"
    ).fetchone()

    # A price beyond the key-account tolerance: the core's pricing hold replaced by the
    # plugin's, for the key-account team, with the replacement on the order's event.
    held = store.execute(
        "SELECT category, owner_role, line_no, details->>'reference_price' "
        "FROM orderflow.order_exception WHERE order_id = 'KA-E'"
    ).fetchall()
    assert held == [("key_account_price", "sales_ops", 1, "10.0000")]
    event = store.execute(
        "SELECT details->'explained' FROM orderflow.order_event "
        "WHERE order_id = 'KA-E' AND to_status = 'ON_HOLD'"
    ).fetchone()[0]
    assert [(e["category"], e["instead"]) for e in event] == [
        ("pricing_mismatch", "key_account_price")
    ]

    # The version's content is kept under the hash the decisions recorded.
    ka = book.extensions["key_accounts"]
    assert store.execute(
        "SELECT version FROM orderflow.rule_set_version WHERE rule_set = 'key_accounts' "
        "AND content_sha256 = %s",
        (ka.sha256,),
    ).fetchone() == ("2026.12.1",)


class _Broken(rules.RuleSet):
    name: ClassVar[str] = "broken_example"


def _raise_for_c2(order, ref, rules_, context):
    if order.customer_id == "KA-C2":
        raise KeyError("tier_code")
    return []


@pytest.mark.db
def test_a_check_that_fails_holds_only_its_order(rules_dir, store, tmp_path):
    if not store.execute("SELECT 1 FROM orderflow.item WHERE item_id = 'KA-BOLT'").fetchone():
        _seed(store)
    (rules_dir / "broken_example").mkdir()
    (rules_dir / "broken_example" / "1.yaml").write_text(
        'version: "1"\neffective_from: "2026-01-01T00:00:00Z"\n'
    )
    registry.register(RuleType(_Broken, check=_raise_for_c2, source="this test"))
    try:
        book = rules.load(directory=rules_dir)
        ids = _insert(
            store, [_order("BR-1", "KA-C1", 1, "10.00"), _order("BR-2", "KA-C2", 1, "10.00")]
        )
        result = processing.validate(store, ids, CTX, book)
    finally:
        registry.unregister("broken_example")
    assert result.held == {"rule_error": 1}
    assert _statuses(store, ids) == {"BR-1": "VALIDATED", "BR-2": "ON_HOLD"}
    reason = store.execute(
        "SELECT reason FROM orderflow.order_exception WHERE order_id = 'BR-2'"
    ).fetchone()[0]
    assert reason.startswith(
        f"rule {book.extensions['broken_example'].pinned} failed on this order"
    )
    assert "KeyError: 'tier_code'" in reason


# ---------------------------------------------------------------------------- core untouched


def test_core_code_does_not_name_the_plugin():
    """Everything the plugin brings is in its own package: nothing under plugins/, dags/ or
    include/ names it, its rule set or its category."""
    needles = ("orderflow_key_accounts", "key_accounts", "allocation_cap_exceeded")
    offenders = [
        str(path.relative_to(ROOT))
        for top in ("plugins", "dags", "include")
        for path in (ROOT / top).rglob("*")
        if path.is_file()
        and path.suffix in (".py", ".yaml", ".yml", ".sql", ".html", ".toml", ".md")
        and any(n in path.read_text(errors="ignore") for n in needles)
    ]
    assert offenders == []
