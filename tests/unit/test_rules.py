"""Versioned rule sets: the shipped files load, the version in effect is chosen by time, and
broken files are refused with the file named."""

import shutil
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from orderflow.rules import RULE_SETS, RuleSetError, load, rules_dir

AT = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


@pytest.fixture
def rules_copy(tmp_path: Path) -> Path:
    """A private copy of the shipped rule files (each test gets its own directory)."""
    target = tmp_path / "rules"
    shutil.copytree(rules_dir(), target)
    return target


def _add_version(directory: Path, rule_set: str, version: str, effective_from: str, **changes):
    """Copy the shipped version of ``rule_set`` as ``version`` with other values."""
    content = yaml.safe_load((directory / rule_set / "2026.11.1.yaml").read_text())
    content.update(version=version, effective_from=effective_from, **changes)
    (directory / rule_set / f"{version}.yaml").write_text(yaml.safe_dump(content))


def test_shipped_rule_files_load_with_their_values():
    book = load(at=AT)
    assert [rs.name for rs in book.all()] == list(RULE_SETS)
    assert {rs.version for rs in book.all()} == {"2026.11.1"}
    assert book.validation.duplicate_window_hours == 48
    assert book.validation.near_identical_min_lines == 3
    assert "EA" in book.validation.valid_uoms
    assert book.pricing.default_contract_tolerance_pct == Decimal("1.0")
    assert book.credit.tier_limit_multiplier["platinum"] == Decimal("1.1")
    assert book.credit.prepaid_terms == frozenset({"CIA", "CWO"})
    assert book.sourcing.dcs == ("DC-EAST", "DC-WEST")
    assert book.carrier.parcel_max_kg == Decimal("68.0")
    assert book.routing.default.owner_role == "customer_service"


def test_newest_effective_version_is_chosen(rules_copy):
    _add_version(
        rules_copy, "pricing", "2026.12.1", "2026-12-01T00:00:00Z", list_price_tolerance_pct=0.5
    )
    before = load(at=datetime(2026, 11, 30, 23, 59, tzinfo=UTC), directory=rules_copy)
    at_start = load(at=datetime(2026, 12, 1, tzinfo=UTC), directory=rules_copy)
    assert before.pricing.version == "2026.11.1"
    assert before.pricing.list_price_tolerance_pct == Decimal("0")
    assert at_start.pricing.version == "2026.12.1"
    assert at_start.pricing.list_price_tolerance_pct == Decimal("0.5")
    assert at_start.validation.version == "2026.11.1"  # the other sets are untouched


def test_choice_follows_effective_from_not_file_name(rules_copy):
    # "2026.10.0" sorts before "2026.11.1" by name but takes effect later.
    _add_version(rules_copy, "credit", "2026.10.0", "2026-12-15T00:00:00Z")
    assert load(at=datetime(2026, 12, 1, tzinfo=UTC), directory=rules_copy).credit.version == (
        "2026.11.1"
    )
    assert load(at=datetime(2026, 12, 16, tzinfo=UTC), directory=rules_copy).credit.version == (
        "2026.10.0"
    )


def test_date_before_every_version_is_refused_with_a_hint(rules_copy):
    with pytest.raises(RuleSetError) as err:
        load(at=datetime(2025, 12, 31, tzinfo=UTC), directory=rules_copy)
    msg = str(err.value)
    assert "no version of rule set 'validation' is effective at 2025-12-31T00:00:00+00:00" in msg
    assert "include/rules/validation/" in msg
    assert "earlier effective_from" in msg


def test_unknown_key_is_refused_naming_the_file(rules_copy):
    path = rules_copy / "validation" / "2026.11.1.yaml"
    path.write_text(path.read_text() + "\nmaximum_order_value: 10\n")
    with pytest.raises(RuleSetError, match="maximum_order_value") as err:
        load(at=AT, directory=rules_copy)
    assert str(path) in str(err.value)


def test_bad_severity_is_refused_naming_the_file(rules_copy):
    path = rules_copy / "routing" / "2026.11.1.yaml"
    path.write_text(path.read_text().replace("severity: medium}", "severity: urgent}"))
    with pytest.raises(RuleSetError, match="severity") as err:
        load(at=AT, directory=rules_copy)
    assert str(path) in str(err.value)


