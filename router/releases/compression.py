"""The gzip and brotli forms of a release's files, computed in a short-lived child process.

Once per new release (a router that finds the release already stored, in Redis or in its
archive, compresses nothing). The child (`compress_child.py`) exists for the worker's peak
RSS: brotli's match finder allocates ~14 MB of tables per compression whatever the file
size, which took a worker that recorded a new release from ~74 MiB to ~89 MiB (measured with a
fresh release archive; SPEC section 3: <= 80 MB), and glibc kept ~5 MB of it afterwards.
In a child, that memory is gone with it a fraction of a second later.

The forms are deterministic (same library versions, same bytes everywhere). If the child
cannot run or answers wrongly, the forms are computed here after all, with a warning: a
release with its compressed forms beats a lower peak.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from router.releases.compress_child import LENGTH, compress

log = logging.getLogger("router.releases")

# Brotli quality 7: 2-3% larger than quality 9 on JS/Python text, twice as fast, and a third
# of the memory (quality 9's match finder takes ~37 MB, quality 7's ~14 MB), in the child too.
BROTLI_QUALITY = 7
GZIP_LEVEL = 9
# Keep a compressed form only when it saves at least this fraction (PNGs do not shrink).
MIN_SAVING = 0.10
_COMPRESSIBLE = (
    "text/",
    "application/javascript",
    "application/x-javascript",
    "application/json",
    "application/xml",
    "image/svg+xml",
)
CHILD = Path(__file__).with_name("compress_child.py")
# The interpreter that runs the child (a seam for the failure tests: a path that fails).
PYTHON = sys.executable
# Generous: a 1 MB script takes ~0.1 s; the largest release allowed is 64 MB.
TIMEOUT_BASE_S = 30.0
TIMEOUT_PER_MB_S = 2.0


class ChildFailed(Exception):
    """The compressor child did not deliver; the message says how."""


def compressible(content_type: str) -> bool:
    kind = content_type.split(";", 1)[0].strip().lower()
    return kind.startswith(_COMPRESSIBLE)


def _worth_it(body: bytes, content_type: str) -> bool:
    return compressible(content_type) and len(body) >= 256


def _kept(body: bytes, br: bytes, gz: bytes) -> dict[str, bytes]:
    limit = len(body) * (1 - MIN_SAVING)
    return {name: data for name, data in (("br", br), ("gzip", gz)) if len(data) <= limit}


def _read_frame(stream: IO[bytes]) -> bytes | None:
    """One frame of the child's answer, None at its end; the form is allocated once."""
    header = stream.read(LENGTH)
    if not header:
        return None
    if len(header) < LENGTH:
        raise ChildFailed("its answer ends inside a frame header")
    size = int.from_bytes(header, "big")
    data = stream.read(size)
    if len(data) < size:
        raise ChildFailed("its answer ends inside a frame")
    return data


def _exchange(child: subprocess.Popen[bytes], bodies: Sequence[bytes]) -> list[bytes]:
    """Write every body, then read every form: streamed both ways, so the worker holds no
    joined copy of the input or of the answer (their few MB were the rest of the peak)."""
    assert child.stdin is not None and child.stdout is not None
    try:
        for body in bodies:
            child.stdin.write(len(body).to_bytes(LENGTH, "big"))
            child.stdin.write(body)
        child.stdin.close()
    except BrokenPipeError:
        # The child died early (its exit status says why); closing again drops what was
        # still buffered for it, which would otherwise raise once more on the way out.
        with contextlib.suppress(BrokenPipeError):
            child.stdin.close()
    forms: list[bytes] = []
    while (form := _read_frame(child.stdout)) is not None:
        forms.append(form)
    return forms


def in_child(bodies: Sequence[bytes]) -> list[tuple[bytes, bytes]]:
    """(brotli, gzip) of each body, computed by one compressor child."""
    if not bodies:
        return []
    size_mb = sum(len(b) for b in bodies) / 1_048_576
    timeout = TIMEOUT_BASE_S + TIMEOUT_PER_MB_S * size_mb
    argv = [PYTHON, "-I", str(CHILD), str(BROTLI_QUALITY), str(GZIP_LEVEL)]
    # stderr to a file: a pipe nobody reads while the bodies are written could fill and
    # block the child.
    with tempfile.TemporaryFile() as errors:
        try:
            child = subprocess.Popen(  # noqa: S603 (our interpreter, our script, no shell)
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors
            )
        except OSError as exc:
            raise ChildFailed(f"could not start {argv[0]}: {exc.strerror or exc}") from None
        # The pipes block: a child that hangs is killed, which ends every read and write.
        fired = threading.Event()

        def kill() -> None:
            fired.set()
            child.kill()

        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            with child:
                forms = _exchange(child, bodies)
        except ChildFailed:
            if not fired.is_set():
                raise
            forms = []  # cut short by the kill: the deadline is the reason, said below
        finally:
            timer.cancel()
        if fired.is_set():
            raise ChildFailed(f"no answer within {timeout:.3g} s")
        if child.returncode != 0:
            errors.seek(0)
            last = errors.read().decode("utf-8", "replace").strip().splitlines()[-1:]
            raise ChildFailed(f"exit {child.returncode}: {(last or ['no message'])[0]}")
    if len(forms) != 2 * len(bodies):
        raise ChildFailed(f"it answered {len(forms)} forms for {len(bodies)} files")
    return [(forms[i], forms[i + 1]) for i in range(0, len(forms), 2)]


def in_process(body: bytes) -> tuple[bytes, bytes]:
    return compress(body, BROTLI_QUALITY, GZIP_LEVEL)


def compress_all(files: Sequence[tuple[bytes, str]]) -> list[dict[str, bytes]]:
    """The forms worth serving ("br", "gzip") for each (body, content type), in order.

    Blocking (a child process, ~0.1 s per MB): call it off the event loop
    (`background.run`).
    """
    wanted = [i for i, (body, ctype) in enumerate(files) if _worth_it(body, ctype)]
    bodies = [files[i][0] for i in wanted]
    try:
        pairs = in_child(bodies)
    except ChildFailed as exc:
        log.warning(
            "the compressor child failed (%s): compressing %d file(s) in this process instead",
            exc,
            len(bodies),
        )
        pairs = [in_process(body) for body in bodies]
    out: list[dict[str, bytes]] = [{} for _ in files]
    for i, (br, gz) in zip(wanted, pairs, strict=True):
        out[i] = _kept(files[i][0], br, gz)
    return out


def compress_forms(body: bytes, content_type: str) -> dict[str, bytes]:
    """The forms worth serving for one file (see compress_all)."""
    return compress_all([(body, content_type)])[0]
