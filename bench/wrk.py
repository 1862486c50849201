"""Maximum-throughput runs with wrk (closed loop: every connection keeps one request out).

The Lua scripts beside this module give wrk the POST body of the token route and make it
print one `WRKJSON {...}` line, so nothing here parses wrk's human-readable table.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

SCRIPTS = Path(__file__).parent / "wrk"
SESSION_SCRIPT = SCRIPTS / "session.lua"
GET_SCRIPT = SCRIPTS / "get.lua"


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    rps: float
    mb_per_s: float
    errors: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    connections: int
    error_kinds: dict[str, int]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def run_wrk(
    wrk: str,
    url: str,
    *,
    script: Path,
    seconds: float,
    connections: int,
    cpus: str | None,
    timeout_s: float = 5.0,
) -> WrkResult:
    """One wrk run (one thread: on a 2-core machine a second one would only compete)."""
    argv = [
        wrk,
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        f"--timeout={timeout_s:g}s",
        "-s",
        str(script),
        url,
    ]
    if cpus is not None:
        argv = ["taskset", "-c", cpus, *argv]
    env = {**os.environ, "BENCH_WRK_DIR": str(SCRIPTS)}
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=seconds + 30, env=env, check=False
    )
    line = next((x for x in done.stdout.splitlines() if x.startswith("WRKJSON ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout}\n{done.stderr}")
    raw = orjson.loads(line[len("WRKJSON ") :])
    secs = raw["duration_us"] / 1e6
    kinds = {k: int(raw[k]) for k in ("connect", "read", "write", "status", "timeout") if raw[k]}
    errors = sum(kinds.values())
    return WrkResult(
        requests=raw["requests"],
        seconds=round(secs, 3),
        rps=round(raw["requests"] / secs, 1),
        mb_per_s=round(raw["bytes"] / secs / 1e6, 1),
        errors=errors,
        p50_ms=raw["p50_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        max_ms=raw["max_us"] / 1000,
        connections=connections,
        error_kinds=kinds,
    )
