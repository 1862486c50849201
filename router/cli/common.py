"""What every command shares: the parser class, config and store opening, small formatters."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import shlex
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import NoReturn, TypeAlias

import uvloop

from router import cancellation
from router.config import Config, load_config
from router.errors import ConfigError, UsageError
from router.logs import setup_logging
from router.printable import printable
from router.state.connect import open_store
from router.state.keys import Keys
from router.state.sentinel import redis_target
from router.state.snapshot import Snapshot
from router.state.store import AuditEntry, StateStore
from router.switching import operations
from router.switching.gates import Gates
from router.switching.outcomes import Confirmation, SwitchOutcome
from router.systems.drain import DrainHistory
from router.systems.prober import GatewayProber
from router.systems.reports import SystemReport, read_counts, reports

PROG = "token-router"
DEFAULT_CONFIG = "router.toml"
CONFIG_ENV = "TOKENROUTER_CONFIG"
# `status` when <prefix>:active holds a value naming no configured system: the routers keep
# routing (fail-static), but an operator must act. Distinct from 2 (bad input or Redis
# unavailable) and 3 (a safety gate refused a change), so a monitor can tell them apart.
EXIT_REFUSED_VALUE = 4
# A change (switch, undo, rollout start/step/promote/abort) that some instance live during
# the wait has not applied within router.confirm_timeout: written, but not done, since that
# instance may still route on the previous state. Not 0, and apart from 3 (nothing changed).
EXIT_NOT_APPLIED = 5
# A command ended by Ctrl-C, as a shell reports a process stopped by SIGINT.
EXIT_INTERRUPTED = 130


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error (the contract: one clear line, exit 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# What `add_subparsers()` returns: each command module adds its parser to it.
Subcommands: TypeAlias = "argparse._SubParsersAction[Parser]"


def run_async(main: Awaitable[int]) -> int:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)  # type: ignore[arg-type]


def async_command(
    main: Callable[[argparse.Namespace], Awaitable[int]],
) -> Callable[[argparse.Namespace], int]:
    def command(args: argparse.Namespace) -> int:
        setup_logging("text", "debug" if args.verbose else "error")
        # Ctrl-C recorded for the commands that wait (upgrade, drill, drain-wait): raises
        # cancellation.Interrupted, which main() in router/cli turns into exit 130.
        return run_async(cancellation.guard(main(args)))

    return command


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be greater than 0")
    return value


def tcp_port(text: str) -> int:
    """A port to listen on: 0 (any free port) to 65535, never silently wrapped."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a TCP port (0-65535; 0 = any free port)")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


# --- config and store ----------------------------------------------------------------------


def config_source(arg: str | None) -> tuple[str | None, str]:
    """(path, where it came from): --config, else $TOKENROUTER_CONFIG, else ./router.toml
    when present, else (None, ...): the environment alone."""
    if arg:
        return arg, "--config"
    env = os.environ.get(CONFIG_ENV)
    if env:
        return env, f"${CONFIG_ENV}"
    if Path(DEFAULT_CONFIG).is_file():
        return DEFAULT_CONFIG, f"./{DEFAULT_CONFIG}"
    return None, ""


def config_path(arg: str | None) -> str | None:
    return config_source(arg)[0]


def read_config(args: argparse.Namespace) -> Config:
    path, source = config_source(args.config)
    try:
        return load_config(path, os.environ)
    except ConfigError as exc:
        if path is None and exc.key == "systems":
            # Nothing configured at all: say where a file was looked for, not just that
            # no system is defined (which reads as a broken file that does not exist).
            raise ConfigError(
                "--config",
                f"no configuration found: no --config given, ${CONFIG_ENV} not set, and no "
                f"{DEFAULT_CONFIG} in {Path.cwd()} (nor TOKENROUTER_SYSTEMS_* variables)",
            ) from None
        if exc.key == "--config" and source != "--config":
            raise ConfigError(source, str(exc).removeprefix("--config: ")) from None
        raise


def config_hint(args: argparse.Namespace) -> str:
    """` --config <absolute path>` for a command printed as a hint, so it works as printed
    from any directory and shell; empty when the configuration is environment-only."""
    path, _ = config_source(args.config)
    return "" if path is None else f" --config {shlex.quote(str(Path(path).resolve()))}"


def require_redis(config: Config, api: str) -> None:
    """CLI commands work on the shared Redis; memory:// state is only inside the router."""
    if config.router.redis_url.startswith("memory://"):
        raise UsageError(
            "router.redis_url is memory://, which lives inside the router process; "
            f"use its admin API ({api}) or configure Redis"
        )


