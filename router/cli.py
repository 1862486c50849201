"""`token-router`: the command line.

Every user error (bad config, unknown system, unreachable Redis, ...) is one line on stderr
and exit status 2; a traceback means a bug in token-router, never a mistake of the user.
Commands that change state talk to Redis directly, through the same atomic scripts as the
routers, so their changes are audited like any other.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import orjson
import uvloop

from router import __version__
from router.config import Config, load_config
from router.errors import RouterError, StoreUnavailable, UsageError
from router.gateways.reports import SystemReport, merge_probes, read_counts, reports
from router.gateways.stats import probe_all
from router.keys import Keys
from router.logs import setup_logging
from router.state import Snapshot, build_snapshot
from router.store import AuditEntry, StateStore, open_store

PROG = "token-router"
DEFAULT_CONFIG = "router.toml"
# prometheus_client's multiprocess directory variable (router/metrics.py).
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error (the contract: one clear line, exit 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def run_async(main: Awaitable[int]) -> int:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)  # type: ignore[arg-type]


# --- config and store ----------------------------------------------------------------------


def config_path(arg: str | None) -> str | None:
    """--config, else $TOKENROUTER_CONFIG, else ./router.toml when present, else env only."""
    if arg:
        return arg
    env = os.environ.get("TOKENROUTER_CONFIG")
    if env:
        return env
    return DEFAULT_CONFIG if Path(DEFAULT_CONFIG).is_file() else None


def read_config(args: argparse.Namespace) -> Config:
    return load_config(config_path(args.config), os.environ)


def require_redis(config: Config, api: str) -> None:
    """CLI commands work on the shared Redis; memory:// state is only inside the router."""
    if config.router.redis_url.startswith("memory://"):
        raise UsageError(
            "router.redis_url is memory://, which lives inside the router process; "
            f"use its admin API ({api}) or configure Redis"
        )


def shared_store(config: Config) -> StateStore:
    require_redis(config, "POST /api/switch")
    r = config.router
    return open_store(
        r.redis_url, Keys(r.key_prefix), timeout=r.redis_timeout, keyspace_events=False
    )


def known_system(config: Config, system: str) -> str:
    if system not in config.systems:
        raise UsageError(
            f"unknown system {system!r}; configured systems: {', '.join(config.systems)}"
        )
    return system


def operator() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"cli ({user}@{socket.gethostname()})"


def when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


# --- serve, demo, simulate-gateway ---------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    config = read_config(args)
    setup_logging(config.router.log_format, "debug" if args.verbose else config.router.log_level)
    metrics_dir = _prepare_metrics_dir(args.workers)
    from router.serve import serve

    try:
        return serve(config, args.workers)
    finally:
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _prepare_metrics_dir(workers: int) -> str | None:
    """With several workers, metrics are shared through files (prometheus_client's
    multiprocess mode), configured by an environment variable that prometheus_client reads
    when it is imported: so this runs before anything imports it (router.serve does)."""
    if workers <= 1 or os.environ.get(MULTIPROC_ENV):
        return None
    if "prometheus_client" in sys.modules:  # pragma: no cover (an import-order bug)
        raise RuntimeError("prometheus_client was imported before its multiprocess set-up")
    directory = tempfile.mkdtemp(prefix="token-router-metrics-")
    os.environ[MULTIPROC_ENV] = directory
    return directory


def cmd_demo(args: argparse.Namespace) -> int:
    from router.demo import run_demo

    setup_logging("text", "debug" if args.verbose else "warning")
    return run_async(run_demo(args))


def cmd_simulate(args: argparse.Namespace) -> int:
    from router.simulator.gateway import run_gateway

    setup_logging("text", "debug" if args.verbose else "info")

    async def main() -> int:
        task = asyncio.create_task(run_gateway(args.name, args.version, args.host, args.port))
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, task.cancel)
        try:
            await task
        except asyncio.CancelledError:
            pass
        except OSError as exc:
            raise UsageError(
                f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}"
            ) from None
        return 0

    return run_async(main())


# --- status, switch, offline/online, history, drain-wait -----------------------------------


async def _snapshot(store: StateStore, config: Config) -> Snapshot:
    stored = await store.read_state()
    known = config.system_ids
    fallback = stored.recorded if stored.recorded in known else config.default_system
    assert fallback is not None
    return build_snapshot(stored, known, Snapshot(active=fallback), time.time())


