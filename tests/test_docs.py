"""The README and docs/ cannot drift from the code.

Checked here: the README stays a short front door whose two commands are the ones CI and the
scripts run; every link and repository path in the docs exists; every configuration key (with
its environment name and default), CLI command and option, admin API route, Redis key and metric
is documented; and nothing documents a command the parser lacks, except lines marked pending
(features another branch is building, verified when it is merged).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import re
from dataclasses import MISSING, fields
from functools import cache
from pathlib import Path

import orjson
import pytest

from router.admin.openapi import openapi_document
from router.admin.routes import OPERATIONS
from router.cli import build_parser
from router.config import RouterConfig, SystemConfig
from router.state.keys import Keys

ROOT = Path(__file__).resolve().parent.parent
README_PATH = ROOT / "README.md"
README = README_PATH.read_text(encoding="utf-8")
DOCS = {p.name: p.read_text(encoding="utf-8") for p in sorted((ROOT / "docs").glob("*.md"))}
ALL_DOCS = {"README.md": README} | {f"docs/{name}": text for name, text in DOCS.items()}
README_LIMIT = 15 * 1024


def doc(name: str) -> str:
    return DOCS[name]


def settled(text: str) -> str:
    """The text without what is marked pending (`<!-- pending ... /pending -->` blocks,
    `*(Pending ...)*` notes, table rows starting `| *(pending`) and without HTML comments."""
    text = "\n".join(line for line in text.splitlines() if not line.startswith("| *(pending"))
    text = re.sub(r"<!-- pending.*?<!-- /pending -->", "", text, flags=re.S | re.I)
    text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    return re.sub(r"\*\(pending.*?\)\*", "", text, flags=re.S | re.I)


def code_spans(text: str) -> list[str]:
    """Fenced code blocks and inline `code`, the places where commands and paths are written."""
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.S | re.M)
    rest = re.sub(r"^```[^\n]*\n.*?^```", "", text, flags=re.S | re.M)
    return blocks + re.findall(r"`([^`\n]+)`", rest)


def section(text: str, heading: str) -> str:
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


# --- the README: short, and its two commands are what CI and the scripts run -------------


def test_readme_release_ids_tell_one_story() -> None:
    """The walk-through's release ids agree: one id per set of library bytes (a label), and
    the release B had before its upgrade is the one `status` showed for it."""
    # A `status` row: ... RELEASE VERSION, then the DRAIN words.
    rows = re.findall(r"^   ([ab]) .* ([0-9a-f]{16}) (\S+)(?: +\S.*)?$", README, flags=re.M)
    label_of: dict[str, str] = {}
    for _system, release, label in rows:
        assert label_of.setdefault(release, label) == label, (release, label_of)
    refresh = re.search(r"`b: ([0-9a-f]{16}) \((\S+)\), .*\(before: ([0-9a-f]{16})\)`", README)
    assert refresh is not None
    new, label, before = refresh.groups()
    assert dict((s, r) for s, r, _ in rows)["b"] == before
    assert new != before and label_of.get(new, label) == label and label_of[before] != label


def test_readme_is_a_short_front_door() -> None:
    size = len(README.encode("utf-8"))
    assert size <= README_LIMIT, f"README.md is {size} bytes; move reference material to docs/"
    headings = re.findall(r"^## (.+)$", README, flags=re.M)
    for wanted in (
        "Two commands",
        "What it routes",
        "Upgrade runbook",
        "Cheat sheet",
        "States",
        "Troubleshooting",
        "Development",
    ):
        assert wanted in headings, wanted
    # The two commands come first: nothing but the introduction before them.
    assert headings[0] == "Two commands"


def readme_commands() -> list[str]:
    block = re.search(r"```sh\n(.*?)```", section(README, "Two commands"), flags=re.S)
    assert block is not None, "the Two commands section has no ```sh block"
    return [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_the_two_commands_are_the_scripts_ci_runs() -> None:
    demo, test = readme_commands()
    assert (demo, test) == ("scripts/demo", "scripts/test")
    for script in (demo, test):
        path = ROOT / script
        assert path.is_file() and path.stat().st_mode & 0o111, f"{script} is not executable"
    ci = [
        line.strip()
        for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert ci[-1] == f"exec {test}", "CI must run exactly the README's test command"


def script_lines(name: str) -> list[str]:
    text = (ROOT / "scripts" / name).read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if not line.lstrip().startswith("#")]


def test_the_scripts_use_only_their_virtual_environment() -> None:
    """PEP 668: Debian's pip refuses to install as root, so nothing may rely on it."""
    for name in ("demo", "test", "venv.sh"):
        for line in script_lines(name):
            if re.search(r"\bpip3? install", line):
                assert '"$VENV/bin/python" -m pip install' in line, f"{name}: {line}"
            assert "--break-system-packages" not in line, name
    assert any(line.startswith("exec ") and '" demo "$@"' in line for line in script_lines("demo"))
    test = "\n".join(script_lines("test"))
    for step in ("-m ruff check .", "-m ruff format --check .", "-m mypy", "-m pytest"):
        assert step in test, step
    # pytest's "no tests collected" (exit 5) must fail the run, so the status is passed on.
    assert 'exit "$status"' in test and "set -euo pipefail" in test


