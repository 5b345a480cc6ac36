"""One hook per external system. Methods name the business operation, not the URL."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from orderflow.integrations.http import ExternalRejected, OrderFlowHttpHook

#: What a keyed batch send gives per item: (the answer, None) or (None, the exception the
#: single call would have raised).
Outcome = tuple[dict | None, Exception | None]


class ErpHook(OrderFlowHttpHook):
    """The ERP: master-data extracts, exposure, sales orders and invoices."""

    system = "ERP"
    conn_name_attr = "erp_conn_id"
    default_conn_name = "erp_default"
    hook_name = "OrderFlow ERP"

    def extract(self, entity: str, *, changed_since: str | None = None, page_size: int = 5000):
        """Yield every row of a master-data entity, changed after ``changed_since`` if given."""
        offset: int | None = 0
        while offset is not None:
            params: dict[str, Any] = {"offset": offset, "limit": page_size}
            if changed_since:
                params["changed_since"] = changed_since
            page = self.call("GET", f"/{entity}", params=params)
            yield from page["items"]
            offset = page["next_offset"]

    def exposure(self, customer_id: str) -> dict:
        return self.call("GET", f"/customers/{customer_id}/exposure")

    def exposures(self, customer_ids: list[str]) -> dict[str, dict]:
        """Current exposure (credit limit, open AR, hold) of several customers in one call,
        by customer id; customers the ERP has no account for are absent."""
        if not customer_ids:
            return {}
        answer = self.call("POST", "/exposure", json={"customer_ids": sorted(customer_ids)})
        return {row["customer_id"]: row for row in answer["items"]}

    def post_invoice(self, invoice: dict, *, idempotency_key: str) -> dict:
        return self.call("POST", "/invoices", json=invoice, idempotency_key=idempotency_key)


class WmsHook(OrderFlowHttpHook):
    """The WMS of both DCs: availability, releases, milestone feed."""

    system = "WMS"
    conn_name_attr = "wms_conn_id"
    default_conn_name = "wms_default"
    hook_name = "OrderFlow WMS"

    def inventory(self, *, changed_since: str | None = None) -> list[dict]:
        params = {"changed_since": changed_since} if changed_since else None
        return self.call("GET", "/inventory", params=params)["items"]

    def release(self, release: dict, *, idempotency_key: str) -> dict:
        return self.call("POST", "/releases", json=release, idempotency_key=idempotency_key)

    def release_many(self, releases: Sequence[tuple[dict, str]]) -> list[Outcome] | None:
        """:meth:`release` of each (release, idempotency key) in one request
        (``POST /releases/batch``), each still keyed: per release, its answer or what
        :meth:`release` would have raised. None when the WMS has no batch endpoint or
        refuses the batch as such (the caller sends one by one)."""
        return _keyed_many(
            self, "/releases", [{"idempotency_key": k, "release": r} for r, k in releases]
        )

    def cancel_release(self, release_id: str, *, idempotency_key: str) -> dict:
        """Withdraw a release the floor has not started picking. The WMS refuses (409,
        :class:`~orderflow.integrations.http.ExternalRejected`) once picking started."""
        return self.call("POST", f"/releases/{release_id}/cancel", idempotency_key=idempotency_key)

    def milestones(self, cursor: int, limit: int = 500) -> dict:
        return self.call("GET", "/milestones", params={"cursor": cursor, "limit": limit})

    def capacity(self) -> dict:
        """Pick capacity per DC in the current wave (``per_wave`` None: unconstrained)."""
        return self.call("GET", "/capacity")


class PortalHook(OrderFlowHttpHook):
    """The B2B portal's orders feed, read with a cursor."""

    system = "portal"
    conn_name_attr = "portal_conn_id"
    default_conn_name = "portal_default"
    hook_name = "OrderFlow B2B portal"

    def orders_page(self, cursor: int, limit: int = 200) -> dict:
        return self.call("GET", "/orders", params={"cursor": cursor, "limit": limit})

    def webhook(self, notification: dict, *, idempotency_key: str) -> dict:
        """Hand a customer notification to the portal, which calls the customer's webhook."""
        return self.call("POST", "/webhooks", json=notification, idempotency_key=idempotency_key)


