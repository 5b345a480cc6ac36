"""A private ``redis-server`` (nothing on disk) that a test may stop, kill, freeze and start
again: the pushed-events tests' stand-in for the wake-ups' Redis."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from tests_support import free_port


class RedisServer:
    def __init__(self, exe: str, work: Path):
        self.exe, self.work, self.port = exe, work, free_port()
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.work)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if self.client().ping():
                    return
            except Exception:
                time.sleep(0.1)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def client(self):
        import redis

        return redis.Redis(port=self.port, socket_timeout=2, socket_connect_timeout=2)

    def conn_env(self) -> str:
        return json.dumps({"conn_type": "redis", "host": "127.0.0.1", "port": self.port})

    def connections_received(self) -> int:
        return int(self.client().info("stats")["total_connections_received"])
