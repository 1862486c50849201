# shellcheck shell=bash
# Sourced by scripts/demo and scripts/test (from the checkout's top directory): one virtual
# environment inside the checkout, so nothing is installed into the system Python. Debian 12
# marks its Python "externally managed" (PEP 668): `pip install` as root is refused there, and
# only a venv's own pip is used here.
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

# Make $VENV hold the project (editable) with the given extras ("" or e.g. "test").
# Reinstalls only when pyproject.toml changed since the last install of those extras.
ensure_venv() {
    local extras=$1 spec=. stamp digest
    [ -n "$extras" ] && spec=".[$extras]"
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
    fi
    digest=$(sha256sum pyproject.toml | cut -d' ' -f1)
    stamp="$VENV/.token-router-installed-${extras:-base}"
    if [ "$(cat "$stamp" 2>/dev/null)" != "$digest" ]; then
        echo "$0: installing token-router${extras:+ with [$extras]} into $VENV (first run: about a minute)" >&2
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$spec"
        echo "$digest" >"$stamp"
        # Every extras set includes the project itself.
        [ -n "$extras" ] && echo "$digest" >"$VENV/.token-router-installed-base"
    fi
    return 0
}
