"""Canonical objects of OrderFlow (pydantic v2). Every channel parser produces these; every
stage decides on these. Money is ``Decimal`` with a currency; quantities carry a unit of
measure; times are timezone-aware UTC.

The bounds below are the one source of what the operational store can hold: the models
enforce them, migration 0011 builds the store's CHECK constraints from them, and
``tests/integration/test_intake_poison.py`` proves (hypothesis, real PostgreSQL) that
whatever these models accept, the store accepts — and that the store's column types are
these numbers. A value outside them is refused here, with the field named, never by the
database in the middle of a batch.
"""

from __future__ import annotations

import hashlib
import re
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

# ------------------------------------------------------------------ store bounds (one source)
#: order_line.quantity numeric(14, 3): at most 11 digits before the point, 3 after
QUANTITY_PRECISION, QUANTITY_SCALE = 14, 3
#: order_line.unit_price numeric(14, 4)
PRICE_PRECISION, PRICE_SCALE = 14, 4
#: order.order_total numeric(14, 2) (the sum of quantity x price, rounded to cents)
TOTAL_PRECISION, TOTAL_SCALE = 14, 2
#: order_line.line_no integer (> 0); also any count kept in the canonical JSON
MAX_INT = 2**31 - 1
#: identifiers kept in indexed text columns (po_number, customer_id, partner_id, ship_to_id,
#: item_id, customer_part_number, order_id): a btree entry must stay far below 2,704 bytes
MAX_ID_CHARS = 200
#: codes: unit of measure, id qualifiers
MAX_CODE_CHARS = 35
#: free text (descriptions, notes, address lines, references) in the canonical JSON
MAX_TEXT_CHARS = 10_000
#: ISO 4217 alphabetic code (order.currency char(3))
CURRENCY_PATTERN = r"^[A-Z]{3}$"

#: characters PostgreSQL text/jsonb cannot hold (NUL) or UTF-8 cannot encode (surrogates)
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _storable_str(value: str) -> str:
    """A string field's own check (one compiled search; its length is the type's bound)."""
    if _UNSTORABLE.search(value) is not None:
        check_storable(value)  # raises, describing the character
    return value


_Storable = AfterValidator(_storable_str)
Ident = Annotated[str, Field(max_length=MAX_ID_CHARS), _Storable]
Code = Annotated[str, Field(max_length=MAX_CODE_CHARS), _Storable]
Text = Annotated[str, Field(max_length=MAX_TEXT_CHARS), _Storable]
LineNo = Annotated[int, Field(gt=0, le=MAX_INT)]
Quantity = Annotated[
    Decimal,
    Field(
        gt=0,
        max_digits=QUANTITY_PRECISION,
        decimal_places=QUANTITY_SCALE,
        allow_inf_nan=False,
    ),
]
UnitPrice = Annotated[
    Decimal,
    Field(ge=0, max_digits=PRICE_PRECISION, decimal_places=PRICE_SCALE, allow_inf_nan=False),
]
CurrencyCode = Annotated[str, Field(pattern=CURRENCY_PATTERN)]

Confidence = Annotated[float, Field(ge=0.0, le=1.0)]


def unstorable_char(value: str) -> str | None:
    """The first character of ``value`` the store cannot hold, described, or None."""
    m = _UNSTORABLE.search(value)
    if m is None:
        return None
    return f"U+{ord(m.group()):04X} at position {m.start()}"


def storable_text(value: str) -> str:
    """``value`` with every character the store cannot hold replaced by U+FFFD. For our own
    diagnostics only (error messages, details); order data is refused, never altered."""
    return _UNSTORABLE.sub("\ufffd", value)


#: a cell a spreadsheet would evaluate: =, +, @, tab, CR, LF at the start, or - unless the
#: whole value is a plain number (OWASP "CSV injection"; "-2+3+cmd|..." is a formula)
_FORMULA = re.compile(r"^[=+@\t\r\n\uff1d\uff0b\uff20]|^-(?![0-9.,]*$)")


def looks_like_formula(value: str) -> bool:
    return bool(value) and _FORMULA.match(value) is not None


def spreadsheet_safe(value: str) -> str:
    """``value`` as text a spreadsheet shows rather than evaluates (leading apostrophe)."""
    return "'" + value if looks_like_formula(value) else value


