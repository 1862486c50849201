# shellcheck shell=bash
# Sourced by scripts/demo, scripts/test and scripts/lock (from the checkout's top directory): one
# virtual environment inside the checkout, so nothing is installed into the system Python.
# Debian 12 marks its Python "externally managed" (PEP 668): `pip install` as root is refused
# there, and only a venv's own pip is used here.
#
# What goes into it is the lock, never whatever the registry serves newest today:
# requirements/runtime.txt + requirements/build.txt (the service; the build backend for the
# editable install) or requirements/test.txt (all of that plus the test and lint toolchain),
# exact versions with hashes, made by `uv pip compile`
# (scripts/lock moves them forward). pyproject.toml keeps the honest ranges for people who
# install the package into an environment of their own.
#
#   TOKENROUTER_VENV  where the environment lives (default: .venv in the checkout)

VENV=${TOKENROUTER_VENV:-$PWD/.venv}

# Run a command as root: directly when we are root, else through sudo when there is one.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        echo "$0: needs root to run: $*" >&2
        return 1
    fi
}

# Install Debian packages, quietly and without questions (CI has no terminal).
apt_install() {
    echo "$0: installing $* from Debian..." >&2
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -qq
    as_root apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# The digest of everything that decides what the environment holds.
lock_digest() {
    cat pyproject.toml requirements/*.txt | sha256sum | cut -d' ' -f1
}

# Make $VENV hold exactly the lock of `kind` ("runtime" or "test") and the project (editable).
# An environment made from another lock is made anew, so nothing stale survives a lock change.
ensure_venv() {
    local kind=$1 digest lock
    local -a files locks=()
    case "$kind" in
        runtime) files=(requirements/runtime.txt requirements/build.txt) ;;
        test) files=(requirements/test.txt) ;;
        *) echo "$0: ensure_venv takes runtime or test, not '$kind'" >&2; return 2 ;;
    esac
    for lock in "${files[@]}"; do
        if [ ! -f "$lock" ]; then
            echo "$0: no lock $lock (run scripts/lock)" >&2
            return 2
        fi
        locks+=(-r "$lock")
    done
    digest=$(lock_digest)
    if [ -f "$VENV/.token-router-lock" ] && [ "$(cat "$VENV/.token-router-lock")" != "$digest" ]; then
        echo "$0: the lock changed since $VENV was made: making it anew" >&2
        rm -rf "$VENV"
    fi
    if ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
        # Debian's python3 has no venv/ensurepip until python3-venv is installed.
        if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
            apt_install python3 python3-venv
        fi
        if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
            echo "$0: token-router needs Python 3.11 or newer; python3 is $(python3 -V 2>&1)" >&2
            return 2
        fi
        echo "$0: creating the virtual environment $VENV" >&2
        rm -rf "$VENV"
        python3 -m venv "$VENV"
        echo "$digest" >"$VENV/.token-router-lock"
    fi
    if [ ! -f "$VENV/.token-router-installed-$kind" ]; then
        echo "$0: installing the $kind lock and token-router into $VENV (first run: about a minute)" >&2
        # --require-hashes: every file is the one the lock names; --no-deps: nothing beyond it.
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
            --require-hashes --no-deps "${locks[@]}"
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
            --no-deps --no-build-isolation -e .
        touch "$VENV/.token-router-installed-$kind"
        # The test lock holds everything the runtime lock does, at the same versions.
        [ "$kind" = test ] && touch "$VENV/.token-router-installed-runtime"
    fi
    return 0
}

# promtool, Prometheus' rule checker, for tests/deploy (`promtool check rules`, `promtool test
# rules`): the one binary from Debian's prometheus package, unpacked into $VENV/bin. The
# package is not installed: its maintainer script starts a Prometheus server listening on
# every address (port 9090) wherever no systemd runs (containers, CI machines), and nothing
# here needs that server.
ensure_promtool() {
    if command -v promtool >/dev/null 2>&1 || [ -x "$VENV/bin/promtool" ]; then
        return 0
    fi
    local tmp
    tmp=$(mktemp -d)
    echo "$0: unpacking promtool from Debian's prometheus package into $VENV/bin..." >&2
    if ! (cd "$tmp" && apt-get download prometheus >/dev/null 2>&1); then
        as_root apt-get update -qq
        if ! (cd "$tmp" && apt-get download prometheus >/dev/null 2>&1); then
            echo "$0: apt-get download prometheus failed" >&2
            rm -rf "$tmp"
            return 1
        fi
    fi
    dpkg-deb --fsys-tarfile "$tmp"/prometheus_*.deb | tar -x -C "$tmp" ./usr/bin/promtool
    install -m 0755 "$tmp/usr/bin/promtool" "$VENV/bin/promtool"
    rm -rf "$tmp"
    "$VENV/bin/promtool" --version 2>&1 | sed -n 1p >&2
}
