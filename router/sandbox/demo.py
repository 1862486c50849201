"""`token-router demo`: the whole product on one machine, no setup.

Two simulated systems (A at 1.0, B at 2.0), the router and the admin listener in this
process; a private redis-server when one is on PATH (stopped by its PID on exit), else the
in-process memory:// store. Prints the URLs, a `curl` that gets a token and the ways to
switch, then runs until Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shlex
import shutil
import signal
import sys
import tempfile
from contextlib import AsyncExitStack
from pathlib import Path

from router.config import build_config
from router.errors import ConfigError
from router.sandbox.stack import HOST, free_port, port_free, private_redis, simulated, write_toml
from router.server.run import RouterServer
from router.state.redis_client import redact

SYSTEMS = (("a", "1.0"), ("b", "2.0"))


def cli_command() -> str:
    """How to run token-router from a shell: `scripts/demo` runs the one in .venv/bin, which
    is not on PATH, so a hint printed as plain `token-router` would fail there."""
    argv0 = Path(sys.argv[0])
    found = shutil.which("token-router")
    if argv0.name == "token-router" and not (found and Path(found).resolve() == argv0.resolve()):
        return shlex.quote(str(argv0.resolve()))
    if found or argv0.name == "token-router":
        return "token-router"
    return f"{shlex.quote(sys.executable)} -m router"


def _pick_port(wanted: int, what: str) -> tuple[int, str]:
    if wanted == 0 or port_free(wanted):
        return wanted, ""
    chosen = free_port()
    return chosen, f"  (port {wanted} is taken, so the {what} uses {chosen})"


async def run_demo(args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    async with AsyncExitStack() as stack:
        gateways = {
            name: (await stack.enter_async_context(simulated(name, version))).url
            for name, version in SYSTEMS
        }
        redis_note = ""
        redis_cli = ""
        binary = shutil.which("redis-server")
        if args.redis_url:
            redis_url = args.redis_url
            redis_note = "(given)"
        elif binary and not args.memory:
            redis = await stack.enter_async_context(private_redis(binary))
            redis_url, pid = redis.url, redis.pid
            redis_note = f"(private redis-server, pid {pid}, stopped on exit)"
            redis_cli = f"redis-cli -p {redis_url.rsplit(':', 1)[1].split('/')[0]}"
        else:
            redis_url = "memory://"
            why = "--memory given" if args.memory else "no redis-server on PATH"
            redis_note = f"(in-process store: {why})"

        proxy_port, proxy_note = _pick_port(args.port, "proxy")
        admin_port, admin_note = _pick_port(args.admin_port, "admin listener")
        # 32 characters from the OS's generator: far beyond the 16 every token needs.
        token = secrets.token_urlsafe(24)
        # The demo's state lives as long as the demo: its release archive too. Removed
        # ignoring errors, as the config directory: an archive write still running in its
        # thread when the demo stops must not turn Ctrl-C into a failure.
        archive = tempfile.mkdtemp(prefix="token-router-demo-archive-")
        stack.callback(shutil.rmtree, archive, True)
        systems = {
            name: {
                "gateway": gateways[name],
                # The simulated system is also what "browsers" would reach.
                "public_url": gateways[name],
                "version": version,
                "stats_url": gateways[name] + "/stats",
            }
            for name, version in SYSTEMS
        }
        router: dict[str, object] = {
            "listen": f"{HOST}:{proxy_port}",
            "admin_listen": f"{HOST}:{admin_port}",
            "redis_url": redis_url,
            "admin_token": token,
            "preview_secret": f"demo-preview-{secrets.token_hex(8)}",
            "cors_origins": "*",
            "access_log": False,
            "release_dir": archive,
            # A trial in minutes: the watch after a switch lasts 30 s, not ten minutes.
            "post_switch_watch": 30,
        }
        raw = {"router": router, "systems": systems}
        config = build_config(raw, {})
        server = RouterServer(config)
        try:
            listeners = await server.start()
        except ConfigError:
            await server.stop()
            raise
        stack.push_async_callback(server.stop)

        config_dir = Path(tempfile.mkdtemp(prefix="token-router-demo-"))
        stack.callback(shutil.rmtree, config_dir, True)
        config_file = config_dir / "router.toml"
        # The ports bound (--port 0 picks any): commands that reach the listeners through
        # the file (`upgrade` checks the proxy at router.listen) find them as printed.
        router["listen"] = listeners.proxy_url.removeprefix("http://")
        router["admin_listen"] = listeners.admin_url.removeprefix("http://")
        write_toml(config_file, raw)

        proxy = listeners.proxy_url
        admin = listeners.admin_url
        active = server.runtime.holder.current.active
        body = '{"webAppId":"demo","urlSchemeDetails":{"secure":true,"host":"x","port":"8443"}}'
        print("token-router demo", flush=True)
        print(f"  proxy     {proxy}{proxy_note}")
        print(f"  admin     {admin}{admin_note}")
        # On a line of its own, and in the commands below after a line break: at 80 columns
        # a terminal would wrap it in the middle, and a copied half is a wrong credential.
        print(f"  admin token: {token}")
        for name, version in SYSTEMS:
            mark = "  <- active" if name == active else ""
            print(f"  system {name}  {gateways[name]}  version {version}{mark}")
        print(f"  store     {redact(redis_url)} {redis_note}")
        print(f"  config    {config_file}")
        print()
        print("Get a token (the answer names the system in X-Token-Router-System):")
        print(
            f"  curl -si -X POST {proxy}/gateway/sessions/session "
            f"-H 'Content-Type: application/json' -d '{body}'"
        )
        auth = f" \\\n    -H 'Authorization: Bearer {token}'"
        if redis_url == "memory://":
            # The CLI and redis-cli work on Redis; this store lives inside this process.
            print("Switch new sessions to b (in-process store: through the admin API or page):")
        else:
            print("Switch new sessions to b, any of:")
            print(f"  {cli_command()} switch b --config {config_file}")
        if redis_cli:
            print(f"  {redis_cli} SET tokenrouter:active b")
        print(f'  curl -s -X POST {admin}/api/switch -d \'{{"system":"b"}}\'{auth}')
        print("Status:")
        print(f"  curl -s {admin}/api/status{auth}")
        print(f"Admin page: {admin}/ (log in with the admin token)")
        print(f"Ctrl-C stops everything (or: kill {os.getpid()}).", flush=True)
        await stop.wait()
        print("\nstopping...", flush=True)
    return 0
