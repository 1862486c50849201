"""Rehearse the image without a Docker engine: the build context, the install, the start.

    python docker/rehearse.py

What `docker build` would do, as far as it can be done on the host (same Python minor):
1. the build context: the files .dockerignore lets through (Docker's rule: the last
   matching pattern wins, `!` re-includes, a pattern matching a directory covers its files);
2. the build stage: the Dockerfile's own COPY lines (read from it, so this cannot drift),
   then the locked requirements (requirements/runtime.txt, with hashes) into a fresh virtual
   environment and the project as a wheel built by the locked backend (requirements/build.txt),
   non-editable, as in the image;
3. the runtime: `token-router simulate-gateway` and `token-router serve` from that venv,
   configured only by the router service's TOKENROUTER_* variables from compose.yaml
   (Redis and host names swapped for memory:// and 127.0.0.1, workers 1), the image's
   HEALTHCHECK script run against it (exit 0) and after it stopped (exit 1), and one token
   through the proxy.
Every server binds 127.0.0.1 and is stopped by its PID.
"""

from __future__ import annotations

import fnmatch
import importlib
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SKIP_DIRS = {".git", ".mypy_cache", ".ruff_cache", ".pytest_cache", "node_modules", ".venv"}


# --- .dockerignore and Dockerfile, read as Docker reads them ------------------------------


def ignore_patterns(root: Path = ROOT) -> list[tuple[bool, str]]:
    """(excluding?, pattern) in file order; comments and blank lines dropped."""
    patterns: list[tuple[bool, str]] = []
    for line in (root / ".dockerignore").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        patterns.append((not negate, pattern))
    return patterns


def _matches(pattern: str, path: str) -> bool:
    parts = path.split("/")
    # A pattern naming a directory covers everything below it.
    for i in range(1, len(parts) + 1):
        prefix = "/".join(parts[:i])
        if fnmatch.fnmatchcase(prefix, pattern):
            return True
        if pattern.startswith("**/") and fnmatch.fnmatchcase(prefix, pattern[3:]):
            return True
    return False


def in_context(path: str, patterns: list[tuple[bool, str]]) -> bool:
    excluded = False
    for excluding, pattern in patterns:
        if _matches(pattern, path):
            excluded = excluding
    return not excluded


def context_files(root: Path = ROOT) -> list[str]:
    """Relative paths of every file `docker build` would send."""
    patterns = ignore_patterns(root)
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS]
        for name in filenames:
            rel = os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/")
            if in_context(rel, patterns):
                found.append(rel)
    return sorted(found)


def instructions(root: Path = ROOT) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuations joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in (root / "Dockerfile").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        text = (pending + line).strip()
        pending = ""
        keyword, _, rest = text.partition(" ")
        out.append((keyword.upper(), rest.strip()))
    return out


def build_stage_copies(root: Path = ROOT) -> list[tuple[list[str], str]]:
    """The COPY lines of the first (build) stage: (sources, destination)."""
    copies: list[tuple[list[str], str]] = []
    stages = 0
    for keyword, rest in instructions(root):
        if keyword == "FROM":
            stages += 1
        elif keyword == "COPY" and stages == 1 and not rest.startswith("--"):
            *sources, dest = shlex.split(rest)
            copies.append((sources, dest))
    return copies


# --- the rehearsal ------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(url: str, proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"rehearse: {proc.args!r} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):  # noqa: S310 (loopback)
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    raise SystemExit(f"rehearse: {url} did not answer in {timeout} s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def stage_context(work: Path) -> Path:
    """Copy the context, then lay out /src as the build stage's COPY lines do."""
    context = work / "context"
    for rel in context_files():
        target = context / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target)
    src = work / "src"
    src.mkdir()
    for sources, dest in build_stage_copies():
        for source in sources:
            origin = context / source.rstrip("/")
            if not origin.exists():
                raise SystemExit(f"rehearse: COPY {source} is not in the build context")
            if dest in ("./", "."):
                target = src / origin.name
            elif dest.endswith("/") and not source.endswith("/"):
                target = src / dest / origin.name  # files into a directory, as Docker does
                target.parent.mkdir(parents=True, exist_ok=True)
            else:
                target = src / dest.rstrip("/")
            if origin.is_dir():
                shutil.copytree(origin, target)
            else:
                shutil.copy2(origin, target)
    return src


def compose_services() -> dict[str, Any]:
    # PyYAML: only this rehearsal and tests/test_container.py need it (no stubs required).
    yaml = importlib.import_module("yaml")
    services: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text("utf-8"))[
        "services"
    ]
    return services


