"""Compressed forms come from a child process, so brotli's tables never count against a
worker's peak RSS; when the child cannot deliver, the worker compresses after all."""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import brotli  # type: ignore[import-untyped]
import pytest

from router.releases import compression
from router.releases.compression import (
    ChildFailed,
    _read_frame,
    compress_all,
    compress_forms,
    in_child,
    in_process,
)
from router.simulator.library import library_files

JS = "/gateway/fusion-client-sdk.js"
LOGO = "/assistserver/sdk/web/shared/img/logo.png"
PNG_TYPE = "image/png"


def test_the_child_gives_the_same_bytes_as_this_process() -> None:
    body, _ = library_files("1.0")[JS]
    small = b"function f() { return 1; }\n" * 40
    assert in_child([body, small]) == [in_process(body), in_process(small)]


def test_compress_all_keeps_only_forms_worth_serving_in_order() -> None:
    js, js_type = library_files("1.0")[JS]
    tiny = b"x" * 100  # under 256 bytes: not worth a form
    # text/plain that does not shrink by 10%: 4 KB of SHA-256 output
    noise = b"".join(hashlib.sha256(bytes([i])).digest() for i in range(128))
    out = compress_all(
        [(js, js_type), (b"\x89PNG" * 100, PNG_TYPE), (tiny, "text/plain"), (noise, "text/plain")]
    )
    assert set(out[0]) == {"br", "gzip"}
    assert brotli.decompress(out[0]["br"]) == js
    assert gzip.decompress(out[0]["gzip"]) == js
    assert out[1:3] == [{}, {}]
    assert out[3] == {}


@pytest.mark.parametrize(
    ("python", "reason"),
    [("/nonexistent/python3", "could not start"), ("/bin/false", "exit 1")],
)
def test_a_failing_child_is_reported_and_the_forms_computed_here(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, python: str, reason: str
) -> None:
    body, ctype = library_files("1.0")[JS]
    monkeypatch.setattr(compression, "PYTHON", python)
    with pytest.raises(ChildFailed, match=reason):
        in_child([body])
    caplog.set_level(logging.WARNING, logger="router.releases")
    forms = compress_all([(body, ctype)])[0]
    assert brotli.decompress(forms["br"]) == body
    assert "the compressor child failed" in caplog.text and reason in caplog.text


def test_a_garbled_answer_is_refused() -> None:
    whole = (2).to_bytes(8, "big") + b"br"
    assert _read_frame(io.BytesIO(whole)) == b"br"
    assert _read_frame(io.BytesIO(b"")) is None
    with pytest.raises(ChildFailed, match="inside a frame header"):
        _read_frame(io.BytesIO(whole[:5]))
    with pytest.raises(ChildFailed, match="inside a frame"):
        _read_frame(io.BytesIO(whole[:-1]))


def test_a_child_that_hangs_is_killed_at_the_timeout(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # It reads no stdin and writes nothing: the kill must end the blocked exchange.
    hangs = tmp_path / "hangs.py"
    hangs.write_text("import time\ntime.sleep(600)\n", encoding="utf-8")
    monkeypatch.setattr(compression, "CHILD", hangs)
    monkeypatch.setattr(compression, "TIMEOUT_BASE_S", 1.0)
    monkeypatch.setattr(compression, "TIMEOUT_PER_MB_S", 0.0)
    with pytest.raises(ChildFailed, match="no answer within 1 s"):
        in_child([b"x" * 300_000])  # more than a pipe holds: the write blocks too


def test_a_child_that_stops_inside_its_answer_is_reported_by_its_deadline(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Half a frame header, then silence: the kill, not the torn frame, is the reason.
    stalls = tmp_path / "stalls.py"
    stalls.write_text(
        "import sys, time\nsys.stdin.buffer.read()\nsys.stdout.buffer.write(b'\\0\\0')\n"
        "sys.stdout.buffer.flush()\ntime.sleep(600)\n",
        encoding="utf-8",
    )
    monkeypatch.setattr(compression, "CHILD", stalls)
    monkeypatch.setattr(compression, "TIMEOUT_BASE_S", 1.0)
    monkeypatch.setattr(compression, "TIMEOUT_PER_MB_S", 0.0)
    with pytest.raises(ChildFailed, match="no answer within 1 s"):
        in_child([b"x" * 1000])


PEAK_SCRIPT = textwrap.dedent(
    """
    import sys
    from router.releases import compression
    from router.simulator.library import library_files

    def hwm():
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))

    body, ctype = library_files("1.0")["/gateway/fusion-client-sdk.js"]
    body = body * 2  # ~2 MB
    before = hwm()
    if sys.argv[1] == "child":
        compression.compress_all([(body, ctype)])
    else:
        compression.in_process(body)
    print(hwm() - before)
    """
)


def _peak_growth_kib(how: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", PEAK_SCRIPT, how],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return int(done.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_compressing_does_not_raise_this_process_peak_rss() -> None:
    # The control proves the measurement sees brotli's tables when they are in-process.
    assert _peak_growth_kib("here") > 8_000
    # In the child, this process holds only the framed input and the forms (~3 MB).
    assert _peak_growth_kib("child") < 5_000


def test_compress_forms_round_trip_and_skip_incompressible() -> None:
    body, content_type = library_files("1.0")["/gateway/adapter.js"]
    forms = compress_forms(body, content_type)
    assert set(forms) == {"gzip", "br"}
    assert gzip.decompress(forms["gzip"]) == body
    assert brotli.decompress(forms["br"]) == body
    assert forms == compress_forms(body, content_type)  # deterministic: same bytes everywhere
    png, png_type = library_files("1.0")[LOGO]
    assert compress_forms(png, png_type) == {}
