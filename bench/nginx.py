"""nginx as the reference: `proxy_pass` with keep-alive upstream, and a static file.

One worker process (the same one core as the Python proxies get), no access log, sendfile
on, keep-alive limits raised so neither side reconnects during a run (aiohttp has no such
limit). Runs in the foreground (`daemon off`) from a private prefix, so the PID the harness
started is nginx's master and SIGQUIT to it stops its workers.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

CONF = """\
worker_processes 1;
error_log {prefix}/error.log warn;
pid {prefix}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    types {{ application/javascript js; }}

    upstream gateway {{
        server 127.0.0.1:{upstream_port};
        keepalive 64;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{proxy_port};
        location / {{
            proxy_pass http://gateway;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }}
    }}
    server {{
        listen 127.0.0.1:{static_port};
        root {prefix}/html;
        location / {{ }}
    }}
}}
"""


def write_config(prefix: Path, *, upstream_port: int, proxy_port: int, static_port: int) -> Path:
    # Workers drop to an unprivileged user when the master runs as root: they must be able
    # to read the prefix (mkdtemp makes it 0700).
    prefix.mkdir(parents=True, exist_ok=True)
    prefix.chmod(0o755)
    (prefix / "html").mkdir(exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(
        CONF.format(
            prefix=prefix,
            upstream_port=upstream_port,
            proxy_port=proxy_port,
            static_port=static_port,
        ),
        encoding="utf-8",
    )
    return conf


def put_static(prefix: Path, path: str, body: bytes) -> Path:
    """Place `body` under the static server's root at URL path `path`."""
    target = prefix / "html" / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    for parent in (target.parent, *target.parent.parents):
        if parent == prefix:
            break
        parent.chmod(0o755)
    target.write_bytes(body)
    target.chmod(0o644)
    return target


def argv(nginx: str, prefix: Path, conf: Path) -> list[str]:
    return [nginx, "-p", str(prefix), "-c", str(conf), "-g", "daemon off;"]


def version(nginx: str) -> str:
    done = subprocess.run([nginx, "-v"], capture_output=True, text=True, check=False)
    return (done.stderr or done.stdout).strip().removeprefix("nginx version: ")


# The fast upstream: what the throughput and CPU rows proxy to. The simulated gateway is a
# Python process (~7-9k req/s on one core), so with it as upstream nginx's row measured the
# simulator; this one answers the token route with a fixed JSON and the library files from
# disk, much faster than any proxy in front of it. It runs on the load generator's CPU.
FAST_UPSTREAM = """\
worker_processes 1;
error_log {prefix}/error.log warn;
pid {prefix}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nodelay on;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    types {{ application/javascript js; text/css css; image/png png; }}
    server {{
        listen 127.0.0.1:{port};
        root {prefix}/html;
        location = /gateway/sessions/session {{
            default_type application/json;
            return 200 '{answer}';
        }}
        location / {{ }}
    }}
}}
"""

# What a gateway answers to a token request (FCSDK-API.md), with a fixed session id.
FAST_ANSWER = '{{"sessionid":"fast-{port}"}}'


def write_fast_upstream(prefix: Path, *, port: int, files: dict[str, bytes]) -> Path:
    """A config for the fast upstream on `port`, serving `files` (URL path -> bytes)."""
    prefix.mkdir(parents=True, exist_ok=True)
    prefix.chmod(0o755)
    (prefix / "html").mkdir(exist_ok=True)
    for path, body in files.items():
        put_static(prefix, path, body)
    conf = prefix / "nginx.conf"
    answer = FAST_ANSWER.format(port=port)
    conf.write_text(FAST_UPSTREAM.format(prefix=prefix, port=port, answer=answer), "utf-8")
    return conf