def numeric_misfit(value: Decimal, precision: int, scale: int) -> str | None:
    """Why ``value`` does not fit ``numeric(precision, scale)`` without rounding (the same
    rule pydantic applies with ``max_digits``/``decimal_places``), or None if it fits."""
    if not value.is_finite():
        return "is not a finite number"
    d = value.normalize()
    places = max(0, -d.as_tuple().exponent)
    whole = max(0, d.adjusted() + 1) if d else 0
    if places > scale:
        return f"has {places} decimal places; at most {scale} are kept"
    if whole > precision - scale:
        return f"has {whole} digits before the decimal point; at most {precision - scale} fit"
    return None


def check_storable(value: Any, where: str = "") -> None:
    """Every string inside ``value`` (lists and dict keys included) must be storable and
    bounded; nested models check themselves."""
    if isinstance(value, str):
        bad = unstorable_char(value)
        if bad:
            raise ValueError(
                f"text{where} contains a character the store cannot hold ({bad}); "
                "NUL bytes and unpaired surrogates are refused"
            )
        if len(value) > MAX_TEXT_CHARS:
            raise ValueError(f"text{where} is longer than {MAX_TEXT_CHARS} characters")
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            check_storable(v, f"{where}[{i}]")
    elif isinstance(value, dict):
        for k, v in value.items():
            check_storable(k, f"{where} key")
            check_storable(v, f"{where}[{k!r}]" if isinstance(k, str) and len(k) < 40 else where)


class Channel(StrEnum):
    EDI = "edi"
    PORTAL = "portal"
    EMAIL = "email"
    CSV = "csv"
    API = "api"
    MARKETPLACE = "marketplace"


class _Canonical(BaseModel):
    """The canonical order models: every string they hold is of a checked type (``Ident``,
    ``Code``, ``Text``, keys included), so storability is checked once per string, in the
    type, not by a validator called on every field."""

    model_config = ConfigDict(extra="forbid", frozen=False, str_strip_whitespace=True)


class _Model(_Canonical):
    """Models with plain ``str`` fields: every field (lists and dict keys included) is
    checked storable by a validator."""

    @field_validator("*", mode="after")
    @classmethod
    def _storable(cls, v: Any) -> Any:
        check_storable(v)
        return v


class Provenance(_Canonical):
    """Where an order came from, precisely enough to find and replay the source."""

    channel: Channel
    partner_id: Ident | None = None
    message_id: int | None = Field(None, ge=1, le=2**63 - 1, description="channel_message id")
    source_ref: Text | None = Field(None, description="file name, mail id, feed cursor")
    document_sha256: Ident | None = None
    interchange_control_number: Ident | None = Field(None, description="ISA13")
    group_control_number: Ident | None = Field(None, description="GS06")
    transaction_control_number: Ident | None = Field(None, description="ST02")
    client_request_id: Ident | None = None
    received_at: AwareDatetime | None = None
    extraction_model: Text | None = Field(None, description="model@version for extracted documents")


class Address(_Canonical):
    """A party: buyer, ship-to, bill-to. ``party_id`` is the sender's code for it (N104)."""

    name: Text | None = None
    party_id: Ident | None = None
    party_id_qualifier: Code | None = None
    address_lines: list[Text] = Field(default_factory=list)
    city: Text | None = None
    region: Text | None = None
    postal_code: Text | None = None
    country: Text | None = None


class ProductId(_Canonical):
    """One product identifier as sent, e.g. (BP, buyer part) or (UP, UPC) from PO1."""

    qualifier: Code
    value: Ident


class Charge(_Canonical):
    """An allowance or charge (X12 SAC)."""

    indicator: Code = Field(description="A allowance, C charge, N no allowance or charge")
    code: Code | None = None
    amount: Decimal | None = Field(None, allow_inf_nan=False)
    description: Text | None = None


class OrderLine(_Canonical):
    line_no: LineNo
    source_line_id: Ident | None = Field(None, description="PO101 / the document's own line id")
    product_ids: list[ProductId] = Field(default_factory=list)
    customer_part_number: Ident | None = None
    item_id: Ident | None = Field(None, description="Our item, once mapped (None at intake)")
    description: Text | None = None
    quantity: Quantity
    uom: Code = Field(min_length=1)
    unit_price: UnitPrice | None = None
    price_basis: Code | None = Field(None, description="PO105, e.g. PE per each")
    pack: Text | None = Field(None, description="PO4 pack/size/uom, as sent")
    requested_ship_date: date | None = None
    confidence: dict[Text, Confidence] = Field(default_factory=dict)

    def product_id(self, *qualifiers: str) -> str | None:
        for q in qualifiers:
            for pid in self.product_ids:
                if pid.qualifier == q:
                    return pid.value
        return None


