"""Versioned rule sets: business policy as data (``include/rules/<rule_set>/<version>.yaml``).

Each file is validated by its pydantic model at load; :func:`load` picks, per rule set, the
newest version whose ``effective_from`` is not after the decision time. A version promoted in
the store (``orderflow.governance``: approver role, audited) overrides the files from the
time it was promoted — until a file version takes effect after it — when :func:`load` or
:func:`in_force` is given the store connection. A :class:`RuleBook` names the versions it
holds with their content hash (``tag``: ``pricing@2026.11.1#3f2a9c1b7d4e``), which every
decision records, and :func:`record` keeps each version's content under that hash, so a past
decision can be explained and a new version replayed against history.

Which rule sets exist is the registry's (:mod:`orderflow.rules.registry`): the core ones
below register there, and a rule type from another package — its model, the checks the
validation stage calls with it, its exception categories — is found through an entry point,
with no change here. Its versions live beside the core's, in ``include/rules/<name>/``; it
applies from the first version in effect (a core rule set must always have one).
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator

RULES_DIR_NAME = "rules"


class _RuleSet(BaseModel):
    """One version of a rule set (a YAML file): subclass it, with ``name: ClassVar[str]``,
    for a new rule type (``orderflow.rules.registry``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: ClassVar[str]
    version: str
    effective_from: AwareDatetime
    description: str = ""

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def content(self) -> dict[str, Any]:
        """The content as JSON, sets sorted: the same for the same values in any process."""
        return _canonical(self.model_dump(mode="python"))

    @property
    def sha256(self) -> str:
        """The hash of the content (canonical JSON): what a decision is pinned to."""
        return content_sha256(self.content())

    @property
    def pinned(self) -> str:
        """``pricing@2026.11.1#3f2a9c1b7d4e``: the version and the first 12 hex of its hash."""
        return f"{self.ref}#{self.sha256[:HASH_CHARS]}"


#: hex characters of the content hash a decision's ``rule_set_version`` carries
HASH_CHARS = 12


def content_sha256(content: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def _canonical(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, frozenset | set):
        return sorted(_canonical(v) for v in value)
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    return value


class NearDuplicateRules(BaseModel):
    """When the learned near-duplicate match (``orderflow.ai.duplicates``) holds an order
    ``possible_duplicate``: after the exact checks found nothing, the best match among the
    customer's other live orders received within ``window_hours`` scores at least
    ``min_score``. The kill switch is the ``ai`` rule set's ``near_duplicate`` model
    (``models: {near_duplicate: {enabled: false}}``); ``enabled`` here is no longer consulted,
    kept so that the versions that set it keep their content and hash."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    enabled: bool = False
    #: the score (a probability) at or above which the order is held; ``None``: the
    #: threshold calibrated when the model was trained (stored with the model)
    min_score: float | None = Field(None, ge=0, le=1)
    window_hours: int = Field(168, ge=1)


class ValidationRules(_RuleSet):
    name: ClassVar[str] = "validation"
    valid_uoms: frozenset[str]
    minimum_order_value: Decimal = Decimal("0")
    minimum_line_quantity: Decimal = Decimal("0")
    duplicate_window_hours: int = Field(48, ge=0)
    near_identical_min_lines: int = Field(3, ge=1)
    #: the learned near-duplicate match (from 2026.12.1; earlier versions: off)
    near_duplicates: NearDuplicateRules = NearDuplicateRules()

    def content(self) -> dict[str, Any]:
        # A version without the near-duplicate policy hashes as it did before the field
        # existed: the hashes past decisions recorded still name its content.
        c = super().content()
        if self.near_duplicates == NearDuplicateRules():
            c.pop("near_duplicates", None)
        return c


class PricingRules(_RuleSet):
    name: ClassVar[str] = "pricing"
    default_contract_tolerance_pct: Decimal = Decimal("1.0")
    list_price_tolerance_pct: Decimal = Decimal("0")


class CrmPricingRules(_RuleSet):
    """When the CRM's quotes and special price agreements explain a price the core price
    check holds (``orderflow.domain.crm_pricing``: the rule type's ``explain``)."""

    name: ClassVar[str] = "crm_pricing"
    #: a quote is a promise of one price: it explains the order's price within this share
    quote_tolerance_pct: Decimal = Field(Decimal("0"), ge=0)
    #: an agreement explains an order price within this share of the agreed price
    agreement_tolerance_pct: Decimal = Field(Decimal("1.0"), ge=0)


class CreditRules(_RuleSet):
    name: ClassVar[str] = "credit"
    open_order_statuses: tuple[str, ...]
    tier_limit_multiplier: dict[str, Decimal] = Field(default_factory=dict)
    prepaid_terms: frozenset[str] = frozenset()
    use_credit_service: bool = True
    # Ask the ERP for the partition's customers' current limit, open AR and hold at credit
    # time (one call); when it cannot answer, the synced figures decide, marked as such.
    use_erp_exposure: bool = True


class SubstitutionRules(_RuleSet):
    name: ClassVar[str] = "substitution"
    require_customer_consent: bool = True
    max_substitutions_per_order: int = Field(5, ge=0)


class PriorityWeights(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    tier: dict[str, float] = Field(default_factory=dict)
    days_to_requested_ship: dict[str, float] = Field(default_factory=dict)
    per_1000_margin: float = 0.0


class SourcingRules(_RuleSet):
    name: ClassVar[str] = "sourcing"
    dcs: tuple[str, ...]
    default_dc: str
    preferred_dc_by_region: dict[str, frozenset[str]] = Field(default_factory=dict)
    max_split_dcs: int = Field(2, ge=1)
    allow_backorder: bool = True
    priority: PriorityWeights = PriorityWeights()

    def preferred_dc(self, region: str | None) -> str:
        for dc, regions in self.preferred_dc_by_region.items():
            if region and region.upper() in regions:
                return dc
        return self.default_dc


class CarrierRules(_RuleSet):
    name: ClassVar[str] = "carrier"
    parcel_max_kg: Decimal
    ltl_min_kg: Decimal
    zone_factor: Decimal = Decimal("0.08")
    default_promise_days: int = Field(5, ge=1)
    routing_guides: dict[str, tuple[str, ...]] = Field(default_factory=dict)


class Route(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    owner_role: str | None = None
    sla_minutes: int | None = Field(None, gt=0)
    escalation_role: str | None = None
    severity: str | None = Field(None, pattern="^(low|medium|high|critical)$")


#: The order-to-cash stages that have a named owner (routing rules ``stage_owners``).
STAGES = ("intake", "allocation", "fulfilment", "shipment", "invoicing")


class StageOwner(BaseModel):
    """Who answers for one stage of the order-to-cash flow (not an exception's owner: the
    team accountable for the stage as a whole, its SLA attainment and its stalled orders)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    owner_role: str
    escalation_role: str | None = None
    #: the order statuses the stage covers (what the UI counts under it)
    statuses: tuple[str, ...] = ()
    description: str = ""


class RoutingRules(_RuleSet):
    name: ClassVar[str] = "routing"
    default: Route
    categories: dict[str, Route] = Field(default_factory=dict)
    #: where the exception desk emails a role (team mailboxes, not people)
    contacts: dict[str, str] = Field(default_factory=dict)
    #: automatic retries of a transient exception before it waits for a person
    transient_retries: int = Field(3, ge=0)
    #: stage (``STAGES``) → its owner (from 2026.12.4; earlier versions name none)
    stage_owners: dict[str, StageOwner] = Field(default_factory=dict)
    #: a held order's cause as the root-cause model recommends it (``orderflow.ai``) → who
    #: owns the exception instead of its category's owner (from 2026.12.5)
    causes: dict[str, Route] = Field(default_factory=dict)

    @field_validator("stage_owners")
    @classmethod
    def _known_stages(cls, value: dict[str, StageOwner]) -> dict[str, StageOwner]:
        unknown = sorted(set(value) - set(STAGES))
        if unknown:
            raise ValueError(f"unknown stage(s) {', '.join(unknown)}; one of {', '.join(STAGES)}")
        return value

    def content(self) -> dict[str, Any]:
        # A version without stage owners hashes as it did before the field existed: the
        # hashes past decisions recorded still name its content.
        c = super().content()
        if not self.stage_owners:
            c.pop("stage_owners", None)
        if not self.causes:
            c.pop("causes", None)
        return c

    def stage_owner(self, stage: str) -> StageOwner | None:
        return self.stage_owners.get(stage)

    def route(self, category: str) -> Route:
        """The category's route, with the default filling what it leaves open."""
        own = self.categories.get(category, Route())
        d = self.default
        return Route(
            owner_role=own.owner_role or d.owner_role,
            sla_minutes=own.sla_minutes or d.sla_minutes,
            escalation_role=own.escalation_role or d.escalation_role,
            severity=own.severity or d.severity,
        )


class Notifications(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    #: notification event → order channels whose customers get it by email (when on file)
    email: dict[str, frozenset[str]] = Field(default_factory=dict)
    #: notification events sent as webhooks, and the order channels that get them
    webhook_events: frozenset[str] = frozenset()
    webhook_channels: frozenset[str] = frozenset()

    def emails(self, event: str, channel: str) -> bool:
        return channel in self.email.get(event, frozenset())

    def webhooks(self, event: str, channel: str) -> bool:
        return event in self.webhook_events and channel in self.webhook_channels


class StageLimit(BaseModel):
    """How long an order may stay in a stage before it is ``stalled``, and who looks."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    hours: float = Field(gt=0)
    owner_role: str
    #: for SHIPPED: the carrier service's transit days are added (per carrier service)
    plus_transit_days: bool = False


def _default_stage_limits() -> dict[str, StageLimit]:
    return {
        "RELEASED": StageLimit(hours=24, owner_role="inventory"),
        "PICKED": StageLimit(hours=24, owner_role="logistics"),
        "SHIPPED": StageLimit(hours=48, owner_role="logistics", plus_transit_days=True),
    }


class FulfilmentRules(_RuleSet):
    name: ClassVar[str] = "fulfilment"
    #: order status → how long it may stay there before a ``stalled`` exception opens
    stage_limits: dict[str, StageLimit] = Field(default_factory=_default_stage_limits)
    notifications: Notifications = Notifications()
    #: shipped above released by more than this share is a quantity mismatch (0: any)
    overship_tolerance_pct: Decimal = Field(Decimal("0"), ge=0)
    bill_freight: bool = False
    #: an event whose shipment is still unknown after this many tries is quarantined
    unmatched_event_attempts: int = Field(5, ge=1)


class ModelPolicy(BaseModel):
    """What one model of ``orderflow.ai`` may do. ``enabled: false`` is its kill switch: the
    flow stops asking it at once (a new version of this rule set, no deploy of code)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    enabled: bool = False
    #: below this confidence a recommendation is recorded but routes nothing
    min_confidence: float = Field(0.6, ge=0, le=1)


class AnomalyPolicy(BaseModel):
    """When an anomaly on arrival (``orderflow.ai.anomaly``) holds an order or only flags it."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    #: the model's score at or above which an order is anomalous
    score_threshold: float = Field(0.5, ge=0, le=1)
    #: anomaly kinds that are financially sensitive whatever the amount (a hold)
    hold_kinds: frozenset[str] = frozenset({"price", "ship_to"})
    #: a quantity anomaly holds when the order line's value is at least this much (USD);
    #: below it, it is a flag on the order for the desk
    hold_line_value: Decimal = Field(Decimal("1000"), ge=0)
    #: a customer with fewer past orders than this has no history to be far from: not scored
    min_history_orders: int = Field(5, ge=0)


class DelayPolicy(BaseModel):
    """What the delay-risk model (``orderflow.ai.delay``) may do with its probability that an
    order misses its promised date: flag the order (informational), and tell the customer early
    (the ``order_delayed`` notice, through the outbox) when ``notify_customer`` is on."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    #: at or above this probability the plan event is flagged and the decision recorded
    flag_threshold: float = Field(0.5, ge=0, le=1)
    #: the early notice to the customer: off unless a version turns it on
    notify_customer: bool = False
    notify_threshold: float = Field(0.7, ge=0, le=1)
    #: a DC with no cutoff time in its master data ships what is planned before this
    default_cutoff: str = Field("15:00", pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")


class SequencingPolicy(BaseModel):
    """How capacity-aware release sequencing (``orderflow.ai.sequencing``, model
    ``release_sequence``) ranks READY orders when the WMS's pick wave cannot take them all
    (``orderflow.domain.sequencing``): the risk that waiting adds (the delay-risk model's),
    the carrier cutoff, the customer's tier and the order's margin."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    #: weight of P(late if it waits a wave) − P(late if released now)
    risk_weight: float = Field(1.0, ge=0)
    #: added when the DC's carrier cutoff on the ship date falls before the next wave
    cutoff_weight: float = Field(0.05, ge=0)
    #: added per customer tier (a tier not named: 0)
    tier_weights: dict[str, float] = Field(default_factory=dict)
    #: added in full for a margin of ``margin_scale`` or more, in proportion below
    margin_weight: float = Field(0.02, ge=0)
    margin_scale: Decimal = Field(Decimal("1000"), gt=0)
    #: an order READY this long goes before any other (nothing waits for ever)
    max_wait_hours: float = Field(8.0, gt=0)


class AiRules(_RuleSet):
    """Decision support (``orderflow.ai``): which models the flow asks, and within what policy.
    A model that is not named here, or not ``enabled``, is never asked."""

    name: ClassVar[str] = "ai"
    models: dict[str, ModelPolicy] = Field(default_factory=dict)
    anomaly: AnomalyPolicy = AnomalyPolicy()
    delay: DelayPolicy = DelayPolicy()
    sequencing: SequencingPolicy = SequencingPolicy()

    def content(self) -> dict[str, Any]:
        # A version that says nothing about delay (sequencing) keeps the content (and hash)
        # it had before the delay (sequencing) policy existed.
        out = super().content()
        for name in ("delay", "sequencing"):
            if name not in self.model_fields_set:
                out.pop(name, None)
        return out

    def policy(self, model: str) -> ModelPolicy:
        return self.models.get(model, ModelPolicy())

    def enabled(self, model: str) -> bool:
        return self.policy(model).enabled


#: the public name of the base class of every rule set's model
RuleSet = _RuleSet

# The registry imports this package's RuleSet lazily: import it once RuleSet exists.
from orderflow.rules import registry  # noqa: E402

# What a rule type from another package imports from here (orderflow.rules.RuleType, …).
RuleType = registry.RuleType
ExceptionCategory = registry.ExceptionCategory
RuleSetError = registry.RuleSetError
RuleTypeError = registry.RuleTypeError

#: the core rule sets (what :class:`RuleBook` holds as fields), in their order
RULE_SETS: dict[str, type[_RuleSet]] = {
    m.name: m
    for m in (
        ValidationRules,
        PricingRules,
        CreditRules,
        SubstitutionRules,
        SourcingRules,
        CarrierRules,
        RoutingRules,
        FulfilmentRules,
        CrmPricingRules,
        AiRules,
    )
}


def _crm_pricing_context(conn: Any, orders: Any, rules: Any) -> Any:
    from orderflow.store import crm

    return crm.load_pricing_context(conn, orders, rules)


def _core_hooks() -> dict[str, dict[str, Any]]:
    """The core rule types the validation stage calls through the registry's hooks (the
    others' decisions are wired into the domain stages)."""
    from orderflow.domain import crm_pricing

    return {
        "crm_pricing": {
            "explain": crm_pricing.explain,
            "explains": crm_pricing.EXPLAINS,
            "load_context": _crm_pricing_context,
            "description": "CRM quotes and special price agreements explain price differences",
        }
    }


for _name, _model in RULE_SETS.items():
    registry.register(
        RuleType(_model, core=True, source="orderflow", **_core_hooks().get(_name, {}))
    )


#: Rule sets that decide an order (validation → credit → allocation → planning): the ones a
#: what-if replays and a promotion may change. routing and fulfilment stay file-managed.
GOVERNED = ("validation", "pricing", "credit", "substitution", "sourcing", "carrier")


class RuleBook(BaseModel):
    """The rule sets in effect at one moment."""

    model_config = ConfigDict(frozen=True)
    validation: ValidationRules
    pricing: PricingRules
    credit: CreditRules
    substitution: SubstitutionRules
    sourcing: SourcingRules
    carrier: CarrierRules
    routing: RoutingRules
    fulfilment: FulfilmentRules
    crm_pricing: CrmPricingRules
    ai: AiRules
    #: the versions in effect of the rule types registered beyond the core (by name)
    extensions: dict[str, _RuleSet] = Field(default_factory=dict)
    #: the decision time the book was chosen for (None: not known, e.g. built by hand)
    at: AwareDatetime | None = None

    def get(self, name: str) -> _RuleSet | None:
        """The version of rule set ``name`` (core or extension) in this book, if any."""
        if name in RULE_SETS:
            return getattr(self, name)
        return self.extensions.get(name)

    def tag(self, *names: str) -> str:
        """``pricing@2026.11.1#3f2a9c1b7d4e,validation@2026.11.1#…`` for the named sets (all
        when none): versions and content hashes, as every decision records them."""
        names = names or (*RULE_SETS, *self.extensions)
        return ",".join(rs.pinned for n in names if (rs := self.get(n)) is not None)

    def replace(self, *rule_sets: _RuleSet) -> RuleBook:
        """This book with ``rule_sets`` in place of the versions it holds."""
        core = {rs.name: rs for rs in rule_sets if rs.name in RULE_SETS}
        ext = {rs.name: rs for rs in rule_sets if rs.name not in RULE_SETS}
        return self.model_copy(update=core | ({"extensions": self.extensions | ext} if ext else {}))

    def all(self) -> list[_RuleSet]:
        return [getattr(self, n) for n in RULE_SETS] + list(self.extensions.values())

    def stage_owners(self) -> list[dict[str, Any]]:
        """The owner of each stage (``STAGES`` order) as the routing rules name it: role,
        escalation role, their contact mailboxes, the order statuses the stage covers and
        the Airflow users holding the role (``orderflow.access``). What the UI shows."""
        from orderflow import access

        routing = self.routing
        rows = []
        for stage in STAGES:
            owner = routing.stage_owner(stage)
            if owner is None:
                rows.append({"stage": stage, "owner_role": None})
                continue
            rows.append(
                {
                    "stage": stage,
                    "owner_role": owner.owner_role,
                    "escalation_role": owner.escalation_role,
                    "contact": routing.contacts.get(owner.owner_role),
                    "escalation_contact": routing.contacts.get(owner.escalation_role or ""),
                    "statuses": list(owner.statuses),
                    "description": owner.description,
                    "users": access.users_with(owner.owner_role),
                    "routing_version": routing.version,
                }
            )
        return rows


def rules_dir() -> Path:
    from orderflow.settings import INCLUDE_DIR

    return INCLUDE_DIR / RULES_DIR_NAME


def _types() -> tuple[tuple[str, type[_RuleSet]], ...]:
    return tuple((name, rt.model) for name, rt in registry.rule_types().items())


@lru_cache(maxsize=8)
def _versions(
    directory: str, types: tuple[tuple[str, type[_RuleSet]], ...]
) -> dict[str, list[_RuleSet]]:
    out: dict[str, list[_RuleSet]] = {}
    for name, model in types:
        versions = [_read(path, model) for path in sorted((Path(directory) / name).glob("*.yaml"))]
        out[name] = sorted(versions, key=lambda v: v.effective_from)
    return out


def _read(path: Path, model: type[_RuleSet]) -> _RuleSet:
    import yaml

    try:
        # The safe loader on libyaml's parser where PyYAML has it: the same content, ~8x less
        # CPU (every task process reads the rule files once; the Python parser took ~0.2 s)
        safe = yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader
        content = yaml.load(path.read_text(), Loader=safe)  # noqa: S506 (a safe loader)
    except yaml.YAMLError as exc:
        raise RuleSetError(f"rule set file {path}: not YAML: {exc}") from exc
    try:
        return model.model_validate(content)
    except ValidationError as exc:
        raise RuleSetError(f"rule set file {path}: {describe(exc)}") from exc


def describe(exc: ValidationError) -> str:
    """A validation error as a person reads it: each field with what is wrong and the value
    given — ``field 'tier_limit_multiplier.gold': Input should be a valid decimal (got 'lots')``."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        got = "" if err["type"] == "missing" else f" (got {err.get('input')!r:.80})"
        parts.append(f"{f'field {where!r}' if where else 'the file'}: {err['msg']}{got}")
    return "; ".join(parts)


def file_versions(name: str, directory: Path | None = None) -> list[_RuleSet]:
    """Every file version of rule set ``name``, oldest ``effective_from`` first."""
    return list(_versions(str(directory or rules_dir()), _types()).get(name, []))


def parse(name: str, content: dict[str, Any]) -> _RuleSet:
    """A version of rule set ``name`` from its content (a file's YAML, a stored version)."""
    model = registry.get(name).model
    try:
        return model.model_validate(content)
    except ValidationError as exc:
        raise RuleSetError(f"rule set {name}: {describe(exc)}") from exc


@lru_cache(maxsize=256)
def _stored(name: str, sha256: str, blob: str) -> _RuleSet:
    return parse(name, json.loads(blob))  # content-addressed: safe to cache


def promoted(conn: Any, at: datetime) -> dict[str, tuple[datetime, _RuleSet]]:
    """Per rule set, the latest promotion or rollback in the store at or before ``at``:
    (when it was activated, the version it activated)."""
    from orderflow.store import rule_sets

    rows = rule_sets.promoted(conn, at)
    return {name: (when, _stored(name, sha, blob)) for name, when, sha, blob in rows}


def in_force(conn: Any, book: RuleBook) -> RuleBook:
    """``book`` (chosen from the files) with the versions promoted in the store applied: a
    promotion or rollback overrides the file version in effect when it was made; a file
    version that takes effect after it overrides it in turn."""
    at = book.at or datetime.now(UTC)
    override = [
        rs
        for name, (when, rs) in promoted(conn, at).items()
        if (held := book.get(name)) is not None and when >= held.effective_from and rs != held
    ]
    return book.replace(*override) if override else book


def load(
    at: datetime | None = None, directory: Path | None = None, *, conn: Any = None
) -> RuleBook:
    """The rule book in effect at ``at`` (default: now): the files, and — given the store's
    connection ``conn`` — the versions promoted there (:func:`in_force`)."""
    at = at or datetime.now(UTC)
    chosen: dict[str, Any] = {"at": at, "extensions": {}}
    for name, versions in _versions(str(directory or rules_dir()), _types()).items():
        live = [v for v in versions if v.effective_from <= at]
        if not live and name not in RULE_SETS:
            continue  # a rule type beyond the core applies from its first version in effect
        if not live:
            raise RuleSetError(
                f"no version of rule set {name!r} is effective at {at.isoformat()}; add a file "
                f"under include/rules/{name}/ with an earlier effective_from"
            )
        if name in RULE_SETS:
            chosen[name] = live[-1]
        else:
            chosen["extensions"][name] = live[-1]
    book = RuleBook(**chosen)
    return in_force(conn, book) if conn is not None else book


def record(conn: Any, book: RuleBook | list[_RuleSet], source: str = "file") -> None:
    """Keep the content of every version in use in ``orderflow.rule_set_version`` under its
    hash (once), so the hash a decision records always names stored content."""
    from psycopg.types.json import Jsonb

    from orderflow.store import rule_sets

    sets = book.all() if isinstance(book, RuleBook) else list(book)
    rows = [(rs.name, rs.version, rs.effective_from, Jsonb(rs.content()), rs.sha256) for rs in sets]
    rule_sets.record_versions(conn, rows, source)
