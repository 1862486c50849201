"""`token-router serve`: the proxy and admin listeners."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import sys
import tempfile

from router.cli.common import Parser, Subcommands, positive_int, read_config
from router.config import Config
from router.logs import setup_logging
from router.state.sentinel import check_master, redis_target

# prometheus_client's multiprocess directory variable (router/metrics.py).
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def add_parser(sub: Subcommands, common: Parser) -> None:
    p = sub.add_parser(
        "serve",
        parents=[common],
        help="run the proxy and admin listeners",
        description="Run the proxy and admin listeners until SIGTERM/SIGINT; "
        "SIGTERM finishes requests in flight (router.shutdown_timeout).",
    )
    p.add_argument(
        "--workers",
        type=positive_int,
        default=1,
        metavar="N",
        help="processes sharing the ports with SO_REUSEPORT (default 1; needs Redis)",
    )
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    # Before the configuration is read: checking a system's stats_metric imports
    # prometheus_client's parser (router/config/stats_expressions.py).
    metrics_dir = _prepare_metrics_dir(args.workers)
    try:
        config = read_config(args)
        setup_logging(
            config.router.log_format, "debug" if args.verbose else config.router.log_level
        )
        preflight_sentinels(config)
        from router.server.run import serve

        return serve(config, args.workers)
    finally:
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def preflight_sentinels(config: Config) -> None:
    """With redis_sentinels: refuse to start (exit 2) when the sentinels answer but do not
    know redis_master, a configuration error; start fail-static when none answers."""
    target = redis_target(config.router)
    if isinstance(target, str):
        return
    problem = asyncio.run(check_master(target, config.router.redis_timeout))
    if problem:
        logging.getLogger("router.cli").error("%s; starting fail-static", problem)


def _prepare_metrics_dir(workers: int) -> str | None:
    """With several workers, metrics are shared through files (prometheus_client's
    multiprocess mode), configured by an environment variable that prometheus_client reads
    when it is imported: so this runs before anything imports it (router.server.run does)."""
    if workers <= 1 or os.environ.get(MULTIPROC_ENV):
        return None
    if "prometheus_client" in sys.modules:  # pragma: no cover (an import-order bug)
        raise RuntimeError("prometheus_client was imported before its multiprocess set-up")
    directory = tempfile.mkdtemp(prefix="token-router-metrics-")
    os.environ[MULTIPROC_ENV] = directory
    return directory
