"""Fetching a system's library files: bodies decoded, chunks compared in place, the version
a gateway reports, and one copy of bytes already held."""

from __future__ import annotations

import gzip
from typing import Any

import brotli  # type: ignore[import-untyped]
import pytest

from router.proxy.upstream import Upstream
from router.releases.fetch import Fetcher, FingerprintError, decode_body, join_body, same_bytes
from router.simulator.library import LIBRARY_PATHS, library_files
from router.systems.stats import parse_reported_version
from tests.helpers import Gateway, RedisServer, make_config

BIG = "/gateway/fusion-client-sdk.js"


@pytest.mark.parametrize(
    ("body", "version"),
    [
        (b'{"name": "a", "version": "2.0", "open_sessions": 1}', "2.0"),
        (b'{"release": " 4.2.1 "}', "4.2.1"),
        (b'{"sdkVersion": "3.1"}', "3.1"),
        (b'{"version": ""}', None),
        (b'{"version": 2}', None),
        (b"[1, 2]", None),
        (b"not json", None),
    ],
)
def test_parse_reported_version(body: bytes, version: str | None) -> None:
    assert parse_reported_version(body) == version


@pytest.mark.parametrize(
    ("encoding", "encode"),
    [("", bytes), ("identity", bytes), ("gzip", gzip.compress), ("br", brotli.compress)],
)
def test_fetched_bodies_are_decoded(encoding: str, encode: Any) -> None:
    assert decode_body(encode(b"library bytes"), encoding) == b"library bytes"


def test_fetched_chunks_are_joined_then_decoded() -> None:
    whole = b"library bytes " * 10_000
    packed = gzip.compress(whole)
    chunks = [packed[i : i + 4096] for i in range(0, len(packed), 4096)]
    assert join_body(chunks, "gzip") == whole
    assert join_body([whole[:7], whole[7:]], "") == whole
    assert join_body([], "") == b""


def test_fetched_chunks_compare_with_held_bytes_in_place() -> None:
    held = bytes(range(256)) * 1000
    chunks = [held[i : i + 4096] for i in range(0, len(held), 4096)]
    assert same_bytes(chunks, held)
    assert not same_bytes(chunks[:-1], held)  # shorter
    assert not same_bytes([*chunks, b"x"], held)  # longer
    changed = [*chunks[:-1], chunks[-1][:-1] + b"\x00"]  # last byte was 0xff
    assert not same_bytes(changed, held)
    assert same_bytes([], b"")


def test_unknown_fetched_encoding_fails_the_check() -> None:
    with pytest.raises(FingerprintError, match="unsupported Content-Encoding 'zstd'"):
        decode_body(b"x", "zstd")


async def test_a_check_keeps_one_copy_of_bytes_it_already_holds(
    redis_server: RedisServer, gateways: dict[str, Gateway]
) -> None:
    """A release check that fetches the bytes this process already holds keeps the held object
    and drops the fetched copy (peak RSS: an unchanged release is not held twice); a file
    that changed is the fetched bytes."""
    config = make_config(redis_server.url, gateways, release_paths=list(LIBRARY_PATHS))
    v1 = library_files("1.0")
    held = {path: bytes(bytearray(body)) for path, (body, _type) in v1.items()}  # equal, not v1's
    held[BIG] = b"an older version of the file"
    upstream = Upstream(config.systems["a"], connect_timeout=2.0, read_timeout=5.0)
    try:
        files = await Fetcher(config, {"a": upstream}).fetch_all("a", held.get)
    finally:
        await upstream.close()
    by_path = {f.path: f.body for f in files}
    assert set(by_path) == set(v1)
    for path, body in by_path.items():
        assert body == v1[path][0], path
        assert (body is held[path]) == (path != BIG), path
