"""Rule types: what kinds of rule set exist, what their files must hold, and what they do.

A **rule type** is a named kind of business policy: the pydantic model every version file
``include/rules/<name>/<version>.yaml`` is validated against and, for a type that is not part
of the core, the functions the validation stage calls with the version in force:

- ``check(order, ref, rules, context) -> Iterable[Hold]``: holds to add to an order (pure);
- ``explain(hold, order, ref, rules, context) -> Explanation | None``: asked about each hold
  of a category in ``explains`` that the core checks found; an answer waives it (recorded on
  the order's event with the version that explained it), and may set the price to charge;
- ``load_context(conn, orders, rules) -> Any``: the data ``check``/``explain`` need beyond
  the master data in ``ref`` (read from the store before they run; the same in a what-if);
- ``categories``: the exception categories its holds use, created in the store when needed.

The core rule sets register here too (``core=True``). What most of them decide is wired
into the domain stages; a core type may instead use the hooks (``crm_pricing``: the CRM's
quotes and agreements explain price holds), and the stage calls it before the others
(``checks(book, contexts, core=True)``). A rule type from outside this package needs no change to it: a package
declares it in the ``orderflow.rule_types`` entry-point group (pyproject
``[project.entry-points."orderflow.rule_types"]``), or the ``ORDERFLOW_RULE_TYPES`` setting
names ``module:attribute`` (comma-separated). The attribute is a :class:`RuleType`, a list of
them, or a callable returning either. Discovery happens once per process (:func:`reset`
forgets it); a type that fails to load, or whose name is taken, stops the rules from loading
with an error that names it — a policy that silently does not apply is worse than a stage
that does not run.
"""

from __future__ import annotations

import importlib
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from orderflow.domain.reference import Explanation, Hold, OrderView, ReferenceData

if TYPE_CHECKING:
    from orderflow.rules import RuleBook, RuleSet

#: the entry-point group external rule types are declared in
ENTRY_POINT_GROUP = "orderflow.rule_types"
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class RuleSetError(ValueError):
    """A rule-set file that does not validate, or a rule set with no version in effect."""


class RuleTypeError(RuleSetError):
    """A rule type that cannot be registered or loaded (the message names it and its source)."""


@dataclass(frozen=True)
class ExceptionCategory:
    """An exception category a rule type's holds use (a row of ``exception_category``).

    Who owns an open exception and its SLA come from the routing rules
    (``include/rules/routing``: add a route for the category); these defaults are what the
    exception desk falls back on."""

    category: str
    description: str
    default_owner_role: str = "customer_service"
    default_sla_minutes: int = 240
    transient: bool = False

    def __post_init__(self) -> None:
        if not _NAME.match(self.category):
            raise RuleTypeError(
                f"exception category {self.category!r}: use lower_snake_case letters and digits"
            )
        if self.default_sla_minutes <= 0:
            raise RuleTypeError(f"exception category {self.category}: SLA minutes must be > 0")


Check = Callable[[OrderView, ReferenceData, Any, Any], Iterable[Hold]]
Explain = Callable[[Hold, OrderView, ReferenceData, Any, Any], Explanation | None]
LoadContext = Callable[[Any, Sequence[OrderView], Any], Any]


