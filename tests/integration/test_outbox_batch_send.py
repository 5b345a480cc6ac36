"""The outbox sender's batched keyed sends (issue #16): a slice's rows of one action and
Connection go in one request, each under its own key, and each row is recorded with its own
outcome; a receiver without the batch endpoint gets one request a row, as before. Over real
HTTP: the sandbox EDI gateway, and a small keyed receiver standing in for a gateway that has
(or lacks) ``/outbound/batch`` and counts what it is asked."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from orderflow.integrations import outbox
from orderflow.store import db
from orderflow.store import outbox as outbox_store

pytestmark = [pytest.mark.sandbox, pytest.mark.db]


class _Gateway:
    """A keyed EDI receiver: ``POST /outbound`` (and ``/outbound/batch`` when ``batch``)
    answers a repeated key with its first answer; it records every request it gets."""

    def __init__(self, batch: bool):
        self.batch = batch
        self.requests: list[str] = []
        self.answers: dict[str, dict] = {}
        self.lock = threading.Lock()
        gw = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # quiet
                pass

            def _reply(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with gw.lock:
                    gw.requests.append(self.path)
                    if self.path == "/outbound":
                        key = self.headers["Idempotency-Key"]
                        answer = gw.receive(key, self.headers["X-Partner-Id"], raw.decode())
                        return self._reply(201, answer)
                    if self.path == "/outbound/batch" and gw.batch:
                        items = json.loads(raw)["items"]
                        results = []
                        for it in items:
                            if it["body"] == "REFUSE":
                                results.append({"error": {"status": 422, "detail": "bad body"}})
                            else:
                                answer = gw.receive(
                                    it["idempotency_key"], it["partner_id"], it["body"]
                                )
                                results.append({"answer": answer, "replayed": False})
                        return self._reply(200, {"results": results})
                    return self._reply(404, {"detail": "Not Found"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def receive(self, key: str, partner: str, body: str) -> dict:
        if key not in self.answers:
            self.answers[key] = {"receipt_id": f"R{len(self.answers) + 1}", "partner_id": partner}
        return self.answers[key]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def gateways(sandbox, monkeypatch):
    for key, value in sandbox.connection_env().items():
        monkeypatch.setenv(key, value)
    sandbox.client.put("/admin/faults", json={"seed": 4, "rules": []}).raise_for_status()
    made = {"with": _Gateway(batch=True), "without": _Gateway(batch=False)}
    for name, gw in made.items():
        monkeypatch.setenv(
            f"AIRFLOW_CONN_EDI_{name.upper()}",
            json.dumps({"conn_type": "http", "host": gw.url, "extra": {"timeout": 5}}),
        )
    yield made
    for gw in made.values():
        gw.server.shutdown()


def _queue(store, key: str, conn_id: str, body: str = "ISA*~", partner: str = "P-B") -> None:
    with db.transaction(store):
        outbox_store.enqueue(
            store,
            idempotency_key=key,
            action="edi_855",
            target_conn_id=conn_id,
            payload={"partner_id": partner, "document_type": "855", "body": body},
        )


def _only(store, keys: list[str]) -> None:
    """Rows of earlier tests wait: this test's send sees only its own."""
    store.execute(
        "UPDATE orderflow.outbox SET next_attempt_at = now() + interval '1 day' "
        "WHERE status IN ('pending', 'failed') AND NOT (idempotency_key = ANY(%s))",
        (keys,),
    )


def _statuses(store, keys: list[str]) -> dict[str, tuple]:
    return {
        k: (s, a, e)
        for k, s, a, e in store.execute(
            "SELECT idempotency_key, status, attempts, last_error FROM orderflow.outbox "
            "WHERE idempotency_key = ANY(%s)",
            (keys,),
        )
    }


def test_a_slice_goes_in_one_request_and_each_row_is_recorded_with_its_own_outcome(store, gateways):
    gw = gateways["with"]
    keys = [f"bs1:{i}" for i in range(6)]
    for k in keys[:5]:
        _queue(store, k, "edi_with")
    _queue(store, keys[5], "edi_with", body="REFUSE")
    _only(store, keys)
    res = outbox.send(store, ["edi_855"])
    assert (res.claimed, res.sent, res.dead, res.rejected) == (6, 5, 1, 1)
    assert gw.requests == ["/outbound/batch"]
    assert sorted(gw.answers) == keys[:5]
    got = _statuses(store, keys)
    assert {k: got[k][:2] for k in keys[:5]} == dict.fromkeys(keys[:5], ("sent", 1))
    assert got[keys[5]] == ("dead", 1, "EDI gateway /outbound: HTTP 422: bad body")
    responses = dict(
        store.execute(
            "SELECT idempotency_key, response FROM orderflow.outbox "
            "WHERE idempotency_key = ANY(%s)",
            (keys[:5],),
        ).fetchall()
    )
    assert {k: responses[k] for k in keys[:5]} == {k: gw.answers[k] for k in keys[:5]}


def test_a_receiver_without_the_batch_endpoint_gets_one_request_a_row(store, gateways):
    gw = gateways["without"]
    keys = [f"bs2:{i}" for i in range(4)]
    for k in keys:
        _queue(store, k, "edi_without")
    _only(store, keys)
    res = outbox.send(store, ["edi_855"])
    assert (res.claimed, res.sent) == (4, 4)
    assert gw.requests.count("/outbound/batch") == 1  # asked once, then one by one
    assert gw.requests.count("/outbound") == 4
    assert sorted(gw.answers) == keys
    assert {v[0] for v in _statuses(store, keys).values()} == {"sent"}


def test_rows_of_two_connections_each_go_to_their_own_receiver(store, gateways, sandbox):
    keys = [f"bs3:{i}" for i in range(4)]
    _queue(store, keys[0], "edi_with")
    _queue(store, keys[1], "edi_default", partner="P-BS3")  # the sandbox gateway
    _queue(store, keys[2], "edi_with")
    _queue(store, keys[3], "edi_default", partner="P-BS3")
    _only(store, keys)
    assert outbox.send_due(store, ["edi_855"]) == {"sent": 4}
    assert sorted(gateways["with"].answers) == [keys[0], keys[2]]
    received = sandbox.client.get("/edi/outbound", params={"partner_id": "P-BS3"}).json()
    assert len(received["items"]) == 2
    # sent again (a lease that expired after the send): answered by key, nothing new
    with db.transaction(store):
        store.execute(
            "UPDATE orderflow.outbox SET status = 'pending', next_attempt_at = now() "
            "WHERE idempotency_key = ANY(%s)",
            (keys,),
        )
    assert outbox.send_due(store, ["edi_855"]) == {"sent": 4}
    assert sorted(gateways["with"].answers) == [keys[0], keys[2]]
    received = sandbox.client.get("/edi/outbound", params={"partner_id": "P-BS3"}).json()
    assert len(received["items"]) == 2
