"""Create missing Airflow Connections in the metadata DB (run as ``python -m`` with the
component environment): one process and one transaction instead of several ``airflow
connections import`` calls (each ≈ 3–6 s here).

Existing Connections are left as a person may have edited them, except those named in
``--overwrite`` (the embedded store's, whose socket path is ours to keep right).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def upsert(specs: dict[str, dict], overwrite: set[str]) -> tuple[int, int]:
    from airflow.models import Connection
    from airflow.utils.session import create_session

    created = updated = 0
    with create_session() as session:
        existing = {
            c.conn_id: c
            for c in session.query(Connection).filter(Connection.conn_id.in_(list(specs))).all()
        }
        for conn_id, spec in specs.items():
            fields = dict(spec)
            extra = fields.pop("extra", None)
            if isinstance(extra, dict):
                extra = json.dumps(extra)
            conn = existing.get(conn_id)
            if conn is None:
                session.add(Connection(conn_id=conn_id, extra=extra, **fields))
                created += 1
            elif conn_id in overwrite:
                for key, value in fields.items():
                    setattr(conn, key, value)
                conn.set_extra(extra)
                updated += 1
    return created, updated


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("file", type=Path)
    parser.add_argument("--overwrite", action="append", default=[])
    args = parser.parse_args()
    created, updated = upsert(json.loads(args.file.read_text()), set(args.overwrite))
    print(f"connections: {created} created, {updated} updated")


if __name__ == "__main__":
    main()
