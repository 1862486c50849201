"""The client-library files a simulated system serves: JavaScript, CSS and a PNG per version.

Pure and deterministic: the bytes depend only on the version, never on the process, the
machine or the clock, so a test or the benchmark can compare them. The PNG is written by
hand (stored deflate blocks) because zlib's compressed output differs between zlib builds.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from collections.abc import Mapping
from functools import lru_cache
from types import MappingProxyType

import orjson

from router.config import FCSDK_LIBRARY_PATHS

LIBRARY_PATHS: tuple[str, ...] = FCSDK_LIBRARY_PATHS

_JS = "application/javascript"
_CSS = "text/css"
_PNG = "image/png"

# Target sizes: the real SDK files are hundreds of KB; fusion-client-sdk.js is the ~1 MB
# file the release-serving benchmark needs.
_SIZES: dict[str, int] = {
    "/gateway/adapter.js": 120_000,
    "/gateway/fusion-client-sdk.js": 1_000_000,
    "/gateway/csdk-phone.js": 240_000,
    "/gateway/csdk-aed.js": 160_000,
    "/assistserver/sdk/web/consumer/assist.js": 300_000,
    "/assistserver/sdk/web/consumer/assist.css": 40_000,
    "/assistserver/sdk/web/shared/js/assist-common.js": 180_000,
    "/assistserver/sdk/web/agent/js/assist-console.js": 220_000,
}

_HEX_PER_LINE = 96


def _seeded(path: str, version: str, n: int) -> bytes:
    # SHAKE is an extendable-output hash: any length, identical on every platform and
    # Python build, unlike `random`, whose algorithms are allowed to change.
    return hashlib.shake_256(f"{path}\0{version}".encode()).digest(n)


def _comment_safe(text: str) -> str:
    return text.replace("*/", "* /")


def _fill_lines(path: str, version: str, budget: int, line_size: int) -> list[str]:
    """Hex strings of `_HEX_PER_LINE` chars, enough lines of `line_size` to fill `budget`."""
    count = max(1, budget // line_size)
    digits = _seeded(path, version, count * _HEX_PER_LINE // 2).hex()
    return [digits[i : i + _HEX_PER_LINE] for i in range(0, len(digits), _HEX_PER_LINE)]


def _javascript(path: str, version: str, size: int) -> bytes:
    header = f"/* token-router simulated library {path} version {_comment_safe(version)} */\n"
    # A real script that registers itself, so a browser test can tell which system's
    # library a page loaded.
    footer = (
        "  ];\n"
        "  var root = typeof window !== 'undefined' ? window : globalThis;\n"
        "  root.__simLibraries = root.__simLibraries || {};\n"
        f"  root.__simLibraries[{orjson.dumps(path).decode()}] = "
        f"{{version: {orjson.dumps(version).decode()}, chunks: data.length}};\n"
        "})();\n"
    )
    opening = "(function () {\n  var data = [\n"
    fixed = len((header + opening + footer).encode())
    lines = _fill_lines(path, version, size - fixed, _HEX_PER_LINE + 8)
    body = "".join(f'    "{line}",\n' for line in lines)
    return (header + opening + body + footer).encode()


def _css(path: str, version: str, size: int) -> bytes:
    header = (
        f"/* token-router simulated library {path} version {_comment_safe(version)} */\n"
        f":root {{ --sim-version: {orjson.dumps(version).decode()}; }}\n"
    )
    rule_size = len(".sim- { color: #; }\n") + _HEX_PER_LINE
    lines = _fill_lines(path, version, size - len(header.encode()), rule_size)
    body = "".join(f".sim-{line[6:]} {{ color: #{line[:6]}; }}\n" for line in lines)
    return (header + body).encode()


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def _zlib_stored(data: bytes) -> bytes:
    # Deflate "stored" blocks written by hand: zlib's compressed output may differ between
    # zlib builds, which would make the bytes depend on the machine, not only the version.
    out = bytearray(b"\x78\x01")
    step = 0xFFFF
    for start in range(0, max(len(data), 1), step):
        block = data[start : start + step]
        final = 1 if start + step >= len(data) else 0
        out += struct.pack("<BHH", final, len(block), len(block) ^ 0xFFFF) + block
    out += struct.pack(">I", zlib.adler32(data))
    return bytes(out)


def _png(path: str, version: str, side: int = 32) -> bytes:
    pixels = _seeded(path, version, side * side * 3)
    row = side * 3
    raw = b"".join(b"\x00" + pixels[y * row : (y + 1) * row] for y in range(side))
    comment = f"Comment\0{path} version {version}".encode("latin-1", "replace")
    return b"".join(
        (
            b"\x89PNG\r\n\x1a\n",
            _png_chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)),
            _png_chunk(b"tEXt", comment),
            _png_chunk(b"IDAT", _zlib_stored(raw)),
            _png_chunk(b"IEND", b""),
        )
    )


@lru_cache(maxsize=16)
def cached_library(version: str) -> Mapping[str, tuple[bytes, str]]:
    # Generating ~2.5 MB takes milliseconds, but the benchmark upstream must answer from
    # memory; read-only so every app sharing a version shares the bytes safely.
    files: dict[str, tuple[bytes, str]] = {}
    for path in LIBRARY_PATHS:
        if path.endswith(".png"):
            files[path] = (_png(path, version), _PNG)
        elif path.endswith(".css"):
            files[path] = (_css(path, version, _SIZES[path]), _CSS)
        else:
            files[path] = (_javascript(path, version, _SIZES[path]), _JS)
    return MappingProxyType(files)


def library_files(version: str) -> dict[str, tuple[bytes, str]]:
    """Every library file of `version`: path -> (bytes, content type).

    Pure: the bytes depend only on `version`, in any process on any machine.
    """
    return dict(cached_library(version))
