"""OrderFlow's hooks against the sandbox over HTTP, through Airflow Connections (env-defined,
exactly as tasks resolve them): retries of transient faults, immediate failure on 4xx."""

import pytest

from orderflow.integrations.http import ExternalRejected, ExternalUnavailable
from orderflow.integrations.systems import ErpHook, PortalHook, TaxHook, WmsHook

pytestmark = pytest.mark.sandbox


@pytest.fixture(autouse=True)
def connections(sandbox, monkeypatch):
    for key, value in sandbox.connection_env().items():
        monkeypatch.setenv(key, value)
    sandbox.client.put("/admin/faults", json={"seed": 5, "rules": []})
    yield
    sandbox.client.put("/admin/faults", json={"seed": 5, "rules": []})


def _faults(sandbox, **rule):
    sandbox.client.put("/admin/faults", json={"seed": 5, "rules": [rule]}).raise_for_status()


def test_erp_extract_pages_through_everything(sandbox):
    rows = list(ErpHook().extract("customers", page_size=7))
    assert len(rows) == len({r["customer_id"] for r in rows}) == 120


def test_transient_errors_are_retried_until_success(sandbox):
    _faults(sandbox, prefix="/tax", error_rate=0.5)
    hook = TaxHook(retries=8, backoff=0.01)
    for _ in range(10):
        quote = hook.quote(
            {"customer_id": "C", "region": "CA", "lines": [{"line_no": 1, "amount": 10}]}
        )
        assert quote["total_tax"] == pytest.approx(0.72, abs=0.01)


def test_persistent_outage_raises_unavailable_after_the_budget(sandbox):
    _faults(sandbox, prefix="/tax", error_rate=1.0)
    with pytest.raises(ExternalUnavailable, match="HTTP 503") as info:
        TaxHook(retries=3, backoff=0.01).quote({"customer_id": "C", "region": "CA", "lines": []})
    assert info.value.transient


def test_resets_and_timeouts_are_transient(sandbox, monkeypatch):
    _faults(sandbox, prefix="/tax", reset_rate=1.0)
    with pytest.raises(ExternalUnavailable):
        TaxHook(retries=2, backoff=0.01).quote({"customer_id": "C", "region": "CA", "lines": []})
    _faults(sandbox, prefix="/tax", timeout_rate=1.0, timeout_s=3)
    monkeypatch.setenv(
        "AIRFLOW_CONN_TAX_DEFAULT",
        f'{{"conn_type": "http", "host": "{sandbox}/tax", "extra": {{"timeout": 0.3}}}}',
    )
    with pytest.raises(ExternalUnavailable, match="Timeout"):
        TaxHook(retries=2, backoff=0.01).quote({"customer_id": "C", "region": "CA", "lines": []})


def test_rejections_are_not_retried(sandbox):
    with pytest.raises(ExternalRejected, match="unknown DC"):
        WmsHook().release({"order_id": "X", "dc_id": "DC-MOON", "lines": []}, idempotency_key="X:1")


def test_release_through_the_hook_is_idempotent(sandbox):
    pos = next(p for p in WmsHook().inventory() if p["available"] >= 5)
    body = {
        "order_id": "HK-1",
        "dc_id": pos["dc_id"],
        "lines": [{"line_no": 1, "item_id": pos["item_id"], "quantity": 1}],
    }
    a = WmsHook().release(body, idempotency_key="HK-1:wms_release:v1")
    b = WmsHook().release(body, idempotency_key="HK-1:wms_release:v1")
    assert a == b


def test_portal_feed_through_the_hook(sandbox):
    from datetime import timedelta

    from tests_support import START

    sandbox.client.put("/admin/clock", json={"now": (START + timedelta(days=1)).isoformat()})
    page = PortalHook().orders_page(0, 5)
    assert len(page["items"]) == 5
    assert page["next_cursor"] == 5


def test_the_environments_proxy_settings_apply_to_every_call(sandbox, monkeypatch):
    """The environment's settings for a request (proxies, ``no_proxy``) are worked out once
    per origin and hook, and still apply to each of its calls: a Connection whose host is
    reached through a proxy goes through it every time; one in ``no_proxy`` goes direct."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen: list[str] = []

    class Proxy(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            seen.append(self.path)  # a proxy is asked for the absolute URL
            data = json.dumps({"rate": 0.0, "lines": [], "total_tax": 0.0}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    proxy = ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        for name in ("http_proxy", "HTTP_PROXY", "no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.server_address[1]}")
        monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
        monkeypatch.setenv(
            "AIRFLOW_CONN_TAX_REMOTE",
            json.dumps({"conn_type": "http", "host": "http://tax.example.invalid/tax"}),
        )
        remote = TaxHook("tax_remote", retries=1)
        asked = {"customer_id": "C", "region": "CA", "lines": []}
        for _ in range(3):
            assert remote.quote(asked)["total_tax"] == 0.0
        assert seen == ["http://tax.example.invalid/tax/quote"] * 3
        # the sandbox (127.0.0.1, in no_proxy): direct, never through the proxy
        local = TaxHook(retries=1)
        for _ in range(2):
            assert local.quote({**asked, "lines": [{"line_no": 1, "amount": 10}]})["rate"] > 0
        assert len(seen) == 3
    finally:
        proxy.shutdown()
