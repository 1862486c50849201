"""The release model's pure parts: identity, labels, the references a file makes, and the
HTTP decisions (encoding, 304)."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from router.releases.model import (
    SCAN_WINDOW,
    FileEntry,
    LibraryFile,
    choose_encoding,
    choose_label,
    not_modified,
    references,
    release_digest,
    release_id,
    scan_windows,
    valid_release_id,
)

JS = "/gateway/adapter.js"
CSS = "/assistserver/sdk/web/consumer/assist.css"
PNG = "/assistserver/sdk/web/shared/img/logo.png"
BOTH = frozenset({"gzip", "br"})


def entry(path: str, body: bytes, content_type: str = "application/javascript") -> FileEntry:
    return LibraryFile(path, content_type, body).entry()


def test_release_digest_is_order_independent_and_sensitive_to_every_byte() -> None:
    files = [entry(JS, b"one"), entry(CSS, b"two", "text/css")]
    digest = release_digest(files)
    assert digest == release_digest(list(reversed(files)))
    assert digest != release_digest([entry(JS, b"onE"), entry(CSS, b"two", "text/css")])
    assert digest != release_digest([entry(JS, b"one"), entry(CSS, b"two", "text/plain")])
    assert digest != release_digest([entry(JS, b"one")])
    rid = release_id(digest)
    assert len(rid) == 16 and valid_release_id(rid)


@pytest.mark.parametrize(
    ("text", "valid"),
    [
        ("0123456789abcdef", True),
        ("0123456789ABCDEF", False),
        ("0123456789abcde", False),
        ("0123456789abcdef0", False),
        ("..", False),
        ("0123456789abcde*", False),
        ("", False),
    ],
)
def test_valid_release_id(text: str, valid: bool) -> None:
    assert valid_release_id(text) is valid


@pytest.mark.parametrize(
    ("configured", "reported", "others", "label"),
    [
        pytest.param("1.0", None, {}, "1.0", id="first-release-takes-config"),
        pytest.param("1.0", "1.0.3", {}, "1.0.3", id="gateway-report-wins"),
        pytest.param("", None, {}, "", id="nothing-known"),
        pytest.param("1.0", None, {"old": "1.0"}, "", id="upgraded-under-unchanged-config"),
        pytest.param("2.0", None, {"old": "1.0"}, "2.0", id="config-updated-after-upgrade"),
        pytest.param("1.0", None, {"new": "1.0"}, "1.0", id="own-label-not-stale"),
        pytest.param("1.0", "2.0", {"old": "1.0"}, "2.0", id="report-beats-stale-config"),
    ],
)
def test_choose_label(
    configured: str, reported: str | None, others: Mapping[str, str], label: str
) -> None:
    assert choose_label(configured, reported, "new", others) == label


@pytest.mark.parametrize(
    ("path", "body", "content_type", "found"),
    [
        pytest.param(
            "/gateway/fusion-client-sdk.js",
            b'load("csdk-phone.js"); load("./csdk-aed.js"); x = "/gateway/adapter.js";',
            "application/javascript",
            {"/gateway/csdk-phone.js", "/gateway/csdk-aed.js", "/gateway/adapter.js"},
            id="split-sdk-files",
        ),
        pytest.param(
            "/assistserver/sdk/web/consumer/assist.css",
            b".a{background:url(../shared/img/logo.png)} .b{background:url('img/x.gif?v=1')}"
            b' @import "print.css"; .c{background:url(data:image/png;base64,AAAA)}'
            b" .d{background:url(https://cdn.example.com/x.png)}",
            "text/css; charset=utf-8",
            {
                "/assistserver/sdk/web/shared/img/logo.png",
                "/assistserver/sdk/web/consumer/img/x.gif",
                "/assistserver/sdk/web/consumer/print.css",
            },
            id="css-urls",
        ),
        pytest.param(
            "/assistserver/sdk/web/consumer/assist.js",
            b'a = "../../../../etc/passwd.js"; b = "../../../gateway/adapter.js"; '
            b'c = "//evil.example.com/x.js"; d = "https://x.example.com/y.js"',
            "application/javascript",
            {"/gateway/adapter.js"},
            id="only-library-paths",
        ),
        pytest.param(PNG, b'"x.js"', "image/png", set(), id="binary-not-scanned"),
    ],
)
def test_references(path: str, body: bytes, content_type: str, found: set[str]) -> None:
    assert references(path, body, content_type) == found


def test_references_found_across_scan_windows() -> None:
    """A large script is scanned in windows (the event loop gets the GIL between them):
    references on both sides of, and right at, every window boundary are all found."""
    refs = [f"/gateway/part-{i}.js" for i in range(40)]
    filler = b"x" * (SCAN_WINDOW - 7)  # no cut byte inside: windows end at the next quote
    body = b"".join(
        b'a("' + ref.encode() + b'");' + filler + b";b='csdk-" + str(i).encode() + b".js';"
        for i, ref in enumerate(refs)
    )
    assert len(body) > 30 * SCAN_WINDOW
    expected = set(refs) | {f"/gateway/csdk-{i}.js" for i in range(40)}
    assert references("/gateway/fusion-client-sdk.js", body, "application/javascript") == expected
    for _start, end in scan_windows(body):  # cut only where no match can continue
        assert end == len(body) or body[end : end + 1] in b";(),= "


@pytest.mark.parametrize(
    ("accept", "available", "chosen"),
    [
        ("gzip, deflate, br", BOTH, "br"),
        ("gzip, deflate", BOTH, "gzip"),
        ("br;q=0, gzip", BOTH, "gzip"),
        ("gzip;q=0.5, br;q=0.4", BOTH, "gzip"),
        ("*", BOTH, "br"),
        ("*, br;q=0", BOTH, "gzip"),
        ("identity", BOTH, ""),
        ("gzip;q=0.5, identity", BOTH, ""),
        ("", BOTH, ""),
        ("gzip, br", frozenset(), ""),
        ("gzip, br", frozenset({"gzip"}), "gzip"),
        ("GZIP;Q=1.0", BOTH, "gzip"),
        ("gzip;q=bogus", BOTH, ""),
    ],
)
def test_choose_encoding(accept: str, available: frozenset[str], chosen: str) -> None:
    assert choose_encoding(accept, available) == chosen


@pytest.mark.parametrize(
    ("header", "matches"),
    [
        ('"abc"', True),
        ('W/"abc"', True),
        ('"x", "abc"', True),
        ("*", True),
        ('"abd"', False),
        ("abc", False),
        ("", False),
    ],
)
def test_not_modified(header: str, matches: bool) -> None:
    assert not_modified(header, '"abc"') is matches