@dataclass(frozen=True)
class RuleType:
    """A kind of rule set: its model (``model.name`` names it and its directory under
    ``include/rules``) and, beyond the core, what the validation stage does with it."""

    model: type[RuleSet]
    check: Check | None = None
    explain: Explain | None = None
    #: the hold categories ``explain`` is asked about (e.g. ``{"pricing_mismatch"}``)
    explains: frozenset[str] = frozenset()
    load_context: LoadContext | None = None
    categories: tuple[ExceptionCategory, ...] = ()
    description: str = ""
    #: part of OrderFlow itself: a version must be in effect, and the stages use it directly
    core: bool = False
    #: where it was registered from (an entry point, the setting, a module): for messages
    source: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        from orderflow.rules import RuleSet

        if not (isinstance(self.model, type) and issubclass(self.model, RuleSet)):
            raise RuleTypeError(
                f"rule type from {self.source or '?'}: model must subclass orderflow.rules.RuleSet"
            )
        name = getattr(self.model, "name", None)
        if not isinstance(name, str) or not _NAME.match(name):
            raise RuleTypeError(
                f"rule type {self.model.__name__} ({self.source or '?'}): set the model's "
                "`name: ClassVar[str]` to a lower_snake_case name (its directory under "
                "include/rules)"
            )
        object.__setattr__(self, "explains", frozenset(self.explains))
        if bool(self.explain) != bool(self.explains):
            raise RuleTypeError(
                f"rule type {name}: `explain` and `explains` go together (the function, and the "
                "hold categories it is asked about)"
            )

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def applies(self) -> bool:
        """Does the validation stage call it (a type with a check or explain)?"""
        return self.check is not None or self.explain is not None


@dataclass(frozen=True)
class BoundCheck:
    """A rule type with the version in force and its context: a
    :class:`orderflow.domain.validation.RuleCheck`."""

    rule_type: RuleType
    rules: Any
    context: Any = None

    @property
    def pinned(self) -> str:
        return self.rules.pinned

    @property
    def explains(self) -> frozenset[str]:
        return self.rule_type.explains

    def holds(self, order: OrderView, ref: ReferenceData) -> Iterable[Hold]:
        if self.rule_type.check is None:
            return ()
        return list(self.rule_type.check(order, ref, self.rules, self.context))

    def explain(self, hold: Hold, order: OrderView, ref: ReferenceData) -> Explanation | None:
        if self.rule_type.explain is None:
            return None
        return self.rule_type.explain(hold, order, ref, self.rules, self.context)


# ---------------------------------------------------------------------------- the registry

_lock = threading.Lock()
_core: dict[str, RuleType] = {}
_added: dict[str, RuleType] = {}  # register() calls outside the core (tests, embedding code)
_discovered: dict[str, RuleType] | None = None


def register(rule_type: RuleType) -> RuleType:
    """Register ``rule_type`` in this process (the core's own, or code that embeds
    OrderFlow); a deployment declares its types as entry points instead."""
    with _lock:
        taken = {**_core, **_added, **(_discovered or {})}.get(rule_type.name)
        if taken is not None and taken != rule_type:
            raise RuleTypeError(
                f"rule type {rule_type.name!r} ({rule_type.source or 'register()'}) is already "
                f"registered ({taken.source or ('OrderFlow itself' if taken.core else 'register()')})"
            )
        (_core if rule_type.core else _added)[rule_type.name] = rule_type
    return rule_type


def unregister(name: str) -> None:
    """Forget a rule type added with :func:`register` (not a core one)."""
    with _lock:
        _added.pop(name, None)


def reset() -> None:
    """Forget what discovery found: the next look-up scans the entry points and the setting
    again (after installing or removing a package in a running process, and in tests)."""
    global _discovered
    with _lock:
        _discovered = None


def rule_types() -> dict[str, RuleType]:
    """Every rule type: the core's in their order, then the others by name."""
    found = _discover()
    others = {**found, **_added}
    return {**_core, **{n: others[n] for n in sorted(others)}}


def get(name: str) -> RuleType:
    types = rule_types()
    if name not in types:
        raise RuleTypeError(
            f"unknown rule set {name!r}; one of {', '.join(types)} (a rule type from a package "
            f"is declared in the {ENTRY_POINT_GROUP!r} entry-point group)"
        )
    return types[name]