# --- links and paths ------------------------------------------------------------------------


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    return {slug(h) for h in re.findall(r"^#+ (.+)$", text, flags=re.M)}


@pytest.mark.parametrize("name", sorted(ALL_DOCS))
def test_every_relative_link_exists(name: str) -> None:
    base = (ROOT / name).parent
    for target in re.findall(r"\]\(([^)\s]+)\)", ALL_DOCS[name]):
        if re.match(r"^[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        file = (base / path).resolve() if path else ROOT / name
        assert file.exists(), f"{name} links to {target}, which is not in the repository"
        assert file.is_relative_to(ROOT), target
        if anchor and file.suffix == ".md":
            assert anchor in anchors(file.read_text(encoding="utf-8")), f"{name}: {target}"


TOP = (
    "router/",
    "tests/",
    "bench/",
    "docker/",
    "docs/",
    "scripts/",
    "static/",
    "templates/",
    "requirements/",
)
FILES = ("Dockerfile", "compose.yaml", "pyproject.toml", ".dockerignore", ".ci/run")


@pytest.mark.parametrize("name", sorted(ALL_DOCS))
def test_every_repository_path_mentioned_exists(name: str) -> None:
    for span in code_spans(settled(ALL_DOCS[name])):
        for word in span.split():
            word = word.strip("\"',;:()[]").split("::")[0]  # tests/x.py::test_y names a file
            if re.search(r"[<>{}*$]", word):
                continue
            if word.startswith(TOP) or word in FILES:
                assert (ROOT / word).exists(), f"{name} mentions {word}, not in the repository"


def is_module(dotted: str) -> bool:
    try:
        return importlib.util.find_spec(dotted) is not None
    except ModuleNotFoundError:  # a parent is a module, not a package
        return False


@pytest.mark.parametrize("name", sorted(ALL_DOCS))
def test_every_python_name_mentioned_exists(name: str) -> None:
    """`router.cli.build_parser`-style references import; `router.listen` (a key) is no module."""
    for span in code_spans(settled(ALL_DOCS[name])):
        for dotted in re.findall(r"\brouter(?:\.[a-z][a-z0-9_]*)+", span):
            parts = dotted.split(".")
            if not is_module(".".join(parts[:2])):
                continue  # a configuration key such as router.listen
            end = 2
            while end < len(parts) and is_module(".".join(parts[: end + 1])):
                end += 1
            obj: object = importlib.import_module(".".join(parts[:end]))
            for attr in parts[end:]:
                assert hasattr(obj, attr), f"{name} mentions {dotted}, which does not exist"
                obj = getattr(obj, attr)


def test_the_development_map_matches_the_tree() -> None:
    """Every entry of the README's map exists, and every module or package of router/ is on it."""
    block = re.search(r"```\n(.*?)```", section(README, "Development"), flags=re.S)
    assert block is not None
    listed = set()
    for line in block.group(1).splitlines():
        names = re.split(r"\s{2,}", line.strip())[0]
        parent = ROOT / "router" if line.startswith("  ") else ROOT
        for entry in re.split(r"[,\s]+", names):
            if entry:
                assert (parent / entry).exists(), f"development map: {parent / entry} is missing"
                listed.add((parent / entry).resolve())
    for path in (ROOT / "router").iterdir():
        if path.name.startswith("_") or not (
            path.suffix == ".py" or (path / "__init__.py").exists()
        ):
            continue
        assert path.resolve() in listed, f"the README's development map lacks router/{path.name}"


# --- configuration --------------------------------------------------------------------------


def table_rows() -> dict[str, tuple[str, str]]:
    rows = {}
    for line in doc("configuration.md").splitlines():
        m = re.match(
            r"^\| `((?:router|systems\.<id>)\.[a-z0-9_]+)` \| ([^|]+) \| `([A-Z0-9_<>]+)` \|", line
        )
        if m:
            rows[m.group(1)] = (m.group(2).strip(), m.group(3))
    return rows


def test_every_config_key_is_documented_with_its_environment_name() -> None:
    rows = {key: env for key, (_, env) in table_rows().items()}
    expected = {f"router.{f.name}": f"TOKENROUTER_{f.name.upper()}" for f in fields(RouterConfig)}
    # A table: one variable per operator.
    expected["router.admin_tokens"] = "TOKENROUTER_ADMIN_TOKENS_<NAME>"
    expected |= {
        f"systems.<id>.{f.name}": f"TOKENROUTER_SYSTEMS_<ID>_{f.name.upper()}"
        for f in fields(SystemConfig)
        if f.name != "id"
    }
    assert rows == expected


def toml_default(value: object) -> str | None:
    """How the table writes a default, or None where it describes it in words."""
    if value is None or value in ("", ()):
        return "(unset)"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str):
        return f'`"{value}"`'
    if isinstance(value, int | float):
        return f"`{value}`"
    return None


