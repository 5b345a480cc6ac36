"""Pushed events: the WMS's and carrier's webhooks into the event inbox, then a wake-up for
the fulfilment DAG; the portal's and marketplace's new-order notices, a wake-up for their
intake DAG — both through Airflow's event-driven scheduling.

- :mod:`.signing` — the HMAC signature a sender puts on each request.
- :mod:`.inbox` — verify, store under the poll's natural key (one transaction), then wake;
  a notice stores nothing and only wakes.
- :mod:`.wake` — the Redis channels and the publish after the commit.
- :mod:`.asset` — the watched Assets the DAGs are scheduled on.
- :mod:`.api` — ``POST /orderflow/api/events/{source}`` in the plugin app.
- :mod:`.latency` — shipped → customer notified, as the soak and the bench report it.

The DAGs' polls of the same feeds stay (fulfilment every 2 minutes, the portal and the
marketplace every 5): whatever a push or a wake-up missed (OrderFlow down, Redis down, the
sender's retries exhausted) the poll reads, and the natural key (the intake's watermark and
message keys) makes anything read by both count once.
"""
