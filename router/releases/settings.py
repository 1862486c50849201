"""The release keys of the static configuration, checked together at start, and where the
release archive lives."""

from __future__ import annotations

import os
from pathlib import Path

from router.config import Config
from router.errors import ConfigError
from router.proxy.paths import is_library_path
from router.releases.archive import check_writable, default_release_dir

DAY = 86_400.0


def check_release_config(config: Config) -> None:
    """Release keys that only make sense together (raised at start, as a ConfigError)."""
    r = config.router
    for path in r.release_paths:
        if not is_library_path(path):
            raise ConfigError(
                "router.release_paths",
                f"{path!r} is not a library path (/gateway/<name>.js or /assistserver/sdk/web/...)",
            )
    if r.release_paths:
        check_writable(release_dir(config))
    if r.release_check_interval >= r.release_retention_days * DAY:
        raise ConfigError(
            "router.release_check_interval",
            "must be shorter than release_retention_days, or active releases would expire",
        )


def release_dir(config: Config) -> Path:
    r = config.router
    return Path(r.release_dir) if r.release_dir else default_release_dir(os.environ)
