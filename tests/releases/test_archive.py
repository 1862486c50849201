"""router/archive.py: the durable, content-addressed archive of release bytes."""

from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path

import aiohttp
import pytest

from router.errors import ConfigError
from router.releases.archive import ReleaseArchive, check_writable, default_release_dir
from router.releases.model import LibraryFile, ReleaseMeta, release_digest, release_id
from router.simulator.library import library_files
from tests.cli.test_cli import one_line_error, run
from tests.helpers import (
    Gateway,
    RedisServer,
    RouterFactory,
    make_config,
    router_data,
    wait_until,
    write_toml,
)

NOW = 1_000_000.0
JS = "/gateway/adapter.js"
CSS = "/assistserver/sdk/web/consumer/assist.css"


def release(expires: float = NOW + 3600) -> tuple[ReleaseMeta, list[LibraryFile]]:
    files = [
        LibraryFile(JS, "text/javascript", b"console.log(1);\n" * 50, {"gzip": b"gz-bytes"}),
        LibraryFile(CSS, "text/css", b"body{}\n" * 20),
    ]
    entries = {f.path: f.entry() for f in files}
    digest = release_digest(entries.values())
    meta = ReleaseMeta(
        release_id(digest), digest, "1.0", entries, NOW - 10, NOW - 5, "a", ("a",), expires
    )
    return meta, files


def forms(files: list[LibraryFile]) -> dict[str, dict[str, bytes]]:
    return {f.path: {"": f.body, **f.forms} for f in files}


@pytest.fixture
def archive(tmp_path: Path) -> ReleaseArchive:
    found = ReleaseArchive(tmp_path / "releases")
    found.open()
    return found


def test_round_trip(archive: ReleaseArchive) -> None:
    meta, files = release()
    assert not archive.has(meta.id)
    archive.save(meta, forms(files))
    assert archive.has(meta.id)
    assert archive.meta(meta.id, NOW) == meta
    assert archive.file(meta.id, JS, NOW) == {"": files[0].body, "gzip": b"gz-bytes"}
    loaded = archive.load(meta.id, NOW)
    assert loaded is not None
    assert loaded[0] == meta
    assert {f.path: (f.body, dict(f.forms)) for f in loaded[1]} == {
        f.path: (f.body, dict(f.forms)) for f in files
    }
    assert archive.releases(NOW) == [meta.id]
    # Content-addressed: one blob per distinct byte string, named by its digest.
    assert len(list(archive.blobs.iterdir())) == 3
    assert not [p for p in archive.directory.rglob("*.tmp")]


def test_corrupted_blob_is_skipped_with_a_warning_and_never_served(
    archive: ReleaseArchive, caplog: pytest.LogCaptureFixture
) -> None:
    meta, files = release()
    archive.save(meta, forms(files))
    blob = archive.blobs / hashlib.sha256(files[0].body).hexdigest()
    blob.write_bytes(b"console.log('tampered');\n")
    with caplog.at_level(logging.WARNING, logger="router.archive"):
        assert archive.file(meta.id, JS, NOW) == {}
        assert archive.load(meta.id, NOW) is None
    assert "does not match its digest" in caplog.text
    assert "not restored" in caplog.text
    # The other file is intact and still served.
    assert archive.file(meta.id, CSS, NOW)[""] == files[1].body
    # A corrupted compressed form is dropped; the identity bytes still serve.
    gz = archive.blobs / hashlib.sha256(b"gz-bytes").hexdigest()
    gz.write_bytes(b"garbage")
    blob.write_bytes(files[0].body)
    assert archive.file(meta.id, JS, NOW) == {"": files[0].body}


def test_corrupted_manifest_is_skipped(
    archive: ReleaseArchive, caplog: pytest.LogCaptureFixture
) -> None:
    meta, files = release()
    archive.save(meta, forms(files))
    (archive.manifests / f"{meta.id}.json").write_bytes(b'{"id": "truncat')
    with caplog.at_level(logging.WARNING, logger="router.archive"):
        assert archive.meta(meta.id, NOW) is None
        assert archive.releases(NOW) == []
    assert "corrupted" in caplog.text