class MarketplaceHook(OrderFlowHttpHook):
    """A marketplace's seller API: its orders feed (orders and buyers' cancellation
    requests, read with a cursor) and the callbacks it requires within its time limits —
    acknowledgement, shipment confirmation, answer to a cancellation request. Each callback
    is idempotent by key; the answer carries the marketplace's receipt time and whether it
    was late by the marketplace's clock."""

    system = "marketplace"
    conn_name_attr = "marketplace_conn_id"
    default_conn_name = "marketplace_default"
    hook_name = "OrderFlow marketplace"

    def orders_page(self, cursor: int, limit: int = 200) -> dict:
        return self.call("GET", "/orders", params={"cursor": cursor, "limit": limit})

    def callback(
        self, marketplace_order_id: str, kind: str, body: dict, *, idempotency_key: str
    ) -> dict:
        """POST ``/orders/<id>/<kind>``: ``acknowledgement``, ``shipment`` or
        ``cancellation``."""
        return self.call(
            "POST",
            f"/orders/{marketplace_order_id}/{kind}",
            json=body,
            idempotency_key=idempotency_key,
        )


class CreditHook(OrderFlowHttpHook):
    system = "credit service"
    conn_name_attr = "credit_conn_id"
    default_conn_name = "credit_default"
    hook_name = "OrderFlow credit service"

    def check(self, customer_id: str, amount: float) -> dict:
        return self.call("POST", "/check", json={"customer_id": customer_id, "amount": amount})

    #: checks per batch request
    batch_size = 500

    def check_many(self, asked: Sequence[tuple[str, float]]) -> list[dict] | None:
        """:meth:`check` of each (customer, amount), in order, through the service's batch
        endpoint (``POST /check/batch``: one request per :attr:`batch_size` checks instead
        of one each). A check the service refuses raises as :meth:`check` would
        (:class:`ExternalRejected`, the first in order). None when the service has no batch
        endpoint (404 or 405 on it): the caller asks one by one."""
        return _many(
            self,
            "/check",
            "checks",
            [{"customer_id": c, "amount": a} for c, a in asked],
        )


def _many(hook: OrderFlowHttpHook, endpoint: str, field: str, bodies: list[dict]):
    """The answers of ``POST endpoint`` to each of ``bodies``, in order, through the batch
    endpoint beside it (``POST endpoint/batch`` with ``{field: [...]}``, answered
    ``{"results": [...]}``, each result the single endpoint's answer or
    ``{"error": {"status", "detail"}}``), :attr:`batch_size` bodies a request. A body the
    service refuses raises as the single call would (:class:`ExternalRejected`, the first
    in order). None when the service has no batch endpoint (404 or 405 on the first
    request): the caller asks one by one."""
    out: list[dict] = []
    size = hook.batch_size  # type: ignore[attr-defined]
    for i in range(0, len(bodies), size):
        chunk = bodies[i : i + size]
        try:
            answer = hook.call("POST", f"{endpoint}/batch", json={field: chunk})
        except ExternalRejected as exc:
            if exc.status in (404, 405) and not out:
                return None
            raise
        results = answer["results"]
        if len(results) != len(chunk):
            raise ExternalRejected(
                hook.system, f"{endpoint}/batch", f"{len(results)} answers to {len(chunk)} asked"
            )
        for r in results:
            if "error" in r:
                err = r["error"]
                raise ExternalRejected(
                    hook.system, endpoint, f"HTTP {err['status']}: {err['detail']}", err["status"]
                )
            out.append(r)
    return out


class TaxHook(OrderFlowHttpHook):
    system = "tax engine"
    conn_name_attr = "tax_conn_id"
    default_conn_name = "tax_default"
    hook_name = "OrderFlow tax engine"

    def quote(self, request: dict) -> dict:
        return self.call("POST", "/quote", json=request)

    #: quote requests per batch request
    batch_size = 500

    def quote_many(self, requests: Sequence[dict]) -> list[dict] | None:
        """:meth:`quote` of each request, in order, through the engine's batch endpoint
        (``POST /quote/batch``: one request per :attr:`batch_size` quotes). A quote the
        engine refuses raises as :meth:`quote` would. None when the engine has no batch
        endpoint (404 or 405 on it): the caller asks one by one."""
        return _many(self, "/quote", "quotes", list(requests))


