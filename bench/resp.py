"""Redis spoken raw (RESP over a socket), as `redis-cli` does: no router code involved.

The switch-propagation row must start from a *bare* SET, exactly what an operator's
`redis-cli SET tokenrouter:active b` sends, so the harness does not use redis-py here.
"""

from __future__ import annotations

import asyncio
import socket


def encode(*args: str) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def _read_reply(sock: socket.socket) -> bytes:
    """One reply: simple string, error, integer, or bulk string (all INFO/SET/GET need)."""
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("redis closed the connection")
        data += chunk
    if data[:1] != b"$":
        return data
    header, _, rest = data.partition(b"\r\n")
    length = int(header[1:])
    if length < 0:
        return b""
    while len(rest) < length + 2:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("redis closed the connection")
        rest += chunk
    return rest[:length]


def command(port: int, *args: str, host: str = "127.0.0.1") -> str:
    """Send one command on a new connection; return the reply text (raise on -ERR)."""
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(encode(*args))
        reply = _read_reply(sock)
    if reply.startswith(b"-"):
        raise RuntimeError(reply.decode().strip())
    return reply.decode().strip()


def info_stats(port: int, section: str) -> dict[str, str]:
    """`INFO <section>` as a dict of its `key:value` lines."""
    text = command(port, "INFO", section)
    pairs = (line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {k: v for k, v in pairs}


async def set_async(writer: asyncio.StreamWriter, reader: asyncio.StreamReader, *args: str) -> None:
    """One command on a kept-open connection (the timed SET of the propagation row)."""
    writer.write(encode(*args))
    await writer.drain()
    reply = await reader.readline()
    if not reply.startswith(b"+"):
        raise RuntimeError(f"redis answered {reply!r}")