# Keys whose empty default is replaced at start, and a word the table's default must contain.
COMPUTED_DEFAULTS = {"router.release_dir": "XDG_STATE_HOME", "router.trusted_networks": "loopback"}


def test_documented_defaults_are_the_real_ones() -> None:
    rows = table_rows()
    for cls, prefix in ((RouterConfig, "router."), (SystemConfig, "systems.<id>.")):
        for f in fields(cls):
            if f.name == "id":
                continue
            documented = rows[prefix + f.name][0]
            if f.default is not MISSING:
                value: object = f.default
            elif f.default_factory is not MISSING:
                value = f.default_factory()
            else:
                assert documented == "required", f.name
                continue
            if prefix + f.name in COMPUTED_DEFAULTS:
                # Empty in the dataclass, filled in at start: the table says with what.
                assert COMPUTED_DEFAULTS[prefix + f.name] in documented, f.name
                continue
            wanted = toml_default(value)
            if wanted is not None:
                assert documented == wanted, f"{prefix}{f.name}: {documented} != {wanted}"


# --- command line ---------------------------------------------------------------------------


@cache
def commands() -> dict[str, argparse.ArgumentParser]:
    """Every command the parser knows ("releases list" for nested ones), aliases included."""
    found: dict[str, argparse.ArgumentParser] = {}

    def walk(parser: argparse.ArgumentParser, prefix: str) -> None:
        for action in parser._actions:  # noqa: SLF001
            if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
                for name, sub in action.choices.items():
                    found[prefix + name] = sub
                    walk(sub, f"{prefix}{name} ")

    walk(build_parser(), "")
    return found


def options(parser: argparse.ArgumentParser) -> set[str]:
    return {
        opt
        for action in parser._actions  # noqa: SLF001
        for opt in action.option_strings
        if opt.startswith("--") and opt not in ("--help", "--config", "--verbose")
    }


def command_table() -> set[str]:
    """The commands of docs/operations.md's command table (first cell of each row);
    `rollout start\\|pause` lists two sub-commands of one parent."""
    found = set()
    for line in section(doc("operations.md"), "Command line").splitlines():
        if not line.startswith("| `"):
            continue
        for cell in re.findall(r"`([^`]+)`", re.split(r" \| ", line)[0]):
            words = re.match(r"[a-z][a-z-]*(?: [a-z][a-z-]*(?:\\\|[a-z][a-z-]*)*)?", cell)
            if words:
                parent, _, subs = words.group(0).partition(" ")
                found |= {f"{parent} {sub}" for sub in subs.split("\\|")} if subs else {parent}
    return found


def test_every_command_is_in_the_command_reference() -> None:
    table = command_table()
    parents = {name.split()[0] for name in commands() if " " in name}
    for name in commands():
        if name in parents:
            continue
        aliased = any(f"alias `{name}`" in line for line in doc("operations.md").splitlines())
        assert name in table or aliased, f"`{name}` is missing from docs/operations.md's table"


def test_every_option_is_documented_beside_its_command() -> None:
    lines = [line for text in ALL_DOCS.values() for line in text.splitlines()]
    for name, parser in commands().items():
        for opt in options(parser):
            assert any(name in line and opt in line for line in lines), (
                f"`{name} {opt}` is documented nowhere (README.md, docs/)"
            )


def documented_commands(text: str) -> set[str]:
    found = set()
    for span in code_spans(settled(text)):
        # A command where one is written: a span's or line's start, after `$ `, `(`, `;`, `|`.
        starts = r"(?:^|\$ |[;|(&] ?)"
        for m in re.finditer(
            starts + r"token-router ([a-z][a-z-]*)(?: ([a-z][a-z-]*))?", span, re.M
        ):
            first, second = m.group(1), m.group(2)
            nested = f"{first} {second}"
            found.add(nested if second and nested in commands() else first)
    return found


@pytest.mark.parametrize("name", sorted(ALL_DOCS))
def test_no_doc_names_a_command_that_does_not_exist(name: str) -> None:
    unknown = documented_commands(ALL_DOCS[name]) - set(commands())
    assert not unknown, f"{name} documents commands the CLI lacks (mark them pending?): {unknown}"


