"""Decision support that learns, governed (#17): models that recommend inside policy.

Built here:

1. ``exception_cause`` — the cause of a held order (pricing first: expired contract, item
   master inconsistency, customer discount logic, keying error; then unknown item, ship-to
   and unit-of-measure causes), with a confidence and the evidence (top features); inferred
   where validation opens holds, stored as an AI decision, shown in the exception's details,
   and routed to the cause's owner through the routing rules (``causes``).
6. ``arrival_anomaly`` — an order far from the customer's history (quantity 10×, unit errors,
   a new far-away ship-to, a price far from what it paid): an ``anomaly`` hold when
   financially sensitive, a flag otherwise (thresholds in the ``ai`` rule set).

2. near-duplicate orders — ``duplicates.py`` (its own module, policy in the validation rules).
3. ``delay_risk`` — ``delay.py``: the probability that a planned order misses its promised
   date (DC backlog, lane and carrier performance, cutoff, split, hazmat, weekday); asked at
   planning, a flag on the plan event and, by the ``ai`` rules' ``delay`` policy, the
   customer's early ``order_delayed`` notice through the outbox. Informational only.
4. ``substitute_rank`` — ``substitutes.py``: a short line's in-stock substitutes ordered by
   how likely this customer accepts each (its own, similar and all customers' past answers,
   price, pack and unit, brand, lead time); the substitution rules still decide; the desk's
   answer (approve / reject) is the label of the ranking's decision.

5. ``release_sequence`` — ``sequencing.py``: when the WMS's pick wave (capacity per DC per
   wave) cannot take every READY order, the release stage releases first the ones that can
   still make their promised date, earliest deadline first (promised date less transit, at
   the DC's cutoff), then among equal deadlines the ones whose wait adds most service-level
   risk (the delay-risk model scored as if released now and as if at the next wave), cutoff,
   tier and margin per pick (the ``ai`` rules' ``sequencing``); orders already lost go last;
   the rest stay READY for a later run. The ranking is pure (``orderflow.domain.sequencing``);
   it has no model of its own (delay risk is its learned part), so no ``registry`` entry.

Layout: ``features`` (pure feature code), ``history`` (labelled examples from generated
history), ``models`` (scikit-learn, imported only inside functions), ``registry`` (the
models: how each is trained, evaluated, loaded), ``governance`` (the one place that records a
model's output, and the policy it must stay within), ``inference`` (the flow's hooks),
``training`` (the ``train_models`` DAG's work), ``evaluate`` (``orderflow ai evaluate``).
"""
