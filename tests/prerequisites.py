"""The test prerequisites — the one list. ``make test`` checks them before running any test
and stops, naming what is missing and the command that installs it; ``make deps`` installs
them (Debian packages, apt-get); CI runs ``make deps`` too.

Standard library only (``make deps`` runs it with the system Python, before any venv).

    python tests/prerequisites.py             # check: exit 1 and say what to do if any is missing
    python tests/prerequisites.py --packages  # the Debian packages of the missing ones
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")  # Debian's; tests/browser/ drives it through Playwright
INSTALL = "make deps"


def _compose_cli() -> bool:
    docker = shutil.which("docker")
    if docker:
        r = subprocess.run([docker, "compose", "version"], capture_output=True, check=False)
        if r.returncode == 0:
            return True
    return shutil.which("docker-compose") is not None


@dataclass(frozen=True)
class Prerequisite:
    name: str
    package: str  # the Debian package that provides it
    needed_by: str

    def present(self) -> bool:
        if self.package == "docker-compose":
            return _compose_cli()
        if self.package == "chromium":
            return CHROMIUM.exists()
        return shutil.which(self.name) is not None


PREREQUISITES = (
    Prerequisite(
        "compose CLI",
        "docker-compose",
        "tests/integration/test_compose.py (validates docker-compose.yaml; no Docker engine)",
    ),
    Prerequisite(
        "chromium", "chromium", "tests/browser/ (headless Chromium via Playwright, no download)"
    ),
    Prerequisite("tesseract", "tesseract-ocr", "OCR of scanned purchase orders"),
    Prerequisite(
        "redis-server",
        "redis-server",
        "tests/integration/test_pushed_events.py (a Redis of its own, taken down on purpose)",
    ),
)

#: Not prerequisites: tests that need them skip, and the summary names the variable.
OPTIONAL_INPUTS = {
    "ORDERFLOW_X12_CORPUS": "the X12 conformance corpus (tests/conformance/)",
    "ORDERFLOW_PO_DOCS": "sample purchase-order documents (tests/unit/test_po_extract.py)",
}


def missing() -> list[Prerequisite]:
    return [p for p in PREREQUISITES if not p.present()]


def _database_problem() -> str | None:
    """The test database: the run's own embedded server, or ORDERFLOW_TEST_DATABASE_URL if
    set — which must then answer."""
    url = os.environ.get("ORDERFLOW_TEST_DATABASE_URL")
    if not url:
        return None
    try:
        import psycopg
        from sqlalchemy.engine import make_url

        libpq = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        psycopg.connect(libpq, connect_timeout=5).close()
    except ImportError:
        return None  # outside the venv (make deps): nothing to say about it
    except Exception as exc:
        why = " ".join(str(exc).split())[:200]
        return (
            f"ORDERFLOW_TEST_DATABASE_URL is set but does not answer ({why}); "
            "start that server, or unset the variable to use an embedded PostgreSQL"
        )
    return None


def main(argv: list[str]) -> int:
    gone = missing()
    if "--packages" in argv:
        print(" ".join(p.package for p in gone))
        return 0
    problems = []
    if gone:
        problems.append(
            "missing test prerequisite(s):\n"
            + "".join(f"  - {p.name} (Debian: {p.package}), for {p.needed_by}\n" for p in gone)
            + f"install them with: {INSTALL}"
        )
    db = _database_problem()
    if db:
        problems.append(db)
    if problems:
        print("make test: cannot run the tests —", "\n".join(problems), sep="\n", file=sys.stderr)
        return 1
    print(
        "test prerequisites: "
        + ", ".join(p.name for p in PREREQUISITES)
        + " present; optional inputs (their tests skip without them): "
        + ", ".join(f"{var}={os.environ.get(var, '(not set)')}" for var in OPTIONAL_INPUTS)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
