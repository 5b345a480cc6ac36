"""Drop-folder intake (EDI, mailbox, CSV): safe scanning, bounded reads, archiving.

A drop folder is untrusted: names may try path traversal or carry control characters,
entries may be symlinks or devices, files may be huge or still being written. Only regular
files with safe names are read, at most ``max_bytes`` of them; anything else is still
recorded (nothing is dropped silently) and quarantined with the reason. After its outcome a
file moves to ``<root>/.archive/<outcome>/<partner>/`` so the next scan does not see it.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from orderflow.domain.models import IntakeError

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._ -]{0,199}$")
ARCHIVE = ".archive"
DEFAULT_MAX_BYTES = 32 * 1024 * 1024  # 32 MiB: far above any real PO file, far below memory
STORE_PREFIX_BYTES = 64 * 1024  # what is kept of a file refused for size


@dataclass(frozen=True)
class DropFile:
    path: Path
    partner_id: str
    name: str
    size: int


def scan(
    root: Path, *, per_partner: bool, default_partner: str = "unknown", limit: int | None = None
) -> list[DropFile]:
    """Files waiting in ``root`` (partner sub-folders when ``per_partner``), oldest first.
    Hidden entries, in-flight ``.part`` files and the archive are skipped; every other entry
    is returned whatever its name or type, so that it gets an outcome."""
    if not root.exists():
        return []
    found: list[tuple[float, DropFile]] = []
    dirs = (
        [(d, d.name) for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")]
        if per_partner
        else [(root, default_partner)]
    )
    for folder, partner in dirs:
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.startswith(".") or entry.name.endswith(".part"):
                    continue
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    continue
                found.append(
                    (st.st_mtime, DropFile(Path(entry.path), partner, entry.name, st.st_size))
                )
    found.sort(key=lambda t: (t[0], t[1].name))
    files = [f for _, f in found]
    return files[:limit] if limit else files


def read(f: DropFile, max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[bytes, list[IntakeError]]:
    """The file's bytes, or a bounded prefix and the reason it may not be processed."""
    errors: list[IntakeError] = []
    st = f.path.lstat()
    if not stat.S_ISREG(st.st_mode):
        kind = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a regular file"
        return b"", [
            IntakeError(
                code="file.not_regular",
                message=f"{f.name!r} is {kind}; not followed",
                where=str(f.path),
                action="Remove it from the drop folder.",
            )
        ]
    if not SAFE_NAME.match(f.name) or ".." in f.name:
        errors.append(
            IntakeError(
                code="file.unsafe_name",
                message=f"file name {f.name!r} has characters we do not accept",
                where=f.name,
                action="Rename to letters, digits, '.', '_', '-' and drop it again.",
            )
        )
    if st.st_size > max_bytes:
        errors.append(
            IntakeError(
                code="file.too_large",
                message=f"{f.name} is {st.st_size:,} bytes, over the {max_bytes:,}-byte limit",
                where=f.name,
                action="Ask the sender to split it; only its first 64 KiB was kept.",
            )
        )
        with f.path.open("rb") as fh:
            return fh.read(STORE_PREFIX_BYTES), errors
    return f.path.read_bytes(), errors


def archive(f: DropFile, root: Path, outcome: str) -> Path:
    """Move a decided file out of the way (keeping it: the store has its bytes too)."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", f.name)[:200] or "unnamed"
    target_dir = root / ARCHIVE / outcome / re.sub(r"[^A-Za-z0-9._-]", "_", f.partner_id)
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / safe
    if target.exists():
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        target = target_dir / f"{stamp}-{safe}"
    with contextlib.suppress(FileNotFoundError):  # another run archived it first
        os.replace(f.path, target)
    return target