def test_tag_names_versions_and_content_hashes():
    book = load(at=AT)
    p, v = book.pricing.sha256[:12], book.validation.sha256[:12]
    assert book.tag("pricing", "validation") == f"pricing@2026.11.1#{p},validation@2026.11.1#{v}"
    assert [t.split("#")[0] for t in book.tag().split(",")] == [f"{n}@2026.11.1" for n in RULE_SETS]


def test_content_hash_is_the_content_not_the_process(rules_copy):
    """Sets are hashed sorted (a frozenset's order changes with PYTHONHASHSEED); any change
    of a value changes the hash, the version string alone does not make it."""
    import subprocess
    import sys

    code = "from orderflow.rules import load; print(load().tag())"
    tags = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**__import__("os").environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2")
    }
    assert len(tags) == 1
    _add_version(
        rules_copy, "pricing", "2026.12.1", "2026-12-01T00:00:00Z", list_price_tolerance_pct=0.5
    )
    later = load(at=datetime(2026, 12, 2, tzinfo=UTC), directory=rules_copy)
    assert later.pricing.sha256 != load(at=AT).pricing.sha256
    assert later.validation.sha256 == load(at=AT).validation.sha256


def test_route_unknown_category_is_the_default():
    routing = load(at=AT).routing
    assert routing.route("no_such_category") == routing.default
    assert routing.route("no_such_category").sla_minutes == 240


def test_route_fills_missing_fields_from_default():
    routing = load(at=AT).routing
    r = routing.route("unknown_item")  # owner and SLA only
    assert (r.owner_role, r.sla_minutes, r.escalation_role, r.severity) == (
        "customer_service",
        120,
        "operations_manager",
        "medium",
    )
    c = routing.route("credit_limit")  # everything its own
    assert (c.owner_role, c.escalation_role, c.severity) == ("credit", "credit_manager", "high")
    assert routing.route("minimum_not_met").severity == "low"


@pytest.mark.parametrize(
    ("region", "dc"),
    [("CA", "DC-WEST"), ("ca", "DC-WEST"), ("NY", "DC-EAST"), (None, "DC-EAST"), ("", "DC-EAST")],
)
def test_preferred_dc(region, dc):
    assert load(at=AT).sourcing.preferred_dc(region) == dc


def test_stage_owners_are_named_from_routing_2026_12_4(tmp_path, monkeypatch):
    from orderflow.rules import STAGES

    roles = tmp_path / "roles.yaml"
    roles.write_text("users: {bea.billing: [billing], olga: [operations_manager]}\n")
    monkeypatch.setenv("ORDERFLOW_ROLES_FILE", str(roles))
    before = load(at=datetime(2026, 12, 5, 10, 59, tzinfo=UTC))
    book = load(at=datetime(2026, 12, 5, 11, 0, tzinfo=UTC))
    assert before.routing.version == "2026.12.3" and before.routing.stage_owners == {}
    assert book.routing.version == "2026.12.4"
    # only the stage owners were added: every category, contact and default is as before
    assert book.routing.categories == before.routing.categories
    assert book.routing.contacts == before.routing.contacts
    assert set(book.routing.stage_owners) == set(STAGES)
    rows = book.stage_owners()
    assert [r["stage"] for r in rows] == list(STAGES)
    invoicing = rows[-1]
    assert invoicing["owner_role"] == "billing"
    assert invoicing["contact"] == "billing-desk@distributor.example"
    assert invoicing["users"] == ["bea.billing", "olga"]  # the super role acts for all
    assert all(r["contact"] for r in rows)  # every owner role has a team mailbox
    # a version without stage owners hashes as it did before the field existed
    assert "stage_owners" not in before.routing.content()
    assert [r["owner_role"] for r in before.stage_owners()] == [None] * len(STAGES)


def test_an_unknown_stage_is_refused(rules_copy):
    path = rules_copy / "routing" / "2026.12.4.yaml"
    path.write_text(path.read_text().replace("  invoicing:\n", "  billing_run:\n"))
    with pytest.raises(RuleSetError, match="unknown stage") as err:
        load(at=AT, directory=rules_copy)
    assert str(path) in str(err.value)
