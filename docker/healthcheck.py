"""HEALTHCHECK of the token-router image: GET /healthz on the admin listener, exit 0 or 1.

The slim base image has no curl, so this is Python's own urllib. The admin address comes
from the same configuration the server reads (./router.toml in the working directory or
$TOKENROUTER_CONFIG, then TOKENROUTER_* variables, which win), so the check follows a
moved `admin_listen` without a second setting. Only router.config is imported: it needs
nothing beyond the standard library, so a check every few seconds stays cheap.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

from router.config import check_listen, load_config
from router.errors import RouterError

TIMEOUT = 2.0
DEFAULT_CONFIG = "router.toml"  # as router.cli.common.config_path, without importing the CLI


def config_path() -> str | None:
    env = os.environ.get("TOKENROUTER_CONFIG")
    if env:
        return env
    return DEFAULT_CONFIG if Path(DEFAULT_CONFIG).is_file() else None


def healthz_url() -> str:
    config = load_config(config_path(), os.environ)
    host, port = check_listen("router.admin_listen", config.router.admin_listen)
    # A wildcard bind is reached on loopback from inside the container.
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/healthz"


def main() -> int:
    try:
        url = healthz_url()
    except RouterError as exc:
        print(f"healthcheck: bad configuration: {exc}", file=sys.stderr)
        return 1
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as resp:  # noqa: S310 (loopback)
            if resp.status == 200:
                return 0
            print(f"healthcheck: {url} answered {resp.status}", file=sys.stderr)
    except urllib.error.HTTPError as exc:
        print(f"healthcheck: {url} answered {exc.code}", file=sys.stderr)
    except OSError as exc:
        print(f"healthcheck: {url}: {exc}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
