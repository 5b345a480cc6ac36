"""Where the business day stands: orders received, held, released, picked, shipped, invoiced,
cancelled and rejected per channel, the desk's open exceptions, the outbox rows and the
quarantined inputs that wait for a person. ``orderflow status`` prints it; the operations
UI reads the same functions, so the command and the dashboard never disagree.

A day is a business day in the configured timezone (Airflow's ``[core] default_timezone``):
from its local midnight to the next. An order counts on the day it reached a milestone, timed
as ``order_fact`` (and so every KPI) times it, but read live from the tables rather than from
the view the KPI DAG refreshes:

- received: the customer's order arrived (``order.received_at``; backorder releases, which
  carry their parent's time, are not orders received);
- held: processing put it on hold that day (an ``ON_HOLD`` event; once per order per day);
- released / invoiced / cancelled / rejected: its first event of that status;
- picked / shipped: when the last shipment of its current release was picked / shipped (the
  WMS's and carrier's times, as ``order_fact``).

Open exceptions, outbox attention and quarantine are counts *now*, whatever day is asked:
they are what waits for a person.

Picks and shipments carry the WMS's and the carrier's times. When those clocks run ahead of
OrderFlow's by more than :data:`AHEAD_MARGIN` (a misset clock; the demo sandbox's, which runs
a day in minutes), those milestones count on later dates than the orders' other ones, and
the status says so and which date to ask for.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from orderflow.store import desk, outbox_report
from orderflow.store import status as repo

if TYPE_CHECKING:
    import psycopg

#: Intake channels, listed even on a day one of them brought nothing.
CHANNELS = ("edi", "csv", "portal", "email", "marketplace")
#: Order milestones of a day, in lifecycle order (the columns of ``orderflow status``).
MEASURES = (
    "received",
    "held",
    "released",
    "picked",
    "shipped",
    "invoiced",
    "cancelled",
    "rejected",
)


#: How far ahead of OrderFlow's clock a WMS or carrier time is before the status points it out.
AHEAD_MARGIN = timedelta(hours=1)


# ------------------------------------------------------------------------------ the day
def configured_timezone() -> tzinfo:
    """Airflow's ``[core] default_timezone``: ``utc`` (its default), ``system`` or a name."""
    from airflow.configuration import conf

    name = (conf.get("core", "default_timezone", fallback="utc") or "utc").strip()
    if name.lower() == "system":
        return datetime.now().astimezone().tzinfo or UTC
    return UTC if name.lower() == "utc" else ZoneInfo(name)


def business_day(tz: tzinfo, now: datetime | None = None) -> date:
    """Today in ``tz``."""
    return (now or datetime.now(UTC)).astimezone(tz).date()


def day_window(day: date, tz: tzinfo) -> tuple[datetime, datetime]:
    """[start, end) of ``day`` in ``tz``, in UTC (23 or 25 hours on a DST change)."""
    start = datetime.combine(day, time.min, tzinfo=tz)
    end = datetime.combine(day + timedelta(days=1), time.min, tzinfo=tz)
    return start.astimezone(UTC), end.astimezone(UTC)


# ------------------------------------------------------------------------------ counts


def day_counts(
    conn: psycopg.Connection, start: datetime, end: datetime
) -> dict[str, dict[str, int]]:
    """Orders per channel that reached each of :data:`MEASURES` in [start, end)."""
    out = {ch: dict.fromkeys(MEASURES, 0) for ch in CHANNELS}
    for channel, *counts in repo.day_counts(conn, start, end):
        out[channel] = dict(zip(MEASURES, counts, strict=True))
    return out


def desk_counts(conn: psycopg.Connection) -> dict[str, int]:
    """Open exceptions per SLA state (``breached`` / ``nearing`` / ``ok``): the desk's and the
    dashboard's numbers."""
    return desk.sla_counts(conn)


def open_exceptions_by_category(conn: psycopg.Connection) -> dict[str, int]:
    """Open exceptions per category (what holds orders, and the rest of the desk)."""
    return desk.open_by_category(conn)


def outbox_attention(conn: psycopg.Connection) -> dict[str, int]:
    """Outbox rows that wait for a person: dead, unknown (interrupted e-mails) and dead
    follow-ups (a row can be both sent and have a dead follow-up)."""
    dead, unknown, followups = outbox_report.attention_counts(conn)
    return {"dead": dead, "unknown": unknown, "followup_dead": followups}


def quarantine(conn: psycopg.Connection) -> dict[str, Any]:
    """Inputs waiting for a fix: channel messages per channel, fulfilment events."""
    messages = repo.quarantined_messages(conn)
    events = repo.quarantined_events(conn)
    return {"messages": messages, "fulfilment_events": events}


