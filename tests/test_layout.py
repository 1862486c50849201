"""The layout of `router/` kept honest: layers of packages, no arrow back up, no import circle.

LAYERS (lowest first) names every unit of `router/` once: a package (`router.state`) or a
module at the top (`router.config`). A unit imports only from its own layer or lower ones;
inside a unit its modules import each other freely, but no module import circle exists
anywhere. Every import counts: module level, inside functions and under `if TYPE_CHECKING:`
alike, because a type-only circle is still a circle for the reader. BACK_ARROWS lists the
arrows that still run up, each with the reason it is not cut yet: a new one fails here, and
one that is gone must leave the list. docs/layout.md describes each unit in one line.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "router"
DOC = ROOT / "docs" / "layout.md"
MAX_LINES = 500
MAX_TOP = 12  # modules at the top of router/, __init__ and __main__ included

# (name, units), lowest first.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "foundations",
        (
            "router",
            "router.errors",
            "router.printable",
            "router.cancellation",
            "router.logs",
            "router.trust",
            "router.throttle",
            "router.responses",
        ),
    ),
    ("static configuration", ("router.config",)),
    ("dynamic state; the simulated system", ("router.state", "router.simulator")),
    ("watching A and B", ("router.systems",)),
    ("the token hop", ("router.proxy",)),
    ("guarded changes; metrics", ("router.switching", "router.metrics")),
    ("client-library releases", ("router.releases",)),
    ("one process's shared parts", ("router.runtime",)),
    ("the admin listener", ("router.admin",)),
    ("one process: wiring and running", ("router.server",)),
    ("the commands' work", ("router.upgrade", "router.sandbox", "router.drill")),
    ("the command line", ("router.cli", "router.__main__")),
)

# (importing module, imported module): arrows that still run up, and why they are not cut yet.
BACK_ARROWS: dict[tuple[str, str], str] = {}


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


def unit_of(module: str) -> str:
    """`router.state.store` -> `router.state`; a module at the top is its own unit."""
    return ".".join(module.split(".")[:2])


def layer_of(module: str) -> int | None:
    unit = unit_of(module)
    for layer, (_, units) in enumerate(LAYERS):
        if unit in units:
            return layer
    return None


def upward(edges: dict[str, set[str]]) -> set[tuple[str, str]]:
    return {
        (src, dst)
        for src, targets in edges.items()
        for dst in targets
        if (layer_of(dst) or 0) > (layer_of(src) or 0)
    }


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


# --- the tests -----------------------------------------------------------------------------


def test_every_unit_is_on_exactly_one_layer() -> None:
    units = sorted({unit_of(m) for m in graph()})
    assert [u for u in units if layer_of(u) is None] == []
    declared = [u for _, names in LAYERS for u in names]
    assert sorted(declared) == sorted(set(declared)), "a unit is on two layers"
    assert [u for u in declared if u not in units] == [], "a layer names a unit that is gone"


def test_no_arrow_runs_up_but_the_known_ones() -> None:
    found = upward(graph())
    new = sorted(f"{src} imports {dst}" for src, dst in found - set(BACK_ARROWS))
    assert new == [], "an import runs up a layer: move the code down or the importer up"
    gone = sorted(f"{src} -> {dst}" for src, dst in set(BACK_ARROWS) - found)
    assert gone == [], "cut already: remove these from BACK_ARROWS"


def test_no_import_circle_not_even_type_only() -> None:
    assert find_cycle(graph()) is None


def test_the_top_of_router_is_small() -> None:
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP, top


def test_no_module_is_over_the_limit() -> None:
    """STYLE: split a module when it passes ~500 lines. The ones still over it are listed in
    OVERSIZED (issue 26 names their cuts): no other may pass the limit, and a split one must
    leave the list."""
    sizes = {name: len(path.read_text().splitlines()) for name, path in module_files().items()}
    over = sorted(m for m, n in sizes.items() if n > MAX_LINES and m not in OVERSIZED)
    assert over == [], "over 500 lines: split it by job"
    split = sorted(m for m in OVERSIZED if sizes.get(m, 0) <= MAX_LINES)
    assert split == [], "under the limit now: remove from OVERSIZED"


# Modules still over MAX_LINES (their size when this list was written).
OVERSIZED: dict[str, int] = {}


def test_the_checks_can_fail() -> None:
    """The checkers themselves: a circle and an upward import are found."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert upward({"router.errors": {"router.cli.status"}}) == {
        ("router.errors", "router.cli.status")
    }
    assert upward({"router.cli.status": {"router.errors"}}) == set()
    assert layer_of("router.nonexistent_module") is None


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
    assert imports_of("router.metrics", source, modules) == {
        "router.runtime",
        "router.server.run",
    }


def test_docs_layout_names_every_unit() -> None:
    text = DOC.read_text()
    missing = []
    for _, units in LAYERS:
        for unit in units:
            name = unit.removeprefix("router.")
            is_package = (PACKAGE / name / "__init__.py").is_file()
            shown = f"`{name}/`" if is_package else f"`{name}.py`"
            if unit != "router" and shown not in text:
                missing.append(shown)
    assert missing == [], "docs/layout.md: give each unit its one line"
