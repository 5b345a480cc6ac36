"""Pushed fulfilment events: the WMS's and carrier's webhooks into the event inbox, then a
wake-up for the fulfilment DAG through Airflow's event-driven scheduling.

- :mod:`.signing` — the HMAC signature a sender puts on each request.
- :mod:`.inbox` — verify, store under the poll's natural key (one transaction), then wake.
- :mod:`.wake` — the Redis channel, the publish after the commit, and the watched Asset.
- :mod:`.api` — ``POST /orderflow/api/events/{source}`` in the plugin app.
- :mod:`.latency` — shipped → customer notified, as the soak and the bench report it.

The 2-minute poll of the same feeds stays: whatever a push or a wake-up missed (OrderFlow
down, Redis down, the sender's retries exhausted) the poll reads, and the natural key
makes an event stored by both count once.
"""