class Order(_Canonical):
    """A customer purchase order in canonical form, whatever channel it came from."""

    order_id: Ident = Field(min_length=1)
    po_number: Ident = Field(min_length=1)
    po_date: date | None = None
    purpose: Code = Field("original", description="original | replace | cancel | confirmation")
    order_type: Code | None = Field(None, description="BEG02, e.g. SA stand-alone, DS drop ship")
    customer_id: Ident | None = Field(None, description="Our customer, when the channel knows it")
    buyer: Address | None = None
    ship_to: Address | None = None
    bill_to: Address | None = None
    currency: CurrencyCode = Field("USD", description="ISO 4217, three letters")
    requested_ship_date: date | None = None
    requested_delivery_date: date | None = None
    cancel_after: date | None = None
    carrier_routing: Text | None = Field(None, description="TD5 routing / carrier request")
    payment_terms: Text | None = None
    references: dict[Text, Text] = Field(default_factory=dict)
    contacts: list[Text] = Field(default_factory=list)
    charges: list[Charge] = Field(default_factory=list)
    notes: list[Text] = Field(default_factory=list)
    lines: list[OrderLine] = Field(min_length=1)
    declared_line_count: int | None = Field(None, ge=0, le=MAX_INT, description="CTT01 as sent")
    provenance: Provenance
    confidence: dict[Text, Confidence] = Field(default_factory=dict)

    @field_validator("currency", mode="before")
    @classmethod
    def _upper(cls, v: Any) -> Any:
        return v.strip().upper() if isinstance(v, str) else v

    @model_validator(mode="after")
    def _fits_the_store(self) -> Order:
        seen: set[int] = set()
        for ln in self.lines:
            if ln.line_no in seen:
                raise ValueError(
                    f"line number {ln.line_no} appears more than once; "
                    "every line of an order needs its own number"
                )
            seen.add(ln.line_no)
        total = self.total
        if total is not None:
            whole = TOTAL_PRECISION - TOTAL_SCALE
            if total and (
                total.adjusted() >= whole
                or abs(total.quantize(Decimal(1).scaleb(-TOTAL_SCALE), ROUND_HALF_UP))
                >= Decimal(10) ** whole
            ):
                raise ValueError(
                    f"the order total (quantity x price over all lines) has more than {whole} "
                    "digits before the decimal point"
                )
        return self

    @property
    def total(self) -> Decimal | None:
        if any(ln.unit_price is None for ln in self.lines):
            return None
        return sum((ln.quantity * ln.unit_price for ln in self.lines), Decimal("0"))

    @property
    def min_confidence(self) -> float:
        values = list(self.confidence.values()) + [
            v for ln in self.lines for v in ln.confidence.values()
        ]
        return min(values, default=1.0)


def order_id_for(channel: str, partner_id: str | None, po_number: str, discriminator: str) -> str:
    """A stable order id: the same source document always yields the same id, so a replay
    or a rerun upserts instead of duplicating. ``discriminator`` separates distinct orders
    that reuse a PO number (e.g. the ST02 or the message hash)."""
    digest = hashlib.sha256(
        f"{channel}|{partner_id or ''}|{po_number}|{discriminator}".encode()
    ).hexdigest()[:12]
    return f"{channel.upper()[:3]}-{digest}"


class IntakeError(BaseModel):
    """A human-actionable reason a message (or part of it) was not accepted. Its text may
    quote hostile input, so it is made storable (U+FFFD for NUL, bounded) instead of refused."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @field_validator("*", mode="before")
    @classmethod
    def _storable(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = storable_text(v)
            return v if len(v) <= 2000 else v[:1999] + "\u2026"
        return v

    code: str = Field(description="machine code, e.g. x12.se_count_mismatch")
    message: str = Field(description="what is wrong, in words a person can act on")
    where: str | None = Field(None, description="segment/line/field, e.g. 'ST 0001 / SE01'")
    action: str | None = Field(None, description="what to do about it")
