"""The sandbox HTTP service: one FastAPI app standing in for a distributor's systems.

Each system has its own path prefix (its Airflow Connection's base URL): ``/erp``, ``/wms``,
``/carrier``, ``/tax``, ``/credit``, ``/screening``, ``/portal``, ``/edi``, ``/crm``; ``/admin`` sets
faults and the clock. OpenAPI at ``/docs``. The same process runs the mail relay our
customer e-mail goes to: an SMTP sink (``smtp_port``) whose messages ``/mail`` shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, FastAPI, Header, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from orderflow_sandbox import crm
from orderflow_sandbox.faults import (
    FaultConfig,
    FaultInjector,
    FaultMiddleware,
    ReuseArm,
    SimClock,
)
from orderflow_sandbox.state import Conflict, Distributor, Invalid, NotFound

log = logging.getLogger(__name__)

IdemKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key", description="Required: a repeated key returns the first answer"
    ),
]


def _require_key(key: str | None) -> str:
    if not key:
        raise HTTPException(400, "Idempotency-Key header is required for this operation")
    return key


def _answer(response: Response, result: tuple[dict, bool], created: int = 201) -> dict:
    answer, replayed = result
    response.status_code = 200 if replayed else created
    response.headers["Idempotent-Replayed"] = "true" if replayed else "false"
    return answer


def _each(state: Distributor, items: list[dict[str, Any]], one) -> dict:
    """``{"results": [...]}``: per item, ``one(key, item)``'s answer (with ``replayed``) or
    ``{"error": {"status", "detail"}}`` with what the single endpoint would answer. What the
    items change is stored once, before the answer (one write for the batch)."""
    with state.batch():
        return _each_item(items, one)


def _each_item(items: list[dict[str, Any]], one) -> dict:
    from pydantic import ValidationError

    results: list[dict] = []
    for item in items:
        key = item.get("idempotency_key")
        try:
            if not key:
                raise HTTPException(400, "Idempotency-Key header is required for this operation")
            answer, replayed = one(key, item)
            results.append({"answer": answer, "replayed": replayed})
        except HTTPException as exc:
            results.append({"error": {"status": exc.status_code, "detail": exc.detail}})
        except ValidationError as exc:
            results.append({"error": {"status": 422, "detail": str(exc)}})
        except KeyError as exc:  # an item without its body
            results.append({"error": {"status": 422, "detail": f"missing {exc}"}})
        except NotFound as exc:
            results.append({"error": {"status": 404, "detail": f"not found: {exc}"}})
        except Conflict as exc:
            results.append({"error": {"status": 409, "detail": str(exc)}})
        except Invalid as exc:
            results.append({"error": {"status": 422, "detail": str(exc)}})
    return {"results": results}


# ---------------------------------------------------------------------- request models
class ExposureIn(BaseModel):
    customer_ids: list[str] = Field(max_length=5000)


class OrderLineIn(BaseModel):
    line_no: int
    item_id: str
    quantity: float = Field(gt=0)
    unit_price: float = Field(ge=0)


class ErpOrderIn(BaseModel):
    order_id: str
    customer_id: str
    po_number: str
    lines: list[OrderLineIn]


class InvoiceIn(BaseModel):
    order_id: str
    customer_id: str
    lines: list[OrderLineIn]
    tax: float = 0.0
    freight: float = 0.0
    currency: str = "USD"


class ReservationIn(BaseModel):
    item_id: str
    dc_id: str
    quantity: float = Field(gt=0)
    reference: str = Field(description="Caller's reference, e.g. order id and line")


class ReleaseLineIn(BaseModel):
    line_no: int
    item_id: str
    quantity: float = Field(gt=0)
    reservation_id: str | None = None


class ReleaseIn(BaseModel):
    order_id: str
    dc_id: str
    lines: list[ReleaseLineIn]
    carrier_id: str | None = None
    service_code: str | None = None


class KeyedBatchIn(BaseModel):
    """Several idempotent requests in one call: each item its own ``idempotency_key`` and
    the body the single endpoint takes (checked item by item: one bad item is that item's
    error, not the batch's)."""

    items: list[dict[str, Any]] = Field(max_length=1000)


class RateIn(BaseModel):
    weight_kg: float = Field(gt=0)
    dc_id: str
    zone: str
    hazmat: bool = False


class ShipmentIn(BaseModel):
    order_id: str
    carrier_id: str
    service_code: str
    weight_kg: float = Field(gt=0)
    dc_id: str | None = Field(None, description="Origin DC (the lane starts there)")
    zone: str | None = Field(None, description="Destination zone, e.g. Z3")
    hazmat: bool = False
    reference: str | None = Field(None, description="The shipper's shipment reference")


class TenderingIn(BaseModel):
    refuse: list[str] = Field(
        default_factory=list,
        description='Services the carrier refuses to book: "CARRIER/SERVICE" on every lane, '
        '"CARRIER/SERVICE@DC" on the lane from one DC',
    )
    fuel_surcharge: float = Field(0.045, ge=0, le=1, description="Added to the table rate")
    label_from_booking: bool = Field(
        False,
        description="The WMS prints the booked label: a booked order's coming shipped "
        "milestone carries the carrier's tracking number",
    )


class CapacityIn(BaseModel):
    per_wave: dict[str, int] = Field(
        default_factory=dict,
        description="Picks (release lines) a pick wave holds, per DC; a DC not named is "
        "unconstrained (empty: none is, the default). A release beyond its wave's capacity "
        "is accepted and deferred to the next wave with room",
    )
    wave_minutes: int = Field(120, ge=15, le=1440, description="A wave's length")
    carrier_cutoffs: dict[str, str] = Field(
        default_factory=dict,
        description='Per DC, the local time ("HH:MM") its trucks leave: a shipment packed '
        "after it leaves the next business day",
    )


class TaxLineIn(BaseModel):
    line_no: int
    amount: float


class TaxIn(BaseModel):
    customer_id: str
    region: str
    country: str = "US"
    lines: list[TaxLineIn]
    exempt: bool = False


class TaxBatchIn(BaseModel):
    quotes: list[TaxIn] = Field(max_length=5000)


class CreditIn(BaseModel):
    customer_id: str
    amount: float = Field(ge=0)


class CreditBatchIn(BaseModel):
    checks: list[CreditIn] = Field(max_length=5000)


class ScreeningIn(BaseModel):
    name: str
    country: str = "US"


class ScreeningBatchIn(BaseModel):
    checks: list[ScreeningIn] = Field(max_length=5000)


class WebhookIn(BaseModel):
    event: str = Field(description="e.g. order_acknowledged, order_shipped")
    customer_id: str
    order_id: str
    data: dict[str, Any] = Field(default_factory=dict)


class PortalOrderIn(BaseModel):
    client_request_id: str = Field(min_length=1, description="The portal's id of the request")
    customer_id: str
    ship_to_id: str | None = None
    po_number: str
    po_date: str | None = None
    requested_ship_date: str | None = None
    currency: str = "USD"
    lines: list[dict[str, Any]] = Field(
        min_length=1, description="As the feed serves them: line_no, sku, quantity, uom, ..."
    )


class ClockIn(BaseModel):
    now: datetime | None = Field(None, description="New simulated time (timezone-aware)")
    advance_minutes: float | None = Field(None, description="Move the clock forward")
    speed: float | None = Field(None, gt=0, description="Simulated seconds per real second")


class PartnersIn(BaseModel):
    refusal_rate: float = Field(..., ge=0, le=1)


class CompactIn(BaseModel):
    drop: int = Field(..., ge=0, description="How many of the oldest events to drop")


class ResetIn(BaseModel):
    start: datetime | None = Field(
        None, description="Simulated time to start over at (default: the first start's)"
    )
    speed: float | None = Field(None, gt=0, description="Simulated seconds per real second")


class _MailSink:
    """aiosmtpd handler: every accepted message goes into the Distributor (no addresses in
    the log: they are personal data)."""

    def __init__(self, state: Distributor):
        self.state = state

    async def handle_DATA(self, server, session, envelope) -> str:  # aiosmtpd calls it so
        try:
            self.state.receive_mail(
                envelope.mail_from,
                list(envelope.rcpt_tos),
                envelope.original_content or envelope.content,
            )
        except Exception:
            log.exception("SMTP sink: a message could not be stored")
            return "451 Requested action aborted: local error in processing"
        return "250 Message accepted for delivery"


def _smtp_controller(state: Distributor, host: str, port: int):
    from aiosmtpd.controller import Controller

    # aiosmtpd logs senders and recipients at INFO: keep e-mail addresses out of the log.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    return Controller(
        _MailSink(state),
        hostname=host,
        port=port,
        server_hostname="sandbox.orderflow.local",  # not getfqdn(): no DNS lookup at start
        ready_timeout=10,
    )


