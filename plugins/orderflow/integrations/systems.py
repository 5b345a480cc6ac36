"""One hook per external system. Methods name the business operation, not the URL."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from orderflow.integrations.http import ExternalRejected, OrderFlowHttpHook


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
        out: list[dict] = []
        for i in range(0, len(asked), self.batch_size):
            chunk = asked[i : i + self.batch_size]
            body = {"checks": [{"customer_id": c, "amount": a} for c, a in chunk]}
            try:
                answer = self.call("POST", "/check/batch", json=body)
            except ExternalRejected as exc:
                if exc.status in (404, 405) and not out:
                    return None
                raise
            results = answer["results"]
            if len(results) != len(chunk):
                raise ExternalRejected(
                    self.system,
                    "/check/batch",
                    f"{len(results)} answers to {len(chunk)} checks",
                )
            for r in results:
                if "error" in r:
                    err = r["error"]
                    raise ExternalRejected(
                        self.system,
                        "/check",
                        f"HTTP {err['status']}: {err['detail']}",
                        err["status"],
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


class ScreeningHook(OrderFlowHttpHook):
    system = "screening"
    conn_name_attr = "screening_conn_id"
    default_conn_name = "screening_default"
    hook_name = "OrderFlow restricted-party screening"

    def check(self, name: str, country: str) -> dict:
        return self.call("POST", "/check", json={"name": name, "country": country})


class CarrierHook(OrderFlowHttpHook):
    system = "carrier/TMS"
    conn_name_attr = "carrier_conn_id"
    default_conn_name = "carrier_default"
    hook_name = "OrderFlow carrier / TMS"

    def rates(self, request: dict) -> list[dict]:
        return self.call("POST", "/rates", json=request)["quotes"]

    def book(self, shipment: dict, *, idempotency_key: str) -> dict:
        return self.call("POST", "/shipments", json=shipment, idempotency_key=idempotency_key)

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