def _discover() -> dict[str, RuleType]:
    global _discovered
    if _discovered is not None:
        return _discovered
    from importlib.metadata import entry_points

    from orderflow.settings import rule_type_specs

    found: dict[str, RuleType] = {}

    def add(obj: Any, source: str) -> None:
        for rt in _as_rule_types(obj, source):
            if rt.core:
                raise RuleTypeError(f"{source}: only OrderFlow's own rule types are core=True")
            other = found.get(rt.name) or _core.get(rt.name) or _added.get(rt.name)
            if other is not None and other != rt:
                raise RuleTypeError(
                    f"rule type {rt.name!r} from {source} is already registered from "
                    f"{other.source or 'OrderFlow itself'}; rename one of them"
                )
            found[rt.name] = rt

    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        dist = getattr(ep.dist, "name", None)
        source = f"entry point {ep.name} = {ep.value}" + (f" (package {dist})" if dist else "")
        try:
            obj = ep.load()
        except Exception as exc:
            raise RuleTypeError(f"{source} does not load: {type(exc).__name__}: {exc}") from exc
        add(obj, source)
    for spec in rule_type_specs():
        source = f"ORDERFLOW_RULE_TYPES {spec}"
        module, _, attr = spec.partition(":")
        try:
            obj = getattr(importlib.import_module(module), attr) if attr else None
        except Exception as exc:
            raise RuleTypeError(f"{source} does not load: {type(exc).__name__}: {exc}") from exc
        if obj is None:
            raise RuleTypeError(f"{source}: name it as module:attribute")
        add(obj, source)
    with _lock:
        if _discovered is None:
            _discovered = found
        return _discovered


def _as_rule_types(obj: Any, source: str) -> list[RuleType]:
    if callable(obj) and not isinstance(obj, RuleType | type):
        obj = obj()
    items = list(obj) if isinstance(obj, list | tuple) else [obj]
    out = []
    for item in items:
        if not isinstance(item, RuleType):
            raise RuleTypeError(
                f"{source} is a {type(item).__name__}, not an orderflow.rules.RuleType (or a "
                "list of them, or a function returning one)"
            )
        out.append(item if item.source else replace(item, source=source))
    return out


# ---------------------------------------------------------------------------- at a stage


def applied(book: RuleBook, *, core: bool = False) -> list[tuple[RuleType, Any]]:
    """The rule types the validation stage calls, each with its version in ``book`` (a
    type with no version in effect does not apply): those beyond the core, and with
    ``core`` first the core ones with hooks (the stage's own call)."""
    types = rule_types()
    names = list(book.extensions)
    if core:
        names = [n for n, t in types.items() if t.core and t.applies] + names
    return [
        (types[name], rs)
        for name in names
        if name in types and types[name].applies and (rs := book.get(name)) is not None
    ]


def load_contexts(conn: Any, book: RuleBook, orders: Sequence[OrderView]) -> dict[str, Any]:
    """Per applied rule type with a ``load_context`` (the core's included): what it read
    from the store for ``orders`` (call it inside the stage's transaction, before the domain
    decides)."""
    return {
        rt.name: rt.load_context(conn, orders, rs)
        for rt, rs in applied(book, core=True)
        if rt.load_context is not None
    }


def checks(
    book: RuleBook, contexts: dict[str, Any] | None = None, *, core: bool = False
) -> list[BoundCheck]:
    """What :func:`orderflow.domain.validation.validate` takes as ``checks``: the rule types
    beyond the core, and with ``core`` (what a stage passes) the core ones with hooks first."""
    contexts = contexts or {}
    return [BoundCheck(rt, rs, contexts.get(rt.name)) for rt, rs in applied(book, core=core)]


def categories(book: RuleBook, *, core: bool = False) -> list[ExceptionCategory]:
    """The exception categories the applied rule types (and a failing check) may open."""
    from orderflow.domain.validation import RULE_ERROR

    out = {c.category: c for rt, _ in applied(book, core=core) for c in rt.categories}
    if out or applied(book, core=core):
        out.setdefault(
            RULE_ERROR,
            ExceptionCategory(
                RULE_ERROR,
                "A rule type's check failed on the order",
                default_owner_role="operations_manager",
                default_sla_minutes=120,
            ),
        )
    return list(out.values())


def tag(book: RuleBook, *, core: bool = False) -> list[str]:
    """The names of the applied rule types, for the stage's ``rule_set_version``."""
    return [rt.name for rt, _ in applied(book, core=core)]
