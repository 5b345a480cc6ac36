"""Who may resolve what: Airflow users → OrderFlow roles (``include/access/roles.yaml``,
or the file ``ORDERFLOW_ROLES_FILE`` names). Airflow's login says who a user is; this
mapping says which exceptions they may resolve (their owner or escalation role)."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

SUPER_ROLE = "operations_manager"


def roles_file() -> Path:
    from orderflow.settings import INCLUDE_DIR

    return Path(os.environ.get("ORDERFLOW_ROLES_FILE") or INCLUDE_DIR / "access" / "roles.yaml")


@lru_cache(maxsize=4)
def _mapping(path: str, mtime: float) -> dict[str, frozenset[str]]:
    import yaml

    data = yaml.safe_load(Path(path).read_text()) or {}
    return {str(u): frozenset(map(str, r or ())) for u, r in (data.get("users") or {}).items()}


def mapping() -> dict[str, frozenset[str]]:
    path = roles_file()
    return (
        _mapping(str(path), path.stat().st_mtime if path.exists() else 0.0) if path.exists() else {}
    )


def roles_of(user: str) -> frozenset[str]:
    return mapping().get(user, frozenset())


def users_with(*roles: str) -> list[str]:
    """Users who may act for any of ``roles`` (the super role acts for all)."""
    wanted = {r for r in roles if r} | {SUPER_ROLE}
    return sorted(u for u, rs in mapping().items() if rs & wanted)


def may_resolve(user: str, owner_role: str, escalation_role: str | None = None) -> bool:
    held = roles_of(user)
    return bool(held & {owner_role, escalation_role or owner_role, SUPER_ROLE})