def test_expiry_touch_and_prune(archive: ReleaseArchive) -> None:
    meta, files = release(expires=NOW + 10)
    archive.save(meta, forms(files))
    archive.touch(meta.id, NOW + 100, NOW, "b")  # gains under an hour: not rewritten
    assert archive.meta(meta.id, NOW + 50) is None
    archive.touch(meta.id, NOW + 4000, NOW, "b")
    fresh = archive.meta(meta.id, NOW + 50)
    assert fresh is not None and fresh.systems == ("a", "b") and fresh.expires == NOW + 4000
    assert archive.meta(meta.id, NOW + 4000) is None  # expired: never served
    orphan = archive.blobs / ("0" * 64)
    orphan.write_bytes(b"x")
    os.utime(orphan, (NOW - 7200, NOW - 7200))
    recent = archive.blobs / ("1" * 64)
    recent.write_bytes(b"y")
    os.utime(recent, (NOW, NOW))
    assert archive.prune(NOW + 50) == 1  # only the old orphan: the release is kept
    assert not orphan.exists() and recent.exists()
    for blob in archive.blobs.iterdir():
        os.utime(blob, (NOW - 7200, NOW - 7200))
    assert archive.prune(NOW + 5000) == 5  # the manifest and its 3 blobs, and the young one
    assert list(archive.manifests.iterdir()) == []


def test_unwritable_directory_names_the_key(tmp_path: Path) -> None:
    file = tmp_path / "a-file"
    file.write_text("")
    with pytest.raises(ConfigError, match=r"^router\.release_dir: .* is not a writable directory"):
        check_writable(file / "releases")


def test_default_directory() -> None:
    assert default_release_dir({"XDG_STATE_HOME": "/s"}) == Path("/s/token-router/releases")
    assert str(default_release_dir({})).endswith(".local/state/token-router/releases")


def test_serve_refuses_unwritable_release_dir(
    tmp_path: Path, redis_server: RedisServer, gateways: dict[str, Gateway]
) -> None:
    file = tmp_path / "a-file"
    file.write_text("")
    data = router_data(redis_server.url, gateways, release_paths=[JS], release_dir=str(file / "x"))
    path = write_toml(tmp_path / "router.toml", data)
    line = one_line_error(run("serve", "--config", str(path)))
    assert line.startswith("token-router: error: router.release_dir: ")
    assert "is not a writable directory" in line


async def test_instance_serves_lost_release_from_its_archive_but_never_corrupted_bytes(
    tmp_path: Path,
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    http: aiohttp.ClientSession,
) -> None:
    shared = str(tmp_path / "archive")
    router = await routers(
        make_config(redis_server.url, gateways, release_paths=[JS, CSS], release_dir=shared)
    )
    runtime = router.server.runtime

    archive_of = runtime.releases.archiver.archive
    assert archive_of is not None

    def archived() -> bool:
        rel = runtime.releases.view.release_of("a")
        return rel is not None and archive_of.has(rel)

    await wait_until(archived, timeout=15)
    old = runtime.releases.view.release_of("a")
    assert old is not None
    await router.server.stop()
    redis_server.restart()  # empty, and nobody running to write back
    gateways["a"].state.set_version("1.1")
    archive = ReleaseArchive(Path(shared))
    meta = archive.meta(old, time.time())
    assert meta is not None
    css_blob = archive.blobs / hashlib.sha256(library_files("1.0")[CSS][0]).hexdigest()
    css_blob.write_bytes(b"tampered")
    fresh = await routers(
        make_config(redis_server.url, gateways, release_paths=[JS, CSS], release_dir=shared)
    )
    # JS intact: served (from the store the archive restored, or the archive itself).
    async with http.get(
        f"{fresh.proxy_url}/v/{old}{JS}", headers={"Accept-Encoding": "identity"}
    ) as resp:
        assert resp.status == 200
        assert await resp.read() == library_files("1.0")[JS][0]
    async with http.get(
        f"{fresh.proxy_url}/v/{old}{CSS}", headers={"Accept-Encoding": "identity"}
    ) as resp:
        assert resp.status == 404
        assert b"tampered" not in await resp.read()
