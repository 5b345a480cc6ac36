"""Tooling over generated history (the sandbox's generator; the flow never imports this
module): ``orderflow ai evaluate`` — generate history with a seed, train on the earlier part,
evaluate on a later period the models did not train on — and :func:`import_history`
(``orderflow ai import-history``), for a development store with no desk labels yet.

Prints and writes the acceptance metrics of #17. Delay risk (``delay_auc``, ``delay_brier``)
is judged on the orders planned in the later period, its shipments and deliveries generated
from the same history (``orderflow_sandbox.generator.delays``). Models not built yet are ``null`` with
``"not built"`` beside them — never a made-up number. Near-duplicates (``dup_precision``,
``dup_recall``) are measured by ``duplicates.evaluate(seed)`` on re-submissions generated with
the same seed (their own generator: forty business days to train on, twenty after to judge).
Substitutes (``subst_top1``) by ``substitutes.evaluate_offers`` on substitute offers generated
on this history's lines (``orderflow_sandbox.generator.substitutes``), cut where the others
are; beside it the catalogue's static order (``subst_top1_catalogue``), the naive ranking,
and the ceilings: a ranking by the generator's true acceptance probability
(``subst_top1_ceiling``) and by it without the customer's own taste for the substitute
(``subst_top1_without_pair_taste``).
Capacity-aware sequencing (``ontime_gain_pts``) by ``sequencing.evaluate``: every business
day after the cut starts a constrained stretch of two business days (capacity per DC per
wave a share of its ordinary daily picks, the day after a little above, then a drain),
replayed once first in, first out and once sequenced (deadline first, the delay model
trained here for the risk that waiting adds), through the same ``sequence`` function; judged
on the orders competing for the constrained capacity (held back a wave by some run): the
share shipped in time to make the promised date. Beside it: the ranking without the model
(``ontime_gain_pts_rules_only``), the same orders delivered by their promised date
(``ontime_gain_pts_delivered``), every order of the stretch delivered on time
(``ontime_gain_pts_all_orders``), a single constrained day (``ontime_gain_pts_one_day``),
and the share shipped in time with capacity unconstrained (``ontime_unconstrained``: what no
ordering can beat).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

#: metrics of the models other helpers / later rounds build (null until they exist)
NOT_BUILT: tuple[str, ...] = ()
TRAIN_SHARE = 0.67


def evaluate(seed: int, *, days: int = 195, orders_per_day: int = 40) -> dict[str, Any]:
    from threadpoolctl import threadpool_limits

    from orderflow import rules
    from orderflow.ai import delay, duplicates, history, models, registry, sequencing, substitutes
    from orderflow_sandbox.generator.delays import generate_shipments
    from orderflow_sandbox.generator.history import generate
    from orderflow_sandbox.generator.substitutes import generate_offers

    t0, c0 = time.time(), time.process_time()
    book = rules.load()
    hist = generate(seed, days=days, orders_per_day=orders_per_day)
    ex = history.examples(hist, book) + delay.examples(hist)
    cut = hist.orders[int(len(hist.orders) * TRAIN_SHARE)]["received_at"]
    out: dict[str, Any] = {
        "seed": seed,
        "orders": len(hist.orders),
        "train_until": cut.isoformat(),
        "evaluated_from": cut.isoformat(),
        "evaluated_to": hist.orders[-1]["received_at"].isoformat(),
    }
    detail: dict[str, Any] = {}
    trained: dict[str, Any] = {}
    with threadpool_limits(1):
        for name, spec in registry.MODELS.items():
            if name in (duplicates.MODEL_NAME, substitutes.MODEL_NAME):
                continue  # their own generated history: below
            tr = [e for e in ex if e.model == name and e.at < cut]
            te = [e for e in ex if e.model == name and e.at >= cut]
            if spec.fit is None:
                model = models.fit([e.features for e in tr], [e.label for e in tr], spec.columns)
            else:
                model = spec.fit([e.features for e in tr], [e.label for e in tr], seed=0)
            trained[name] = model
            if name == "arrival_anomaly":
                m = registry._score_anomaly(
                    model, [e.features for e in te], [e.label for e in te],
                    book.ai.anomaly.score_threshold,
                )  # fmt: skip
            else:
                m = spec.score(model, [e.features for e in te], [e.label for e in te])
            detail[name] = {"train_examples": len(tr), **m}
        # model 2: re-submissions across channels generated with the same seed; trained on
        # the first 40 business days, measured on the 20 after (duplicates.evaluate)
        t1, c1 = time.time(), time.process_time()
        dup = duplicates.evaluate(seed)
        dup.update(wall_s=round(time.time() - t1, 1), cpu_s=round(time.process_time() - c1, 1))
        detail[duplicates.MODEL_NAME] = dup
        # model 4: substitute offers on this history's lines; trained on the offers before
        # the cut, measured on the candidates of the offers after it
        sub = substitutes.evaluate_offers(generate_offers(hist), cut, seed=seed)
        detail[substitutes.MODEL_NAME] = sub
        # model 5: constrained days after the cut replayed first in, first out and sequenced
        # (the delay model trained above is its learned part)
        t1, c1 = time.time(), time.process_time()
        seq = sequencing.evaluate(
            hist, generate_shipments(hist), trained[delay.MODEL_NAME], cut, book
        )
        seq.update(wall_s=round(time.time() - t1, 1), cpu_s=round(time.process_time() - c1, 1))
        detail[sequencing.MODEL_NAME] = seq
    out["cause_macro_f1"] = detail["exception_cause"]["macro_f1"]
    out["anomaly_precision"] = detail["arrival_anomaly"]["precision"]
    out["anomaly_recall"] = detail["arrival_anomaly"]["recall"]
    out["dup_precision"] = dup["dup_precision"]
    out["dup_recall"] = dup["dup_recall"]
    out["subst_top1"] = sub["subst_top1"]
    out["subst_top1_catalogue"] = sub["subst_top1_catalogue"]
    out["subst_top1_ceiling"] = sub["subst_top1_true_probability"]
    out["subst_top1_without_pair_taste"] = sub["subst_top1_without_pair_taste"]
    out["delay_auc"] = detail[delay.MODEL_NAME]["auc"]
    out["delay_brier"] = detail[delay.MODEL_NAME]["brier"]
    out["ontime_gain_pts"] = seq["ontime_gain_pts"]
    out["ontime_fifo"] = seq["ontime_fifo"]
    out["ontime_sequenced"] = seq["ontime_model"]
    out["ontime_gain_pts_rules_only"] = seq["ontime_gain_pts_rules_only"]
    out["ontime_unconstrained"] = seq["ontime_unconstrained"]
    out["ontime_gain_pts_delivered"] = seq["ontime_gain_pts_delivered"]
    out["ontime_gain_pts_all_orders"] = seq["ontime_gain_pts_all_orders"]
    out["ontime_gain_pts_one_day"] = seq.get("ontime_gain_pts_one_day")
    for key in NOT_BUILT:
        out[key] = None
    out["not_built"] = {key: "not built" for key in NOT_BUILT}
    out["detail"] = detail
    out["wall_s"] = round(time.time() - t0, 1)
    out["cpu_s"] = round(time.process_time() - c0, 1)
    return out


def run(seed: int, json_path: Path | None, **kwargs: Any) -> dict[str, Any]:
    result = evaluate(seed, **kwargs)
    text = json.dumps(result, indent=2, default=str)
    if json_path is not None:
        json_path.write_text(text + "\n")
    return result


def import_history(conn: Any, seed: int, **kwargs: Any) -> dict[str, int]:
    """Generated history as labelled examples (``ai_example``, source ``history:<seed>``): a
    store with no desk labels yet can train. Returns examples per model."""
    from orderflow import rules
    from orderflow.ai import delay, duplicates, history, substitutes
    from orderflow.ai.features import jsonable
    from orderflow.store import ai as repo
    from orderflow_sandbox.generator.history import generate
    from orderflow_sandbox.generator.substitutes import generate_offers

    hist = generate(seed, **kwargs)
    ex = history.examples(hist, rules.load()) + delay.examples(hist)
    source = f"history:{seed}"
    repo.add_examples(
        conn, [(e.model, source, e.subject, e.at, jsonable(e.features), e.label) for e in ex]
    )
    out: dict[str, int] = {}
    for e in ex:
        out[e.model] = out.get(e.model, 0) + 1
    pairs = _duplicate_pairs(seed, kwargs.get("days", 130), kwargs.get("orders_per_day", 40))
    repo.add_examples(conn, [(duplicates.MODEL_NAME, source, *p) for p in pairs])
    out[duplicates.MODEL_NAME] = len(pairs)
    subs = substitutes.examples(generate_offers(hist))
    repo.add_examples(
        conn, [(substitutes.MODEL_NAME, source, s, at, jsonable(f), lab) for at, s, f, lab in subs]
    )
    out[substitutes.MODEL_NAME] = len(subs)
    return out


#: near-duplicate history imported: at most this many business days (pairs grow with
#: orders per customer and window; 30 days of 30 orders a day: ≈ 7.5k pairs, ≈ 50 duplicates)
DUP_DAYS, DUP_ORDERS_PER_DAY = 30, 30


def _duplicate_pairs(seed: int, days: int, orders_per_day: int) -> list[tuple]:
    """Labelled pairs of generated orders (``orderflow_sandbox.generator.duplicates``: portal
    orders re-sent by EDI, e-mailed, re-keyed) as near-duplicate examples."""
    from datetime import timedelta

    from orderflow.ai import duplicates
    from orderflow_sandbox.generator.duplicates import generate_labelled

    data = generate_labelled(
        seed, min(days, DUP_DAYS), orders_per_day=min(orders_per_day, DUP_ORDERS_PER_DAY)
    )
    docs = [duplicates.from_generated(o) for o in data.orders]
    return duplicates.examples(docs, data.duplicate_of, timedelta(hours=168))
