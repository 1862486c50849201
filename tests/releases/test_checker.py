"""The checker's pure parts: the bytes a check reuses and the meta a new release is stored
with. (Checks against real gateways run in test_service.py and tests/flows/.)"""

from __future__ import annotations

import hashlib

from router.releases.cache import prepare
from router.releases.checker import held_body, new_release, reuse, with_forms
from router.releases.model import LibraryFile, release_digest, release_id

JS = "/gateway/adapter.js"
CSS = "/assistserver/sdk/web/consumer/assist.css"


def test_held_body_is_the_identity_form() -> None:
    body = b"var x = 1;\n" * 50
    item = LibraryFile(JS, "application/javascript", body)
    assert held_body(None) is None
    assert held_body(prepare("r", item.entry(), {"": body, "gzip": b"zz"})) is body
    assert held_body(prepare("r", item.entry(), {"gzip": b"zz"})) is None


def test_reuse_takes_the_held_bytes_and_forms() -> None:
    body = b"var x = 1;\n" * 50
    held = bytes(bytearray(body))  # equal bytes, another object
    fetched = LibraryFile(JS, "application/javascript", body)
    hot = prepare("r", fetched.entry(), {"": held, "gzip": b"g", "br": b"b"})
    again = reuse(fetched, hot)
    assert again.body is held and again.forms == {"gzip": b"g", "br": b"b"}
    assert (again.path, again.content_type) == (fetched.path, fetched.content_type)
    assert reuse(fetched, None) is fetched
    assert reuse(fetched, prepare("r", fetched.entry(), {"gzip": b"g"})) is fetched


def test_with_forms_compresses_only_the_files_without_forms() -> None:
    text = b"body { color: red; }\n" * 200
    done = LibraryFile(JS, "application/javascript", b"x", {"gzip": b"kept"})
    out = with_forms([done, LibraryFile(CSS, "text/css", text)])
    assert out[0] is done
    assert set(out[1].forms) == {"gzip", "br"} and out[1].body is text


def test_new_release_names_the_forms_and_keeps_the_hashed_digests() -> None:
    body = b"var x = 1;\n" * 50
    plain = LibraryFile(JS, "application/javascript", body)
    entries = [plain.entry()]
    rid = release_id(release_digest(entries))
    compressed = [LibraryFile(JS, "application/javascript", body, {"gzip": b"g"})]
    meta = new_release(rid, "1.0", "a", compressed, entries, now=10.0, expires=99.0)
    assert meta.id == rid and meta.label == "1.0"
    assert meta.files[JS].sha256 == hashlib.sha256(body).hexdigest()
    assert meta.files[JS].encodings == ("gzip",)
    assert meta.digest == release_digest(meta.files.values())
    assert (meta.created, meta.last_active, meta.expires) == (10.0, 10.0, 99.0)
    assert (meta.last_system, meta.systems) == ("a", ("a",))
