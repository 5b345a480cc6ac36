"""Master-data expectation suites, one per entity, as reviewable code.

A suite validates the **published shape** of one extracted batch: the store columns exactly as
:data:`orderflow.masterdata.SPECS` maps them (defaults applied), one row per extracted record,
superseded duplicates included (so that key uniqueness can be checked at all: the sync keeps
one record per key). Three bookkeeping columns are added: ``entity_key`` (the exception's
``entity_id``: key parts joined with ``|``, as the sandbox admin API spells keys), ``row_no``
and ``superseded``.

Rules GX cannot express on one table are computed here as helper columns, then expected
true/false like any other column — the helper is the honest part of the rule, so each is
documented with its rule:

``customer_exists`` / ``item_exists`` / ``dc_exists``
    The referenced key is in the store. Referenced entities are published earlier in the same
    sync (``masterdata.ORDER``: customers before ship-tos, items before xrefs, …), so the store
    is the complete reference set; a reference to a row the gate withheld counts as missing.
    Null where the reference itself is null (the ``*_present`` rule reports those).
``substitutes_exist``
    Every substitute item id is a known item (store ∪ this batch).
``overlaps_earlier`` / ``overlapped_contract_id``
    The contract's validity starts inside the validity of another contract for the same
    customer and item (store ∪ this batch, end dates inclusive, no end = open). Only the
    later-starting contract is flagged: it is the one that made the price ambiguous.
    Contracts with missing or inverted dates are left out (their own rules report them).
``timezone_known``
    The DC's time zone is an IANA zone name known to this Python.

``blocking`` marks rules whose failure the store would reject (NOT NULL, CHECK, unique index,
``char(n)``) or that would overwrite a usable row with an unusable one. The gate withholds such
rows from the publish (the stored version stays, flagged); every other failing row is published
and flagged ``dq_passed = false``. Blank strings count as missing for the ``text`` columns of a
suite (a blank postal code is as missing as a null one).

Code lists (``VALID_UOMS``, tiers, modes) mirror the store and the trading conventions; they
belong in a versioned rule set once the rules package loads master-data policy.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from orderflow.masterdata import SPECS

if TYPE_CHECKING:
    import great_expectations as gx
    import pandas as pd

SUITE_PREFIX = "masterdata"

#: ANSI X12 unit-of-measure codes (element 355) that items and contracts may be stocked in.
VALID_UOMS = (
    "EA", "CS", "BX", "PK", "FT", "LB", "DZ", "PR", "RL", "GA", "KG", "LT", "OZ", "IN",
    "YD", "CT", "PL", "TB", "BG", "KT", "DR", "CA", "ML", "SF", "SY", "ST",
)  # fmt: skip
TIERS = ("platinum", "gold", "silver", "standard")
CARRIER_MODES = ("parcel", "ltl", "ftl", "will_call")  # the carrier_service CHECK
ISO_CURRENCY = r"^[A-Z]{3}$"
ISO_COUNTRY = r"^[A-Z]{2}$"
EMAIL = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
TIME_OF_DAY = r"^(?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9])?$"


@dataclass(frozen=True)
class Rule:
    """One named expectation.

    :param name: stable rule name (``dq_result.expectation``, exception reasons, tests).
    :param expectation: class name in ``great_expectations.expectations``.
    :param kwargs: the expectation's arguments.
    :param description: one line for people (data docs, exception reasons).
    :param blocking: failing rows are withheld from the publish (see the module docstring).
    :param show: columns whose values name the defect in reasons; default the checked columns.
    :param when: ``(column, value)``: only rows where ``column == value`` are checked.
    """

    name: str
    expectation: str
    kwargs: Mapping[str, Any]
    description: str
    blocking: bool = False
    show: tuple[str, ...] = ()
    when: tuple[str, Any] | None = None

    @property
    def columns(self) -> tuple[str, ...]:
        k = self.kwargs
        if "column" in k:
            return (k["column"],)
        if "column_list" in k:
            return tuple(k["column_list"])
        return tuple(c for c in (k.get("column_A"), k.get("column_B")) if c)

    @property
    def unique_key(self) -> bool:
        """A uniqueness rule: the only kind that looks at superseded duplicates."""
        return self.expectation in (
            "ExpectColumnValuesToBeUnique",
            "ExpectCompoundColumnsToBeUnique",
        )


def _r(name: str, expectation: str, description: str, **kw: Any) -> Rule:
    opts = {k: kw.pop(k) for k in ("blocking", "show", "when") if k in kw}
    return Rule(name, expectation, kw, description, **opts)


def _present(name: str, column: str, what: str, **kw: Any) -> Rule:
    return _r(name, "ExpectColumnValuesToNotBeNull", f"{what} is present", column=column, **kw)


def _exists(name: str, helper: str, ref: str, what: str) -> Rule:
    return _r(
        name, "ExpectColumnValuesToBeInSet", what, column=helper, value_set=[True], show=(ref,)
    )


@dataclass(frozen=True)
class SuiteDef:
    """The suite of one master-data entity and how to prepare its batch.

    :param entity: the sync entity (``masterdata.SPECS`` key).
    :param rules: the expectations, in the order people read them.
    :param text: columns where a blank string counts as missing.
    :param numbers: columns coerced to numbers (non-numbers become null).
    :param dates: columns coerced to dates (non-dates become null).
    :param needs: reference sets read from the store: ``customers``, ``items``, ``dcs``,
        ``contracts``.
    """

    entity: str
    rules: tuple[Rule, ...]
    text: tuple[str, ...] = ()
    numbers: tuple[str, ...] = ()
    dates: tuple[str, ...] = ()
    needs: frozenset[str] = field(default_factory=frozenset)

    @property
    def name(self) -> str:
        return suite_name(self.entity)

    @property
    def entity_type(self) -> str:
        """``order_exception.entity_type``: the store table of the entity."""
        return SPECS[self.entity].table

    @property
    def key(self) -> tuple[str, ...]:
        return SPECS[self.entity].key

    def rule(self, name: str) -> Rule:
        return next(r for r in self.rules if r.name == name)


def suite_name(entity: str) -> str:
    return f"{SUITE_PREFIX}.{entity}"


SUITES: dict[str, SuiteDef] = {
    s.entity: s
    for s in [
        SuiteDef(
            "customers",
            (
                _present("customer_id_present", "customer_id", "Customer id", blocking=True),
                _r("customer_id_unique", "ExpectColumnValuesToBeUnique",
                   "Customer id occurs once in the extract", column="customer_id"),
                _present("customer_name_present", "name", "Customer name", blocking=True),
                _r("customer_tier_valid", "ExpectColumnValuesToBeInSet",
                   "Tier is one of platinum, gold, silver, standard", column="tier",
                   value_set=list(TIERS)),
                _r("customer_currency_iso", "ExpectColumnValuesToMatchRegex",
                   "Currency is an ISO 4217 code", column="currency", regex=ISO_CURRENCY,
                   blocking=True),
                _r("customer_email_format", "ExpectColumnValuesToMatchRegex",
                   "E-mail address looks like one", column="email", regex=EMAIL),
                _present("customer_payment_terms_present", "payment_terms", "Payment terms"),
            ),
            text=("name", "payment_terms", "email"),
        ),
        SuiteDef(
            "ship_tos",
            (
                _present("ship_to_id_present", "ship_to_id", "Ship-to id", blocking=True),
                _r("ship_to_id_unique", "ExpectColumnValuesToBeUnique",
                   "Ship-to id occurs once in the extract", column="ship_to_id"),
                _present("ship_to_customer_present", "customer_id", "Customer of the ship-to",
                         blocking=True),
                _exists("ship_to_customer_exists", "customer_exists", "customer_id",
                        "The ship-to's customer exists"),
                _present("ship_to_address_present", "address_line1", "Street address (line 1)"),
                _present("ship_to_city_present", "city", "City"),
                _present("ship_to_region_present", "region", "State / region"),
                _present("ship_to_postal_code_present", "postal_code", "Postal code"),
                _present("ship_to_country_present", "country", "Country"),
                _r("ship_to_country_iso", "ExpectColumnValuesToMatchRegex",
                   "Country is an ISO 3166 alpha-2 code", column="country", regex=ISO_COUNTRY,
                   blocking=True),
            ),
            text=("address_line1", "city", "region", "postal_code", "country"),
            needs=frozenset({"customers"}),
        ),
        SuiteDef(
            "items",
            (
                _present("item_id_present", "item_id", "Item id", blocking=True),
                _r("item_id_unique", "ExpectColumnValuesToBeUnique",
                   "Item id occurs once in the extract", column="item_id"),
                _present("item_description_present", "description", "Description",
                         blocking=True),
                _present("item_uom_present", "uom", "Unit of measure", blocking=True),
                _r("item_uom_valid", "ExpectColumnValuesToBeInSet",
                   "Unit of measure is an X12 unit code we trade in", column="uom",
                   value_set=list(VALID_UOMS)),
                _r("item_pack_size_positive", "ExpectColumnValuesToBeBetween",
                   "Pack size is at least 1", column="pack_size", min_value=1),
                _present("item_weight_present", "weight_kg", "Weight"),
                _r("item_weight_positive", "ExpectColumnValuesToBeBetween",
                   "Weight is greater than zero", column="weight_kg", min_value=0,
                   strict_min=True),
                _r("item_list_price_positive", "ExpectColumnValuesToBeBetween",
                   "List price, when given, is greater than zero", column="list_price",
                   min_value=0, strict_min=True),
                _exists("item_substitutes_exist", "substitutes_exist", "substitute_item_ids",
                        "Every substitute is a known item"),
            ),
            text=("description",),
            numbers=("pack_size", "weight_kg", "list_price"),
            needs=frozenset({"items"}),
        ),
        SuiteDef(
            "xrefs",
            (
                _present("xref_customer_present", "customer_id", "Customer", blocking=True),
                _present("xref_part_number_present", "customer_part_number",
                         "Customer part number", blocking=True),
                _present("xref_item_present", "item_id", "Mapped item", blocking=True),
                _r("xref_part_number_unique", "ExpectCompoundColumnsToBeUnique",
                   "A customer part number maps to one item",
                   column_list=["customer_id", "customer_part_number"], show=("item_id",)),
                _exists("xref_customer_exists", "customer_exists", "customer_id",
                        "The customer exists"),
                _exists("xref_item_exists", "item_exists", "item_id",
                        "The mapped item exists"),
            ),
            text=("customer_part_number",),
            needs=frozenset({"customers", "items"}),
        ),
        SuiteDef(
            "contracts",
            (
                _present("contract_id_present", "contract_id", "Contract id", blocking=True),
                _r("contract_id_unique", "ExpectColumnValuesToBeUnique",
                   "Contract id occurs once in the extract", column="contract_id"),
                _present("contract_customer_present", "customer_id", "Customer",
                         blocking=True),
                _present("contract_item_present", "item_id", "Item", blocking=True),
                _exists("contract_customer_exists", "customer_exists", "customer_id",
                        "The customer exists"),
                _exists("contract_item_exists", "item_exists", "item_id",
                        "The item exists"),
                _present("contract_price_present", "unit_price", "Unit price", blocking=True),
                _r("contract_price_positive", "ExpectColumnValuesToBeBetween",
                   "Unit price is greater than zero", column="unit_price", min_value=0,
                   strict_min=True),
                _present("contract_uom_present", "uom", "Unit of measure", blocking=True),
                _r("contract_uom_valid", "ExpectColumnValuesToBeInSet",
                   "Unit of measure is an X12 unit code we trade in", column="uom",
                   value_set=list(VALID_UOMS)),
                _r("contract_currency_iso", "ExpectColumnValuesToMatchRegex",
                   "Currency is an ISO 4217 code", column="currency", regex=ISO_CURRENCY,
                   blocking=True),
                _present("contract_effective_from_present", "effective_from",
                         "Effective-from date (a valid date)", blocking=True),
                _r("contract_dates_ordered", "ExpectColumnPairValuesAToBeGreaterThanB",
                   "Expiry is on or after the effective date", column_A="expires_on",
                   column_B="effective_from", or_equal=True,
                   ignore_row_if="either_value_is_missing"),
                _r("contract_no_overlap", "ExpectColumnValuesToBeInSet",
                   "No other contract for the customer and item is valid on its start date",
                   column="overlaps_earlier", value_set=[False],
                   show=("overlapped_contract_id", "effective_from", "expires_on")),
                _r("contract_tolerance_in_range", "ExpectColumnValuesToBeBetween",
                   "Price tolerance is between 0 and 100 %", column="tolerance_pct",
                   min_value=0, max_value=100),
            ),
            numbers=("unit_price", "tolerance_pct"),
            dates=("effective_from", "expires_on"),
            needs=frozenset({"customers", "items", "contracts"}),
        ),
        SuiteDef(
            "credit_accounts",
            (
                _present("credit_customer_present", "customer_id", "Customer", blocking=True),
                _r("credit_customer_unique", "ExpectColumnValuesToBeUnique",
                   "One credit account per customer in the extract", column="customer_id"),
                _exists("credit_customer_exists", "customer_exists", "customer_id",
                        "The customer exists"),
                _present("credit_limit_present", "credit_limit", "Credit limit",
                         blocking=True),
                _r("credit_limit_nonnegative", "ExpectColumnValuesToBeBetween",
                   "Credit limit is not negative", column="credit_limit", min_value=0),
                _present("credit_hold_reason_present", "hold_reason",
                         "Hold reason of an account on hold", when=("on_hold", True)),
            ),
            text=("hold_reason",),
            numbers=("credit_limit", "open_ar"),
            needs=frozenset({"customers"}),
        ),
        SuiteDef(
            "carriers",
            (
                _present("carrier_id_present", "carrier_id", "Carrier", blocking=True),
                _present("carrier_service_code_present", "service_code", "Service code",
                         blocking=True),
                _r("carrier_service_unique", "ExpectCompoundColumnsToBeUnique",
                   "Carrier service occurs once in the extract",
                   column_list=["carrier_id", "service_code"]),
                _present("carrier_mode_present", "mode", "Mode", blocking=True),
                _r("carrier_mode_valid", "ExpectColumnValuesToBeInSet",
                   "Mode is parcel, ltl, ftl or will_call", column="mode",
                   value_set=list(CARRIER_MODES), blocking=True),
                _present("carrier_transit_days_present", "transit_days", "Transit days",
                         blocking=True),
                _r("carrier_transit_days_range", "ExpectColumnValuesToBeBetween",
                   "Transit days between 0 and 30", column="transit_days", min_value=0,
                   max_value=30),
                _r("carrier_max_weight_positive", "ExpectColumnValuesToBeBetween",
                   "Maximum weight, when given, is greater than zero", column="max_weight_kg",
                   min_value=0, strict_min=True),
            ),
            numbers=("transit_days", "max_weight_kg"),
        ),
        SuiteDef(
            "partners",
            (
                _present("partner_id_present", "partner_id", "Partner id", blocking=True),
                _r("partner_id_unique", "ExpectColumnValuesToBeUnique",
                   "Partner id occurs once in the extract", column="partner_id"),
                _present("partner_customer_present", "customer_id", "Customer of the partner"),
                _exists("partner_customer_exists", "customer_exists", "customer_id",
                        "The partner's customer exists"),
                _present("partner_isa_id_present", "isa_id", "ISA sender id"),
                _r("partner_isa_id_unique", "ExpectCompoundColumnsToBeUnique",
                   "ISA qualifier + id identify one partner",
                   column_list=["isa_qualifier", "isa_id"], blocking=True),
                _r("partner_isa_qualifier_format", "ExpectColumnValuesToMatchRegex",
                   "ISA id qualifier is a 2-character code", column="isa_qualifier",
                   regex=r"^[0-9A-Z]{2}$"),
                _r("partner_x12_version_format", "ExpectColumnValuesToMatchRegex",
                   "ISA version is 5 digits", column="x12_version", regex=r"^[0-9]{5}$"),
            ),
            text=("customer_id", "isa_id"),
            needs=frozenset({"customers"}),
        ),
        SuiteDef(
            "dcs",
            (
                _present("dc_id_present", "dc_id", "DC id", blocking=True),
                _r("dc_id_unique", "ExpectColumnValuesToBeUnique",
                   "DC id occurs once in the extract", column="dc_id"),
                _present("dc_name_present", "name", "DC name", blocking=True),
                _exists("dc_timezone_known", "timezone_known", "timezone",
                        "Time zone is a known IANA zone"),
                _r("dc_cutoff_time_format", "ExpectColumnValuesToMatchRegex",
                   "Cut-off is a time of day (HH:MM)", column="cutoff_local_time",
                   regex=TIME_OF_DAY, blocking=True),
            ),
            text=("name",),
        ),
        SuiteDef(
            "inventory",
            (
                _present("inventory_item_present", "item_id", "Item", blocking=True),
                _present("inventory_dc_present", "dc_id", "DC", blocking=True),
                _r("inventory_position_unique", "ExpectCompoundColumnsToBeUnique",
                   "One position per item and DC in the extract",
                   column_list=["item_id", "dc_id"]),
                _exists("inventory_item_exists", "item_exists", "item_id", "The item exists"),
                _exists("inventory_dc_exists", "dc_exists", "dc_id", "The DC exists"),
                _present("inventory_on_hand_present", "on_hand", "On-hand quantity",
                         blocking=True),
                _r("inventory_on_hand_nonnegative", "ExpectColumnValuesToBeBetween",
                   "On-hand quantity is not negative", column="on_hand", min_value=0,
                   blocking=True),
            ),
            numbers=("on_hand",),
            needs=frozenset({"items", "dcs"}),
        ),
    ]
}  # fmt: skip


def build_suite(entity: str) -> gx.ExpectationSuite:
    """The GX ``ExpectationSuite`` of ``entity`` (imports GX: call at run time only)."""
    import great_expectations as gx
    from great_expectations.expectations.row_conditions import Column

    sd = SUITES[entity]
    suite = gx.ExpectationSuite(
        name=sd.name,
        meta={"entity": entity, "entity_type": sd.entity_type, "key": list(sd.key)},
    )
    for rule in sd.rules:
        kwargs = dict(rule.kwargs)
        if rule.when is not None:
            kwargs["row_condition"] = Column(rule.when[0]) == rule.when[1]
        cls = getattr(gx.expectations, rule.expectation)
        suite.add_expectation(
            cls(
                **kwargs,
                description=rule.description,
                meta={"rule": rule.name, "blocking": rule.blocking},
            )
        )
    return suite


# ---------------------------------------------------------------------------- batch preparation


def entity_id(key_values: Iterable[Any]) -> str:
    """The ``entity_id`` of a master-data row: its key parts joined with ``|``."""
    return "|".join("" if v is None else str(v) for v in key_values)


def frame(entity: str, records: list[dict], duplicates: list[dict]) -> pd.DataFrame:
    """The batch as a DataFrame of store columns; kept records first, then superseded
    duplicates, so ``row_no < len(records)`` is an index into ``records``."""
    import pandas as pd

    spec = SPECS[entity]
    rows = [spec.row(r) for r in records] + [spec.row(r) for r in duplicates]
    df = pd.DataFrame.from_records(rows, columns=list(spec.columns))
    df["row_no"] = range(len(df))
    df["superseded"] = df["row_no"] >= len(records)
    key = [df[k].astype(object).where(df[k].notna(), "").astype(str) for k in spec.key]
    ek = key[0]
    for part in key[1:]:
        ek = ek + "|" + part
    df["entity_key"] = ek
    return df


@dataclass
class References:
    """Keys other entities point at, read from the store (``None``: not loaded)."""

    customers: set[str] | None = None
    items: set[str] | None = None
    dcs: set[str] | None = None
    contracts: pd.DataFrame | None = None  # contract_id, customer_id, item_id, dates


def prepare(entity: str, df: pd.DataFrame, refs: References) -> pd.DataFrame:
    """Normalise blanks, coerce numbers and dates, add the helper columns the rules need."""
    import pandas as pd

    sd = SUITES[entity]
    for col in sd.text:
        s = df[col].astype(object)
        blank = s.map(lambda v: isinstance(v, str) and not v.strip())
        df[col] = s.where(~blank, None)
    for col in sd.numbers:
        df[col] = pd.to_numeric(df[col], errors="coerce")
    for col in sd.dates:
        df[col] = pd.to_datetime(df[col], errors="coerce")
    if "customers" in sd.needs:
        df["customer_exists"] = _exists_in(df["customer_id"], refs.customers or set())
    if "items" in sd.needs and entity != "items":
        df["item_exists"] = _exists_in(df["item_id"], refs.items or set())
    if "dcs" in sd.needs:
        df["dc_exists"] = _exists_in(df["dc_id"], refs.dcs or set())
    if entity == "items":
        known = (refs.items or set()) | set(df["item_id"].dropna())
        df["substitutes_exist"] = df["substitute_item_ids"].map(
            lambda ids: all(i in known for i in (ids or ()))
        )
    if entity == "dcs":
        from zoneinfo import available_timezones

        zones = available_timezones()
        df["timezone_known"] = _exists_in(df["timezone"], zones)
    if entity == "contracts":
        _contract_overlaps(df, refs.contracts)
    return df


def _exists_in(col: pd.Series, known: set[str]) -> pd.Series:
    out = col.isin(known).astype(object)
    out[col.isna()] = None
    return out


def _contract_overlaps(df: pd.DataFrame, stored: pd.DataFrame | None) -> None:
    """``overlaps_earlier`` / ``overlapped_contract_id`` (see the module docstring)."""
    import pandas as pd

    cols = ["contract_id", "customer_id", "item_id", "effective_from", "expires_on"]
    batch = df.loc[~df["superseded"], cols]
    parts = [batch]
    if stored is not None and len(stored):
        old = stored.loc[~stored["contract_id"].isin(batch["contract_id"]), cols].copy()
        old["effective_from"] = pd.to_datetime(old["effective_from"], errors="coerce")
        old["expires_on"] = pd.to_datetime(old["expires_on"], errors="coerce")
        parts.append(old)
    allc = pd.concat(parts, ignore_index=True)
    allc["end"] = allc["expires_on"].fillna(pd.Timestamp.max)
    allc = allc[allc["effective_from"].notna() & (allc["end"] >= allc["effective_from"])]
    allc = allc.sort_values(["customer_id", "item_id", "effective_from", "contract_id"])
    grp = allc.groupby(["customer_id", "item_id"], sort=False)
    allc["prev_end"] = grp["end"].cummax()
    allc["prev_end"] = allc.groupby(["customer_id", "item_id"], sort=False)["prev_end"].shift()
    hit = allc[allc["effective_from"] <= allc["prev_end"]]
    partner: dict[str, str] = {}
    pairs = allc.set_index(["customer_id", "item_id"]).index
    involved = allc[pairs.isin(hit.set_index(["customer_id", "item_id"]).index)]
    for (cust, item), rows in hit.groupby(["customer_id", "item_id"]):
        group = involved[(involved["customer_id"] == cust) & (involved["item_id"] == item)]
        for _, row in rows.iterrows():
            earlier = group[
                (group["effective_from"] <= row["effective_from"])
                & (group["end"] >= row["effective_from"])
                & (group["contract_id"] != row["contract_id"])
            ]
            partner[row["contract_id"]] = ", ".join(sorted(earlier["contract_id"]))
    df["overlaps_earlier"] = df["contract_id"].isin(partner.keys())
    df["overlapped_contract_id"] = df["contract_id"].map(partner)
