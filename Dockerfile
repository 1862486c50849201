# syntax=docker/dockerfile:1
# token-router: the proxy and admin listeners in a slim, non-root image.
#
#   docker build -t token-router .
#   docker run --rm -p 127.0.0.1:8080:8080 \
#     -v "$PWD/router.toml:/etc/token-router/router.toml:ro" token-router
#
# Configuration (static, SPEC section 1): /etc/token-router/router.toml when mounted (it is
# the working directory, where `token-router` looks for ./router.toml), or another file named
# by TOKENROUTER_CONFIG, plus TOKENROUTER_* variables, which win over the file. A container
# must listen on 0.0.0.0 (`listen = "0.0.0.0:8080"` or TOKENROUTER_LISTEN); the image sets
# no listener variable itself, because variables would override the mounted file.
# docs/container.md lists what docker/validate.sh checks without a Docker engine.

# --- build: install the locked requirements and the project into a virtual environment --
FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# The same lock as scripts/demo and scripts/test (requirements/, made by scripts/lock): exact
# versions, every file checked against its hash, nothing resolved at build time.
WORKDIR /src
COPY requirements/runtime.txt requirements/build.txt requirements/
RUN python -m venv /opt/token-router \
    && /opt/token-router/bin/pip install --require-hashes --no-deps -r requirements/runtime.txt \
    && python -m venv /opt/build \
    && /opt/build/bin/pip install --require-hashes --no-deps -r requirements/build.txt
# Only what the wheel needs (.dockerignore allows nothing else into the context).
COPY pyproject.toml README.md ./
COPY router/ router/
COPY static/ static/
COPY templates/ templates/
# A wheel built by the locked backend (no build isolation: nothing unlocked is fetched), then
# installed without dependencies: they are the lock's, above. static/ and templates/ travel
# inside the wheel (router/_assets); the build backend stays out of the runtime image.
RUN /opt/build/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /tmp/wheels . \
    && /opt/token-router/bin/pip install --no-deps /tmp/wheels/token_router-*.whl

# --- runtime -----------------------------------------------------------------------------
FROM python:3.11-slim-bookworm
RUN groupadd --system --gid 10001 tokenrouter \
    && useradd --system --uid 10001 --gid tokenrouter --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin tokenrouter \
    && mkdir -p /etc/token-router /var/lib/token-router/releases \
    && chown 10001:10001 /var/lib/token-router/releases
COPY --from=build /opt/token-router /opt/token-router
COPY docker/healthcheck.py /opt/token-router/healthcheck.py
# DL3064 ("potentially sensitive data in ENV") fires on the word TOKEN in TOKENROUTER_*, the
# product's variable prefix: these are a PATH and a directory, no secret. Ignored for this
# instruction only, so a real secret in any other ENV or ARG is still reported.
# hadolint ignore=DL3064
ENV PATH=/opt/token-router/bin:$PATH \
    TOKENROUTER_RELEASE_DIR=/var/lib/token-router/releases \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# The durable archive of release bytes (router.release_dir): mount a volume here.
VOLUME ["/var/lib/token-router/releases"]
WORKDIR /etc/token-router
# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
# The proxy (router.listen) and the admin listener (router.admin_listen): publish the
# admin port only where operators are, never next to the proxy's public address.
EXPOSE 8080 8081
# Liveness of the admin listener, found from the same configuration as the server.
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["python", "/opt/token-router/healthcheck.py"]
# SIGTERM: stop accepting, finish requests in flight (router.shutdown_timeout), exit.
STOPSIGNAL SIGTERM
ENTRYPOINT ["token-router"]
CMD ["serve"]
