"""Near-duplicate orders across channels (#17, model 2).

The same order re-submitted on another channel — an EDI re-send with the PO number
reformatted, an e-mailed PDF read by OCR, a portal re-entry, a re-key by inside sales with a
line dropped or a quantity changed — is not caught by the exact checks of
``orderflow.domain.validation`` (same PO number; identical lines within the window). This
module scores a new order against the customer's other orders in a time window and names the
best match, with the evidence; the validation stage holds the order ``possible_duplicate``
when the score reaches the threshold of the validation rules (``near_duplicates``), and a
person confirms (reject: it was a duplicate; approve: it is an order of its own).

- :func:`block` — the candidates: the same customer (sold-to), within the window.
- :func:`features` — what a pair of orders is compared on: the normalised PO numbers
  (prefixes, dashes, zero padding and OCR confusions folded away; how far apart two PO numbers
  of one sequence are), ship-to, the line sets (lines paired by our item when both are mapped,
  else by part numbers and descriptions with rapidfuzz), quantity and price agreement, the
  channel pair and the time between them.
- :func:`train` — a logistic regression (scikit-learn) on labelled pairs, with the threshold
  calibrated on a later slice of the training period (the best F1 of orders flagged, as the
  flow flags them: an order's best match only).
- :func:`score` — the candidates that match, best first: ``(order_id, score, evidence)``.
- :func:`evaluate` — generate a labelled history (``orderflow_sandbox.generator.duplicates``),
  train on its first period, measure ``dup_precision`` / ``dup_recall`` on a later period it
  did not train on.

Pure computation on plain records (:class:`Doc`); scikit-learn is imported only where a model
is trained or loaded. The model is a small versioned object (:class:`Model`: estimator,
threshold, training window, metrics): a model of ``orderflow.ai.registry`` (``near_duplicate``),
trained by ``orderflow.ai.training`` from the store's labelled pairs (:func:`examples`) and
stored, hash-checked, in ``orderflow.ai_model_version`` like the others.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

MODEL_NAME = "near_duplicate"
#: lines whose similarity reaches this are the same line
LINE_MATCH = 0.8
CHANNELS = ("edi", "portal", "email", "csv")


# ---------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class DocLine:
    item_id: str | None  # our item, when the line is mapped
    parts: tuple[str, ...]  # the identifiers the document shows (normalised)
    description: str  # normalised
    quantity: float
    unit_price: float | None


@dataclass(frozen=True, slots=True)
class Doc:
    """An order as the model compares it."""

    order_id: str
    customer_id: str | None
    ship_to_id: str | None
    channel: str
    po_number: str
    received_at: datetime
    lines: tuple[DocLine, ...]
    po_key: str = field(default="", compare=False)
    #: its PO number is a new one of the customer's sequence: a neighbour of the PO number
    #: of some candidate, and the same as none (set by :func:`in_context`)
    po_new_in_sequence: bool = field(default=False, compare=False)

    @staticmethod
    def of(
        order_id: str,
        customer_id: str | None,
        ship_to_id: str | None,
        channel: str,
        po_number: str,
        received_at: datetime,
        lines: Iterable[tuple[str | None, Iterable[str], str | None, Any, Any]],
    ) -> Doc:
        """From plain values; ``lines``: (item_id, parts, description, quantity, price)."""
        return Doc(
            order_id,
            customer_id,
            ship_to_id,
            channel or "",
            po_number or "",
            received_at,
            tuple(
                DocLine(
                    item_id or None,
                    tuple(dict.fromkeys(p for p in (_norm_part(x) for x in parts if x) if p)),
                    _norm_text(desc or ""),
                    float(qty),
                    None if price is None else float(price),
                )
                for item_id, parts, desc, qty, price in lines
            ),
            normalise_po(po_number or ""),
        )


def from_generated(row: dict[str, Any]) -> Doc:
    """A generated order (``orderflow_sandbox.generator.duplicates``)."""
    return Doc.of(
        row["order_id"],
        row["customer_id"],
        row["ship_to_id"],
        row["channel"],
        row["po_number"],
        row["received_at"],
        (
            (ln["item_id"], ln["parts"], ln["description"], ln["quantity"], ln["unit_price"])
            for ln in row["lines"]
        ),
    )


def from_view(order: Any, channel: str | None = None, lines: Sequence[Any] | None = None) -> Doc:
    """An order of the validation stage (``OrderView``, or a ``PriorOrder`` with its lines)."""
    views = order.lines if lines is None else lines
    return Doc.of(
        order.order_id,
        order.customer_id,
        order.ship_to_id,
        channel if channel is not None else getattr(order, "channel", ""),
        order.po_number,
        order.received_at,
        (
            (
                ln.item_id,
                [ln.customer_part_number or "", *(v for _, v in ln.product_ids)],
                getattr(ln, "description", None),
                ln.quantity,
                ln.unit_price,
            )
            for ln in views
        ),
    )


# ---------------------------------------------------------------------------- normalising

#: characters OCR and people confuse, folded to one (letters to the digits they resemble)
_FOLD = str.maketrans("OQDIL|SZBG", "0001115286")
_PO_PREFIX = re.compile(r"^(?:PURCHASEORDER|PONUMBER|PONO|PO)+(?=\w)")
_NON_ALNUM = re.compile(r"[^0-9A-Z]+")


def normalise_po(po: str) -> str:
    """A PO number with its formatting folded away: case, spaces, punctuation, a ``PO``
    prefix, look-alike characters, leading zeros. ``"PO# 0045-0001 2345"`` and
    ``"4500012345"`` compare equal."""
    s = _NON_ALNUM.sub("", po.upper())
    s = _PO_PREFIX.sub("", s)
    return s.translate(_FOLD).lstrip("0")


def _norm_part(part: str) -> str:
    return _NON_ALNUM.sub("", part.upper()).translate(_FOLD).lstrip("0")


def _norm_text(text: str) -> str:
    return " ".join(_NON_ALNUM.sub(" ", text.upper()).split())


# ---------------------------------------------------------------------------- blocking


def block(order: Doc, candidates: Iterable[Doc], window: timedelta) -> list[Doc]:
    """The orders ``order`` could duplicate: the same customer (sold-to), received within
    ``window`` of it, not itself. An order without a customer has none."""
    if not order.customer_id:
        return []
    return [
        c
        for c in candidates
        if c.order_id != order.order_id
        and c.customer_id == order.customer_id
        and abs(c.received_at - order.received_at) <= window
    ]


# ---------------------------------------------------------------------------- features

#: A PO number that agrees is evidence only together with lines that agree (a PO typed with a
#: slip is one character from the customer's *next* PO number too): the PO features that say
#: "the same PO" are weighted by the share of lines matched.
FEATURES: tuple[str, ...] = (
    "po_new_in_sequence",  # the order's PO is the customer's next, not any candidate's
    "po_equal_lines",  # the same PO after normalising x lines matched
    "po_digits_equal_lines",  # the same digits (a branch prefix left out) x lines matched
    "po_typo_lines",  # one keying slip apart (a swap, a character left out) x lines matched
    "po_slip_or_step_lines",  # a swap that is also a step of the sequence x lines matched
    "po_similarity",  # rapidfuzz ratio of the normalised PO numbers (0..1)
    "po_neighbour",  # two PO numbers of one sequence, a few numbers apart (a new order)
    "ship_to_same",
    "line_match_min",  # matched lines / lines of the longer order
    "line_match_max",  # matched lines / lines of the shorter order
    "line_count_diff",  # |lines a - lines b| (log1p)
    "line_similarity",  # mean similarity of the matched lines
    "items_known",  # share of lines mapped to our items on both sides
    "qty_equal",  # share of matched lines with the same quantity
    "qty_log_ratio",  # mean |log(qty a / qty b)| over matched lines
    "price_equal",  # share of matched lines priced the same (within 1%)
    "amount_log_ratio",  # |log(value a / value b)|
    "same_channel",
    "edi_involved",
    "email_involved",
    "csv_involved",
    "portal_involved",
    "hours_apart",  # log1p of the hours between the two arrivals
)


@dataclass(frozen=True, slots=True)
class Pair:
    """What :func:`features` found: the values and the facts a person reads as evidence."""

    values: tuple[float, ...]
    matched_lines: int
    lines: tuple[int, int]
    qty_equal: int
    hours: float


def in_context(order: Doc, candidates: Sequence[Doc]) -> Doc:
    """``order`` knowing whether its PO number is a new one of the customer's sequence among
    ``candidates`` (what :func:`features` reads as ``po_new_in_sequence``): a neighbour of
    some candidate's (and not one keying slip from it), and neither the same as nor one
    keying slip from any."""
    keys = {c.po_key for c in candidates}
    new = (
        order.po_key not in keys
        and not any(_slip(order.po_key, k) for k in keys)
        and any(
            _neighbours(order.po_number, c.po_number, order.po_key, c.po_key)
            and not _slip(order.po_key, c.po_key)
            for c in candidates
        )
    )
    return replace(order, po_new_in_sequence=new)


def features(a: Doc, b: Doc) -> Pair:
    """Compare order ``a`` (in context: :func:`in_context`) with candidate ``b`` of the same
    customer."""
    from rapidfuzz import fuzz

    pa, pb = a.po_key, b.po_key
    po_equal = float(bool(pa) and pa == pb)
    da, db = _digits(a.po_number), _digits(b.po_number)
    digits_equal = float(len(da) >= 4 and da == db)
    po_sim = fuzz.ratio(pa, pb) / 100 if pa and pb else 0.0
    step = _neighbours(a.po_number, b.po_number, pa, pb)
    slip = _slip(pa, pb)
    neighbour = float(step and not slip)
    typo = float(slip and not step)
    either = float(slip and step)  # a swap of two digits that is also a step of the sequence
    matches = _match_lines(a.lines, b.lines)
    na, nb = len(a.lines), len(b.lines)
    m = len(matches)
    sims = [s for _, _, s in matches]
    qty_eq = sum(1 for i, j, _ in matches if abs(a.lines[i].quantity - b.lines[j].quantity) < 1e-6)
    qty_lr = (
        sum(
            abs(math.log(_pos(a.lines[i].quantity) / _pos(b.lines[j].quantity)))
            for i, j, _ in matches
        )
        / m
        if m
        else 3.0
    )
    priced = [
        (a.lines[i].unit_price, b.lines[j].unit_price)
        for i, j, _ in matches
        if a.lines[i].unit_price and b.lines[j].unit_price
    ]
    price_eq = (
        sum(1 for x, y in priced if abs(x - y) <= 0.01 * max(x, y)) / len(priced) if priced else 0.5
    )
    known = sum(1 for ln in (*a.lines, *b.lines) if ln.item_id) / max(1, na + nb)
    hours = abs((a.received_at - b.received_at).total_seconds()) / 3600
    chans = {a.channel, b.channel}
    share = m / max(1, na, nb)
    values = (
        float(a.po_new_in_sequence),
        po_equal * share,
        digits_equal * share,
        typo * share,
        either * share,
        po_sim,
        neighbour,
        float(bool(a.ship_to_id) and a.ship_to_id == b.ship_to_id),
        share,
        m / max(1, min(na, nb)),
        math.log1p(abs(na - nb)),
        sum(sims) / m if m else 0.0,
        known,
        qty_eq / m if m else 0.0,
        qty_lr,
        price_eq,
        abs(math.log(_pos(_amount(a)) / _pos(_amount(b)))),
        float(a.channel == b.channel),
        float("edi" in chans),
        float("email" in chans),
        float("csv" in chans),
        float("portal" in chans),
        math.log1p(hours),
    )
    return Pair(values, m, (na, nb), qty_eq, hours)


def _pos(x: float) -> float:
    return x if x > 0 else 1e-3


def _amount(d: Doc) -> float:
    return sum(ln.quantity * (ln.unit_price or 0.0) for ln in d.lines)


def _neighbours(raw_a: str, raw_b: str, a: str, b: str) -> bool:
    """Two different PO numbers of one sequence: their runs of digits are the same but one,
    which differs by at most ``PO_SEQUENCE_GAP`` (a customer's next orders: ``PO-2026-041448``
    and ``PO-2026-041457``, ``066129-13`` and ``066131-13``), also when one of them was
    reformatted (``8597731``, the dashes of ``085977-31`` dropped, and ``085988-31``: the
    digits of both agree but for one stretch, which differs by a few numbers). ``a`` / ``b``:
    normalised."""
    if not a or not b or a == b:
        return False
    ga, gb = _digit_runs(raw_a), _digit_runs(raw_b)
    if len(ga) == len(gb):
        differ = [(x, y) for x, y in zip(ga, gb, strict=True) if int(x) != int(y)]
        return len(differ) == 1 and _close(*differ[0])
    # the formatting differs: all the digits, aligned on the ones both share at either end
    da, db = "".join(_digit_runs(a)), "".join(_digit_runs(b))
    if len(da) != len(db) or not da:
        return False
    k = 0
    while k < len(da) and da[k] == db[k]:
        k += 1
    e = len(da)
    while e > k and da[e - 1] == db[e - 1]:
        e -= 1
    return e > k and _close(da[k:e], db[k:e])


def _close(x: str, y: str) -> bool:
    return len(x) <= 15 and len(y) <= 15 and abs(int(x) - int(y)) <= PO_SEQUENCE_GAP


def _slip(a: str, b: str) -> bool:
    """``a`` and ``b`` (normalised PO numbers) one keying slip apart: two neighbouring
    characters swapped, or one left out (or typed twice). A customer's next PO number differs
    from the last by a few units — a changed character, not a missing one — so a slip that
    is not also a step of the sequence tells a mistyped copy from the next order, where a
    one-character change cannot; two last digits swapped (``…6018`` / ``…6081``) are either."""
    if a == b or not a or not b:
        return False
    if len(a) == len(b):
        d = [i for i in range(len(a)) if a[i] != b[i]]
        return len(d) == 2 and d[1] == d[0] + 1 and a[d[0]] == b[d[1]] and a[d[1]] == b[d[0]]
    if abs(len(a) - len(b)) != 1:
        return False
    long, short = (a, b) if len(a) > len(b) else (b, a)
    return any(long[:i] + long[i + 1 :] == short for i in range(len(long)))


def _digits(po: str) -> str:
    return "".join(ch for ch in po if ch.isdigit()).lstrip("0")


def _digit_runs(po: str) -> list[str]:
    """The runs of digits of a PO number as written, after its ``PO`` prefix (whose ``O``
    would otherwise fold to a zero of its own)."""
    return re.findall(r"\d+", _RAW_PO_PREFIX.sub("", po.upper()).translate(_FOLD))


_RAW_PO_PREFIX = re.compile(
    r"^[\s#:.\-]*(?:(?:PURCHASE\s*ORDER|PO\s*NUMBER|PO\s*NO|PO)[\s#:.\-]*)+"
)


#: PO numbers of one customer this close in sequence are different orders
PO_SEQUENCE_GAP = 500


def _line_similarity(x: DocLine, y: DocLine) -> float:
    from rapidfuzz import fuzz

    if x.item_id and y.item_id:
        return 1.0 if x.item_id == y.item_id else 0.0
    part = max((fuzz.ratio(p, q) / 100 for p in x.parts for q in y.parts), default=0.0)
    desc = fuzz.token_sort_ratio(x.description, y.description) / 100 if x.description else 0.0
    # a description alone is weaker evidence than a part number (similar items read alike)
    return max(part, 0.9 * desc)


def _match_lines(xs: Sequence[DocLine], ys: Sequence[DocLine]) -> list[tuple[int, int, float]]:
    """Pair lines one to one, the most similar first (greedy on the similarity matrix)."""
    if not xs or not ys:
        return []
    by_item: dict[str, list[int]] = {}
    for j, y in enumerate(ys):
        if y.item_id:
            by_item.setdefault(y.item_id, []).append(j)
    cells: list[tuple[float, int, int]] = []
    for i, x in enumerate(xs):
        if x.item_id:
            cells += [(1.0, i, j) for j in by_item.get(x.item_id, ())]
            fuzzy = [j for j, y in enumerate(ys) if not y.item_id]
        else:
            fuzzy = range(len(ys))
        for j in fuzzy:
            s = _line_similarity(x, ys[j])
            if s >= LINE_MATCH:
                cells.append((s, i, j))
    cells.sort(key=lambda c: (-c[0], c[1], c[2]))
    used_i: set[int] = set()
    used_j: set[int] = set()
    out = []
    for s, i, j in cells:
        if i in used_i or j in used_j:
            continue
        used_i.add(i)
        used_j.add(j)
        out.append((i, j, s))
    return out


# ---------------------------------------------------------------------------- model


@dataclass
class Model:
    """A trained near-duplicate model: what :func:`save` writes and :func:`score` uses."""

    estimator: Any  # a scikit-learn pipeline: scaler + logistic regression
    threshold: float  # calibrated: the score at or above which an order is flagged
    version: str
    trained_at: str
    training_window: dict[str, str]
    metrics: dict[str, float]
    features: tuple[str, ...] = FEATURES
    window_hours: int = 168
    name: str = MODEL_NAME

    @property
    def pinned(self) -> str:
        return f"{self.name}@{self.version}"

    def row(self, values: Sequence[float]) -> list[float]:
        """``values`` (in today's :data:`FEATURES` order) as this model was trained on them:
        a model stored before a feature was added (an upgrade, before the next training)
        reads the features it knows, by name, in its own order."""
        if self.features == FEATURES:
            return list(values)
        named = dict(zip(FEATURES, values, strict=True))
        missing = [n for n in self.features if n not in named]
        if missing:
            raise ValueError(
                f"{self.pinned} needs features this version no longer computes ({missing}): "
                "train it again (train_models)"
            )
        return [named[n] for n in self.features]

    def probabilities(self, rows: Sequence[Sequence[float]]) -> list[float]:
        import numpy as np

        if not rows:
            return []
        return self.estimator.predict_proba(np.asarray(rows, dtype=float))[:, 1].tolist()

    def contributions(self, row: Sequence[float]) -> list[tuple[str, float]]:
        """Each feature's share of the score's log-odds (coefficient x scaled value)."""
        if not hasattr(self.estimator, "named_steps"):
            return []
        scaler = self.estimator.named_steps["scale"]
        lr = self.estimator.named_steps["clf"]
        out = []
        for k, name in enumerate(self.features):
            z = (row[k] - scaler.mean_[k]) / (scaler.scale_[k] or 1.0)
            out.append((name, float(lr.coef_[0][k] * z)))
        return sorted(out, key=lambda kv: -abs(kv[1]))


#: (order, candidate, label): label 1 when ``order`` re-submits ``candidate``
LabelledPair = tuple[Doc, Doc, int]


def training_pairs(
    docs: Sequence[Doc], duplicate_of: dict[str, str], window: timedelta
) -> list[LabelledPair]:
    """Every blocked pair of ``docs`` (each order against the customer's earlier orders in
    the window) with its label: the two are copies of one order."""
    root = _roots(duplicate_of)
    out: list[LabelledPair] = []
    for order, cands in _earlier(docs, window):
        for c in cands:
            same = root.get(order.order_id, order.order_id) == root.get(c.order_id, c.order_id)
            out.append((order, c, int(same)))
    return out


def _roots(duplicate_of: dict[str, str]) -> dict[str, str]:
    out = {}
    for d, o in duplicate_of.items():
        while o in duplicate_of:
            o = duplicate_of[o]
        out[d] = o
    return out


def _earlier(docs: Sequence[Doc], window: timedelta) -> Iterable[tuple[Doc, list[Doc]]]:
    """Each order (by arrival) with the customer's earlier orders within ``window``: the
    candidates the stage sees when orders are validated as they arrive."""
    seen: dict[str, list[Doc]] = {}
    for d in sorted(docs, key=lambda x: (x.received_at, x.order_id)):
        prior = seen.setdefault(d.customer_id or "", [])
        cands = block(d, prior, window)
        yield in_context(d, cands), cands
        prior.append(d)


def train(
    pairs: Sequence[LabelledPair],
    *,
    window_hours: int = 168,
    version: str | None = None,
    folds: int = 4,
) -> Model:
    """Fit the classifier on ``pairs`` (:func:`fit`)."""
    return fit(
        [features(o, c).values for o, c, _ in pairs],
        [y for _, _, y in pairs],
        [o.received_at for o, _, _ in pairs],
        [o.order_id for o, _, _ in pairs],
        window_hours=window_hours,
        version=version,
        folds=folds,
    )


def fit(
    rows: Sequence[Sequence[float]],
    labels: Sequence[int],
    times: Sequence[datetime],
    orders: Sequence[str],
    *,
    window_hours: int = 168,
    version: str | None = None,
    folds: int = 4,
) -> Model:
    """Fit the classifier on pair feature ``rows`` (label 1: a re-submission; ``times``: when
    the pair's newer order arrived; ``orders``: its id) and calibrate its threshold: the pairs
    are cut into ``folds`` consecutive periods by arrival; each period is scored by a model
    fitted on the others, and the threshold is the middle of the scores that give the best F1
    of orders flagged as the flow flags them (per order, its best match; a hit only when that
    match is its original). The estimator is then fitted on every pair."""
    import numpy as np

    xs = np.asarray(rows, dtype=float)
    ys = np.asarray([int(y) for y in labels])
    if len(set(ys.tolist())) < 2:
        raise ValueError("training needs both duplicate and distinct pairs")
    order = sorted(set(times))
    cuts = [order[len(order) * k // folds] for k in range(1, folds)]
    fold = np.asarray([sum(t >= c for c in cuts) for t in times])
    oof = np.zeros(len(ys))
    for k in range(folds):
        test = fold == k
        if not test.any() or len(set(ys[~test].tolist())) < 2:
            continue
        oof[test] = _estimator().fit(xs[~test], ys[~test]).predict_proba(xs[test])[:, 1]
    threshold, cal = _calibrate(list(zip(orders, ys.tolist(), strict=True)), oof.tolist())
    estimator = _estimator().fit(xs, ys)
    now = datetime.now(UTC)
    return Model(
        estimator,
        threshold,
        version or now.strftime("%Y%m%d%H%M%S"),
        now.isoformat(),
        {"from": min(times).isoformat(), "to": max(times).isoformat()},
        {
            "pairs": len(ys),
            "positive_pairs": int(ys.sum()),
            **{f"calibration_{k}": v for k, v in cal.items()},
        },
        window_hours=window_hours,
    )


def _estimator():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    return Pipeline(
        [("scale", StandardScaler()), ("clf", LogisticRegression(C=1.0, max_iter=5000))]
    )


def _calibrate(
    pairs: Sequence[tuple[str, int]], probs: Sequence[float]
) -> tuple[float, dict[str, float]]:
    """The threshold with the best F1 of orders flagged on ``pairs`` ((order id, label))
    scored ``probs`` (per order: its best candidate; a hit only when that candidate is its
    original)."""
    best: dict[str, tuple[float, int]] = {}
    positives: set[str] = set()
    for (oid, y), p in zip(pairs, probs, strict=True):
        if y:
            positives.add(oid)
        if oid not in best or p > best[oid][0]:
            best[oid] = (p, y)
    ranked = sorted(best.values(), key=lambda t: -t[0])
    cuts = []  # (f1, precision, recall, k): flag the first k + 1 orders
    tp = fp = 0
    for k, (p, y) in enumerate(ranked):
        tp += y
        fp += 1 - y
        if k + 1 < len(ranked) and ranked[k + 1][0] == p:
            continue
        prec = tp / (tp + fp)
        rec = tp / max(1, len(positives))
        cuts.append((2 * prec * rec / (prec + rec) if prec + rec else 0.0, prec, rec, k))
    if not cuts:
        return 0.5, {"f1": 0.0, "precision": 0.0, "recall": 0.0}
    top = max(c[0] for c in cuts)
    first = next(i for i, c in enumerate(cuts) if c[0] == top)
    last = first
    while last + 1 < len(cuts) and cuts[last + 1][0] == top:
        last += 1
    # the middle (in log-odds) of the scores that all give the best F1: not the sample's own
    # scores, so a slightly different later period is judged alike
    hi = ranked[cuts[first][3]][0]
    k = cuts[last][3]
    lo = ranked[k + 1][0] if k + 1 < len(ranked) else 0.0
    threshold = _expit((_logit(hi) + _logit(lo)) / 2)
    f1, prec, rec, _ = cuts[first]
    return threshold, {"f1": round(f1, 4), "precision": round(prec, 4), "recall": round(rec, 4)}


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def _expit(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def score(
    model: Model,
    order: Doc,
    candidates: Sequence[Doc],
    *,
    threshold: float | None = None,
    limit: int | None = None,
) -> list[tuple[str, float, dict[str, Any]]]:
    """The candidates ``order`` may duplicate, best first, with the score (a probability)
    and the evidence; only those at or above ``threshold`` (default: the model's; ``0``: all),
    at most ``limit``. ``candidates`` are blocked already (:func:`block`)."""
    floor = model.threshold if threshold is None else threshold
    order = in_context(order, candidates)
    pairs = [(c, features(order, c)) for c in candidates]
    probs = model.probabilities([model.row(p.values) for _, p in pairs])
    kept = sorted(
        ((round(prob, 4), c, pair) for (c, pair), prob in zip(pairs, probs, strict=True)),
        key=lambda t: (-t[0], t[1].order_id),
    )
    kept = [t for t in kept if t[0] >= floor][:limit]
    return [(c.order_id, prob, evidence(model, order, c, pair)) for prob, c, pair in kept]


def evidence(model: Model, order: Doc, match: Doc, pair: Pair) -> dict[str, Any]:
    """What a person reads to confirm: the facts and the features that weighed most."""
    return {
        "po_numbers": [match.po_number, order.po_number],
        "po_same_after_normalising": match.po_key == order.po_key != "",
        "ship_to_same": bool(pair.values[FEATURES.index("ship_to_same")]),
        "lines_matched": f"{pair.matched_lines} of {pair.lines[1]} / {pair.lines[0]}",
        "quantities_equal": f"{pair.qty_equal} of {pair.matched_lines}",
        "channels": [match.channel, order.channel],
        "hours_apart": round(pair.hours, 1),
        "top_features": [
            {"feature": name, "weight": round(w, 2)}
            for name, w in model.contributions(model.row(pair.values))[:3]
        ],
        "input_hash": input_hash(model, order, match),
    }


def input_hash(model: Model, order: Doc, match: Doc) -> str:
    """What the score was computed from (model and both orders' compared fields), hashed:
    the same inputs always give the same hash (governance records it with the score)."""

    def doc(d: Doc) -> list[Any]:
        return [
            d.order_id,
            d.customer_id,
            d.ship_to_id,
            d.channel,
            d.po_key,
            d.received_at.astimezone(UTC).isoformat(),
            [
                [ln.item_id, list(ln.parts), ln.description, ln.quantity, ln.unit_price]
                for ln in d.lines
            ],
        ]

    blob = json.dumps([model.pinned, doc(order), doc(match)], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


# ---------------------------------------------------------------------------- persistence


def dumps(model: Model) -> bytes:
    import joblib

    buf = io.BytesIO()
    joblib.dump(model, buf)
    return buf.getvalue()


def loads(blob: bytes) -> Model:
    """A model from bytes OrderFlow wrote (joblib: never load bytes from anyone else)."""
    import joblib

    model = joblib.load(io.BytesIO(blob))
    if not isinstance(model, Model) or model.name != MODEL_NAME:
        raise ValueError("not a near-duplicate model")
    return model


# ---------------------------------------------------------------------------- the stage's matcher


@dataclass
class Matcher:
    """The model bound for the validation stage (``orderflow.domain.validation``'s
    ``NearDuplicates``): the best match of an order among the candidates the stage blocked.
    The pair features of each best match are kept (:attr:`seen`, by order id) for the
    decision ``orderflow.ai.governance`` records when the match holds the order."""

    model: Model
    seen: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def pinned(self) -> str:
        return self.model.pinned

    @property
    def threshold(self) -> float:
        return self.model.threshold

    def best(self, order: Any, candidates: Sequence[Any]) -> tuple[str, float, dict] | None:
        doc = from_view(order)
        docs = [from_view(c, c.channel, c.lines) for c in candidates if c.lines]
        found = score(self.model, doc, docs, threshold=0.0, limit=1)
        if not found:
            return None
        match = next(d for d in docs if d.order_id == found[0][0])
        pair = features(in_context(doc, docs), match)
        self.seen[doc.order_id] = pair_row(pair)
        return found[0]


# ---------------------------------------------------------------------------- the registry's


#: the labels of the registry's training examples (``orderflow.ai_example``: one per pair)
DUPLICATE, DISTINCT = "duplicate", "distinct"


def pair_row(pair: Pair) -> dict[str, float]:
    """A pair's features by name: an example's (and a decision's) ``features``."""
    return {name: float(v) for name, v in zip(FEATURES, pair.values, strict=True)}


def examples(
    docs: Sequence[Doc], duplicate_of: dict[str, str], window: timedelta
) -> list[tuple[str, datetime, dict[str, float], str]]:
    """Labelled pairs as the registry's examples: (subject ``order>candidate``, when the
    newer order arrived, features, label)."""
    return [
        (f"{o.order_id}>{c.order_id}", o.received_at, pair_row(features(o, c)),
         DUPLICATE if y else DISTINCT)
        for o, c, y in training_pairs(docs, duplicate_of, window)
    ]  # fmt: skip


#: features added after examples were first stored, and their value in a row stored before
#: (an ambiguous swap of two digits was then counted as a sequence neighbour)
_ADDED = {"po_slip_or_step_lines": 0.0}


def _stored_row(r: dict[str, float]) -> list[float]:
    return [r.get(c, _ADDED.get(c, math.nan)) for c in FEATURES]


def fit_examples(rows, labels, *, times, subjects, version: str, seed: int = 0) -> Model:
    """:func:`fit` on the registry's examples (``orderflow.ai.training``)."""
    return fit(
        [_stored_row(r) for r in rows],
        [int(lab == DUPLICATE) for lab in labels],
        list(times),
        [s.split(">", 1)[0] for s in subjects],
        version=version,
    )


def score_examples(model: Model, rows, labels) -> dict[str, Any]:
    """Pair precision / recall / F1 at the model's threshold on held-out examples (the
    registry's gate; the flow's order-level figures are :func:`evaluate`'s)."""
    probs = model.probabilities([model.row(_stored_row(r)) for r in rows])
    flagged = [p >= model.threshold for p in probs]
    truth = [lab == DUPLICATE for lab in labels]
    tp = sum(f and t for f, t in zip(flagged, truth, strict=True))
    precision = tp / sum(flagged) if any(flagged) else 0.0
    recall = tp / sum(truth) if any(truth) else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "pair_precision": round(precision, 4),
        "pair_recall": round(recall, 4),
        "pair_f1": round(f1, 4),
        "threshold": round(model.threshold, 4),
        "n_eval": len(labels),
        "n_duplicate": sum(truth),
    }


# ---------------------------------------------------------------------------- evaluation


def evaluate(
    seed: int,
    *,
    train_days: int = 40,
    test_days: int = 20,
    window_hours: int = 168,
    threshold: float | None = None,
    **generator: Any,
) -> dict[str, Any]:
    """Generate ``train_days + test_days`` business days with ``seed``, train on the first
    ``train_days`` (:func:`train` calibrates the threshold within them) and measure on the
    orders received in the test period, which training never saw: ``dup_precision`` (orders
    flagged whose best match is their original) and ``dup_recall`` (re-submissions flagged
    with their original)."""
    from orderflow_sandbox.generator.duplicates import generate_labelled

    data = generate_labelled(seed, train_days + test_days, **generator)
    window = timedelta(hours=window_hours)
    docs = [from_generated(o) for o in data.orders]
    train_ids = {o["order_id"] for o in data.period(0, train_days - 1)}
    test = {o["order_id"] for o in data.period(train_days)}
    train_docs = [d for d in docs if d.order_id in train_ids]
    pairs = training_pairs(train_docs, data.duplicate_of, window)
    model = train(pairs, window_hours=window_hours, version=f"eval-seed{seed}")
    result = measure(model, docs, data.duplicate_of, test, window, threshold)
    return {
        "seed": seed,
        **result,
        "threshold": round(model.threshold if threshold is None else threshold, 4),
        "train_orders": len(train_docs),
        "train_pairs": model.metrics["pairs"],
        "train_positive_pairs": model.metrics["positive_pairs"],
        "by_kind": _by_kind(model, docs, data, test, window, threshold),
    }


def measure(
    model: Model,
    docs: Sequence[Doc],
    duplicate_of: dict[str, str],
    judged: set[str],
    window: timedelta,
    threshold: float | None = None,
) -> dict[str, Any]:
    """Precision and recall of flagged orders among ``judged`` (order ids), each scored
    against the customer's earlier orders in ``window`` as the stage would."""
    root = _roots(duplicate_of)
    limit = model.threshold if threshold is None else threshold
    tp = fp = fn = 0
    for order, cands in _earlier(docs, window):
        if order.order_id not in judged:
            continue
        is_dup = order.order_id in root and any(
            root.get(c.order_id, c.order_id) == root[order.order_id] for c in cands
        )
        found = score(model, order, cands, threshold=limit, limit=1)
        hit = bool(found) and root.get(found[0][0], found[0][0]) == root.get(
            order.order_id, order.order_id
        )
        if found and hit:
            tp += 1
        elif found:
            fp += 1
        if is_dup and not hit:
            fn += 1
    return {
        "dup_precision": round(tp / (tp + fp), 4) if tp + fp else 1.0,
        "dup_recall": round(tp / (tp + fn), 4) if tp + fn else 1.0,
        "flagged": tp + fp,
        "true_positives": tp,
        "false_positives": fp,
        "missed": fn,
        "judged_orders": len(judged),
    }


def _by_kind(model, docs, data, test, window, threshold) -> dict[str, float]:
    """Recall per way of re-submitting (edi_resend, email_ocr, portal_reentry, rekeyed)."""
    out = {}
    for kind in sorted(set(data.kind.values())):
        ids = {d for d, k in data.kind.items() if k == kind and d in test}
        if ids:
            r = measure(model, docs, data.duplicate_of, ids, window, threshold)
            out[kind] = r["dup_recall"]
    return out
