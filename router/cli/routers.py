"""What `status` asks the routers' admin API (`GET /api/status` on the configured
`router.admin_listen`, or each `--router URL`).

While Redis is away: what each router routes on. The routers keep routing on their last
known state (fail-static), so the CLI asks them instead of ending with one error line: an
operator at 3am sees that traffic still flows, on which system, and whether the routers
agree. `status` exits 4 (degraded).

With Redis: the drain trend. A one-shot `status` has sampled nothing, while a router's admin
listener samples the counts every 2 s during a drain; `trend_from` takes that router's rate,
estimate and stall (its view's own fields) so `status` says what the page says.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Sequence
from typing import Any

import aiohttp

from router.config import Config, check_listen
from router.errors import StoreUnavailable
from router.systems.drain import Trend, measured_trend

TIMEOUT = 3.0
# Asked beside the store's reads by every one-shot `status`: a router that does not answer
# quickly costs the trend, not the status.
TREND_TIMEOUT = 2.0


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


async def _get_status(
    session: aiohttp.ClientSession, url: str, token: str | None
) -> tuple[dict[str, Any] | None, str]:
    """A router's `/api/status` document, or why there is none."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        async with session.get(url.rstrip("/") + "/api/status", headers=headers) as resp:
            if resp.status != 200:
                error = f"GET /api/status answered {resp.status}"
                if resp.status == 401:
                    error += " (no admin token in this configuration fits it)"
                return None, error
            doc = await resp.json()
    except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
        return None, f"{exc.__class__.__name__}: {exc}".rstrip(": ")
    if not isinstance(doc, dict):
        return None, "GET /api/status answered no JSON object"
    return doc, ""


async def _ask(session: aiohttp.ClientSession, url: str, token: str | None) -> dict[str, Any]:
    answer: dict[str, Any] = {"url": url}
    doc, error = await _get_status(session, url, token)
    if doc is None:
        answer["error"] = error
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


def default_urls(config: Config) -> list[str]:
    """The configured admin listener, unless it is port 0 (any free port: nobody can know
    where it listens)."""
    _, port = check_listen("router.admin_listen", config.router.admin_listen)
    return [admin_url(config)] if port else []


def short(url: str) -> str:
    return url.removeprefix("http://").removeprefix("https://").rstrip("/")


async def trend_from(
    config: Config, urls: Sequence[str], live: Collection[str]
) -> tuple[dict[str, Trend], dict[str, Any]]:
    """The drain trend of the first router of `urls` (in that order) that answers and is one
    of `live` (the live instances of this store's namespace: a router on another
    Redis or namespace measures other counts), as (system -> trend, where it came from).
    No router: ({}, the reason), and `status` says "measuring the rate"."""
    if not urls:
        return {}, {
            "source": None,
            "asked": [],
            "error": "no router to ask (router.admin_listen is port 0; give --router URL)",
        }
    token = _token(config)
    timeout = aiohttp.ClientTimeout(total=TREND_TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        answers = await asyncio.gather(*(_get_status(session, url, token) for url in urls))
    errors = []
    for url, (doc, error) in zip(urls, answers, strict=True):
        if doc is None:
            errors.append(f"{short(url)}: {error}")
            continue
        instance = doc.get("instance")
        if instance not in live:
            errors.append(f"{short(url)}: instance {instance} is not live in this store")
            continue
        measured = {
            str(s["id"]): measured_trend(s)
            for s in doc.get("systems") or ()
            if isinstance(s, dict) and s.get("id") in config.systems
        }
        return measured, {"source": "router", "url": url, "instance": instance}
    return {}, {"source": None, "asked": list(urls), "error": "; ".join(errors)}


def trend_line(trend: dict[str, Any]) -> str:
    """Where `status`'s DRAIN words came from, in a word."""
    if trend.get("source") == "router":
        return f"trend from router {short(trend['url'])}"
    if trend.get("source") == "watch":
        return "trend measured by this --watch"
    return (
        f"no router's trend ({trend['error']}); a one-shot status measures no rate: "
        "give --router URL, or use status --watch"
    )
