"""A real ``airflow api-server`` carrying the OrderFlow plugin, for tests and benchmarks that
talk HTTP to it as a client would: simple-auth-manager users with generated passwords, the
OrderFlow role mapping, a JWT per user from ``POST /auth/token``.

The caller's environment must already point Airflow at a migrated metadata database
(``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN``) and the store (``AIRFLOW_CONN_ORDERFLOW_DB``).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx


@dataclass
class ApiServer:
    base: str
    passwords: dict[str, str]
    proc: subprocess.Popen
    log: Path
    _tokens: dict[str, str] = field(default_factory=dict)

    def token(self, user: str) -> str:
        """A JWT for ``user`` (Airflow's own token endpoint), cached."""
        if user not in self._tokens:
            r = httpx.post(
                f"{self.base}/auth/token",
                json={"username": user, "password": self.passwords[user]},
                timeout=30,
            )
            r.raise_for_status()
            self._tokens[user] = r.json()["access_token"]
        return self._tokens[user]

    def headers(self, user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(user)}"}

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_api_server(
    work: Path,
    users: dict[str, str],
    roles: dict[str, list[str]],
    *,
    workers: int = 1,
    env: dict[str, str] | None = None,
    timeout: float = 120,
) -> ApiServer:
    """Start ``airflow api-server`` on a free local port and wait until it answers.

    :param users: Airflow user → Airflow role (``admin``, ``op``, ``user``, ``viewer``).
    :param roles: Airflow user → OrderFlow roles (written as the process's roles file).
    :param workers: the api-server's worker processes.
    """
    work.mkdir(parents=True, exist_ok=True)
    passwords = {u: secrets.token_urlsafe(10) for u in users}
    (work / "passwords.json").write_text(json.dumps(passwords))
    (work / "roles.yaml").write_text(json.dumps({"users": roles}))
    port = _free_port()
    full_env = {
        **os.environ,
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{u}:{r}" for u, r in users.items()),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(work / "passwords.json"),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(16),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "ORDERFLOW_ROLES_FILE": str(work / "roles.yaml"),
        **(env or {}),
    }
    log = work / "api-server.log"
    out = log.open("w")
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "airflow"),
            "api-server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
        ],
        env=full_env,
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    out.close()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"{base}/api/v2/monitor/health", timeout=2).status_code == 200:
                return ApiServer(base, passwords, proc, log)
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    server = ApiServer(base, passwords, proc, log)
    server.stop()
    raise RuntimeError(f"api-server did not start: {log.read_text()[-3000:]}")