def test_cheat_sheet_commands_exist() -> None:
    for line in settled(section(README, "Cheat sheet")).splitlines():
        cells = line.split(" | ")
        if not line.startswith("| ") or len(cells) < 2 or cells[1] in ("CLI", "---"):
            continue
        for cli in re.findall(r"`([a-z][a-z-]*)", cells[1]):
            assert cli in commands(), f"cheat sheet: `{cli}` is not a command"


def test_every_command_appears_in_the_readme_or_operations() -> None:
    text = README + doc("operations.md")
    for name in commands():
        assert f"`{name}" in text or f"token-router {name}" in text, name


# --- admin API, Redis keys, metrics ---------------------------------------------------------


def test_every_admin_api_route_is_documented_and_exists() -> None:
    text = "\n".join(settled(t) for t in ALL_DOCS.values())
    mentioned = set(re.findall(r"\b(GET|POST|PUT|DELETE) (/[^\s`\[?,)]*)", text))
    routes = {
        (method.upper(), re.sub(r"\\{\w+\\}", r"[^/]+", re.escape(path)), path)
        for path, item in openapi_document(OPERATIONS, ("a", "b"))["paths"].items()
        for method in item
    }
    for method, pattern, path in routes:
        assert any(m == method and re.fullmatch(pattern, p) for m, p in mentioned), (
            f"{method} {path} is documented nowhere in README.md or docs/"
        )
    for method, path in mentioned:
        if path.startswith("/api/"):
            assert any(m == method and re.fullmatch(r, path) for m, r, _ in routes), (
                f"the docs name {method} {path}, which does not exist"
            )


def test_every_redis_key_is_documented() -> None:
    documented = re.findall(r"^\| `([^`]+)` \|", section(doc("operations.md"), "Redis keys"), re.M)
    keys = Keys("tokenrouter")
    hole = "\x00"
    for name in dir(Keys):
        if name.startswith("_") or name in ("prefix", "keyspace_channels"):
            continue
        member = getattr(Keys, name)
        if isinstance(member, property):
            key = getattr(keys, name)
        else:
            arity = member.__code__.co_argcount - 1
            key = getattr(keys, name)(*[hole] * arity)
        pattern = re.escape(key).replace(hole, r"(?:<[a-z]+>|[a-z]+)")
        assert any(re.fullmatch(pattern, d) for d in documented), f"Redis key {key!r}"


def test_every_metric_is_documented() -> None:
    source = (ROOT / "router" / "metrics.py").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `(tokenrouter_[a-z_]+)` \|", doc("operations.md"), re.M))
    for metric in set(re.findall(r'"(tokenrouter_[a-z_]+)"', source)):
        assert metric in documented or f"{metric}_total" in documented, metric


def test_the_readme_quotes_the_drills_latest_report() -> None:
    # The README's one line and docs/drill.md's "Latest report" are the same run, and that
    # run passed with every error count at 0 (the drill itself runs in tests/drill/).
    doc = DOCS["drill.md"]
    latest = doc[doc.index("## Latest report") :]
    total = re.search(r"^total\s+(\d+)\s+(\d+)$", latest, re.M)
    assert total is not None and total.group(2) == "0"
    sent = int(total.group(1))
    assert f"latest report: {sent:,}\nrequests" in README
    for count in ("failed requests", "follow-ups, wrong system", "library loads, wrong bytes"):
        assert re.search(rf"^{count}\s+0$", latest, re.M), count
    assert "verdict: PASS (exit 0)" in latest


def test_the_readme_shows_the_latest_benchmark_run() -> None:
    # The "latest" column is bench/results/latest.json, the run the README links to: a new
    # `python -m bench` run must come with its numbers in the README.
    latest = orjson.loads((ROOT / "bench" / "results" / "latest.json").read_bytes())
    measured = {bar["bar"]: bar["measured"] for bar in latest["bars"]}
    table = section(README, "Performance")
    m = measured
    rows = {
        "CPU": f"| {m['token CPU per request, 1 worker']:.2f}x |",
        "p50": f"| {m['added latency p50 @1000/s']:.3f} / ",
        "p99": f" / {m['added latency p99 @1000/s']:.3f} ms |",
        "stalls": f"(0) | {m['loop stalls > 1 ms from background work']} |",
        "propagation": f"| {m['switch propagation p99 (3 instances)']:.1f} ms |",
        "RSS": f"| {m['peak RSS, 1 worker, 2 releases']:.1f} MB |",
        "release serving": f"| {m['release serving']:.2f}x |",
    }
    for bar, text in rows.items():
        assert text in table, f"README's Performance table lacks {bar} = {text!r}"