def shared_store(config: Config) -> StateStore:
    require_redis(config, "POST /api/switch, /api/undo, /api/rollout")
    r = config.router
    return open_store(
        redis_target(r), Keys(r.key_prefix), timeout=r.redis_timeout, keyspace_events=False
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


# --- state as the routers see it -----------------------------------------------------------


async def read_snapshot(store: StateStore, config: Config) -> Snapshot:
    return operations.snapshot_of(await store.read_state(), config)


async def read_reports(
    store: StateStore,
    config: Config,
    prober: GatewayProber,
    history: DrainHistory | None = None,
) -> tuple[Snapshot, list[SystemReport]]:
    """Every system's report through the one drain function (router/systems/drain.py), with the
    gateways' own counts probed now; `history` (drain-wait) yields the trend."""
    snapshot = await read_snapshot(store, config)
    # An error here leaves the routers' counts unknown (shown as "?", never "drained"); an
    # unreachable store already failed in read_snapshot.
    counts, previewing, _ = await read_counts(store, config.system_ids)
    probes = await prober.gateway_counts(max_age=0.0)
    return snapshot, reports(config, snapshot, counts, previewing, probes, history)


def audit_line(entry: AuditEntry) -> str:
    """One audit entry as `history` and `status` print it."""
    if entry.action in operations.SWITCH_ACTIONS or entry.action.startswith(("rollout", "watch")):
        what = f"{entry.action} {entry.from_ or '(none)'} -> {entry.to}"
    else:
        what = f"{entry.to} {entry.action}"
    line = f"{when(entry.time)}  {what:<28}  {entry.source}"
    if entry.forced:
        line += "  FORCED"
    if entry.reason:
        line += f"  ({entry.reason})"
    return line


# --- guarded changes -----------------------------------------------------------------------


class Context:
    """What a guarded command works with: config, the shared store, the gateway prober and
    the gates (fingerprinting as `releases refresh` does)."""

    def __init__(self, config: Config, store: StateStore) -> None:
        self.config = config
        self.store = store
        self.prober = GatewayProber(config.systems)
        self.gates = Gates(self.prober, fingerprint=self._fingerprint)

    async def _fingerprint(self, system: str) -> str:
        from router.releases.service import fingerprint_now

        return await fingerprint_now(self.config, system)

    @classmethod
    def open(cls, args: argparse.Namespace) -> Context:
        config = read_config(args)
        return cls(config, shared_store(config))

    async def close(self) -> None:
        await self.prober.close()
        await self.store.close()

    async def confirm(self, generation: int) -> Confirmation:
        """Wait until every live router instance applied `generation` (bounded)."""
        r = self.config.router
        return await operations.confirm(
            self.store, generation, timeout=r.confirm_timeout, heartbeat=r.heartbeat_interval
        )

    async def confirmed(self, outcome: SwitchOutcome) -> SwitchOutcome:
        if not outcome.changed:
            return outcome
        return replace(outcome, confirmation=await self.confirm(outcome.generation))


def applied_everywhere(confirmation: Confirmation | None, args: argparse.Namespace) -> int:
    """0 when every live instance applied the change; else one line naming the laggards on
    stderr and EXIT_NOT_APPLIED (the change is written, so not a refusal)."""
    if confirmation is None or confirmation.complete:
        return 0
    silent = (
        f" ({', '.join(confirmation.silent)} stopped heartbeating)" if confirmation.silent else ""
    )
    print(
        f"{PROG}: not applied by every live router instance within "
        f"{confirmation.elapsed_ms / 1000:.1f} s: {', '.join(confirmation.laggards)}{silent} "
        f"may still route on the previous state; see `{PROG} status{config_hint(args)}`, "
        "restart a stuck instance",
        file=sys.stderr,
    )
    return EXIT_NOT_APPLIED


async def with_context(args: argparse.Namespace, body: Callable[[Context], Awaitable[int]]) -> int:
    ctx = Context.open(args)
    try:
        return await body(ctx)
    finally:
        await ctx.close()


def add_guard_flags(p: argparse.ArgumentParser, *, expect: bool = False) -> None:
    if expect:
        p.add_argument(
            "--expect",
            metavar="CURRENT",
            help="compare-and-set: refused (exit 3) unless CURRENT is still the active system",
        )
    p.add_argument(
        "--force",
        action="store_true",
        help="override the gates (offline, health; never --expect); recorded in the audit",
    )
    p.add_argument("--reason", metavar="TEXT", type=printable, help="why, for the audit log")