# ------------------------------------------------------------------------------ together
@dataclass
class DayStatus:
    day: date
    timezone: str
    start: datetime  # UTC
    end: datetime  # UTC
    as_of: datetime  # UTC
    by_channel: dict[str, dict[str, int]]
    open_exceptions: dict[str, int]  # per category
    sla: dict[str, int]  # per SLA state
    outbox_attention: dict[str, int]
    quarantine: dict[str, Any]
    #: picks and shipments stamped after the day and more than :data:`AHEAD_MARGIN` after
    #: ``as_of``: how many (``stamps``) and the business day of the earliest (``first_day``)
    ahead: dict[str, Any] = field(default_factory=lambda: {"stamps": 0, "first_day": None})
    totals: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        self.totals = {m: sum(c[m] for c in self.by_channel.values()) for m in MEASURES}

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("day", "start", "end", "as_of"):
            d[k] = d[k].isoformat()
        return d


def day_status(
    conn: psycopg.Connection,
    day: date | None = None,
    *,
    tz: tzinfo | None = None,
    now: datetime | None = None,
) -> DayStatus:
    """The whole picture for ``day`` (default: today) in ``tz`` (default: the configured one)."""
    tz = tz or configured_timezone()
    now = now or datetime.now(UTC)
    day = day or business_day(tz, now)
    start, end = day_window(day, tz)
    return DayStatus(
        day=day,
        timezone=str(getattr(tz, "key", None) or tz),
        start=start,
        end=end,
        as_of=now.astimezone(UTC),
        by_channel=day_counts(conn, start, end),
        open_exceptions=open_exceptions_by_category(conn),
        sla=desk_counts(conn),
        outbox_attention=outbox_attention(conn),
        quarantine=quarantine(conn),
        ahead=ahead_of_clock(conn, now, end, tz),
    )


def ahead_of_clock(
    conn: psycopg.Connection, now: datetime, end: datetime, tz: tzinfo
) -> dict[str, Any]:
    """Picks and shipments the WMS or carrier stamped more than :data:`AHEAD_MARGIN` after
    ``now`` and after ``end`` (the asked day's: they count on a later date): how many, and
    the business day (in ``tz``) of the earliest."""
    stamps, first = repo.stamped_after(conn, max(now + AHEAD_MARGIN, end))
    return {
        "stamps": stamps,
        "first_day": business_day(tz, first).isoformat() if first is not None else None,
    }


def render(s: DayStatus) -> str:
    """The text of ``orderflow status``."""
    out = [
        f"OrderFlow status for {s.day.isoformat()}, business day in {s.timezone} "
        f"({s.start:%Y-%m-%d %H:%M} to {s.end:%Y-%m-%d %H:%M} UTC), "
        f"as of {s.as_of:%Y-%m-%d %H:%M} UTC",
        "",
        "Orders".ljust(10) + "".join(m.rjust(10) for m in MEASURES),
    ]
    for channel, counts in s.by_channel.items():
        out.append(f"  {channel:<8}" + "".join(f"{counts[m]:>10}" for m in MEASURES))
    out.append(f"  {'total':<8}" + "".join(f"{s.totals[m]:>10}" for m in MEASURES))
    out.append("")
    total = sum(s.open_exceptions.values())
    out.append(
        f"Open exceptions (now)       {total:>6}   {s.sla.get('breached', 0)} breached, "
        f"{s.sla.get('nearing', 0)} nearing SLA, {s.sla.get('ok', 0)} within SLA"
    )
    for category, n in s.open_exceptions.items():
        out.append(f"  {category:<26}{n:>6}")
    a = s.outbox_attention
    q = s.quarantine
    per = ", ".join(f"{ch} {n}" for ch, n in q["messages"].items())
    out += [
        "",
        "Waiting for a person (now)",
        f"  {'outbox rows':<26}{a['dead'] + a['unknown'] + a['followup_dead']:>6}   "
        f"{a['dead']} dead, {a['unknown']} unknown, {a['followup_dead']} dead follow-ups "
        "(orderflow outbox attention)",
        f"  {'quarantined messages':<26}{sum(q['messages'].values()):>6}   "
        + (f"{per} " if per else "")
        + "(orderflow intake quarantined)",
        f"  {'quarantined events':<26}{q['fulfilment_events']:>6}   "
        "(orderflow fulfilment quarantined)",
    ]
    if s.ahead["stamps"]:
        out += [
            "",
            f"Ahead of this clock: {s.ahead['stamps']} picks and shipments carry WMS or carrier "
            f"times on later dates, more than {AHEAD_MARGIN.seconds // 3600} h after now (their "
            "clocks run ahead of OrderFlow's; the demo sandbox's runs a day in minutes). They "
            f"count on those dates, from {s.ahead['first_day']}: "
            f"orderflow status --date {s.ahead['first_day']}",
        ]
    return "\n".join(out)
