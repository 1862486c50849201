"""The layout of `router/` kept honest: floors, no upward import, no import circle.

Every module of `router/` sits on a floor (FLOORS, lowest first). A module imports only from
its own floor or lower ones, and the imports form no circle. Every import counts: module
level, inside functions and under `if TYPE_CHECKING:` alike, because a type-only circle is
still a circle for the reader. `docs/layout.md` is generated from the same data, so the
picture cannot drift: after changing the layout, run `python -m tests.test_layout --write`.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "router"
DOC = ROOT / "docs" / "layout.md"

# (floor, what lives there, modules or packages). A package entry covers its modules unless
# a longer entry names one of them; `router` itself (the version) is its own entry.
FLOORS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    (
        "foundations",
        "errors, Redis key names, logging, task helpers, Ctrl-C for waiting loops, the shape"
        " of library paths, the event-loop probe, the allocator settings, the low-priority"
        " thread and the compressor child for release work, trusted networks and the"
        " credential throttle, operator text made printable",
        (
            "router",
            "router.errors",
            "router.state.keys",
            "router.logs",
            "router.printable",
            "router.tasks",
            "router.interrupts",
            "router.releases.paths",
            "router.server.loop_probe",
            "router.server.allocator",
            "router.releases.background",
            "router.releases.compress_child",
            "router.trust",
            "router.throttle",
        ),
    ),
    (
        "configuration",
        "the static configuration, its listener-clash check and the bundled assets",
        ("router.config", "router.server.addresses", "router.admin.assets"),
    ),
    (
        "clients and pure models",
        "talking to Redis (Sentinel too, and naming a key of the wrong type), gateways and "
        "the compressor child; the release, rollout and post-switch watch models; errors as "
        "HTTP and large bodies without a copy; the simulator",
        (
            "router.state.redis_client",
            "router.state.key_types",
            "router.state.sentinel",
            "router.responses",
            "router.proxy.upstream",
            "router.proxy.http1",
            "router.systems.stats",
            "router.releases.model",
            "router.releases.compression",
            "router.releases.cache",
            "router.state.rollout",
            "router.switching.watch",
            "router.simulator",
            "router.upgrade.plan",
        ),
    ),
    (
        "stores",
        "the state store and the release store; the upgrade document",
        (
            "router.state.store",
            "router.state.scripts",
            "router.state.refusals",
            "router.state.redis_events",
            "router.state.redis_store",
            "router.state.memory_store",
            "router.state.connect",
            "router.releases.store",
            "router.upgrade.journal",
        ),
    ),
    (
        "state and decisions",
        "the state snapshot, routing, affinity, drain, the view every surface renders, "
        "recovery, metrics, watching gateways, "
        "release files and their archive, the switch gates, the instance heartbeat, the traffic "
        "ledger",
        (
            "router.state",
            "router.state.snapshot",
            "router.proxy.routing",
            "router.state.affinity",
            "router.systems.drain",
            "router.state.recovery",
            "router.metrics",
            "router.systems",
            "router.releases.fetch",
            "router.releases.archive",
            "router.releases.serving",
            "router.switching.gates",
            "router.switching.fleet",
            "router.switching.ledger",
        ),
    ),
    (
        "services",
        "the release service (check, follow, hand out); the operator's state changes, the "
        "rollout controller and the post-switch watch; the upgrade procedure",
        ("router.releases", "router.switching", "router.upgrade"),
    ),
    ("runtime", "what one process shares between its two listeners", ("router.runtime",)),
    (
        "handler parts",
        "the proxy handler; the admin listener's sampler, sessions, auth, headers, errors, "
        "templates",
        (
            "router.proxy",
            "router.admin.feed",
            "router.admin.templates",
            "router.admin.session",
            "router.admin.auth",
            "router.admin.headers",
            "router.admin.json_errors",
        ),
    ),
    ("app keys", "every web.AppKey", ("router.admin.app_keys",)),
    (
        "admin handlers",
        "the admin API (operations declared beside their handlers, the OpenAPI document "
        "built from them), the live feed, the page",
        ("router.admin",),
    ),
    ("wiring", "the one wiring point: config to applications", ("router.server.wiring",)),
    ("running", "runners, signals, workers", ("router.server",)),
    ("demo", "the zero-setup trial; the upgrade drill", ("router.demo", "router.drill")),
    ("command line", "token-router and python -m router", ("router.cli", "router.__main__")),
)


def module_files() -> dict[str, Path]:
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The router modules `name` imports, wherever the import statement stands."""
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add(full if full in modules else base)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m in modules and m != name}


def graph() -> dict[str, set[str]]:
    modules = module_files()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def floor_of(module: str) -> int | None:
    best: tuple[int, int] | None = None  # (entry length, floor)
    for floor, (_, _, entries) in enumerate(FLOORS):
        for entry in entries:
            covers = module == entry or (entry != "router" and module.startswith(entry + "."))
            if covers and (best is None or len(entry) > best[0]):
                best = (len(entry), floor)
    return None if best is None else best[1]


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import circle as a path that ends where it starts, or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state and (found := visit(start)) is not None:
            return found
    return None


