"""The drop folders' watcher (``DropFolderTrigger``): fires once per new visible file in the
folder the intake sensor watches, ignores uploads in progress and the archive, fires again
for a name that left and came back, and outlives a folder that is not there yet."""

from __future__ import annotations

import asyncio
import os

from orderflow.operators.drop_trigger import DropFolderTrigger, list_drop_folder


def test_listing_matches_the_sensor_glob_and_skips_hidden_names(tmp_path):
    (tmp_path / "ACME").mkdir()
    (tmp_path / "ACME" / "po1.x12").write_text("ISA")
    (tmp_path / "ACME" / ".po2.x12.part").write_text("ISA")
    (tmp_path / ".archive" / "created").mkdir(parents=True)
    (tmp_path / ".archive" / "created" / "old.x12").write_text("ISA")
    (tmp_path / "loose.x12").write_text("ISA")  # not in a partner folder: not the glob
    assert list_drop_folder(str(tmp_path), "*/*") == {os.path.join("ACME", "po1.x12")}
    assert list_drop_folder(str(tmp_path), "*") == {"loose.x12"}
    assert list_drop_folder(str(tmp_path / "missing"), "*") == frozenset()


class _Trigger(DropFolderTrigger):
    """The folder given directly instead of through an Airflow Connection."""

    def __init__(self, root: str, filepath: str) -> None:
        super().__init__(fs_conn_id="test_inbox", filepath=filepath, poll_interval=0.05)
        self.root_path = root

    async def _root(self) -> str:
        return self.root_path


async def _events(trigger: DropFolderTrigger, steps) -> list[dict]:
    """Run the trigger while ``steps`` (callables) change the folder, one per few polls."""
    events: list[dict] = []

    async def consume():
        async for ev in trigger.run():
            events.append(ev.payload)

    task = asyncio.create_task(consume())
    try:
        for step in steps:
            await asyncio.sleep(0.3)
            step()
        await asyncio.sleep(0.3)
    finally:
        task.cancel()
    return events


def test_fires_once_per_new_file_and_again_when_a_name_comes_back(tmp_path):
    inbox = tmp_path / "edi"
    present = inbox / "ACME" / "waiting.x12"

    def drop(name: str):
        def step():
            p = inbox / "ACME" / name
            p.parent.mkdir(parents=True, exist_ok=True)
            tmp = p.with_name("." + p.name + ".part")
            tmp.write_text("ISA")  # an upload in progress: nothing yet
            os.replace(tmp, p)

        return step

    def archive():
        (inbox / "ACME" / "a.x12").unlink()
        (inbox / "ACME" / "b.x12").unlink()

    present.parent.mkdir(parents=True)
    present.write_text("ISA")  # there before the watcher starts: to be ingested, fires
    events = asyncio.run(
        _events(
            _Trigger(str(inbox), "*/*"),
            [drop("a.x12"), lambda: None, drop("b.x12"), archive, drop("a.x12")],
        )
    )
    assert [e["new_files"] for e in events] == [1, 1, 1, 1]
    assert {e["conn_id"] for e in events} == {"test_inbox"}


def test_a_folder_created_later_is_watched_from_then_on(tmp_path):
    inbox = tmp_path / "csv"

    def create():
        inbox.mkdir()
        (inbox / "orders.csv").write_text("po")

    events = asyncio.run(_events(_Trigger(str(inbox), "*"), [lambda: None, create]))
    assert [e["new_files"] for e in events] == [1]


def test_serializes_for_the_triggerer():
    path, kwargs = DropFolderTrigger("edi_inbox_default", "*/*", 2.0).serialize()
    assert path == "orderflow.operators.drop_trigger.DropFolderTrigger"
    assert DropFolderTrigger(**kwargs).serialize() == (path, kwargs)
