"""The webhook signature (both sides' copies agree) and the local stack's push settings."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest

from orderflow.pushed import signing


def test_a_signature_verifies_and_any_change_breaks_it():
    body = b'{"events":[]}'
    header = signing.sign("s3cret-s3cret", body)
    signing.verify("s3cret-s3cret", body, header)
    for secret, b, h in (
        ("other-secret", body, header),
        ("s3cret-s3cret", body + b" ", header),
        ("s3cret-s3cret", body, None),
        ("s3cret-s3cret", body, "v1=abc"),
    ):
        with pytest.raises(signing.BadSignature):
            signing.verify(secret, b, h)


def test_a_stale_signature_is_refused():
    body = b"{}"
    old = signing.sign("k" * 12, body, int(time.time()) - signing.TOLERANCE_S - 5)
    with pytest.raises(signing.BadSignature, match="from now"):
        signing.verify("k" * 12, body, old)


def test_the_sandbox_signs_as_orderflow_verifies():
    from orderflow_sandbox import push

    body = b'{"events":[{"seq":1}]}'
    assert push.SIGNATURE_HEADER == signing.HEADER
    signing.verify("shared-secret", body, push.sign("shared-secret", body))


def test_the_stack_points_the_sandbox_at_the_receiver_and_falls_back_without_redis(tmp_path):
    from orderflow.dev import stack

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    env = stack.push_env(
        "secret-1234", Path(tmp_path), {"ORDERFLOW_REDIS_URL": f"redis://127.0.0.1:{closed}/2"}
    )
    assert env["ORDERFLOW_PUSH_WAKE"] == "off"  # no Redis: poll only, the stack still starts
    assert env["ORDERFLOW_SANDBOX_PUSH_URL"].endswith("/orderflow/api/events/{source}")
    assert env["ORDERFLOW_SANDBOX_PUSH_SECRET"] == "secret-1234"
    assert json.loads(env["AIRFLOW_CONN_FULFILMENT_PUSH"])["password"] == "secret-1234"
    redis_conn = json.loads(env["AIRFLOW_CONN_REDIS_DEFAULT"])
    assert (redis_conn["port"], redis_conn["extra"]["db"]) == (closed, 2)
    other = stack.push_env("secret-1234", Path(tmp_path) / "other", {})
    for channel in ("ORDERFLOW_FULFILMENT_WAKE_CHANNEL", "ORDERFLOW_INTAKE_WAKE_CHANNEL"):
        assert other[channel] != env[channel]