class ScreeningHook(OrderFlowHttpHook):
    system = "screening"
    conn_name_attr = "screening_conn_id"
    default_conn_name = "screening_default"
    hook_name = "OrderFlow restricted-party screening"

    def check(self, name: str, country: str) -> dict:
        return self.call("POST", "/check", json={"name": name, "country": country})

    #: parties per batch request
    batch_size = 500

    def check_many(self, parties: Sequence[tuple[str, str]]) -> list[dict] | None:
        """:meth:`check` of each (name, country), in order, through the service's batch
        endpoint (``POST /check/batch``: one request per :attr:`batch_size` parties). A party
        the service refuses raises as :meth:`check` would. None when the service has no
        batch endpoint (404 or 405 on it): the caller asks one by one."""
        return _many(self, "/check", "checks", [{"name": n, "country": c} for n, c in parties])


class CarrierHook(OrderFlowHttpHook):
    system = "carrier/TMS"
    conn_name_attr = "carrier_conn_id"
    default_conn_name = "carrier_default"
    hook_name = "OrderFlow carrier / TMS"

    def rates(self, request: dict) -> list[dict]:
        return self.call("POST", "/rates", json=request)["quotes"]

    def book(self, shipment: dict, *, idempotency_key: str) -> dict:
        return self.call("POST", "/shipments", json=shipment, idempotency_key=idempotency_key)

    def book_many(self, shipments: Sequence[tuple[dict, str]]) -> list[Outcome] | None:
        """:meth:`book` of each (shipment, idempotency key) in one request
        (``POST /shipments/batch``), each still keyed: per shipment, its answer or what
        :meth:`book` would have raised. None when the carrier has no batch endpoint or
        refuses the batch as such (the caller books one by one)."""
        return _keyed_many(
            self, "/shipments", [{"idempotency_key": k, "shipment": b} for b, k in shipments]
        )

    def tracking(self, cursor: int, limit: int = 500) -> dict:
        return self.call("GET", "/tracking", params={"cursor": cursor, "limit": limit})


class EdiGatewayHook(OrderFlowHttpHook):
    """The EDI gateway (VAN/AS2 stand-in) that takes our outbound documents."""

    system = "EDI gateway"
    conn_name_attr = "edi_conn_id"
    default_conn_name = "edi_default"
    hook_name = "OrderFlow EDI gateway"

    def send(self, partner_id: str, document_type: str, body: str, *, idempotency_key: str) -> dict:
        return self.call(
            "POST",
            "/outbound",
            data=body.encode(),
            idempotency_key=idempotency_key,
            headers={
                "Content-Type": "application/edi-x12",
                "X-Partner-Id": partner_id,
                "X-Document-Type": document_type,
            },
        )

    def send_many(self, documents: Sequence[tuple[str, str, str, str]]) -> list[Outcome] | None:
        """:meth:`send` of each (partner id, document type, X12 text, idempotency key) in one
        request (``POST /outbound/batch``), each still keyed: per document, the gateway's
        receipt or what :meth:`send` would have raised. None when the gateway has no batch
        endpoint or refuses the batch as such (the caller sends one by one)."""
        return _keyed_many(
            self,
            "/outbound",
            [
                {"idempotency_key": k, "partner_id": p, "document_type": t, "body": b}
                for p, t, b, k in documents
            ],
        )


def _keyed_many(hook: OrderFlowHttpHook, endpoint: str, items: list[dict]) -> list[Outcome] | None:
    """Keyed requests to ``POST endpoint`` sent in one ``POST endpoint/batch`` (``{"items":
    [...]}``, each item carrying its ``idempotency_key``; answered ``{"results": [...]}``, each
    ``{"answer", "replayed"}`` or ``{"error": {"status", "detail"}}``). Per item, the answer
    or the :class:`ExternalRejected` the single request would have raised (same text). When
    the batch request itself fails after its retries (the service unavailable), every item
    gets that error, as each single request would have; None when the service refuses the
    batch as such (no batch endpoint: 404/405; any other 4xx) — the caller then sends one
    item at a time."""
    from orderflow.integrations.http import ExternalSystemError

    if not items:
        return []
    try:
        answer = hook.call("POST", f"{endpoint}/batch", json={"items": items})
    except ExternalRejected:
        return None
    except ExternalSystemError as exc:
        return [(None, exc)] * len(items)
    results = answer.get("results") if isinstance(answer, dict) else None
    if not isinstance(results, list) or len(results) != len(items):
        return None  # not an answer this client understands: one by one
    out: list[Outcome] = []
    for r in results:
        if "error" in r:
            err = r["error"]
            out.append(
                (
                    None,
                    ExternalRejected(
                        hook.system,
                        endpoint,
                        f"HTTP {err['status']}: {err['detail']}",
                        err["status"],
                    ),
                )
            )
        else:
            out.append((r["answer"], None))
    return out
