"""A real Redis Sentinel deployment for tests: a master, a replica and three sentinels
(`redis-server --sentinel`, Debian's redis-server package) on free loopback ports, each
stopped by its PID."""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from tests.helpers import HOST, RedisServer, free_port

MASTER_NAME = "mymaster"


class SentinelProcess:
    def __init__(self, master_port: int, down_after_ms: int = 1000) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install -y redis-server)")
        self.binary = binary
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="token-router-test-sentinel-")
        self.conf = Path(self.dir) / "sentinel.conf"
        # Sentinel rewrites its configuration file as it learns: it must be its own file.
        self.conf.write_text(
            f"port {self.port}\n"
            f"bind {HOST}\n"
            f"dir {self.dir}\n"
            f"sentinel monitor {MASTER_NAME} {HOST} {master_port} 2\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} {down_after_ms}\n"
            f"sentinel failover-timeout {MASTER_NAME} 5000\n"
            f"sentinel parallel-syncs {MASTER_NAME} 1\n",
            encoding="utf-8",
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, str(self.conf), "--sentinel", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                with self.client() as client:
                    if client.ping():
                        return
            except redis.RedisError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis sentinel did not start on port {self.port}")
            time.sleep(0.02)

    def client(self) -> redis.Redis:
        return redis.Redis(HOST, self.port, socket_timeout=2, decode_responses=True)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class SentinelSetup:
    """master + replica + 3 sentinels, ready when every sentinel sees the replica and the
    two other sentinels (else a failover cannot be agreed)."""

    def __init__(self) -> None:
        self.master = RedisServer()
        self.master.start()
        self.replica = RedisServer(extra=("--replicaof", HOST, str(self.master.port)))
        self.replica.start()
        self.sentinels = [SentinelProcess(self.master.port) for _ in range(3)]
        for s in self.sentinels:
            s.start()

    @property
    def addresses(self) -> list[str]:
        return [f"{HOST}:{s.port}" for s in self.sentinels]

    def master_port(self) -> int | None:
        for s in self.sentinels:
            try:
                with s.client() as client:
                    found = client.sentinel_get_master_addr_by_name(MASTER_NAME)
            except redis.RedisError:
                continue
            if found:
                return int(found[1])
        return None

    def ready(self) -> bool:
        with redis.Redis(HOST, self.replica.port, decode_responses=True) as replica:
            if replica.info("replication").get("master_link_status") != "up":
                return False
        for s in self.sentinels:
            with s.client() as client:
                state = client.sentinel_master(MASTER_NAME)
            if int(state["num-slaves"]) < 1 or int(state["num-other-sentinels"]) < 2:
                return False
        return True

    def master_healthy(self) -> bool:
        """Every sentinel sees the current master up (a busy machine can make one of them
        flag it subjectively down for a moment after a failover)."""
        for s in self.sentinels:
            try:
                with s.client() as client:
                    state = client.sentinel_master(MASTER_NAME)
            except redis.RedisError:
                return False
            if not state.get("is_master") or state.get("is_sdown") or state.get("is_odown"):
                return False
        return True

    def cleanup(self) -> None:
        for s in self.sentinels:
            s.cleanup()
        self.replica.cleanup()
        self.master.cleanup()
