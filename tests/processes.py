"""What the multi-process tests share: gateway subprocesses against the shared test database, a
private redis-server the tests may stop and start, and polling with deadlines.

Gateway subprocesses read the pytest PostgreSQL test database (so the test's records must be
committed: `django_db(transaction=True)`) and whatever Redis the test names. Their output
goes to a log file that a failing test prints.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis as redis_sync
import redis.cluster as redis_cluster_sync
from django.conf import settings
from django.db import connection

from gateway.redisurl import cluster_config
from tests.gateway_server import free_port

ROOT = Path(__file__).resolve().parents[1]  # the checkout: subprocesses run its code
ON_POSTGRES = settings.DATABASES["default"]["ENGINE"].endswith("postgresql")

requires_postgres = pytest.mark.skipif(
    not ON_POSTGRES, reason="gateway subprocesses need a shared database (DATABASE_URL)"
)
requires_real_redis = pytest.mark.skipif(
    not settings.REDIS_URL, reason="needs a real Redis shared between processes (REDIS_URL)"
)
# What a test reads of one Redis that a cluster does not have: one connection's pipeline,
# KEYS over the whole keyspace, a key's plain name (`make test-ha` runs the rest on a cluster).
one_redis_only = pytest.mark.skipif(
    cluster_config(settings.REDIS_URL) is not None, reason="reads one Redis, not a cluster"
)
requires_redis_server = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="redis-server is not on PATH"
)


def wait_for(check: Callable[[], object], *, timeout: float, what: str) -> object:
    """Poll `check` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


def shared_database_url() -> str:
    db = settings.DATABASES["default"]
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    name = connection.settings_dict["NAME"]
    return f"postgres://{db['USER']}{password}@{db['HOST']}:{db['PORT']}/{name}"


class GatewayProcess:
    """`uvicorn gatewaysite.asgi:application` (with its lifespan) on a free loopback port.

    `args` are added to uvicorn's command line; an `env` value of None removes that
    variable (the embedded mode is the absence of DATABASE_URL and REDIS_URL)."""

    def __init__(
        self,
        *,
        redis_url: str | None,
        log_dir: Path,
        args: tuple[str, ...] = (),
        **env: str | None,
    ) -> None:
        self.port = free_port()
        self.log_path = log_dir / f"gateway-{self.port}.log"
        environment = {
            **os.environ,
            "DATABASE_URL": shared_database_url() if ON_POSTGRES else None,
            "REDIS_URL": redis_url,
            "SECRET_KEY": "test-secret",
            "DEBUG": "1",
            "CELERY_TASK_ALWAYS_EAGER": "1",
            "GATEWAY_LEDGER_IN_PROCESS": "0",
            "GATEWAY_DRAIN_S": "0",  # stop at once; tests/reliability/test_draining.py drains
            "TEST_OPENAI_API_KEY": "sk-test",
            "TEST_ANTHROPIC_API_KEY": "sk-ant",
            **env,
        }
        if "CELERY_BROKER_URL" not in env:
            environment.pop("CELERY_BROKER_URL", None)
        environment = {k: v for k, v in environment.items() if v is not None}
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "gatewaysite.asgi:application"]
            + ["--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning", *args],
            cwd=ROOT,
            env=environment,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def wait_ready(self, timeout: float = 30) -> GatewayProcess:
        def answers() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"the gateway exited early:\n{self.output()}")
            try:
                return httpx.get(self.url + "/healthz", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(answers, timeout=timeout, what=f"the gateway on port {self.port}")
        return self

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-4000:]

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log.close()


@pytest.fixture
def gateways(tmp_path) -> Iterator[Callable[..., list[GatewayProcess]]]:
    """`gateways(n, redis_url=..., **env)`: start n gateway processes (in parallel) and
    wait until each answers; all are stopped at the end of the test."""
    started: list[GatewayProcess] = []

    def start(n: int = 1, *, redis_url: str | None = None, **env: str) -> list[GatewayProcess]:
        batch = [
            GatewayProcess(redis_url=redis_url or settings.REDIS_URL, log_dir=tmp_path, **env)
            for _ in range(n)
        ]
        started.extend(batch)
        return [g.wait_ready() for g in batch]

    yield start
    for gateway in started:
        gateway.stop()


