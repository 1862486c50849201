"""Machine facts, ratios, SPEC section 3 verdicts and the Markdown table of a run."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import nginx as nginx_mod
from bench.cpu import NOISY_SHARE

ROOT = Path(__file__).resolve().parent.parent
THROUGHPUT_ROWS = (
    ("direct", "the fast upstream itself, no proxy (nginx, fixed JSON)"),
    ("ceiling", "bench/ceiling.py: aiohttp+uvloop pass-through, 1 process"),
    ("router_w1", "token-router serve --workers 1"),
    ("router_w2", "token-router serve --workers 2"),
    ("nginx", "nginx proxy_pass, keep-alive upstream, 1 worker"),
)


def _first_line(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "n/a"
    text = (done.stdout or done.stderr).strip()
    return text.splitlines()[0] if text else "n/a"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "n/a"


def machine(nginx: str) -> dict[str, Any]:
    import os

    commit = _first_line(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = _first_line(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"])
    return {
        "cpu_model": _cpu_model(),
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "nginx": nginx_mod.version(nginx) if nginx else "n/a",
        "wrk": _first_line(["wrk", "--version"]).split(" [")[0],
        "redis": _first_line(["redis-server", "--version"]).split(" sha=")[0],
        "aiohttp": _version("aiohttp"),
        "uvloop": _version("uvloop"),
        "redis_py": _version("redis"),
        "token_router": _version("token-router"),
        "git": commit + (" (+ uncommitted changes)" if dirty not in ("", "n/a") else ""),
    }


def _rps(results: dict[str, Any], name: str) -> float | None:
    row = results["throughput"].get(name)
    return float(row["rps"]) if row else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def ratios(results: dict[str, Any]) -> dict[str, float | None]:
    w1, w2 = _rps(results, "router_w1"), _rps(results, "router_w2")
    ceiling, nginx = _rps(results, "ceiling"), _rps(results, "nginx")
    direct = _rps(results, "direct")
    release = results["release"]
    router_file = release.get("router") or {}
    nginx_file = release.get("nginx") or {}
    return {
        "router_w1/ceiling": _ratio(w1, ceiling),
        "router_w1/nginx": _ratio(w1, nginx),
        "router_w2/router_w1": _ratio(w2, w1),
        "ceiling/nginx": _ratio(ceiling, nginx),
        "nginx/direct": _ratio(nginx, direct),
        "release_router/nginx_static": _ratio(router_file.get("rps"), nginx_file.get("rps")),
        # Inverse CPU cost per request: what the throughput ratio would be on an idle core.
        "router_w1/ceiling_by_cpu": _ratio(_cpu(results, "ceiling"), _cpu(results, "router_w1")),
        "router_w1/nginx_by_cpu": _ratio(_cpu(results, "nginx"), _cpu(results, "router_w1")),
    }


def _cpu(results: dict[str, Any], name: str) -> float | None:
    row = results["throughput"].get(name)
    return float(row["cpu_us_per_request"]) if row and row.get("cpu_us_per_request") else None


LATENCY_PATHS = (
    ("direct", "direct to the gateway"),
    ("router", "through the router"),
    ("ceiling", "through bench/ceiling.py (same core)"),
    ("nginx", "through nginx proxy_pass (same core)"),
)


def added_latency(results: dict[str, Any], path: str = "router") -> dict[str, float] | None:
    lat = results["latency"]
    if "direct" not in lat or path not in lat:
        return None
    d, r = lat["direct"]["latency_ms"], lat[path]["latency_ms"]
    return {k: round(r[k] - d[k], 3) for k in ("p50", "p90", "p99", "p999") if k in d and k in r}


def bars(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each SPEC section 3 bar: target, what this run measured, met (None: not measured)."""
    ratio = ratios(results)
    added = added_latency(results)
    prop = results.get("propagation") or {}
    last = prop.get("last_instance_ms") or {}
    # Every round counts, not only the best one reported.
    failed = 0
    for key, field in (
        ("throughput_rounds", "errors"),
        ("release_rounds", "errors"),
        ("latency_rounds", "failed"),
    ):
        for rows in (results.get(key) or {}).values():
            failed += sum(int(r.get(field, 0)) for r in rows)
    out: list[dict[str, Any]] = []

    def bar(name: str, target: str, measured: Any, met: bool | None) -> None:
        out.append({"bar": name, "target": target, "measured": measured, "met": met})

    c = ratio["router_w1/ceiling_by_cpu"]
    bar("token CPU per request, 1 worker", ">= 1.0x ceiling", c, None if c is None else c >= 1.0)
    r = ratio["router_w1/ceiling"]
    bar("same, by req/s (noisier)", ">= 1.0x ceiling", r, None if r is None else r >= 1.0)
    p50 = added["p50"] if added else None
    bar("added latency p50 @1000/s", "< 0.5 ms", p50, None if p50 is None else p50 < 0.5)
    p99 = added["p99"] if added else None
    bar("added latency p99 @1000/s", "< 2 ms", p99, None if p99 is None else p99 < 2.0)
    idle = (results.get("loop_stalls") or {}).get(
        "idle: a release check, then background work only"
    )
    if idle is not None:
        n = idle["stalls_over_1ms"]
        bar("loop stalls > 1 ms from background work", "0", n, n == 0)
    sp = last.get("p99")
    timeouts = int(prop.get("timeouts", 0))
    bar(
        "switch propagation p99 (3 instances)",
        "< 20 ms",
        sp,
        None if sp is None else (sp < 20.0 and timeouts == 0),
    )
    rss = (results.get("rss_kib") or {}).get("router_w1")
    mb = round(rss / 1024, 1) if rss else None
    bar("peak RSS, 1 worker, 2 releases", "<= 80 MB", mb, None if mb is None else mb <= 80)
    rr = ratio["release_router/nginx_static"]
    bar("release serving", ">= 0.7x nginx static", rr, None if rr is None else rr >= 0.7)
    bar("failed requests in the bench rows", "0 (chaos drills: tests)", failed, failed == 0)
    soaked = results.get("soak")
    if soaked:
        long_enough = soaked["seconds"] >= 600
        bar(
            f"soak: failed requests ({soaked['seconds']:.0f} s)",
            "0 over >= 600 s",
            soaked["failed"],
            soaked["failed"] == 0 and long_enough,
        )
    return out


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _rounds(rows: list[dict[str, Any]]) -> str:
    return ", ".join(f"{row['rps']:.0f}" for row in rows)


