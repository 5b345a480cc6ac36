"""The drop folders' watcher: an event trigger that runs in the triggerer and fires when a
new file is in a drop folder, so an intake DAG scheduled on the folder's Asset starts at
once instead of at its next 5-minute run (issue #16: one order arriving alone).

It lists the folder like the intake's ``FileSensor`` does (the same glob under the path of
the same ``fs`` Connection, hidden names — ``.part`` uploads, ``.archive/`` — left out)
every ``poll_interval`` seconds, in a worker thread so the triggerer's event loop never
waits on a slow share. It fires once per file name it has not seen listed before (the
files there when it starts count as new: they wait to be ingested); a name that left the
folder (ingested and archived) and comes back fires again. Several files in one listing
make one event; events that arrive while the DAG runs queue a single next run (Airflow's
Asset queue), and the running run's own sensor usually takes the file first — the
ingestion is idempotent either way. A folder that cannot be listed (share unmounted, not
created yet) is logged once and retried; the 5-minute schedule stays the safety net.
"""

from __future__ import annotations

import asyncio
import glob
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseEventTrigger, TriggerEvent

log = logging.getLogger(__name__)


def list_drop_folder(root: str, pattern: str) -> frozenset[str]:
    """The visible files under ``root`` matching ``pattern`` (relative names)."""
    out = set()
    for path in glob.iglob(os.path.join(root, pattern)):
        if os.path.isfile(path):
            out.add(os.path.relpath(path, root))
    return frozenset(out)


class DropFolderTrigger(BaseEventTrigger):
    """Fire when files not listed before are in the ``fs_conn_id`` folder (``filepath`` glob).

    :param fs_conn_id: the folder's ``fs`` Connection (its ``path`` extra), as the sensor's.
    :param filepath: glob under that path, as the sensor's (``*/*``: a folder per partner).
    :param poll_interval: seconds between listings.
    """

    def __init__(self, fs_conn_id: str, filepath: str = "*", poll_interval: float = 1.0) -> None:
        super().__init__()
        self.fs_conn_id = fs_conn_id
        self.filepath = filepath
        self.poll_interval = poll_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "fs_conn_id": self.fs_conn_id,
                "filepath": self.filepath,
                "poll_interval": self.poll_interval,
            },
        )

    async def _root(self) -> str:
        from airflow.sdk import BaseHook

        conn = await BaseHook.aget_connection(self.fs_conn_id)
        return conn.extra_dejson.get("path", "")

    async def run(self) -> AsyncIterator[TriggerEvent]:
        seen: frozenset[str] = frozenset()
        failing = False
        root = None
        while True:
            try:
                if root is None:
                    root = await self._root()
                listed = await asyncio.to_thread(list_drop_folder, root, self.filepath)
                if failing:
                    log.info("drop folder of %s listed again", self.fs_conn_id)
                    failing = False
            except Exception as exc:
                if not failing:
                    log.warning(
                        "drop folder of %s not listed (%s); trying every %.0f s, the 5-minute "
                        "schedule covers the meantime",
                        self.fs_conn_id,
                        type(exc).__name__,
                        self.poll_interval,
                    )
                failing, root = True, None
                await asyncio.sleep(self.poll_interval)
                continue
            new = listed - seen
            seen = listed
            if new:
                yield TriggerEvent({"conn_id": self.fs_conn_id, "new_files": len(new)})
            await asyncio.sleep(self.poll_interval)
