"""The view of what each system serves, over the in-process store (no sockets)."""

from __future__ import annotations

import time

import pytest

from router.releases.model import Current, LibraryFile, ReleaseMeta
from router.releases.serving import ReleaseFiles
from router.releases.store import Activity, MemoryReleaseStore
from router.releases.tasks import ReleaseTasks
from router.releases.view import ReleaseView
from tests.helpers import wait_until
from tests.releases.made import made_release

JS = "/gateway/adapter.js"
CSS = "/assistserver/sdk/web/consumer/assist.css"


def release(label: str, *bodies: tuple[str, bytes]) -> tuple[ReleaseMeta, list[LibraryFile]]:
    files = [LibraryFile(path, "application/javascript", body) for path, body in bodies]
    return made_release(files, label), files


@pytest.fixture
async def view() -> ReleaseView:
    store = MemoryReleaseStore()
    tasks = ReleaseTasks()
    return ReleaseView(store, ("a", "b"), ReleaseFiles(store, 1 << 20), tasks)


async def test_adopt_hands_out_and_logs_a_change(
    view: ReleaseView, caplog: pytest.LogCaptureFixture
) -> None:
    old, _ = release("1.0", (JS, b"one"))
    new, _ = release("", (JS, b"two"))
    assert view.release_of("a") is None and view.label_of("a") is None
    view.adopt("a", old, prewarm=False)
    view.adopt("b", old, prewarm=False)
    assert view.release_of("a") == old.id and view.label_of("a") == "1.0"
    assert view.files.metas[old.id] == old and not caplog.records
    view.adopt("a", new, prewarm=False)
    assert view.current["a"] == Current(new.id, "") and view.label_of("a") is None
    assert view.serving() == {old.id, new.id} and view.systems_serving(old.id) == ["b"]
    (record,) = caplog.records
    assert record.getMessage() == (
        f"system a now serves release {new.id} (no label); before: {old.id} (1.0)"
    )


async def test_relabel_names_the_label_wherever_the_release_is_served(view: ReleaseView) -> None:
    meta, _ = release("", (JS, b"one"))
    view.relabel(meta.id, "ignored")  # unknown here: nothing to name
    assert meta.id not in view.files.metas
    view.adopt("a", meta, prewarm=False)
    view.adopt("b", meta, prewarm=False)
    view.relabel(meta.id, "4.1")
    assert view.files.metas[meta.id].label == "4.1"
    assert view.label_of("a") == view.label_of("b") == "4.1"


async def test_adopt_prewarms_what_the_cache_lacks(view: ReleaseView) -> None:
    meta, files = release("1.0", (JS, b"one"), (CSS, b"two"))
    await view.store.put(meta, files)
    view.adopt("a", meta, prewarm=True)
    await wait_until(lambda: all((meta.id, p) in view.files.cache for p in meta.files))
    await wait_until(lambda: not view.tasks)
    view.adopt("b", meta, prewarm=True)  # all cached: no task
    assert not view.tasks
    await view.tasks.close()


async def test_listing_reads_the_store(view: ReleaseView) -> None:
    meta, files = release("1.0", (JS, b"one"))
    await view.store.put(meta, files)
    await view.store.touch(Activity(meta.id, "a", time.time(), meta.expires, "1.0"))
    stored, serving = await view.listing()
    assert [m.id for m in stored] == [meta.id] and serving == {"a": meta.id, "b": None}