def _interference(results: dict[str, Any]) -> list[str]:
    """One line on CPU used by processes this run did not start, naming the noisy rows."""
    usage = results.get("cpu") or {}
    whole = usage.get("whole run")
    if not whole:
        return []
    noisy = [
        f"{name} ({row['foreign_share']:.0%})"
        for name, row in usage.items()
        if name != "whole run" and row["foreign_share"] > NOISY_SHARE
    ]
    text = (
        f"Other processes on the machine used {whole['foreign_share']:.0%} of its CPU time "
        f"during the run ({whole['foreign_cpu_s']:.1f} CPU-s)."
    )
    if noisy:
        text += " Rows measured with more than 5% interference: " + ", ".join(noisy) + "."
    else:
        text += " No row had more than 5%."
    return [text]


def _stall_lines(results: dict[str, Any]) -> list[str]:
    out: list[str] = []
    stalls = results.get("loop_stalls") or {}
    if stalls:
        out += [
            "",
            "## Event-loop stalls of router_w1 (its 2 ms probe, router/server/loop_probe.py)",
            "",
            "| window | stalls > 1 ms | > 2 ms | > 5 ms | longest at most ms |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        for name, w in stalls.items():
            out.append(
                f"| {name} | {w['stalls_over_1ms']} | {w.get('over_2ms', 'n/a')} | "
                f"{w.get('over_5ms', 'n/a')} | {_fmt(w['longest_at_most_ms'])} |"
            )
    return out


def _soak_lines(results: dict[str, Any]) -> list[str]:
    out: list[str] = []
    soaked = results.get("soak")
    if soaked:
        gaps = soaked["idle_gaps_s"]
        out += [
            "",
            f"## Soak ({soaked['seconds']:.0f} s at {soaked['rate']} req/s, seed {soaked['seed']})",
            "",
            f"- {len(soaked['segments'])} load segments, idle gaps of "
            f"{min(gaps, default=0):.0f}-{max(gaps, default=0):.0f} s between them; "
            f"{soaked['switches']} switches under load; Redis restarted at "
            f"{soaked['redis_restarted_at_s']} s",
            f"- **{soaked['sent']} requests sent, {soaked['failed']} failed** "
            f"({soaked['failures_by_kind'] or 'none'}); router answers by status: "
            f"{soaked['router_statuses']}",
            f"- loop stalls over 1 ms during the soak: "
            f"{soaked['loop_stalls']['stalls_over_1ms']} (longest at most "
            f"{_fmt(soaked['loop_stalls']['longest_at_most_ms'])} ms); "
            f"peak RSS {_fmt(soaked.get('peak_rss_kib'))} KiB",
        ]
    return out


def _latency_lines(results: dict[str, Any]) -> list[str]:
    s = results["settings"]
    lines = [
        f"## Token-hop latency at a fixed {s['rate']} req/s (open loop; {s['rounds']} "
        f"alternating rounds of {s['latency_duration_s']:g} s, the round with the lower p99)",
        "",
        "| path | achieved req/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | failed |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for key, label in LATENCY_PATHS:
        row = results["latency"].get(key)
        if row is None:
            if key in ("direct", "router"):
                lines.append(f"| {label} | n/a | | | | | | |")
            continue
        lat = row["latency_ms"]
        lines.append(
            f"| {label} | {row['achieved_rate']:.0f} | {lat['p50']:.3f} | {lat['p90']:.3f} | "
            f"{lat['p99']:.3f} | {lat['p999']:.3f} | {lat['max']:.3f} | {row['failed']} |"
        )
    added = added_latency(results)
    if added:
        lines.append(
            f"| **added by the router** | | **{added['p50']:.3f}** | {added['p90']:.3f} | "
            f"**{added['p99']:.3f}** | {added['p999']:.3f} | | |"
        )
    for key, label in (("ceiling", "the ceiling"), ("nginx", "nginx")):
        other = added_latency(results, key)
        if other:
            lines.append(
                f"| added by {label} | | {other['p50']:.3f} | {other['p90']:.3f} | "
                f"{other['p99']:.3f} | {other['p999']:.3f} | | |"
            )
    return lines


def markdown(results: dict[str, Any]) -> str:
    s = results["settings"]
    ratio = results["ratios"]
    lines = [
        "# token-router benchmark",
        "",
        f"`{results['command']}`, {results['started']}, {results['elapsed_s']} s in all.",
        "",
        "## SPEC section 3 bars",
        "",
        "| bar | target | measured | met |",
        "| --- | --- | --- | --- |",
    ]
    for b in results["bars"]:
        met = "n/a" if b["met"] is None else ("yes" if b["met"] else "**no**")
        lines.append(f"| {b['bar']} | {b['target']} | {_fmt(b['measured'], 3)} | {met} |")
    lines += ["", *_interference(results)]
    lines += [
        "",
        f"## Token-route throughput (POST /gateway/sessions/session, wrk -t1 "
        f"-c{s['connections']}, best of {s['rounds']} alternating rounds of {s['duration_s']:g} s)",
        "",
        "| target | req/s | every round | CPU µs/req | p50 ms | p99 ms | errors | vs ceiling "
        "| vs nginx |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    tp = results["throughput"]
    ceiling = (tp.get("ceiling") or {}).get("rps")
    nginx = (tp.get("nginx") or {}).get("rps")
    for key, label in THROUGHPUT_ROWS:
        row = tp.get(key)
        if row is None:
            lines.append(f"| {label} | n/a | | | | | | | |")
            continue
        vc = _fmt(_ratio(row["rps"], ceiling))
        vn = _fmt(_ratio(row["rps"], nginx))
        every = _rounds(results.get("throughput_rounds", {}).get(key, []))
        lines.append(
            f"| {label} | {row['rps']:.0f} | {every} | {_fmt(row.get('cpu_us_per_request'), 0)} "
            f"| {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | {row['errors']} | {vc} | {vn} |"
        )
    lines += [
        "",
        f"`--workers 2` / `--workers 1`: {_fmt(ratio['router_w2/router_w1'])}. "
        f"By CPU per request (the steadier figure on a shared machine), the router reaches "
        f"{_fmt(ratio['router_w1/ceiling_by_cpu'])}x the ceiling and "
        f"{_fmt(ratio['router_w1/nginx_by_cpu'])}x nginx. "
        f"Redis commands per token request (1 worker): "
        f"{_fmt(results.get('redis_commands_per_token_request'), 3)}.",
        "",
    ]
    lines += _latency_lines(results)
    lines += _stall_lines(results)
    prop = results.get("propagation") or {}
    last, anyi = prop.get("last_instance_ms") or {}, prop.get("any_instance_ms") or {}
    lines += [
        "",
        f"## Switch propagation ({prop.get('switches', 'n/a')} bare SETs over raw RESP, "
        f"{prop.get('instances', 3)} router instances, polled on GET /router/current)",
        "",
        "| from SET to ... | p50 ms | p99 ms | max ms | timeouts |",
        "| --- | ---: | ---: | ---: | ---: |",
        f"| the last of the instances | {_fmt(last.get('p50'), 3)} | {_fmt(last.get('p99'), 3)} "
        f"| {_fmt(last.get('max'), 3)} | {prop.get('timeouts', 'n/a')} |",
        f"| any one instance | {_fmt(anyi.get('p50'), 3)} | {_fmt(anyi.get('p99'), 3)} "
        f"| {_fmt(anyi.get('max'), 3)} | |",
    ]
    if "propagation_settle_s" in results:
        lines += [
            "",
            f"The three instances share one core; measured once they had a release and were "
            f"idle ({results['propagation_settle_s']} s after that), as a switch finds them "
            f"in production.",
        ]
    rel = results["release"]
    lines += [
        "",
        f"## Release serving ({s['library_bytes']:,} byte fusion-client-sdk.js, wrk -t1 "
        f"-c{s['file_connections']}, best of {s['rounds']} alternating rounds)",
        "",
        "| server | req/s | every round | MB/s | p99 ms | errors |",
        "| --- | ---: | --- | ---: | ---: | ---: |",
    ]
    for key, label in (("router", "router /v/{release}/..."), ("nginx", "nginx static file")):
        row = rel.get(key)
        if row is None:
            note = rel.get("note", "n/a") if key == "router" else "n/a"
            lines.append(f"| {label} | {note} | | | | |")
            continue
        every = _rounds(results.get("release_rounds", {}).get(key, []))
        lines.append(
            f"| {label} | {row['rps']:.0f} | {every} | {row['mb_per_s']:.0f} | "
            f"{row['p99_ms']:.2f} | {row['errors']} |"
        )
    lines.append(f"\nRouter / nginx: {_fmt(ratio['release_router/nginx_static'])}.")
    rss = results["rss_kib"]
    w2 = ", ".join(_fmt(x) for x in rss.get("router_w2_workers") or []) or "n/a"
    lines += [
        "",
        "## Peak RSS (VmHWM)",
        "",
        f"- router, 1 worker, after the latency, throughput and release rows: "
        f"{_fmt(rss.get('router_w1'))} KiB",
        f"- router, 2 workers, each worker: {w2} KiB "
        f"(supervisor {_fmt(rss.get('router_w2_supervisor'))} KiB)",
    ]
    lines += _soak_lines(results)
    m = results["machine"]
    pin = results["pinning"]
    lines += [
        "",
        "## Machine",
        "",
        f"- CPU: {m['cpu_model']}, {m['cpus']} CPUs; kernel {m['kernel']}",
        f"- Python {m['python']}, aiohttp {m['aiohttp']}, uvloop {m['uvloop']}, "
        f"redis-py {m['redis_py']}; token-router {m['token_router']} at {m['git']}",
        f"- nginx {m['nginx']}, {m['wrk']}, {m['redis']}",
        f"- pinning (taskset): proxy under test on CPU {pin['proxy_under_test']}, "
        f"wrk/generator/gateways/Redis/harness on CPU {pin['everything_else']}, "
        f"--workers 2 on CPUs {pin['router_workers_2']}",
    ]
    if results["errors"]:
        lines += ["", "## Rows that failed", ""]
        lines += [f"- {k}: {v}" for k, v in results["errors"].items()]
    if results["notes"]:
        lines += ["", "## Notes", ""]
        lines += [f"- {n}" for n in results["notes"]]
    return "\n".join(lines) + "\n"
