"""The certificate policy for a system's gateway, shared by everything that talks to one.

The proxy's pool, the gateway prober (health, switch gates, counts) and the upgrade's checks
all reach a gateway with the same policy, so a CA or `tls_verify` setting means the same everywhere.
"""

from __future__ import annotations

import ssl

from router.config import SystemConfig


def gateway_ssl(system: SystemConfig) -> ssl.SSLContext | bool:
    """The certificate policy for a system's gateway: aiohttp's `ssl=` value.

    Verified by default; against a private CA with `ca_file`; unchecked only with
    `tls_verify = false`. Used by the proxy's pool and by the gateway prober alike.
    """
    if not system.gateway.startswith("https"):
        return True
    if not system.tls_verify:
        return False
    if system.ca_file:
        return ssl.create_default_context(cafile=system.ca_file)
    return True