async def _reports(
    store: StateStore, config: Config
) -> tuple[Snapshot, list[SystemReport], dict[str, tuple[int | None, str]]]:
    snapshot = await _snapshot(store, config)
    counts, previewing, error = await read_counts(store, config.system_ids)
    if error:
        raise StoreUnavailable(error)
    probes = await probe_all(config.systems)
    return snapshot, reports(config, snapshot, merge_probes(counts, probes), previewing), probes


def _audit_line(entry: AuditEntry) -> str:
    if entry.action == "switch":
        what = f"{entry.from_ or '(none)'} -> {entry.to}"
    else:
        what = f"{entry.to} {entry.action}"
    return f"{when(entry.time)}  {what:<16}  {entry.source}"


async def status_main(args: argparse.Namespace) -> int:
    config = read_config(args)
    store = shared_store(config)
    try:
        snapshot, rows, probes = await _reports(store, config)
        entries = await store.audit(5)
    finally:
        await store.close()
    if args.json:
        doc: dict[str, Any] = {
            "active": snapshot.active,
            "refused": None if snapshot.refused is None else snapshot.refused.value,
            "systems": [r.to_json() for r in rows],
            "history": [e.to_json() for e in entries],
        }
        for row in doc["systems"]:
            if row["id"] in probes:
                row["gateway_open"], row["probe_error"] = probes[row["id"]]
        print(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
        return 0
    print(f"store   {store.description}")
    print(f"active  {snapshot.active}")
    if snapshot.refused is not None:
        print(
            f"REFUSED {Keys(config.router.key_prefix).active} holds {snapshot.refused.value!r}, "
            f"which names no configured system; routers stay on {snapshot.active!r}"
        )
    print()
    print(f"{'SYSTEM':<10} {'STATE':<9} {'OPEN':>6}  {'VERSION':<10} PUBLIC URL")
    for r in rows:
        open_text = "?" if r.open is None else str(r.open)
        print(f"{r.id:<10} {r.state:<9} {open_text:>6}  {r.version or '-':<10} {r.public_url}")
        if r.id in probes and probes[r.id][1]:
            print(f"{'':<10} probe: {probes[r.id][1]}")
    if entries:
        print("\nlast changes:")
        for entry in entries:
            print("  " + _audit_line(entry))
    return 0


async def switch_main(args: argparse.Namespace) -> int:
    config = read_config(args)
    system = known_system(config, args.system)
    store = shared_store(config)
    try:
        previous = await store.switch(system, operator(), config.system_ids)
    finally:
        await store.close()
    if previous == system:
        print(f"{system} was already active; nothing changed")
        return 0
    print(f"switched: new sessions go to {system} (before: {previous or 'none'})")
    if previous:
        print(
            f"every router follows within a second; `{PROG} drain-wait {previous}` tells when "
            f"{previous} holds nothing more"
        )
    return 0


async def offline_main(args: argparse.Namespace) -> int:
    config = read_config(args)
    system = known_system(config, args.system)
    offline = args.command == "offline"
    store = shared_store(config)
    try:
        snapshot = await _snapshot(store, config)
        if offline and snapshot.active == system and not args.force:
            raise UsageError(
                f"{system} is the active system: marking it offline refuses every new session; "
                f"switch first, or pass --force"
            )
        await store.set_offline(system, offline, operator())
    finally:
        await store.close()
    if offline:
        print(f"{system} is offline: its requests get 503 at once; switching to it is refused")
    else:
        print(f"{system} is online again")
    return 0


async def history_main(args: argparse.Namespace) -> int:
    config = read_config(args)
    store = shared_store(config)
    try:
        entries = await store.audit(args.count)
    finally:
        await store.close()
    if args.json:
        print(orjson.dumps([e.to_json() for e in entries], option=orjson.OPT_INDENT_2).decode())
        return 0
    if not entries:
        print("no switches recorded yet")
    for entry in reversed(entries):
        print(_audit_line(entry))
    return 0


async def drain_wait_main(args: argparse.Namespace) -> int:
    config = read_config(args)
    system = known_system(config, args.system)
    store = shared_store(config)
    deadline = time.monotonic() + args.timeout
    last_line = ""
    last_print = 0.0
    try:
        while True:
            try:
                snapshot, rows, _ = await _reports(store, config)
                row = next(r for r in rows if r.id == system)
                line = f"{system}: {row.state}, {'?' if row.open is None else row.open} open"
                if snapshot.active == system:
                    line += f" (still active: `{PROG} switch` to another system first)"
            except StoreUnavailable as exc:
                row = None
                line = f"{system}: unknown ({exc})"
            now = time.monotonic()
            if line != last_line or now - last_print >= 10:
                print(f"{when(time.time())}  {line}", flush=True)
                last_line, last_print = line, now
            if row is not None and row.state in ("drained", "offline") and row.open == 0:
                print(f"{system} is drained: nothing the router issued is open on it")
                return 0
            if now >= deadline:
                print(
                    f"{PROG}: timed out after {args.timeout:g} s: {line}",
                    file=sys.stderr,
                )
                return 1
            await asyncio.sleep(min(args.interval, max(0.0, deadline - now)))
    finally:
        await store.close()


def _release_config(args: argparse.Namespace) -> Config:
    config = read_config(args)
    require_redis(config, "GET /api/releases, POST /api/releases/refresh")
    return config


async def releases_list_main(args: argparse.Namespace) -> int:
    from router.releases.model import human_size
    from router.releases.store import open_release_store

    config = _release_config(args)
    r = config.router
    store = open_release_store(r.redis_url, Keys(r.key_prefix), timeout=r.redis_timeout)
    try:
        metas = await store.list(time.time())
        serving = await store.system_releases(config.system_ids)
    finally:
        await store.close()
    if args.json:
        doc = {"releases": [m.to_json() for m in metas], "systems": serving}
        print(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
        return 0
    if not metas:
        print(f"no releases stored yet (`{PROG} releases refresh` checks the systems now)")
        return 0
    print(
        f"{'RELEASE':<16}  {'LABEL':<10} {'FILES':>5} {'SIZE':>9}  {'LAST SYSTEM':<11}  "
        f"{'LAST ACTIVE':<19}  {'EXPIRES':<19}  SERVED NOW BY"
    )
    for m in metas:
        now_by = ",".join(s for s, rel in serving.items() if rel == m.id) or "-"
        print(
            f"{m.id:<16}  {m.label or '-':<10} {len(m.files):>5} {human_size(m.size):>9}  "
            f"{m.last_system:<11}  {when(m.last_active):<19}  {when(m.expires):<19}  {now_by}"
        )
    return 0


async def releases_refresh_main(args: argparse.Namespace) -> int:
    from router.releases.model import human_size
    from router.releases.service import refresh_once

    config = _release_config(args)
    systems = [known_system(config, s) for s in args.system or []]
    results = await refresh_once(config, systems or None)
    if args.json:
        print(orjson.dumps([r.to_json() for r in results], option=orjson.OPT_INDENT_2).decode())
    for r in [] if args.json else results:
        if r.error:
            print(f"{r.system}: error: {r.error}")
            continue
        what = f"new release (before: {r.previous or 'none'})" if r.changed else "unchanged"
        stored = ", stored now" if r.stored else ""
        print(
            f"{r.system}: {r.release} ({r.label or 'no label'}), {r.files} files, "
            f"{human_size(r.size)}: {what}{stored}"
        )
    return 1 if any(r.error for r in results) else 0


def _async_command(
    main: Callable[[argparse.Namespace], Awaitable[int]],
) -> Callable[[argparse.Namespace], int]:
    def command(args: argparse.Namespace) -> int:
        setup_logging("text", "debug" if args.verbose else "error")
        return run_async(main(args))

    return command


# --- parser --------------------------------------------------------------------------------


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be greater than 0")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def build_parser() -> argparse.ArgumentParser:
    common = Parser(add_help=False)
    common.add_argument(
        "--config",
        metavar="PATH",
        help="TOML configuration (default: $TOKENROUTER_CONFIG, else ./router.toml if present; "
        "every key can also come from TOKENROUTER_* environment variables)",
    )
    common.add_argument("-v", "--verbose", action="store_true", help="log debug details")

    parser = Parser(
        prog=PROG,
        description="Blue/green switching proxy for FCSDK Web Gateway and Live Assist systems. "
        "New sessions go to the system named in Redis (<prefix>:active); everything that "
        "belongs to another system keeps reaching it.",
        epilog=f"Quick start: `{PROG} demo`. Switch with `{PROG} switch b` or "
        "`redis-cli SET tokenrouter:active b`.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True

    p = sub.add_parser(
        "serve",
        parents=[common],
        help="run the proxy and admin listeners",
        description="Run the proxy and admin listeners until SIGTERM/SIGINT; "
        "SIGTERM finishes requests in flight (router.shutdown_timeout).",
    )
    p.add_argument(
        "--workers",
        type=_positive_int,
        default=1,
        metavar="N",
        help="processes sharing the ports with SO_REUSEPORT (default 1; needs Redis)",
    )
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "demo",
        parents=[common],
        help="run two simulated systems, the router and the admin page on this machine",
        description="Zero-setup trial: simulated systems A (1.0) and B (2.0), the "
        "router and the admin listener. Uses Redis when --redis-url/REDIS_URL is "
        "given or redis-server is on PATH (started on a free port, stopped on "
        "exit), else the in-process memory:// store. Ctrl-C stops everything.",
    )
    p.add_argument(
        "--redis-url",
        default=os.environ.get("REDIS_URL"),
        help="use this Redis instead of starting one",
    )
    p.add_argument("--memory", action="store_true", help="use memory:// even if Redis is at hand")
    p.add_argument("--port", type=int, default=8080, help="proxy port (default 8080; 0 = any)")
    p.add_argument(
        "--admin-port", type=int, default=8081, help="admin port (default 8081; 0 = any)"
    )
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "status", parents=[common], help="show the active system, drain state and recent switches"
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_async_command(status_main))

    for name, aliases in (("switch", ["flip"]),):
        p = sub.add_parser(
            name,
            aliases=aliases,
            parents=[common],
            help="send new sessions to SYSTEM (audited)",
            description="Make SYSTEM the active system. Refused when SYSTEM is "
            "offline. Equivalent to `redis-cli SET <prefix>:active SYSTEM`, "
            "but recorded with your user and host.",
        )
        p.add_argument("system", metavar="SYSTEM")
        p.set_defaults(func=_async_command(switch_main))

    p = sub.add_parser(
        "drain-wait",
        parents=[common],
        help="wait until SYSTEM holds no open sessions or short codes",
        description="Print SYSTEM's drain progress until nothing the routers "
        "issued on it is open (and its stats_url, if configured, agrees). Exit "
        "0 when drained, 1 on timeout.",
    )
    p.add_argument("system", metavar="SYSTEM")
    p.add_argument(
        "--timeout",
        type=_positive_float,
        default=3600.0,
        metavar="S",
        help="give up after S seconds (default 3600)",
    )
    p.add_argument(
        "--interval",
        type=_positive_float,
        default=2.0,
        metavar="S",
        help="seconds between checks (default 2)",
    )
    p.set_defaults(func=_async_command(drain_wait_main))

    for name, text in (
        ("offline", "answer SYSTEM's requests with 503 at once"),
        ("online", "bring SYSTEM back after `offline`"),
    ):
        p = sub.add_parser(name, parents=[common], help=text, description=text + " (audited).")
        p.add_argument("system", metavar="SYSTEM")
        if name == "offline":
            p.add_argument(
                "--force", action="store_true", help="allow marking the active system offline"
            )
        else:
            p.set_defaults(force=False)
        p.set_defaults(func=_async_command(offline_main))

    p = sub.add_parser("history", parents=[common], help="print the audit log of switches")
    p.add_argument("--count", type=_positive_int, default=20, help="entries (default 20)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_async_command(history_main))

    p = sub.add_parser(
        "simulate-gateway",
        parents=[common],
        help="run one simulated FCSDK/Live Assist system",
        description="One simulated system (SPEC section 5) for tests, demos and "
        "load tests; /_sim/fail, /_sim/slow and /_sim/version control it.",
    )
    p.add_argument("--name", default="a", help="system name, prefixes its tokens (default a)")
    p.add_argument("--version", default="1.0", help="library version it serves (default 1.0)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=9001, help="port (default 9001; 0 = any)")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser(
        "releases",
        help="list the stored client-library releases, or check the systems now",
        description="Releases are the version-pinned client libraries served under "
        "/v/{release}/...: one per distinct set of library bytes a system served.",
    )
    rsub = p.add_subparsers(dest="releases_command", metavar="ACTION", parser_class=Parser)
    rsub.required = True
    q = rsub.add_parser(
        "list",
        parents=[common],
        help="show releases: size, the system that last served them, expiry",
    )
    q.add_argument("--json", action="store_true", help="machine-readable output")
    q.set_defaults(func=_async_command(releases_list_main))
    q = rsub.add_parser(
        "refresh",
        parents=[common],
        help="fingerprint the systems' libraries now (running routers follow within a second)",
        description="Fetch every system's library files from here, store a release the "
        "first time its bytes are seen and mark what each system serves. Exit 1 if a "
        "system could not be checked.",
    )
    q.add_argument(
        "--system",
        action="append",
        metavar="SYSTEM",
        help="only this system (repeatable; default: all)",
    )
    q.add_argument("--json", action="store_true", help="machine-readable output")
    q.set_defaults(func=_async_command(releases_refresh_main))

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except RouterError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        logging.shutdown()