def simulator_commands() -> list[list[str]]:
    return [
        [str(x) for x in s["command"]]
        for s in compose_services().values()
        if s.get("command", [None])[0] == "simulate-gateway"
    ]


def compose_router_env(admin_port: int, port: int, gateways: dict[str, int]) -> dict[str, str]:
    env = {k: str(v) for k, v in compose_services()["router"]["environment"].items()}
    env["TOKENROUTER_LISTEN"] = f"127.0.0.1:{port}"
    env["TOKENROUTER_ADMIN_LISTEN"] = f"127.0.0.1:{admin_port}"
    env["TOKENROUTER_REDIS_URL"] = "memory://"
    env["TOKENROUTER_ADMIN_TOKEN"] = "rehearsal-admin-token"
    for name, gw_port in gateways.items():
        env[f"TOKENROUTER_SYSTEMS_{name.upper()}_GATEWAY"] = f"http://127.0.0.1:{gw_port}"
    return env


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="token-router-rehearse-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        print(f"context: {len(context_files())} files; staging in {work}")
        src = stage_context(work)
        # As the build stage does: the runtime lock into the image's venv and the build lock
        # into a separate one, both with hashes and nothing else; the wheel built by the
        # locked backend without isolation, installed without dependencies.
        venv, build = work / "venv", work / "build"
        for env_dir, lock in ((venv, "runtime"), (build, "build")):
            subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True)
            pip = [str(env_dir / "bin" / "pip"), "install", "-q", "--disable-pip-version-check"]
            lock_file = src / "requirements" / f"{lock}.txt"
            subprocess.run(
                [*pip, "--require-hashes", "--no-deps", "-r", str(lock_file)], check=True
            )
        wheels = work / "wheels"
        subprocess.run(
            [str(build / "bin" / "pip"), "wheel", "-q", "--disable-pip-version-check", "--no-deps"]
            + ["--no-build-isolation", "--wheel-dir", str(wheels), str(src)],
            check=True,
        )
        pip = [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check"]
        subprocess.run(
            [*pip, "--no-deps", *map(str, wheels.glob("token_router-*.whl"))], check=True
        )
        bin_dir = venv / "bin"
        installed = subprocess.run(
            [
                str(bin_dir / "python"),
                "-c",
                "import router.admin.assets as a; print(a.find_assets())",
            ],
            check=True,
            capture_output=True,
            text=True,
            cwd=work,
        )
        print(f"installed non-editable; assets: {installed.stdout.strip()}")
        etc = work / "etc-token-router"  # the image's WORKDIR, empty: configuration by env
        etc.mkdir()
        gateways: dict[str, int] = {}
        for command in simulator_commands():
            # compose's own command, with loopback and a free port instead of 0.0.0.0:900x
            gw_port = _free_port()
            argv = [str(bin_dir / "token-router"), *command]
            argv[argv.index("--host") + 1] = "127.0.0.1"
            argv[argv.index("--port") + 1] = str(gw_port)
            gateways[argv[argv.index("--name") + 1]] = gw_port
            procs.append(subprocess.Popen(argv, cwd=etc, stdout=subprocess.DEVNULL))
            _wait(f"http://127.0.0.1:{gw_port}/stats", procs[-1])
        port, admin_port = _free_port(), _free_port()
        base_env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENROUTER_")}
        env = {**base_env, **compose_router_env(admin_port, port, gateways)}
        env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
        router = subprocess.Popen([str(bin_dir / "token-router"), "serve"], cwd=etc, env=env)
        procs.append(router)
        _wait(f"http://127.0.0.1:{admin_port}/healthz", router)
        check = [str(bin_dir / "python"), str(ROOT / "docker" / "healthcheck.py")]
        healthy = subprocess.run(check, cwd=etc, env=env, check=False).returncode
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/gateway/sessions/session",
            data=b'{"webAppId":"rehearsal"}',
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=5) as resp:  # noqa: S310 (loopback)
            system = resp.headers.get("X-Token-Router-System")
            token_status = resp.status
        with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/", timeout=5) as resp:  # noqa: S310
            admin_status = resp.status
        _stop(router)
        unhealthy = subprocess.run(check, cwd=etc, env=env, check=False).returncode
        print(
            f"serve: healthcheck while up -> {healthy}, after SIGTERM -> {unhealthy}; "
            f"token -> {token_status} from system {system}; admin page -> {admin_status}; "
            f"exit status {router.returncode}"
        )
        ok = (healthy, unhealthy, token_status, system, admin_status, router.returncode) == (
            0,
            1,
            200,
            "a",
            200,
            0,
        )
        print("rehearsal passed" if ok else "rehearsal FAILED")
        return 0 if ok else 1
    finally:
        for proc in reversed(procs):
            _stop(proc)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
