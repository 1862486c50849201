"""`status` while Redis is away: what each router says it routes on, from its admin API.

The routers keep routing on their last known state (fail-static) when Redis is unavailable,
so the CLI asks them (`GET /api/status` on the configured `router.admin_listen`, or each
`--router URL`) instead of ending with one error line: an operator at 3am sees that traffic
still flows, on which system, and whether the routers agree. `status` exits 4 (degraded).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import aiohttp

from router.config import Config, check_listen
from router.errors import StoreUnavailable

TIMEOUT = 3.0


def admin_url(config: Config) -> str:
    """The admin listener as seen from this host (0.0.0.0 / :: mean "this machine")."""
    host, port = check_listen("router.admin_listen", config.router.admin_listen)
    if host in ("0.0.0.0", "", "::"):
        host = "127.0.0.1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _token(config: Config) -> str | None:
    operators = config.router.operators()
    if not operators:
        return None
    return (operators.get("admin") or next(iter(operators.values()))).reveal()


async def _ask(session: aiohttp.ClientSession, url: str, token: str | None) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    answer: dict[str, Any] = {"url": url}
    try:
        async with session.get(url.rstrip("/") + "/api/status", headers=headers) as resp:
            if resp.status != 200:
                answer["error"] = f"GET /api/status answered {resp.status}"
                if resp.status == 401:
                    answer["error"] += " (no admin token in this configuration fits it)"
                return answer
            doc = await resp.json()
    except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
        answer["error"] = f"{exc.__class__.__name__}: {exc}".rstrip(": ")
        return answer
    store = doc.get("store") or {}
    answer.update(
        instance=doc.get("instance"),
        active=doc.get("active"),
        offline=doc.get("offline") or [],
        rollout=doc.get("rollout"),
        refused=doc.get("refused"),
        degraded=bool(store.get("degraded")),
        degraded_since=store.get("degraded_since"),
        last_sync=store.get("last_sync"),
    )
    return answer


async def ask_routers(config: Config, urls: Sequence[str]) -> list[dict[str, Any]]:
    """Each router's answer: what it routes on, or why it did not answer."""
    token = _token(config)
    timeout = aiohttp.ClientTimeout(total=TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        return list(await asyncio.gather(*(_ask(session, url, token) for url in urls)))


async def without_store(
    config: Config, urls: Sequence[str], store: str, error: StoreUnavailable
) -> dict[str, Any]:
    """The `status` document when Redis is unavailable (also `status --json`)."""
    asked = list(urls) or [admin_url(config)]
    answers = await ask_routers(config, asked)
    actives = sorted({a["active"] for a in answers if a.get("active")})
    return {
        "store": store,
        "store_error": str(error),
        "degraded": True,
        "active": actives[0] if len(actives) == 1 else None,
        "agree": len(actives) <= 1,
        "routers": answers,
    }


def _ago(since: float | None, now: float) -> str:
    if not since:
        return ""
    seconds = max(0, int(now - since))
    return f" for {seconds // 60} min {seconds % 60} s" if seconds >= 60 else f" for {seconds} s"


def lines(doc: dict[str, Any], now: float) -> list[str]:
    """`status` as text while Redis is away."""
    out = [
        f"store    UNAVAILABLE: {doc['store_error']}",
        "routers  keep routing on their last known state (fail-static); asked their admin API:",
        "",
        f"{'ROUTER':<28} {'INSTANCE':<24} {'ACTIVE':<7} {'OFFLINE':<9} STORE",
    ]
    for a in doc["routers"]:
        if "error" in a:
            out.append(f"{a['url']:<28} no answer: {a['error']}")
            continue
        offline = ",".join(a["offline"]) or "-"
        store = "degraded" + _ago(a.get("degraded_since"), now) if a["degraded"] else "in sync"
        out.append(
            f"{a['url']:<28} {str(a['instance']):<24} {str(a['active']):<7} {offline:<9} {store}"
        )
    answered = [a for a in doc["routers"] if "error" not in a]
    out.append("")
    if not answered:
        out.append(
            "no router answered: give their admin URLs with --router URL (repeatable), "
            "or check router.admin_listen"
        )
    elif not doc["agree"]:
        out.append("the routers DISAGREE on the active system: check each one's logs")
    else:
        out.append(f"new sessions go to {doc['active']} on every router that answered")
    out.append("switching needs Redis: bring it back (the routers catch up on their own)")
    return out
