"""Customer changes through the real ``order_processing`` DAG (dag.test) and the sandbox: a
cancel of a held order is applied by the next run's claim; a change of a released order is
sent to the WMS as a release cancel by that run's send_releases, and the run after applies
it and processes the amended order through every stage to a new release."""

from decimal import Decimal

import pytest
from psycopg.types.json import Jsonb

from orderflow.domain.changes import ChangeKind, LineChange, LineChangeKind, OrderChange
from orderflow.domain.models import Order
from orderflow.store import db
from orderflow.store import processing as repo

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.airflow_db,
    pytest.mark.db,
    pytest.mark.sandbox,
    pytest.mark.long,
    pytest.mark.day_snapshot("processed"),  # the day landed, then one order_processing run
]


def _run():
    from airflow.dag_processing.dagbag import DagBag
    from airflow.utils.state import DagRunState

    from orderflow.settings import DAGS_DIR

    run = DagBag(str(DAGS_DIR)).get_dag("order_processing").test()
    assert run.state == DagRunState.SUCCESS
    return run


def _store(conn, order_id, kind, ref, **kw) -> int:
    o = Order.model_validate(
        conn.execute(
            'SELECT canonical FROM orderflow."order" WHERE order_id = %s', (order_id,)
        ).fetchone()[0]
    )
    change = OrderChange(
        kind=kind, po_number=o.po_number, channel=o.provenance.channel, reference=ref, **kw
    )
    return conn.execute(
        "INSERT INTO orderflow.order_change (order_id, kind, source, reference, payload) "
        "VALUES (%s, %s, 'portal', %s, %s) RETURNING change_id",
        (order_id, kind.value, ref, Jsonb(change.model_dump(mode="json"))),
    ).fetchone()[0]


def _status(conn, order_id) -> str:
    return conn.execute(
        'SELECT status FROM orderflow."order" WHERE order_id = %s', (order_id,)
    ).fetchone()[0]


def test_cancel_and_change_through_the_dag(store_url, sandbox, airflow_db):
    import os

    os.environ.update(sandbox.connection_env())
    conn = db.connect()
    held, released = (
        conn.execute(
            "SELECT order_id FROM orderflow.\"order\" o WHERE status = %s AND channel <> 'edi' "
            "AND NOT EXISTS (SELECT 1 FROM orderflow.order_change c "
            "WHERE c.order_id = o.order_id) ORDER BY order_id LIMIT 1",
            (status,),
        ).fetchone()[0]
        for status in ("ON_HOLD", "RELEASED")
    )
    line = Order.model_validate(
        conn.execute(
            'SELECT canonical FROM orderflow."order" WHERE order_id = %s', (released,)
        ).fetchone()[0]
    ).lines[0]
    c_held = _store(conn, held, ChangeKind.CANCEL, "E2E-C")
    c_rel = _store(
        conn,
        released,
        ChangeKind.CHANGE,
        "E2E-CH",
        lines=[LineChange(line_no=line.line_no, kind=LineChangeKind.QUANTITY, quantity=1)],
    )
    _run()  # applies the cancel; queues and sends the WMS release cancel of the other
    assert _status(conn, held) == "CANCELLED"
    assert conn.execute(
        "SELECT status FROM orderflow.outbox WHERE action = 'wms_release_cancel' AND order_id = %s",
        (released,),
    ).fetchall() == [("sent",)] * len(
        conn.execute(
            "SELECT 1 FROM orderflow.shipment WHERE order_id = %s AND release_version = 1",
            (released,),
        ).fetchall()
    )
    _run()  # the withdrawn release: amended, processed again, released as version 2
    states = dict(
        conn.execute(
            "SELECT change_id, status FROM orderflow.order_change WHERE change_id = ANY(%s)",
            ([c_held, c_rel],),
        ).fetchall()
    )
    assert states == {c_held: "applied", c_rel: "applied"}
    assert _status(conn, released) == "RELEASED"
    ships = conn.execute(
        "SELECT release_version, status FROM orderflow.shipment WHERE order_id = %s",
        (released,),
    ).fetchall()
    assert {s for v, s in ships if v == 1} == {"cancelled"}
    assert {s for v, s in ships if v == 2} == {"released"}
    qty = conn.execute(
        "SELECT quantity FROM orderflow.order_line WHERE order_id = %s AND line_no = %s",
        (released, line.line_no),
    ).fetchone()[0]
    assert qty == Decimal(1)
    reasons = [
        r[0]
        for r in conn.execute(
            "SELECT reason_codes FROM orderflow.order_event WHERE order_id = ANY(%s) "
            "AND 'customer_change' = ANY(reason_codes) OR 'customer_cancel' = ANY(reason_codes)",
            ([held, released],),
        )
    ]
    assert ["customer_cancel"] in reasons and ["customer_change"] in reasons
    # a further run changes nothing and the inventory reconciles
    _run()
    assert (
        dict(
            conn.execute(
                "SELECT change_id, status FROM orderflow.order_change WHERE change_id = ANY(%s)",
                ([c_held, c_rel],),
            ).fetchall()
        )
        == states
    )
    assert repo.allocation_mismatches(conn) == []
    conn.close()