# --- the picture ---------------------------------------------------------------------------

INTRO = """\
# Layout of `router/`

Generated by `python -m tests.test_layout --write` from the floor list in
`tests/test_layout.py`; `tests/test_layout.py` fails when this file, the floors or the
imports disagree. Do not edit by hand.

Every module sits on a floor. A module imports only from its own floor or lower ones, and
no import circle exists, type-only imports (`if TYPE_CHECKING:`) included. Conventions the
floors rely on:

- **One wiring point.** `router/server/wiring.py` builds the runtime and both aiohttp applications
  and connects the parts (metrics to the state holder and the release cache, the admin
  page's sampler to the prober); the parts take what they need as arguments. `serve.py`
  only runs the result; `app_keys.py` holds every `web.AppKey`.
- **Listeners** are lists of callables on the object that changes (`StateHolder.listeners`,
  `StateHolder.health_listeners`, `StateWatcher.recovered`, `HealthProber.listeners`):
  subscribe with `append`, unsubscribe with `remove`.
- **Tests mirror the packages:** `tests/state/`, `tests/proxy/`,
  `tests/systems/`, `tests/server/`, `tests/releases/`, `tests/admin/`, ...; tests of flows
  that cross packages are in `tests/flows/`.
"""


def render() -> str:
    edges = graph()
    floors: dict[int, list[str]] = {}
    for module in sorted(edges):
        floor = floor_of(module)
        assert floor is not None, module
        floors.setdefault(floor, []).append(module)
    lines = [INTRO, "## Floors (top imports bottom, never the other way)", ""]
    lines += ["| floor | name | what | modules |", "|---|---|---|---|"]
    for floor in reversed(range(len(FLOORS))):
        name, what, _ = FLOORS[floor]
        modules = ", ".join(f"`{m.removeprefix('router.')}`" for m in floors.get(floor, []))
        lines.append(f"| {floor} | {name} | {what} | {modules} |")
    lines += ["", "## Which floor imports which", "", "```mermaid", "flowchart TD"]
    for floor in reversed(range(len(FLOORS))):
        lines.append(f'    F{floor}["{floor} {FLOORS[floor][0]}"]')
    pairs = sorted(
        {
            (floor_of(src), floor_of(dst))
            for src, targets in edges.items()
            for dst in targets
            if floor_of(src) != floor_of(dst)
        },
        key=lambda pair: (-(pair[0] or 0), -(pair[1] or 0)),
    )
    lines += [f"    F{src} --> F{dst}" for src, dst in pairs]
    lines += ["```", "", "## Imports per module", ""]
    lines += ["| module | floor | imports |", "|---|---|---|"]
    for module in sorted(edges):
        targets = ", ".join(f"`{m.removeprefix('router.')}`" for m in sorted(edges[module]))
        lines.append(f"| `{module}` | {floor_of(module)} | {targets or '-'} |")
    return "\n".join(lines) + "\n"


# --- the tests -----------------------------------------------------------------------------


def test_every_module_has_a_floor_and_every_floor_a_module() -> None:
    modules = graph()
    assert [m for m in modules if floor_of(m) is None] == []
    used = {floor_of(m) for m in modules}
    assert [FLOORS[f][0] for f in range(len(FLOORS)) if f not in used] == []


def test_no_module_imports_from_a_higher_floor() -> None:
    upward = [
        f"{src} (floor {floor_of(src)}) imports {dst} (floor {floor_of(dst)})"
        for src, targets in graph().items()
        for dst in sorted(targets)
        if (floor_of(dst) or 0) > (floor_of(src) or 0)
    ]
    assert upward == []


def test_no_import_circle_not_even_type_only() -> None:
    assert find_cycle(graph()) is None


def test_the_checks_can_fail() -> None:
    """The checkers themselves: a circle and an upward import are found."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert (floor_of("router.errors") or 0) < (floor_of("router.cli.status") or 0)
    assert floor_of("router.admin.feed") != floor_of("router.admin.api")
    assert floor_of("router.nonexistent_module") is None


def test_type_checking_imports_count(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from router.runtime import Runtime\n"
        "def f() -> None:\n"
        "    from router.server.run import serve\n"
    )
    modules = module_files()
    assert imports_of("router.metrics", source, modules) == {"router.runtime", "router.server.run"}


def test_docs_layout_is_the_generated_picture() -> None:
    if not DOC.is_file() or DOC.read_text() != render():
        pytest.fail("docs/layout.md is out of date: run `python -m tests.test_layout --write`")


if __name__ == "__main__":  # pragma: no cover
    if sys.argv[1:] == ["--write"]:
        DOC.write_text(render())
    else:
        sys.stdout.write(render())
