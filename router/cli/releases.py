"""`token-router releases [list|refresh]`: the stored client-library releases (a bare
`releases` lists them, as `git remote` lists remotes)."""

from __future__ import annotations

import argparse
import time

import orjson

from router.cli.common import (
    PROG,
    Parser,
    Subcommands,
    async_command,
    config_hint,
    known_system,
    read_config,
    require_redis,
    when,
)
from router.config import Config
from router.state.keys import Keys


def add_parser(sub: Subcommands, common: Parser) -> None:
    p = sub.add_parser(
        "releases",
        help="list the stored client-library releases, or check the systems now",
        description="Releases are the version-pinned client libraries served under "
        "/v/{release}/...: one per distinct set of library bytes a system served. Without an "
        "ACTION: list.",
    )
    # A bare `releases` lists. Its options have their own names: argparse lets an ACTION's
    # defaults overwrite the values given before it (`releases --config X list`).
    p.add_argument("--config", dest="releases_config", metavar="PATH", help="as for list")
    p.add_argument("--json", dest="releases_json", action="store_true", help="as for list")
    p.set_defaults(func=async_command(releases_list_main), verbose=False)
    rsub = p.add_subparsers(dest="releases_command", metavar="ACTION", parser_class=Parser)
    q = rsub.add_parser(
        "list",
        parents=[common],
        help="show releases: size, the system that last served them, expiry",
    )
    q.add_argument("--json", action="store_true", help="machine-readable output")
    q.set_defaults(func=async_command(releases_list_main))
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
    q.set_defaults(func=async_command(releases_refresh_main))


def _release_config(args: argparse.Namespace) -> Config:
    args.config = getattr(args, "config", None) or args.releases_config
    args.json = getattr(args, "json", False) or args.releases_json
    config = read_config(args)
    require_redis(config, "GET /api/releases, POST /api/releases/refresh")
    return config


async def releases_list_main(args: argparse.Namespace) -> int:
    from router.releases.model import human_size
    from router.releases.store import open_release_store
    from router.state.sentinel import redis_target

    config = _release_config(args)
    r = config.router
    store = open_release_store(redis_target(r), Keys(r.key_prefix), timeout=r.redis_timeout)
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
        refresh = f"{PROG} releases refresh{config_hint(args)}"
        print(f"no releases stored yet (`{refresh}` checks the systems now)")
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
