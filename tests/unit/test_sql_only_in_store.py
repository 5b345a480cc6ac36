"""SQL runs only in ``store/`` (issue #14, docs/architecture.md: "store/: every SQL statement").

An AST scan of plugins/orderflow, no database: a call of ``.execute(``, ``.executemany(``,
``.cursor(`` or a psycopg ``.copy(`` (one with a positional argument: the COPY statement), or
any use of ``psycopg.sql``, outside ``store/`` and the local-stack tooling fails the test,
naming file:line.
"""

from __future__ import annotations

import ast
from pathlib import Path

import orderflow

ROOT = Path(orderflow.__file__).parent

#: Where SQL belongs (the repositories) and the local-stack tooling that may keep its own.
ALLOWED_DIRS = ("store/", "dev/")
ALLOWED_FILES = {"bench.py", "bench_check.py"}

#: Files whose statements have not moved into store/ yet: none left. Kept (empty) for the
#: scan's own tests; no file may be added.
PENDING: frozenset[str] = frozenset()

SQL_METHODS = {"execute", "executemany", "cursor"}


def _is_super_call(node: ast.expr) -> bool:
    """``super().execute(context)``: an Airflow operator calling its base class, not SQL."""
    return (
        isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "super"
    )


def sql_uses(source: str, filename: str = "<string>") -> list[tuple[int, str]]:
    """(line, what) for every SQL use in ``source``."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source, filename=filename)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            attr = node.func.attr
            if attr in SQL_METHODS and not _is_super_call(node.func.value):
                found.append((node.lineno, f".{attr}("))
            elif attr == "copy" and node.args:
                # psycopg's Cursor.copy takes the COPY statement; dict/DataFrame .copy() takes none
                found.append((node.lineno, ".copy("))
        elif isinstance(node, ast.Import):
            found += [
                (node.lineno, f"import {a.name}")
                for a in node.names
                if a.name == "psycopg.sql" or a.name.startswith("psycopg.sql.")
            ]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "psycopg.sql" or node.module.startswith("psycopg.sql."):
                found.append((node.lineno, f"from {node.module} import"))
            elif node.module == "psycopg" and any(a.name == "sql" for a in node.names):
                found.append((node.lineno, "from psycopg import sql"))
        elif (
            isinstance(node, ast.Attribute)
            and node.attr == "sql"
            and isinstance(node.value, ast.Name)
            and node.value.id == "psycopg"
        ):
            found.append((node.lineno, "psycopg.sql"))
    return sorted(found)


def _checked_files(root: Path = ROOT) -> list[tuple[str, Path]]:
    out = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel.startswith(ALLOWED_DIRS) or rel in ALLOWED_FILES:
            continue
        out.append((rel, path))
    return out


def _uses_of(path: Path) -> list[tuple[int, str]]:
    return sql_uses(path.read_text(encoding="utf-8"), filename=str(path))


def offenders(root: Path = ROOT, pending: frozenset[str] = PENDING) -> list[str]:
    """``plugins/orderflow/<file>:<line>: <what>`` for every SQL use outside store/."""
    return [
        f"plugins/orderflow/{rel}:{line}: {what}"
        for rel, path in _checked_files(root)
        if rel not in pending
        for line, what in _uses_of(path)
    ]


def test_the_scan_sees_the_package():
    files = dict(_checked_files())
    assert "ui/pages.py" in files and "domain/approvals.py" in files
    assert not any(rel.startswith("store/") for rel in files)


def test_no_sql_outside_store():
    found = offenders()
    assert found == [], "SQL outside store/ (move it into a repository):\n" + "\n".join(found)


def test_offenders_are_named_by_file_and_line(tmp_path):
    """A fake package: SQL in a flow is named; in store/, dev/, bench.py or a pending file it
    is not."""
    sql = "def f(conn):\n    return conn.execute('SELECT 1')\n"
    for rel in ("store/repo.py", "dev/pg.py", "bench.py", "flow.py", "ui/page.py", "old.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(sql if rel != "ui/page.py" else "x = 1\n\n" + sql)
    assert offenders(tmp_path, frozenset({"old.py"})) == [
        "plugins/orderflow/flow.py:2: .execute(",
        "plugins/orderflow/ui/page.py:4: .execute(",
    ]


def test_pending_files_still_run_sql():
    """The PENDING set only shrinks: a file whose SQL has moved must leave it."""
    files = dict(_checked_files())
    stale = sorted(rel for rel in PENDING if rel not in files or not _uses_of(files[rel]))
    assert stale == [], f"no SQL left in {stale}: remove them from PENDING"


def test_the_scan_fails_on_sql():
    snippet = (
        "import psycopg\n"
        "from psycopg import sql\n"
        "def f(conn, frame):\n"
        "    conn.execute('SELECT 1')\n"
        "    with conn.cursor() as cur:\n"
        "        cur.executemany('INSERT INTO t VALUES (%s)', [(1,)])\n"
        "        with cur.copy('COPY t FROM STDIN') as cp:\n"
        "            cp.write_row((1,))\n"
        "    q = psycopg.sql.SQL('SELECT {}').format(psycopg.sql.Literal(1))\n"
        "    return frame.copy(), {}.copy(), q\n"
    )
    assert sql_uses(snippet) == [
        (2, "from psycopg import sql"),
        (4, ".execute("),
        (5, ".cursor("),
        (6, ".executemany("),
        (7, ".copy("),
        (9, "psycopg.sql"),
        (9, "psycopg.sql"),
    ]


def test_the_scan_ignores_what_is_not_sql():
    snippet = (
        "class Op(BaseOperator):\n"
        "    def execute(self, context):\n"
        "        rows = [dict(r) for r in context['rows']]\n"
        "        return super().execute(context), rows[0].copy()\n"
    )
    assert sql_uses(snippet) == []