class RedisServer:
    """A private redis-server on a free port, to stop and start at will: non-persistent, or
    with an append-only file in `data_dir` (the production setting docs/operations.md asks
    for, so that the ledger queue survives a restart)."""

    def __init__(
        self, data_dir: Path | None = None, args: tuple[str, ...] = (), port: int | None = None
    ) -> None:
        self.port = port or free_port()
        self.data_dir = data_dir
        self.args = args  # more of redis-server's options, e.g. ("--replicaof", host, port)
        self.process: subprocess.Popen | None = None
        self.scratch = ""  # its working directory when it has no data_dir

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis_sync.Redis:
        return redis_sync.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def start(self) -> RedisServer:
        if self.data_dir is None:
            # Its own scratch directory: a replica's sync writes an RDB file even so.
            self.scratch = tempfile.mkdtemp(prefix="redis-")
            persistence = ["--save", "", "--appendonly", "no", "--dir", self.scratch]
        else:
            persistence = ["--save", "", "--dir", str(self.data_dir), "--appendonly", "yes",
                           "--appendfsync", "always"]  # fmt: skip
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                *persistence,
                *self.args,
            ],  # fmt: skip
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def pong() -> bool:
            try:
                return bool(self.client().ping())
            except redis_sync.ConnectionError:
                return False

        wait_for(pong, timeout=10, what=f"redis-server on port {self.port}")
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None
        if self.scratch:
            shutil.rmtree(self.scratch, ignore_errors=True)

    def kill(self) -> None:
        """SIGKILL, as a lost machine or the OOM killer: no shutdown, no last write."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)  # reaped: nothing takes it for a running node any more


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def own_persistent_redis(tmp_path) -> Iterator[RedisServer]:
    server = RedisServer(data_dir=tmp_path).start()
    try:
        yield server
    finally:
        server.stop()


SERVICE = "gw"  # the Sentinel service name of the test topology


class Sentinels:
    """A primary, a replica of it, and three sentinels watching them (quorum 2)."""

    def __init__(self, tmp_path: Path) -> None:
        # Diskless sync without its 5 s wait: a replica never synced refuses to take over.
        self.primary = RedisServer(args=("--repl-diskless-sync-delay", "0")).start()
        self.replica = RedisServer(args=("--replicaof", "127.0.0.1", str(self.primary.port)))
        self.replica.start()
        wait_for(
            lambda: self.replica.client().info("replication")["master_link_status"] == "up",
            timeout=30,
            what="the replica in sync",
        )
        self.sentinels: list[tuple[int, object]] = []
        for i in range(3):
            port = free_port()
            conf = tmp_path / f"sentinel-{i}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {self.primary.port} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} 1000\n"
                f"sentinel failover-timeout {SERVICE} 5000\n"
            )
            process = subprocess.Popen(
                ["redis-server", str(conf), "--sentinel"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            self.sentinels.append((port, process))
        wait_for(self._replica_known, timeout=30, what="the sentinels to know the replica")

    def client(self, i: int = 0) -> redis_sync.Redis:
        return redis_sync.Redis(host="127.0.0.1", port=self.sentinels[i][0], socket_timeout=5)

    def _replica_known(self) -> bool:
        try:
            return all(
                any(
                    r.get("port") == self.replica.port
                    for r in self.client(i).sentinel_slaves(SERVICE)
                )
                for i in range(3)
            )
        except redis_sync.RedisError:
            return False

    def primary_port(self) -> int:
        return int(self.client().sentinel_get_master_addr_by_name(SERVICE)[1])

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port, _ in self.sentinels)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    def stop(self) -> None:
        for _, process in self.sentinels:
            process.terminate()
            process.wait(10)
        self.replica.stop()
        self.primary.stop()


@pytest.fixture
def sentinels(tmp_path) -> Iterator[Sentinels]:
    topology = Sentinels(tmp_path)
    try:
        yield topology
    finally:
        topology.stop()


def _cluster_port() -> int:
    """A free port whose cluster bus port (itself + 10,000) is free too."""
    while True:
        port = free_port()
        if port + 10000 >= 65536:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


class RedisCluster:
    """Three primaries (and `replicas` replicas of each) as one Redis Cluster, all 16,384
    slots assigned, each node a RedisServer with its own directory under `tmp_path`."""

    def __init__(self, tmp_path: Path, replicas: int = 0) -> None:
        if shutil.which("redis-cli") is None:
            pytest.skip("redis-cli is not on PATH")
        self.nodes: list[RedisServer] = []
        try:
            for _ in range(3 * (1 + replicas)):
                port = _cluster_port()
                node_dir = tmp_path / f"cluster-{port}"
                node_dir.mkdir(parents=True, exist_ok=True)
                args = ("--cluster-enabled", "yes", "--dir", str(node_dir),
                        "--cluster-config-file", str(node_dir / f"nodes-{port}.conf"),
                        "--cluster-node-timeout", "2000",  # a replica syncs at once:
                        "--repl-diskless-sync-delay", "0")  # fmt: skip
                self.nodes.append(RedisServer(args=args, port=port).start())
            hosts = [f"127.0.0.1:{port}" for port in self.ports]
            create = ["redis-cli", "--cluster", "create", *hosts, "--cluster-replicas",
                      str(replicas)]  # fmt: skip
            created = subprocess.run(
                [*create, "--cluster-yes"], capture_output=True, text=True, timeout=30
            )
            if created.returncode != 0:
                raise AssertionError(f"redis-cli --cluster create failed:\n{created.stdout}"
                                     f"{created.stderr}")  # fmt: skip
            wait_for(self._ready, timeout=30, what="the cluster to cover every slot")
        except BaseException:
            self.stop()
            raise

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports) + "/0"

    def client(self) -> redis_cluster_sync.RedisCluster:
        """redis-py's cluster client, starting from the first node still running."""
        running = [n.port for n in self.nodes if n.process is not None and n.process.poll() is None]
        return redis_cluster_sync.RedisCluster(host="127.0.0.1", port=running[0], socket_timeout=5)

    def node(self, i: int) -> redis_sync.Redis:
        """A plain client on node `i` alone (CLUSTER commands, or a look at its keys)."""
        return self.nodes[i].client()

    def primary_port(self, key: str) -> int:
        """The port of the primary that owns `key`'s slot now."""
        with self.client() as client:
            return int(client.get_node_from_key(key).port)

    def replica_ports(self, primary_port: int) -> list[int]:
        """The ports of the replicas of the primary on `primary_port`, as it sees them."""
        with self.nodes[self.ports.index(primary_port)].client() as client:
            myself = client.execute_command("CLUSTER", "MYID").decode()
            lines = client.execute_command("CLUSTER", "REPLICAS", myself)
        return [int(line.decode().split()[1].split("@")[0].rsplit(":", 1)[1]) for line in lines]

    def _ready(self) -> bool:
        for node in self.nodes:
            try:
                with node.client() as client:
                    info = client.cluster("INFO")
                    replication = client.info("replication")
            except redis_sync.RedisError:
                return False
            if info.get("cluster_state") != "ok" or int(info.get("cluster_slots_ok", 0)) != 16384:
                return False
            if replication["role"] == "slave" and replication["master_link_status"] != "up":
                return False  # a replica that never synced cannot take over
        return True

    def stop(self) -> None:
        for node in self.nodes:
            if node.process is not None and node.process.poll() is None:
                node.process.terminate()  # all at once, then wait for each
        for node in self.nodes:
            node.stop()


@pytest.fixture
def redis_cluster(tmp_path) -> Iterator[RedisCluster]:
    cluster = RedisCluster(tmp_path)
    try:
        yield cluster
    finally:
        cluster.stop()
