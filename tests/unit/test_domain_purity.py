"""The domain layer is pure: it must never import Airflow (docs/architecture.md §1)."""

import ast
import subprocess
import sys
from pathlib import Path

import orderflow.domain

DOMAIN_DIR = Path(orderflow.domain.__file__).parent
FORBIDDEN = ("airflow", "psycopg", "sqlalchemy", "httpx", "requests")


def _modules():
    return sorted(p for p in DOMAIN_DIR.rglob("*.py"))


def test_domain_package_has_modules():
    assert any(p.name != "__init__.py" for p in _modules())


def test_domain_source_imports_no_infrastructure():
    offenders = []
    for path in _modules():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert offenders == []


def test_importing_domain_loads_no_airflow():
    """Transitively too: importing every domain module leaves airflow out of sys.modules."""
    mods = [
        "orderflow.domain." + str(p.relative_to(DOMAIN_DIR).with_suffix("")).replace("/", ".")
        for p in _modules()
        if p.name != "__init__.py"
    ]
    code = (
        "import importlib, sys\n"
        f"for m in {mods!r}: importlib.import_module(m)\n"
        f"bad = [m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r}]\n"
        "print(','.join(bad)); sys.exit(1 if bad else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, f"domain pulled in: {result.stdout} {result.stderr[-500:]}"
