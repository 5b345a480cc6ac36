"""What a document extractor may match against: customers, ship-tos, items and customer
part numbers, indexed for exact look-ups and for fuzzy suggestions.

Built once by the caller from master data (the rows of ``world.json`` or the store) and
shared by every message of a batch; building it is the expensive part, look-ups are dict
hits. Pure: no I/O.

Matching policy (DESIGN §8, "never a silent guess"):

* an *identification* is an exact hit on a key: the customer's own part number through a
  cross-reference, our vendor part, UPC/EAN or item id. Only identifications set
  ``OrderLine.item_id``.
* OCR text may confuse look-alike characters (``0``/``O``, ``1``/``I``, ``5``/``S`` …); for OCR
  reads a hit on the *folded* key (look-alikes mapped to one character) counts as an
  identification when it is unique, but the caller caps its confidence.
* everything else (edit distance, description similarity) is a *suggestion* with a score,
  shown to the person who confirms the order, never applied.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

# Characters OCR engines confuse, folded to one representative (applied to both sides).
_FOLD = str.maketrans(
    {"O": "0", "Q": "0", "D": "0", "I": "1", "L": "1", "S": "5", "B": "8", "Z": "2"}
)
_NON_ALNUM = re.compile(r"[^A-Z0-9]")
STANDARD_UOMS = frozenset(
    [
        "EA",
        "CS",
        "BX",
        "PK",
        "FT",
        "LB",
        "DZ",
        "PR",
        "RL",
        "GAL",
        "GA",
        "KG",
        "LT",
        "ML",
        "OZ",
        "IN",
        "YD",
        "M",
        "PC",
        "PCS",
        "SET",
        "BG",
        "BAG",
        "CT",
        "CTN",
        "PL",
        "TB",
        "BD",
        "KT",
        "DR",
        "CA",
        "EACH",
        "BOX",
    ]
)


def norm_code(value: str) -> str:
    """An identifier as a key: upper case, no surrounding or inner white space."""
    return re.sub(r"\s+", "", value or "").upper()


def fold_code(value: str) -> str:
    """An identifier as an OCR-tolerant key: alphanumerics only, look-alikes folded."""
    return _NON_ALNUM.sub("", norm_code(value)).translate(_FOLD)


def shape(value: str) -> str:
    """``PKG-826-00001`` → ``AAA-999-99999``: the house style of an identifier."""
    return re.sub(r"[0-9]", "9", re.sub(r"[A-Z]", "A", norm_code(value)))


def norm_text(value: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[^A-Z0-9/.\- ]", " ", (value or "").upper())).strip()


@dataclass(frozen=True, slots=True)
class ItemMatch:
    """The outcome of identifying one product identifier."""

    item_id: str | None
    basis: str  # xref | vendor_part | upc | item_id | xref_folded | ... | ambiguous | none
    qualifier: str | None  # BP, VP, UP, EN, SK: what the identifier turned out to be
    candidates: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Suggestion:
    item_id: str
    score: float  # 0..1
    basis: str  # description | code_distance
    description: str = ""


class Catalog:
    """Master data the extractor may match against.

    ``customers``: customer_id, email, name; ``ship_tos``: ship_to_id, customer_id, name,
    address_line1/2, city, region, postal_code; ``items``: item_id, description, uom,
    vendor_part, upc; ``xrefs``: customer_id, customer_part_number, item_id. Extra keys are
    ignored, missing optional keys are tolerated.
    """

    def __init__(
        self,
        customers: list[dict[str, Any]],
        ship_tos: list[dict[str, Any]],
        items: list[dict[str, Any]],
        xrefs: list[dict[str, Any]],
    ) -> None:
        self.customers, self.ship_tos, self.items, self.xrefs = customers, ship_tos, items, xrefs
        self._index: dict[str, Any] = {}
        self.customer = {c["customer_id"]: c for c in self.customers if c.get("customer_id")}
        self.by_email: dict[str, str] = {}
        self.by_domain: dict[str, list[str]] = defaultdict(list)
        for c in self.customers:
            email = (c.get("email") or "").strip().lower()
            if email and "@" in email:
                self.by_email[email] = c["customer_id"]
                self.by_domain[email.rsplit("@", 1)[1]].append(c["customer_id"])
        self.ship_to = {s["ship_to_id"]: s for s in self.ship_tos if s.get("ship_to_id")}
        self.ship_tos_of: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for s in self.ship_tos:
            self.ship_tos_of[s.get("customer_id") or ""].append(s)
        self.item = {i["item_id"]: i for i in self.items if i.get("item_id")}
        self.by_vendor_part = _unique_index(
            (norm_code(i.get("vendor_part") or ""), i["item_id"]) for i in self.items
        )
        self.by_upc = _unique_index(
            (norm_code(i.get("upc") or "").lstrip("0"), i["item_id"]) for i in self.items
        )
        self.by_item_id = {norm_code(k): k for k in self.item}
        self.xref: dict[tuple[str, str], list[str]] = defaultdict(list)
        self.cpn_shapes: dict[str, set[str]] = defaultdict(set)
        self.cpns_of: dict[str, list[str]] = defaultdict(list)
        for x in self.xrefs:
            key = (x.get("customer_id") or "", norm_code(x.get("customer_part_number") or ""))
            if key[1] and x.get("item_id") and x["item_id"] not in self.xref[key]:
                if not self.xref[key]:
                    self.cpns_of[key[0]].append(key[1])
                self.xref[key].append(x["item_id"])
                self.cpn_shapes[key[0]].add(shape(key[1]))
        self.vendor_shapes = {shape(i.get("vendor_part") or "") for i in self.items} - {""}
        self.uoms = STANDARD_UOMS | {
            (i.get("uom") or "").upper() for i in self.items if (i.get("uom") or "").isalpha()
        }

    # ------------------------------------------------------------------ parties

    def customer_for_sender(self, address: str | None) -> tuple[str | None, float, str]:
        """Sender address → (customer_id, confidence, basis). An exact address is the
        customer's registered buyer mailbox; a domain-only match is weaker (a colleague,
        or a shared domain)."""
        address = (address or "").strip().lower()
        if not address or "@" not in address:
            return None, 0.0, "no_sender"
        if address in self.by_email:
            return self.by_email[address], 1.0, "email"
        domain = address.rsplit("@", 1)[1]
        owners = self.by_domain.get(domain, [])
        if len(owners) == 1:
            return owners[0], 0.9, "domain"
        if owners:
            return None, 0.0, "domain_ambiguous"
        return None, 0.0, "unknown_sender"

    def customers_for_domain(self, address: str | None) -> list[str]:
        address = (address or "").strip().lower()
        return list(self.by_domain.get(address.rsplit("@", 1)[-1], [])) if "@" in address else []

    def ship_tos_for(self, customer_id: str | None) -> list[dict[str, Any]]:
        return self.ship_tos_of.get(customer_id or "", [])

    # ------------------------------------------------------------------ items

    def identify(self, code: str, customer_id: str | None, *, ocr: bool = False) -> ItemMatch:
        """An identifier as printed → our item, by exact key (or, for OCR, folded key)."""
        key = norm_code(code)
        if not key:
            return ItemMatch(None, "none", None)
        hits = self.xref.get((customer_id or "", key))
        if hits:
            if len(hits) > 1:
                return ItemMatch(None, "ambiguous_xref", "BP", tuple(hits))
            return ItemMatch(hits[0], "xref", "BP")
        if key in self.by_vendor_part:
            return _from_unique(self.by_vendor_part[key], "vendor_part", "VP")
        if key in self.by_item_id:
            return ItemMatch(self.by_item_id[key], "item_id", "SK")
        if key.isdigit() and key.lstrip("0") in self.by_upc:
            return _from_unique(
                self.by_upc[key.lstrip("0")], "upc", "UP" if len(key) <= 12 else "EN"
            )
        if ocr:
            return self._identify_folded(key, customer_id)
        return ItemMatch(None, "none", None)

    def _identify_folded(self, key: str, customer_id: str | None) -> ItemMatch:
        folded = fold_code(key)
        if len(folded) < 4:
            return ItemMatch(None, "none", None)
        idx = self._folded()
        hits: set[tuple[str, str]] = set()
        for qual, item_id in idx["global"].get(folded, ()):
            hits.add((qual, item_id))
        for item_id in idx["xref"].get((customer_id or "", folded), ()):
            hits.add(("BP", item_id))
        items = {i for _, i in hits}
        if len(items) == 1:
            qual = sorted(hits)[0][0]
            return ItemMatch(next(iter(items)), "folded", qual)
        if items:
            return ItemMatch(None, "ambiguous_folded", None, tuple(sorted(items)))
        return ItemMatch(None, "none", None)

    def _folded(self) -> dict[str, Any]:
        if "folded" not in self._index:
            glob: dict[str, set[tuple[str, str]]] = defaultdict(set)
            for i in self.items:
                if i.get("vendor_part"):
                    glob[fold_code(i["vendor_part"])].add(("VP", i["item_id"]))
                glob[fold_code(i["item_id"])].add(("SK", i["item_id"]))
            xref: dict[tuple[str, str], set[str]] = defaultdict(set)
            for (cust, cpn), ids in self.xref.items():
                xref[(cust, fold_code(cpn))].update(ids)
            self._index["folded"] = {"global": glob, "xref": xref}
        return self._index["folded"]

    def looks_like_code(self, value: str, customer_id: str | None) -> str | None:
        """'BP' or 'VP' when ``value`` has the shape of this customer's part numbers or of
        our vendor parts (used to name an identifier we could not resolve)."""
        s = shape(value)
        if customer_id and s in self.cpn_shapes.get(customer_id, ()):
            return "BP"
        if s in self.vendor_shapes:
            return "VP"
        return None

    def suggest(
        self,
        description: str | None,
        code: str | None = None,
        *,
        customer_id: str | None = None,
        limit: int = 3,
    ) -> list[Suggestion]:
        """Best catalogue candidates for an unresolved line: by identifier edit distance and
        by description similarity (rapidfuzz). Scores are 0..1; ties lower the score, since a
        description shared by several items cannot identify one."""
        from rapidfuzz import fuzz, process

        out: dict[str, Suggestion] = {}
        idx = self._fuzzy()
        if code and len(norm_code(code)) >= 5:
            for _key, score, pos in process.extract(
                norm_code(code), idx["codes"], scorer=fuzz.ratio, limit=limit, score_cutoff=75
            ):
                item_id = idx["code_items"][pos]
                out[item_id] = Suggestion(
                    item_id, score / 100, "code_distance", self._desc(item_id)
                )
            cpns = self.cpns_of.get(customer_id or "", [])
            if cpns:
                for cpn, score, _pos in process.extract(
                    norm_code(code), cpns, scorer=fuzz.ratio, limit=limit, score_cutoff=75
                ):
                    for item_id in self.xref[(customer_id or "", cpn)]:
                        s = score / 100
                        if item_id not in out or out[item_id].score < s:
                            out[item_id] = Suggestion(
                                item_id, s, "code_distance", self._desc(item_id)
                            )
        query = norm_text(description or "")
        if len(query) >= 3:
            results = process.extract(
                query,
                idx["descs"],
                scorer=fuzz.token_sort_ratio,
                limit=max(limit, 5),
                score_cutoff=60,
            )
            if results:
                top = results[0][1]
                tied = sum(len(idx["desc_items"][pos]) for _, s, pos in results if s >= top - 0.5)
                for _text, score, pos in results:
                    for item_id in idx["desc_items"][pos]:
                        s = score / 100 * (1.0 if tied == 1 else 0.9)
                        if item_id not in out or out[item_id].score < s:
                            out[item_id] = Suggestion(
                                item_id, s, "description", self._desc(item_id)
                            )
        return sorted(out.values(), key=lambda s: -s.score)[:limit]

    def description_similarity(self, item_id: str, description: str | None) -> float:
        from rapidfuzz import fuzz

        if not description or item_id not in self.item:
            return 0.0
        return fuzz.token_sort_ratio(norm_text(description), norm_text(self._desc(item_id))) / 100

    def _desc(self, item_id: str) -> str:
        return (self.item.get(item_id) or {}).get("description") or ""

    def _fuzzy(self) -> dict[str, Any]:
        if "fuzzy" not in self._index:
            by_desc: dict[str, list[str]] = defaultdict(list)
            for i in self.items:
                if i.get("description"):
                    by_desc[norm_text(i["description"])].append(i["item_id"])
            codes, code_items = [], []
            for i in self.items:
                if i.get("vendor_part"):
                    codes.append(norm_code(i["vendor_part"]))
                    code_items.append(i["item_id"])
            self._index["fuzzy"] = {
                "descs": list(by_desc),
                "desc_items": list(by_desc.values()),
                "codes": codes,
                "code_items": code_items,
            }
        return self._index["fuzzy"]


def _unique_index(pairs) -> dict[str, str | None]:
    """key → item id, or None when the key is shared by several items (not an identity)."""
    out: dict[str, str | None] = {}
    for key, item_id in pairs:
        if not key:
            continue
        out[key] = item_id if key not in out or out[key] == item_id else None
    return out


def _from_unique(item_id: str | None, basis: str, qualifier: str) -> ItemMatch:
    if item_id is None:
        return ItemMatch(None, f"ambiguous_{basis}", qualifier)
    return ItemMatch(item_id, basis, qualifier)