# ---------------------------------------------------------------------- the app
def create_app(
    day_dir: Path,
    drop_dir: Path,
    *,
    clock: SimClock | None = None,
    faults: FaultConfig | None = None,
    deliver_every_s: float = 1.0,
    smtp_host: str = "127.0.0.1",
    smtp_port: int = 0,
    fresh: bool | None = None,
) -> FastAPI:
    """The sandbox app; ``smtp_port`` > 0 also runs the SMTP sink there (app lifespan).

    Its state is durable in ``drop_dir`` (see :mod:`orderflow_sandbox.persist`): started
    again on the same folder it continues — records, feeds, idempotency answers, clock —
    and ``clock``'s start and speed apply only to a fresh state. ``fresh`` (default: the
    ``ORDERFLOW_SANDBOX_FRESH`` environment variable is set to 1) forgets it first."""
    clock = clock or SimClock()
    injector = FaultInjector(faults)
    if fresh is None:
        fresh = os.environ.get("ORDERFLOW_SANDBOX_FRESH", "") in ("1", "true", "yes")
    state = Distributor(day_dir, drop_dir, clock, seed=(faults or FaultConfig()).seed, fresh=fresh)
    from orderflow_sandbox import push

    if fresh:
        (drop_dir / push.STATE_FILE).unlink(missing_ok=True)
    pusher = push.Pusher(state, state_file=drop_dir / push.STATE_FILE)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        smtp = _smtp_controller(state, smtp_host, smtp_port) if smtp_port else None
        if smtp is not None:
            await asyncio.to_thread(smtp.start)  # raises when the port is taken

        async def deliver_loop():
            while True:
                try:
                    dup = injector.rule_for("/edi/inbound")
                    rnd = injector.rng(dup, "delivery") if dup else None
                    duplicate = bool(rnd and rnd.random() < dup.duplicate_rate)
                    await asyncio.to_thread(state.deliver_due, duplicate)
                except Exception:  # keep delivering; the log says what broke
                    log.exception("delivery loop")
                await asyncio.sleep(deliver_every_s)

        task = asyncio.create_task(deliver_loop()) if deliver_every_s > 0 else None
        await asyncio.to_thread(pusher.configure_from_env)
        pushing = asyncio.create_task(pusher.run())  # webhooks (push.py), off the handlers
        try:
            yield
        finally:
            pushing.cancel()
            if task:
                task.cancel()
            if smtp is not None:
                await asyncio.to_thread(smtp.stop)
            state.close()

    app = FastAPI(
        title="OrderFlow sandbox distributor",
        version="1.0",
        description="Stand-in ERP, WMS (two DCs), carrier/TMS, tax, credit, screening, B2B portal "
        "and EDI gateway of one industrial distributor, with fault injection. Mutating calls "
        "that are side effects in the real world require an `Idempotency-Key` header.",
        lifespan=lifespan,
    )
    app.state.distributor = state
    app.state.injector = injector
    app.state.pusher = pusher

    @app.exception_handler(NotFound)
    async def _nf(_r: Request, exc: NotFound):
        return JSONResponse({"detail": f"not found: {exc}"}, status_code=404)

    @app.exception_handler(Conflict)
    async def _cf(_r: Request, exc: Conflict):
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.exception_handler(Invalid)
    async def _iv(_r: Request, exc: Invalid):
        return JSONResponse({"detail": str(exc)}, status_code=422)

    # ------------------------------------------------------------------ ERP
    erp = APIRouter(prefix="/erp", tags=["ERP"])

    @erp.get("/{entity}", summary="Master-data extract (incremental with changed_since)")
    def extract(
        entity: str,
        changed_since: Annotated[
            str | None, Query(description="ISO timestamp; rows updated after it")
        ] = None,
        offset: int = 0,
        limit: Annotated[int, Query(le=10000)] = 1000,
    ) -> dict:
        return state.extract(entity.replace("-", "_"), changed_since, offset, limit)

    @erp.get("/customers/{customer_id}/exposure", summary="Open AR + open orders vs limit")
    def exposure(customer_id: str) -> dict:
        return state.exposure(customer_id)

    @erp.post("/exposure", summary="Current exposure of several customers (one call)")
    def exposures(body: ExposureIn) -> dict:
        return state.exposures(body.customer_ids)

    @erp.post("/orders", status_code=201, summary="Create a sales order (idempotent)")
    def create_order(body: ErpOrderIn, response: Response, key: IdemKey = None) -> dict:
        return _answer(response, state.create_erp_order(_require_key(key), body.model_dump()))

    @erp.post("/invoices", status_code=201, summary="Post an invoice to AR (idempotent)")
    def post_invoice(body: InvoiceIn, response: Response, key: IdemKey = None) -> dict:
        return _answer(response, state.post_invoice(_require_key(key), body.model_dump()))

    # ------------------------------------------------------------------ WMS
    wms = APIRouter(prefix="/wms", tags=["WMS"])

    @wms.get("/inventory", summary="On-hand / available-to-promise per item and DC")
    def inventory(
        item_id: Annotated[list[str] | None, Query()] = None,
        dc_id: str | None = None,
        changed_since: str | None = None,
    ) -> dict:
        items = state.availability(item_id, dc_id, changed_since)
        return {"items": items, "as_of": state.now().isoformat()}

    @wms.post("/reservations", status_code=201, summary="Reserve stock (409 if not available)")
    def reserve(body: ReservationIn) -> dict:
        return state.reserve(body.item_id, body.dc_id, body.quantity, body.reference)

    @wms.delete("/reservations/{reservation_id}", summary="Cancel a held reservation")
    def cancel(reservation_id: str) -> dict:
        return state.cancel_reservation(reservation_id)

    @wms.post("/releases", status_code=201, summary="Release an order to the floor (idempotent)")
    def release(body: ReleaseIn, response: Response, key: IdemKey = None) -> dict:
        return _answer(response, release_one(_require_key(key), body.model_dump()))

    def release_one(key: str, body: dict) -> tuple[dict, bool]:
        reuse = injector.reuse_id("/wms/releases")
        answer, replayed = state.release(key, body, reuse_id=reuse)
        given = state.releases.get(answer["release_id"])
        if reuse and not replayed and given and given["order_id"] != answer["order_id"]:
            hit = {
                "key": key,
                "order_id": answer["order_id"],
                "answered": answer["release_id"],
                "at": datetime.now(UTC).isoformat(),  # wall clock: recovery is measured from it
            }
            injector.reuse_hit(hit)
        return answer, replayed

    @wms.post(
        "/releases/batch",
        summary="Several releases in one call (idempotent per item): per item, the answer "
        "POST /releases gives (and whether it was a replay), or the error it would answer with",
    )
    def release_batch(body: KeyedBatchIn) -> dict:
        return _each(
            state,
            body.items,
            lambda key, it: release_one(key, ReleaseIn.model_validate(it["release"]).model_dump()),
        )

    @wms.get(
        "/capacity",
        summary="Pick capacity per DC in the current wave: per wave, used, remaining, the "
        "next wave's start, the carrier cutoff",
    )
    def capacity() -> dict:
        return state.capacity()

    @wms.post(
        "/releases/{release_id}/cancel",
        summary="Cancel a release before picking (idempotent; 409 once picking started)",
    )
    def cancel_release(release_id: str, response: Response, key: IdemKey = None) -> dict:
        return _answer(response, state.cancel_release(_require_key(key), release_id), created=200)

    @wms.get(
        "/milestones", summary="Milestone feed: released, picked, short_picked, packed, shipped"
    )
    def milestones(
        request: Request, cursor: int = 0, limit: Annotated[int, Query(le=1000)] = 200
    ) -> dict:
        page = state.feed("wms", cursor, limit)
        page["items"] = injector.feed_faults(request.url.path, page["items"])
        return page

    # ------------------------------------------------------------------ carrier
    carrier = APIRouter(prefix="/carrier", tags=["Carrier / TMS"])

    @carrier.post("/rates", summary="Parcel and LTL rate quotes by weight, zone, service")
    def rates(body: RateIn) -> dict:
        return {"quotes": state.rate_quotes(body.weight_kg, body.dc_id, body.zone, body.hazmat)}

    @carrier.post("/shipments", status_code=201, summary="Book a shipment (idempotent)")
    def book(body: ShipmentIn, response: Response, key: IdemKey = None) -> dict:
        return _answer(response, state.book_shipment(_require_key(key), body.model_dump()))

    @carrier.post(
        "/shipments/batch",
        summary="Book several shipments in one call (idempotent per item): per item, the "
        "answer POST /shipments gives, or the error it would answer with",
    )
    def book_batch(body: KeyedBatchIn) -> dict:
        return _each(
            state,
            body.items,
            lambda key, it: state.book_shipment(
                key, ShipmentIn.model_validate(it["shipment"]).model_dump()
            ),
        )

    @carrier.get("/tracking", summary="Tracking events: in_transit, delayed, delivered, exception")
    def tracking(
        request: Request, cursor: int = 0, limit: Annotated[int, Query(le=1000)] = 200
    ) -> dict:
        page = state.feed("carrier", cursor, limit)
        page["items"] = injector.feed_faults(request.url.path, page["items"])
        return page

    # ------------------------------------------------------------------ tax, credit, screening
    other = APIRouter(tags=["Tax, credit, screening"])

    @other.post("/tax/quote", summary="Sales tax quote per line")
    def tax(body: TaxIn) -> dict:
        return state.tax_quote(
            body.region, body.country, [ln.model_dump() for ln in body.lines], body.exempt
        )

    @other.post(
        "/tax/quote/batch",
        summary="Sales tax quotes for several requests in one call: per request, the answer "
        "/tax/quote gives",
    )
    def tax_batch(body: TaxBatchIn) -> dict:
        return {
            "results": [
                state.tax_quote(q.region, q.country, [ln.model_dump() for ln in q.lines], q.exempt)
                for q in body.quotes
            ]
        }

    @other.post("/credit/check", summary="Real-time credit decision")
    def credit(body: CreditIn) -> dict:
        return state.credit_check(body.customer_id, body.amount)

    @other.post(
        "/credit/check/batch",
        summary="Real-time credit decisions for several customers in one call: per check, "
        "the answer /credit/check gives, or the error it would answer with",
    )
    def credit_batch(body: CreditBatchIn) -> dict:
        results = []
        for c in body.checks:
            try:
                results.append(state.credit_check(c.customer_id, c.amount))
            except NotFound as exc:
                results.append(
                    {
                        "customer_id": c.customer_id,
                        "error": {"status": 404, "detail": f"not found: {exc}"},
                    }
                )
        return {"results": results}

    @other.post("/screening/check", summary="Restricted-party screening")
    def screening(body: ScreeningIn) -> dict:
        return state.screen(body.name, body.country)

    @other.post(
        "/screening/check/batch",
        summary="Restricted-party screening of several parties in one call: per party, the "
        "answer /screening/check gives",
    )
    def screening_batch(body: ScreeningBatchIn) -> dict:
        return {"results": [state.screen(c.name, c.country) for c in body.checks]}

    # ------------------------------------------------------------------ portal
    portal = APIRouter(prefix="/portal", tags=["B2B portal"])

    @portal.get("/orders", summary="Orders feed, read with a cursor; each has a client request id")
    def portal_orders(
        request: Request, cursor: int = 0, limit: Annotated[int, Query(le=1000)] = 100
    ) -> dict:
        page = state.portal_page(cursor, limit)
        page["items"] = injector.feed_faults(request.url.path, page["items"])
        return page

    @portal.post(
        "/orders",
        status_code=201,
        summary="A customer places an order on the portal now: in the feed at once, its "
        "new-order notice pushed to a portal subscription (idempotent by client request id)",
    )
    def portal_submit(body: PortalOrderIn, response: Response) -> dict:
        return _answer(response, state.submit_portal_order(body.model_dump()))

    @portal.post(
        "/webhooks", status_code=201, summary="Receive a customer notification (idempotent)"
    )
    def portal_webhook(body: WebhookIn, response: Response, key: IdemKey = None) -> dict:
        return _answer(response, state.receive_webhook(_require_key(key), body.model_dump()))

    @portal.get("/webhooks", summary="Notifications received (inspection)")
    def portal_webhooks(customer_id: str | None = None, event: str | None = None) -> dict:
        return {"items": state.webhook_list(customer_id, event)}

    # ------------------------------------------------------------------ EDI
    edi = APIRouter(prefix="/edi", tags=["EDI gateway"])

    @edi.post(
        "/outbound", status_code=201, summary="Receive our outbound 997/855/856/810 (idempotent)"
    )
    def receive(
        response: Response,
        body: Annotated[str, Body(media_type="application/edi-x12")],
        partner_id: Annotated[str, Header(alias="X-Partner-Id")],
        document_type: Annotated[str, Header(alias="X-Document-Type")],
        key: IdemKey = None,
    ) -> dict:
        return _answer(
            response, state.receive_edi(_require_key(key), partner_id, document_type, body)
        )

    @edi.post(
        "/outbound/batch",
        summary="Receive several outbound documents in one call (idempotent per item: "
        "idempotency_key, partner_id, document_type, body): per item, the answer POST "
        "/outbound gives, or the error it would answer with",
    )
    def receive_batch(body: KeyedBatchIn) -> dict:
        def one(key: str, it: dict) -> tuple[dict, bool]:
            if not isinstance(it.get("body"), str) or not it.get("partner_id"):
                raise HTTPException(422, "partner_id and body (X12 text) are required")
            if not it.get("document_type"):
                raise HTTPException(422, "document_type is required")
            return state.receive_edi(key, it["partner_id"], it["document_type"], it["body"])

        return _each(state, body.items, one)

    @edi.get("/outbound", summary="What the gateway received (inspection)")
    def received(partner_id: str | None = None, document_type: str | None = None) -> dict:
        with state.lock:
            docs = [
                d
                for d in state.outbound_edi
                if (not partner_id or d["partner_id"] == partner_id)
                and (not document_type or d["document_type"] == document_type)
            ]
        return {"items": docs}

    @edi.get(
        "/acknowledgments",
        summary="The partners' 997s to our 855/856/810: due time, file, status (inspection)",
    )
    def partner_acks(partner_id: str | None = None) -> dict:
        return {"items": state.ack_list(partner_id)}

    # ------------------------------------------------------------------ mail relay
    mail = APIRouter(prefix="/mail", tags=["Mail relay (SMTP sink)"])

    @mail.get("/messages", summary="Messages the SMTP sink received")
    def mail_messages(
        to: Annotated[str | None, Query(description="a recipient address")] = None,
        subject: Annotated[str | None, Query(description="the subject contains this")] = None,
    ) -> dict:
        return {"items": state.mail_messages(to, subject)}

    # ------------------------------------------------------------------ admin
    admin = APIRouter(prefix="/admin", tags=["Admin"])

    @admin.get("/health")
    def health() -> dict:
        return {"status": "ok", "clock": state.now().isoformat()}

    @admin.get("/state", summary="Counts of everything the sandbox holds")
    def summary() -> dict:
        return state.summary()

    @admin.get("/faults", response_model=FaultConfig)
    def get_faults() -> FaultConfig:
        return injector.config

    @admin.put("/faults", response_model=FaultConfig, summary="Replace the fault rules")
    def set_faults(config: FaultConfig) -> FaultConfig:
        injector.set(config)
        return injector.config

    @admin.post(
        "/faults/reuse-release-ids",
        summary="Answer the next N new WMS releases with an id already given out (0 disarms)",
    )
    def arm_reuse(body: ReuseArm) -> dict:
        return injector.arm_reuse(body.count)

    @admin.get(
        "/faults/reuse-release-ids",
        summary="Armed count left and the releases answered with a reused id",
    )
    def reuse_state() -> dict:
        return injector.reuse_state()

    @admin.put(
        "/carrier/tendering",
        summary="How the carrier answers tenders: services it refuses (409) and its fuel "
        "surcharge on booked freight",
    )
    def set_tendering(body: TenderingIn) -> dict:
        with state.lock:
            state.tender_refusals = set(body.refuse)
            state.fuel_surcharge = body.fuel_surcharge
            state.label_from_booking = body.label_from_booking
        return {
            "refuse": sorted(state.tender_refusals),
            "fuel_surcharge": state.fuel_surcharge,
            "label_from_booking": state.label_from_booking,
        }

    @admin.put(
        "/wms/capacity",
        summary="The WMS's pick capacity per DC per wave and its carrier cutoffs (empty: "
        "unconstrained, the default)",
    )
    def set_capacity(body: CapacityIn) -> dict:
        from datetime import time as dt_time

        try:
            cutoffs = {dc: dt_time.fromisoformat(t) for dc, t in body.carrier_cutoffs.items()}
        except ValueError as exc:
            raise HTTPException(422, f"carrier_cutoffs: {exc}") from None
        unknown = sorted((set(body.per_wave) | set(cutoffs)) - set(state.dcs))
        if unknown:
            raise HTTPException(422, f"unknown DC {', '.join(unknown)}")
        if any(n < 1 for n in body.per_wave.values()):
            raise HTTPException(422, "a wave holds at least one pick")
        with state.lock:
            state.wave_capacity = dict(body.per_wave)
            state.wave_minutes = body.wave_minutes
            state.carrier_cutoffs = cutoffs
        return state.capacity()

    @admin.get("/clock")
    def get_clock() -> dict:
        return {"now": state.now().isoformat(), "speed": clock.speed}

    @admin.put("/clock", summary="Set, advance or speed up simulated time")
    def set_clock(body: ClockIn) -> dict:
        state.set_clock(body.now, body.speed, body.advance_minutes)
        delivered = state.deliver_due()
        return {"now": state.now().isoformat(), "speed": clock.speed, "delivered": delivered}

    @admin.get(
        "/idempotency/{system}",
        summary="Idempotency-Keys a receiver has answered: release, erp_order, invoice, "
        "shipment, outbound (EDI), webhook (inspection)",
    )
    def idempotency_keys(system: str) -> dict:
        with state.lock:
            store = state._idem.get(system)
            if store is None:
                raise NotFound(f"idempotency store {system}")
            return {"system": system, "keys": sorted(store.answers)}

    @admin.put(
        "/partners",
        summary="How partners answer: the share of well-formed groups they refuse all the same "
        "(default 1 %, seeded per group; 0 for tests that need every 997 to accept)",
    )
    def set_partners(body: PartnersIn) -> dict:
        with state.lock:
            state.partner_refusal_rate = body.refusal_rate
        return {"refusal_rate": state.partner_refusal_rate}

    @admin.post(
        "/feeds/{which}/compact",
        summary="Drop the first N events of the WMS milestone or carrier tracking feed and "
        "number the rest from the start (a fault: a feed rewound under its readers)",
    )
    def compact_feed(which: Literal["wms", "carrier"], body: CompactIn) -> dict:
        return state.compact_feed(which, body.drop)

    @admin.post(
        "/reset",
        summary="Forget all state on purpose (a WMS restored from nothing): releases, feeds, "
        "idempotency answers, mail, deliveries; the clock starts over",
    )
    def reset(body: ResetIn | None = None) -> dict:
        body = body or ResetIn()
        return state.reset(body.start, body.speed)

    @admin.patch("/master/{entity}/{key}", summary="Change a master record (fix or break it)")
    def patch_master(entity: str, key: str, changes: dict[str, Any]) -> dict:
        return state.update_master(entity.replace("-", "_"), key, changes)

    @admin.get("/master-data-defects", summary="Labelled master-data defects of this world")
    def md_defects() -> dict:
        return {"items": state.master_data_defects}

    from orderflow_sandbox import marketplace

    for router in (erp, wms, carrier, other, portal, edi, mail, admin):
        app.include_router(router)
    app.include_router(marketplace.router(state, injector))
    app.include_router(crm.router(state))
    app.include_router(push.router(pusher))
    app.add_middleware(FaultMiddleware, injector=injector)
    return app
